// End to end: Debian's Chromium (driven by playwright-core) against a real `letterpress serve`
// spawned here. Screenshots go to target/designer-e2e/ (LETTERPRESS_SCREENSHOTS overrides).
//
// The server gets the tiny ControlNet fixture pipeline (diffusion/tests/fixtures/pipeline/
// sd1-controlnet) so that
// generation, progress and cancel run for real; LETTERPRESS_BIN names the binary (the Rust test
// tests/designer.rs passes cargo's).
import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { request } from "node:http";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { after, before, describe, it } from "node:test";
import { type Browser, type BrowserContext, type Page, chromium } from "playwright-core";
import { readText } from "../web/src/png";

const repo = resolve(process.cwd(), "..");
const bin = process.env.LETTERPRESS_BIN ?? join(repo, "target/debug/letterpress");
const shots = process.env.LETTERPRESS_SCREENSHOTS ?? join(repo, "target/designer-e2e");
const model = process.env.LETTERPRESS_E2E_MODEL ?? join(repo, "diffusion/tests/fixtures/pipeline/sd1-controlnet");
const chromiumPath = process.env.CHROMIUM ?? "/usr/bin/chromium";
// The machine notes' flags: no sandbox as root, and nothing that reaches for the network.
const CHROMIUM_ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];
const PROMPT = "a summer festival poster that says 'SUMMER SALE' and 'JULY 14'";

interface Server {
  url: string;
  proc: ChildProcess;
  log: () => string;
  generation: boolean;
}

/** Starts `letterpress serve` on a free port; resolves with its URL once it listens. */
function startServer(args: string[], dataDir: string): Promise<Server> {
  return new Promise((resolvePromise, reject) => {
    const proc = spawn(bin, ["serve", "--bind", "127.0.0.1:0", "--data-dir", dataDir, ...args], {
      env: {
        ...process.env,
        // Figma plug-ins fetch from sandboxed iframes, whose origin is `null`.
        LETTERPRESS_CORS_ORIGINS: "null",
        LETTERPRESS_RATE_LIMIT_PER_MINUTE: "0",
        // The cancel test runs 150 steps at 512x512: seconds for the tiny fixture model, but
        // over the job budget a CPU server sets for real models (512x512 at 30 steps).
        LETTERPRESS_MAX_PIXEL_STEPS: String(512 * 512 * 150),
        LETTERPRESS_LOG: "info",
      },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let out = "";
    const log = () => out;
    const timer = setTimeout(() => {
      proc.kill();
      reject(new Error(`letterpress serve did not start in 120 s:\n${out}`));
    }, 120_000);
    const onData = (chunk: Buffer) => {
      out += chunk.toString();
      const m = /listening on (http:\/\/\S+)/.exec(out);
      if (m) {
        clearTimeout(timer);
        resolvePromise({ url: m[1], proc, log, generation: false });
      }
    };
    proc.stdout?.on("data", onData);
    proc.stderr?.on("data", onData);
    proc.on("error", (e) => {
      clearTimeout(timer);
      reject(new Error(`cannot run ${bin}: ${e.message} (build it: cargo build)`));
    });
    proc.on("exit", (code) => {
      clearTimeout(timer);
      reject(Object.assign(new Error(`letterpress serve exited with ${code}:\n${out}`), { output: out }));
    });
  });
}

async function waitForModel(server: Server): Promise<void> {
  for (let i = 0; i < 600; i++) {
    const r = await fetch(`${server.url}/readyz`);
    const body = (await r.json()) as { generation: { available: boolean; reason?: string } };
    if (body.generation.available) {
      server.generation = true;
      return;
    }
    if (r.status === 200) throw new Error(`the model did not load: ${body.generation.reason}\n${server.log()}`);
    await sleep(200);
  }
  throw new Error("the model is still loading after 120 s");
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Polls `f` until it returns a truthy value (or throws after `ms`). */
async function until<T>(what: string, f: () => Promise<T | null | undefined | false>, ms = 30_000): Promise<T> {
  const end = Date.now() + ms;
  let last: unknown;
  while (Date.now() < end) {
    try {
      const v = await f();
      if (v) return v;
    } catch (e) {
      last = e;
    }
    await sleep(100);
  }
  throw new Error(`timed out waiting for ${what}${last ? `: ${String(last)}` : ""}`);
}

/** Centroid and count of the white pixels of the mask shown on the page, in canvas pixels. */
async function maskStats(page: Page): Promise<{ x: number; y: number; ink: number; width: number }> {
  return page.evaluate(async () => {
    const img = document.querySelector<HTMLImageElement>('[data-testid="mask"]');
    if (!img?.src) throw new Error("no mask yet");
    await img.decode();
    const c = document.createElement("canvas");
    c.width = img.naturalWidth;
    c.height = img.naturalHeight;
    const ctx = c.getContext("2d");
    if (!ctx) throw new Error("no 2d context");
    ctx.drawImage(img, 0, 0);
    const px = ctx.getImageData(0, 0, c.width, c.height).data;
    let sx = 0;
    let sy = 0;
    let n = 0;
    for (let i = 0; i < px.length; i += 4) {
      if (px[i] > 127) {
        const p = i / 4;
        sx += p % c.width;
        sy += Math.floor(p / c.width);
        n++;
      }
    }
    return { x: n ? sx / n : -1, y: n ? sy / n : -1, ink: n, width: c.width };
  });
}

const renders = (page: Page) => page.getAttribute('[data-testid="stage"]', "data-renders").then((v) => Number(v ?? 0));

/** The page's layout, as its export button writes it. */
async function exportLayout(page: Page): Promise<{ width: number; height: number; lines: { text: string; bbox: number[] }[] }> {
  const [download] = await Promise.all([page.waitForEvent("download"), page.click('[data-action="export"]')]);
  const path = await download.path();
  return JSON.parse(readFileSync(path, "utf8"));
}

function optionsRequest(url: string, origin: string): Promise<{ status: number; headers: Record<string, string | string[] | undefined> }> {
  return new Promise((res, rej) => {
    const req = request(
      url,
      {
        method: "OPTIONS",
        headers: { Origin: origin, "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type" },
      },
      (r) => {
        r.resume();
        res({ status: r.statusCode ?? 0, headers: r.headers });
      },
    );
    req.on("error", rej);
    req.end();
  });
}

describe("designer page against letterpress serve", () => {
  let server: Server;
  let browser: Browser;
  let context: BrowserContext;
  let page: Page;
  let dataDir: string;

  before(async () => {
    mkdirSync(shots, { recursive: true });
    dataDir = mkdtempSync(join(tmpdir(), "letterpress-e2e-"));
    server = await startServer(["--model-dir", model], dataDir);
    await waitForModel(server);
    browser = await chromium.launch({ executablePath: chromiumPath, args: CHROMIUM_ARGS });
    context = await browser.newContext({ acceptDownloads: true, viewport: { width: 1400, height: 1000 } });
    page = await context.newPage();
    page.on("pageerror", (e) => console.log(`# page error: ${e.message}`));
  });

  after(async () => {
    await browser?.close();
    server?.proc.kill("SIGTERM");
    rmSync(dataDir, { recursive: true, force: true });
  });

  it("serves the designer at / (and JSON to API clients)", async () => {
    const api = await fetch(`${server.url}/`);
    assert.equal(((await api.json()) as { service: string }).service, "letterpress");
    await page.goto(`${server.url}/`);
    await page.waitForSelector("h1:has-text('Letterpress designer')");
    assert.equal(await page.locator("#designer-missing").count(), 0, "the binary embedded the placeholder: run scripts/setup, then cargo build");
    const ready = page.locator('[data-testid="ready"]');
    await until("the readiness badge", async () => (await ready.textContent())?.trim());
    assert.match((await ready.textContent()) ?? "", /model:/);
    // It opens with an example already planned, ready to generate.
    const boxes = page.locator('[data-testid="box"]');
    await until("the example's boxes", async () => (await boxes.count()) === 2);
    assert.match(await page.inputValue('[name="prompt"]'), /'Letterpress' and 'DEMO'/);
  });

  it("plans a layout, a dragged box moves the mask", async () => {
    await page.fill('[name="prompt"]', PROMPT);
    await page.fill('[name="layoutSeed"]', "7");
    await page.click('[data-action="plan"]');
    const boxes = page.locator('[data-testid="box"]');
    // The planner may break a keyword over sub-lines ("SUMMER\nSALE", shown with ⏎); the
    // example's boxes are there until this plan replaces them.
    const labels = async () => (await boxes.locator(".label").allTextContents()).map((t) => t.replace(" ⏎ ", " "));
    await until("the two planned boxes", async () => JSON.stringify(await labels()) === JSON.stringify(["SUMMER SALE", "JULY 14"]));
    await until("the first mask", async () => (await renders(page)) >= 1);
    const before = await until("mask ink", async () => {
      const s = await maskStats(page);
      return s.ink > 0 ? s : null;
    });
    await page.screenshot({ path: join(shots, "01-planned.png"), fullPage: true });

    const layoutBefore = await exportLayout(page);
    const box = boxes.nth(1);
    const b = await box.boundingBox();
    assert.ok(b);
    const rendersBefore = await renders(page);
    await page.mouse.move(b.x + b.width / 2, b.y + b.height / 2);
    await page.mouse.down();
    await page.mouse.move(b.x + b.width / 2 - 60, b.y + b.height / 2 - 80, { steps: 8 });
    await page.mouse.up();
    const layoutAfter = await exportLayout(page);
    const [l0, t0] = layoutBefore.lines[1].bbox;
    const [l1, t1] = layoutAfter.lines[1].bbox;
    assert.ok(l1 < l0 && t1 < t0, `box 1 moved up-left: ${layoutBefore.lines[1].bbox} → ${layoutAfter.lines[1].bbox}`);
    assert.deepEqual(layoutAfter.lines[0], layoutBefore.lines[0], "the other box stays");

    // The mask is re-rendered by the server and its ink moves with the box.
    await until("a new mask", async () => (await renders(page)) > rendersBefore);
    const moved = await until("the mask ink to move", async () => {
      const s = await maskStats(page);
      return s.y < before.y - 5 ? s : null;
    });
    assert.ok(moved.ink > 0);
    await page.screenshot({ path: join(shots, "02-dragged.png"), fullPage: true });
  });

  it("resizes, adds, retypes and deletes lines", async () => {
    const boxes = page.locator('[data-testid="box"]');
    await boxes.nth(0).click();
    const handle = boxes.nth(0).locator('[data-handle="se"]');
    const h = await handle.boundingBox();
    assert.ok(h);
    const widthBefore = (await exportLayout(page)).lines[0].bbox;
    await page.mouse.move(h.x + h.width / 2, h.y + h.height / 2);
    await page.mouse.down();
    await page.mouse.move(h.x - 40, h.y + 30, { steps: 5 });
    await page.mouse.up();
    const resized = (await exportLayout(page)).lines[0].bbox;
    assert.equal(resized[0], widthBefore[0], "left edge stays");
    assert.ok(resized[2] < widthBefore[2] && resized[3] > widthBefore[3], `${widthBefore} → ${resized}`);

    await page.click('[data-action="add-line"]');
    await until("a third box", async () => (await boxes.count()) === 3);
    const r = await renders(page);
    await page.fill('[name="lineText"]', "FREE ENTRY");
    await until("the label", async () => (await boxes.nth(2).textContent()) === "FREE ENTRY");
    await until("the retyped mask", async () => (await renders(page)) > r);
    await page.screenshot({ path: join(shots, "03-added-line.png"), fullPage: true });
    assert.deepEqual((await exportLayout(page)).lines.map((l) => l.text.replace("\n", " ")), ["SUMMER SALE", "JULY 14", "FREE ENTRY"]);

    await page.click('[data-action="delete-line"]');
    await until("two boxes again", async () => (await boxes.count()) === 2);
  });

  it("exports and imports layout JSON", async () => {
    const layout = await exportLayout(page);
    layout.lines.push({ text: "IMPORTED", bbox: [40, 400, 300, 460] });
    await page.setInputFiles('[name="import"]', { name: "poster.json", mimeType: "application/json", buffer: Buffer.from(JSON.stringify(layout)) });
    const boxes = page.locator('[data-testid="box"]');
    await until("the imported boxes", async () => (await boxes.count()) === 3);
    assert.match((await page.textContent('[data-testid="notice"]')) ?? "", /imported poster.json: 3 lines/);
    assert.deepEqual(await exportLayout(page), layout);
    // A broken file is refused with the reason, and the layout stays.
    await page.setInputFiles('[name="import"]', { name: "bad.json", mimeType: "application/json", buffer: Buffer.from('{"width": 512, "height": 512, "lines": [{"text": "x", "bbox": [5, 5, 1, 1]}]}') });
    await until("the import error", async () => /lines\[0\]\.bbox has no area/.test((await page.textContent('[data-testid="notice"]')) ?? ""));
    assert.equal(await boxes.count(), 3);
  });

  it("answers CORS for Origin: null, as Figma plug-ins send it", async () => {
    const pre = await optionsRequest(`${server.url}/v1/layouts`, "null");
    assert.equal(pre.status, 200);
    assert.equal(pre.headers["access-control-allow-origin"], "null");
    assert.match(String(pre.headers["access-control-allow-methods"]), /POST/);
    const other = await optionsRequest(`${server.url}/v1/layouts`, "https://elsewhere.example");
    assert.equal(other.headers["access-control-allow-origin"], undefined, "other origins are not admitted");

    // The Figma UI itself, in a sandboxed iframe (opaque origin, like Figma's), plans a layout
    // through the real server. The parent page plays the plug-in sandbox's messages.
    const ui = readFileSync(join(repo, "plugin/figma/dist/ui.html"), "utf8");
    const figmaPage = await context.newPage();
    await figmaPage.setContent(`<iframe id="ui" sandbox="allow-scripts allow-downloads" style="width:1200px;height:1400px"></iframe>`);
    await figmaPage.evaluate(
      ({ html, url }) => {
        const w = window as unknown as { pluginMessages: unknown[] };
        w.pluginMessages = [];
        window.addEventListener("message", (e) => {
          const msg = (e.data as { pluginMessage?: { type: string } }).pluginMessage;
          if (!msg) return;
          w.pluginMessages.push(msg);
          const frame = (document.getElementById("ui") as HTMLIFrameElement).contentWindow;
          if (msg.type === "ready") {
            frame?.postMessage({ pluginMessage: { type: "settings", server: url, apiKey: "", history: [] } }, "*");
            frame?.postMessage(
              {
                pluginMessage: {
                  type: "selection",
                  design: {
                    nodeId: "1:2",
                    name: "Poster",
                    frame: { width: 1024, height: 512 },
                    layout: { width: 512, height: 256, lines: [{ text: "SUMMER SALE", bbox: [32, 32, 288, 64] }] },
                    keywords: ["SUMMER SALE"],
                  },
                },
              },
              "*",
            );
          }
        });
        (document.getElementById("ui") as HTMLIFrameElement).srcdoc = html;
      },
      { html: ui, url: server.url },
    );
    const frame = await until("the plug-in iframe", async () => figmaPage.frames().find((f) => f.parentFrame() !== null && f.url() === "about:srcdoc"));
    assert.equal(await frame.evaluate(() => self.origin), "null", "the iframe's origin is opaque");
    await until("the selection's box", async () => (await frame.locator('[data-testid="box"]').count()) === 1);
    assert.equal(await frame.inputValue('[name="keywords"]'), "SUMMER SALE");
    await until("the server's readiness, fetched cross-origin", async () => /model:|generation unavailable/.test((await frame.textContent('[data-testid="ready"]')) ?? ""));
    await until("the mask, rendered cross-origin", async () => Number((await frame.getAttribute('[data-testid="stage"]', "data-renders")) ?? 0) >= 1);
    assert.equal(await frame.inputValue('[name="layoutSeed"]'), "");
    await frame.click('[data-action="plan"]');
    await until("the plan", async () => (await frame.inputValue('[name="layoutSeed"]')) !== "");
    assert.equal(await frame.locator('[data-testid="box"]').count(), 1);
    assert.match((await frame.locator('[data-testid="box"]').first().textContent()) ?? "", /SUMMER/);
    const notice = await frame.locator('[data-testid="notice"]').evaluate((n) => `${n.className}: ${n.textContent}`);
    assert.doesNotMatch(notice, /error/, "no request failed (none went to the default server before the settings came)");
    await figmaPage.screenshot({ path: join(shots, "04-figma-ui.png"), fullPage: true });

    // Generating in the plug-in sends the PNGs to the sandbox to insert, with seed and prompt.
    await frame.fill('[name="seed"]', "99");
    await frame.fill('[name="steps"]', "2");
    await frame.check('[name="addText"]');
    await frame.click('[data-action="generate"]');
    const insert = await until(
      "the insert message",
      () =>
        figmaPage.evaluate(() => {
          const msgs = (window as unknown as { pluginMessages: { type: string; images?: { bytes: Uint8Array; seed: number; prompt: string }[]; addText?: boolean; layout?: unknown }[] }).pluginMessages;
          const m = msgs.find((x) => x.type === "insert");
          return m ? { seeds: m.images?.map((i) => i.seed), prompt: m.images?.[0].prompt, head: Array.from(m.images?.[0].bytes.slice(0, 4) ?? []), addText: m.addText, layout: m.layout } : null;
        }),
      300_000,
    );
    assert.deepEqual(insert.seeds, [99]);
    assert.equal(insert.prompt, "a poster that says 'SUMMER SALE'");
    assert.deepEqual(insert.head, [137, 80, 78, 71], "PNG bytes");
    assert.equal(insert.addText, true);
    assert.equal((insert.layout as { width: number }).width, 512);
    await figmaPage.close();
  });

  it("generates with progress; the result shows its seed; settings come back from the history", async () => {
    await page.fill('[name="seed"]', "1234");
    await page.fill('[name="steps"]', "4");
    await page.fill('[name="previewEvery"]', "1");
    await page.fill('[name="n"]', "2");
    await page.click('[data-action="generate"]');
    await until("progress", async () => (await page.getAttribute('[data-testid="progress"]', "data-status")) === "running", 60_000);
    await until("the step preview", async () => page.locator('[data-testid="step-preview"]').isVisible(), 60_000);
    await until("success", async () => (await page.getAttribute('[data-testid="progress"]', "data-status")) === "succeeded", 300_000);
    const results = page.locator('[data-testid="result"]');
    await until("two results", async () => (await results.count()) === 2);
    assert.deepEqual(await results.locator('[data-testid="seed"]').allTextContents(), ["1234", "1235"]);
    await page.screenshot({ path: join(shots, "05-generated.png"), fullPage: true });

    // Seeds are copyable, and reusable for one image.
    await context.grantPermissions(["clipboard-read", "clipboard-write"], { origin: server.url });
    await results.nth(1).locator("button:has-text('Copy seed')").click();
    await until("the copied seed", async () => (await page.evaluate(() => navigator.clipboard.readText())) === "1235");
    await results.nth(1).locator("button:has-text('Use seed')").click();
    assert.equal(await page.inputValue('[name="seed"]'), "1235");
    assert.equal(await page.inputValue('[name="n"]'), "1");
    await page.fill('[name="seed"]', "1234");

    const [download] = await Promise.all([page.waitForEvent("download"), results.first().locator("button:has-text('Download PNG')").click()]);
    const text = readText(new Uint8Array(readFileSync(await download.path())));
    assert.match(text.parameters, /Steps: 4, .*Seed: 1234/);
    assert.equal(JSON.parse(text.letterpress).seed, 1234);

    // "Regenerate this line": select a result, then repaint its selected line in place.
    const regenerate = page.locator('[data-action="regenerate-line"]');
    assert.ok(await regenerate.isDisabled(), "no result selected yet");
    await results.nth(1).locator("img").click();
    await until("the selected result", async () => /selected/.test((await results.nth(1).getAttribute("class")) ?? ""));
    await until("the button enabled", async () => regenerate.isEnabled());
    const baseJob = await results.nth(1).getAttribute("data-job-id");
    const selectedLine = await page.$$eval('[data-testid="box"]', (boxes) => boxes.findIndex((b) => b.classList.contains("selected")));
    assert.ok(selectedLine >= 0, "a line is selected");
    await regenerate.click();
    await until("the regenerated result", async () => (await results.count()) === 3, 300_000);
    await until("success", async () => (await page.getAttribute('[data-testid="progress"]', "data-status")) === "succeeded", 300_000);
    const newJob = await results.first().getAttribute("data-job-id");
    assert.notEqual(newJob, baseJob);
    const job = (await (await fetch(`${server.url}/v1/generations/${newJob}`)).json()) as {
      status: string;
      input: { init_image: string; inpaint_line: number; n: number; steps: number };
    };
    const base = (await (await fetch(`${server.url}/v1/generations/${baseJob}`)).json()) as { output: { images: { id: string }[] } };
    assert.equal(job.status, "succeeded");
    assert.equal(job.input.init_image, base.output.images[1].id, "the selected image is repainted");
    assert.equal(job.input.inpaint_line, selectedLine);
    assert.deepEqual([job.input.n, job.input.steps], [1, 4], "the result's settings, one image");
    assert.match((await page.locator('[data-testid="history-entry"]').first().textContent()) ?? "", /succeeded/);
    await page.screenshot({ path: join(shots, "05b-regenerated-line.png"), fullPage: true });

    // The history survives a reload and restores the settings.
    await page.reload();
    const entry = page.locator('[data-testid="history-entry"]').first();
    await until("the history entry", async () => /seed 1234/.test((await entry.textContent()) ?? ""));
    await entry.locator("button:has-text('Restore')").click();
    assert.equal(await page.inputValue('[name="seed"]'), "1234");
    assert.equal(await page.inputValue('[name="steps"]'), "4");
    assert.equal(await page.locator('[data-testid="box"]').count(), 3);
  });

  it("edits text in an uploaded image", async () => {
    // A picture that says SALE, drawn by the browser, uploaded as the PNG to edit.
    const png = await page.evaluate(() => {
      const c = document.createElement("canvas");
      c.width = 200;
      c.height = 96;
      const g = c.getContext("2d")!;
      g.fillStyle = "white";
      g.fillRect(0, 0, 200, 96);
      g.fillStyle = "black";
      g.font = "bold 48px sans-serif";
      g.fillText("SALE", 40, 66);
      return c.toDataURL("image/png").split(",")[1];
    });
    await page.setInputFiles('[name="editImage"]', { name: "sale.png", mimeType: "image/png", buffer: Buffer.from(png, "base64") });
    await page.fill('[name="editReplacements"]', "SALE=DEAL");
    await page.fill('[name="steps"]', "2");
    const results = page.locator('[data-testid="result"]');
    const before = await results.count();
    await page.click('[data-action="edit-text"]');
    await until("the edited result", async () => (await results.count()) === before + 1, 300_000);
    await until("success", async () => (await page.getAttribute('[data-testid="progress"]', "data-status")) === "succeeded", 300_000);
    const id = await results.first().getAttribute("data-job-id");
    const job = (await (await fetch(`${server.url}/v1/generations/${id}`)).json()) as {
      input: { edit: { replacements: { old: string; new: string }[] } };
      output: { certificates: unknown[] };
    };
    assert.deepEqual(job.input.edit.replacements, [{ old: "SALE", new: "DEAL" }]);
    assert.equal(job.output.certificates.length, 1);
    await page.screenshot({ path: join(shots, "05c-edited-text.png"), fullPage: true });

    // A line that is not OLD=NEW is refused before anything is sent.
    await page.fill('[name="editReplacements"]', "SALE");
    await page.click('[data-action="edit-text"]');
    await until("the notice", async () => /write OLD=NEW/.test((await page.textContent('[data-testid="notice"]')) ?? ""));
  });

  it("cancels a running generation", async () => {
    await page.fill('[name="steps"]', "150");
    await page.fill('[name="n"]', "1");
    await page.fill('[name="previewEvery"]', "0");
    await page.click('[data-action="generate"]');
    await until("the first step", async () => (await page.getAttribute('[data-testid="progress"]', "data-status")) === "running", 60_000);
    await page.click('[data-action="cancel"]');
    await until("canceled", async () => (await page.getAttribute('[data-testid="progress"]', "data-status")) === "canceled", 120_000);
    await page.screenshot({ path: join(shots, "06-canceled.png"), fullPage: true });
    assert.ok(await page.locator('[data-action="cancel"]').isDisabled());
    assert.match((await page.locator('[data-testid="history-entry"]').first().textContent()) ?? "", /canceled/);
  });
});
