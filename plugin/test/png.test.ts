// PNG metadata, checked against Pillow (an independent PNG reader) from the project's .venv.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { crc32, parametersText, readChunks, readText, withText } from "../web/src/png";

const python = join(process.cwd(), "..", ".venv", "bin", "python");

function pillow(script: string, ...args: string[]): string {
  assert.ok(existsSync(python), `${python} is missing: run scripts/setup`);
  return execFileSync(python, ["-c", script, ...args], { encoding: "utf8" });
}

test("CRC-32 matches the constant every PNG ends with", () => {
  assert.equal(crc32(new TextEncoder().encode("IEND")), 0xae426082);
});

test("text chunks survive a round trip through Pillow", () => {
  const dir = mkdtempSync(join(tmpdir(), "letterpress-png-"));
  const plain = join(dir, "plain.png");
  pillow("import sys; from PIL import Image; Image.new('RGB', (8, 4), (200, 30, 90)).save(sys.argv[1])", plain);
  const png = new Uint8Array(readFileSync(plain));
  const params = parametersText({ prompt: "a poster that says 'ÉTÉ'", steps: 20, scheduler: "ddim", guidance_scale: 7.5, seed: 42, width: 512, height: 512 });
  const tagged = withText(png, { parameters: params, letterpress: '{"seed":42}' });
  assert.deepEqual(readText(tagged), { parameters: params, letterpress: '{"seed":42}' });
  assert.equal(readChunks(tagged).at(-1)?.type, "IEND");
  const out = join(dir, "tagged.png");
  writeFileSync(out, tagged);
  const seen = JSON.parse(
    pillow("import sys, json; from PIL import Image; im = Image.open(sys.argv[1]); im.load(); print(json.dumps({'text': im.text, 'size': im.size, 'px': im.getpixel((0, 0))}))", out),
  );
  assert.deepEqual(seen, { text: { parameters: params, letterpress: '{"seed":42}' }, size: [8, 4], px: [200, 30, 90] });
  assert.match(params, /Steps: 20, Sampler: ddim, CFG scale: 7.5, Seed: 42, Size: 512x512/);
});

test("broken PNGs are refused", () => {
  assert.throws(() => readChunks(new Uint8Array([1, 2, 3])), /not a PNG/);
  const dir = mkdtempSync(join(tmpdir(), "letterpress-png-"));
  const f = join(dir, "a.png");
  pillow("import sys; from PIL import Image; Image.new('L', (2, 2)).save(sys.argv[1])", f);
  const png = new Uint8Array(readFileSync(f));
  png[20] ^= 0xff; // inside IHDR
  assert.throws(() => readChunks(png), /bad CRC in IHDR/);
});
