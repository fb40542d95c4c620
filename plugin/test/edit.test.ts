import assert from "node:assert/strict";
import { test } from "node:test";
import { bytesToBase64, parseReplacements } from "../web/src/edit";

test("replacements are OLD=NEW lines; blank lines are skipped", () => {
  assert.deepEqual(parseReplacements("SALE=DEAL\n\n big sale = Small Deal \r\n"), [
    { old: "SALE", new: "DEAL" },
    { old: "big sale", new: "Small Deal" },
  ]);
  assert.throws(() => parseReplacements("SALE"), /line 1 \("SALE"\): write OLD=NEW/);
  assert.throws(() => parseReplacements("A=B\n=DEAL"), /line 2/);
  assert.throws(() => parseReplacements("  "), /at least one/);
  assert.throws(() => parseReplacements("a=b\n".repeat(9)), /at most 8/);
});

test("base64 matches Node's for small and chunked inputs", () => {
  for (const n of [0, 1, 2, 3, 100, 0x8000 + 5]) {
    const bytes = Uint8Array.from({ length: n }, (_, i) => (i * 37) & 255);
    assert.equal(bytesToBase64(bytes), Buffer.from(bytes).toString("base64"));
  }
});
