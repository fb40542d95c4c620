// The Figma plug-in's sandbox logic against a fake `figma` global: a page holding one frame
// with text layers, and the Plugin API calls the plug-in makes, recorded.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { readFileSync, rmSync } from "node:fs";
import { test } from "node:test";
import { DEFAULT_SERVER, type FigmaApi, type NodeLike, layerName, readSelection, startPlugin } from "../figma/logic";

interface FakeNode extends NodeLike {
  fills?: unknown;
  [k: string]: unknown;
}

function node(fields: Partial<FakeNode> & { type: string; name: string }): FakeNode {
  return { id: fields.name, x: 0, y: 0, width: 10, height: 10, ...fields } as FakeNode;
}

function fakeFigma() {
  const page = { children: [] as FakeNode[], insertChild(i: number, n: FakeNode) { n.parent = page; page.children.splice(i, 0, n); } };
  const text = (name: string, characters: string, x: number, y: number, width: number, height: number, extra: Partial<FakeNode> = {}) =>
    node({ type: "TEXT", name, characters, x, y, width, height, absoluteBoundingBox: { x: 100 + x, y: 50 + y, width, height }, ...extra });
  const headline = text("headline", "SUMMER SALE", 64, 64, 512, 64);
  const hidden = text("hidden", "SECRET", 0, 0, 20, 20, { visible: false });
  const date = text("date", "July 14", 128, 400, 256, 48);
  const group = node({ type: "GROUP", name: "group", children: [date] });
  const frame = node({
    type: "FRAME", name: "Poster", x: 100, y: 50, width: 1024, height: 512,
    absoluteBoundingBox: { x: 100, y: 50, width: 1024, height: 512 },
    children: [headline, hidden, group, node({ type: "RECTANGLE", name: "bg" })],
  });
  const other = node({ type: "FRAME", name: "Other", width: 5, height: 5 });
  page.insertChild(0, frame);
  page.insertChild(1, other);

  const calls: { posted: Record<string, unknown>[]; notes: string[]; fonts: unknown[]; storage: Map<string, unknown>; handlers: Record<string, () => void> } = {
    posted: [], notes: [], fonts: [], storage: new Map(), handlers: {},
  };
  let images = 0;
  const created = (type: string) => {
    const n = node({ type, name: "" }) as FakeNode & { resize(w: number, h: number): void };
    n.resize = (w: number, h: number) => { n.width = w; n.height = h; };
    return n;
  };
  const figma = {
    showUI: (html: string, options: unknown) => { calls.posted.push({ type: "(showUI)", html, options }); },
    ui: { postMessage: (m: Record<string, unknown>) => { calls.posted.push(m); }, onmessage: undefined as ((m: unknown) => void) | undefined },
    on: (event: string, cb: () => void) => { calls.handlers[event] = cb; },
    notify: (m: string) => { calls.notes.push(m); },
    clientStorage: {
      getAsync: async (k: string) => calls.storage.get(k),
      setAsync: async (k: string, v: unknown) => { calls.storage.set(k, v); },
    },
    currentPage: { selection: [frame] as readonly NodeLike[] },
    createImage: (bytes: Uint8Array) => ({ hash: `hash-${images++}-${bytes.length}` }),
    createRectangle: () => created("RECTANGLE"),
    createText: () => created("TEXT"),
    loadFontAsync: async (font: unknown) => { calls.fonts.push(font); },
  };
  return { figma, page, frame, other, calls };
}

test("the selected frame becomes a canvas, keywords and boxes", () => {
  const { frame, other } = fakeFigma();
  const answer = readSelection([frame]);
  assert.ok("design" in answer);
  const d = answer.design;
  assert.deepEqual(d.frame, { width: 1024, height: 512 });
  // Longest side 512: everything scales by 0.5; hidden layers are left out; nested ones count.
  assert.deepEqual(d.layout, {
    width: 512,
    height: 256,
    lines: [
      { text: "SUMMER SALE", bbox: [32, 32, 288, 64] },
      { text: "July 14", bbox: [64, 200, 192, 224] },
    ],
  });
  assert.deepEqual(d.keywords, ["SUMMER SALE", "July 14"]);
  assert.deepEqual(readSelection([]), { error: "select a frame to design for" });
  assert.match((readSelection([frame, other]) as { error: string }).error, /select one frame \(2 layers/);
});

test("results go above the selection, named with seed and prompt, text optional", async () => {
  const { figma, page, frame, calls } = fakeFigma();
  (globalThis as Record<string, unknown>).figma = figma;
  const plugin = startPlugin(figma as unknown as FigmaApi, "<html>ui</html>");
  assert.equal(calls.posted[0].type, "(showUI)");

  await plugin.onMessage({ type: "ready" });
  const settings = calls.posted.find((m) => m.type === "settings");
  assert.deepEqual(settings, { type: "settings", server: DEFAULT_SERVER, apiKey: "", history: [] });
  const selection = calls.posted.find((m) => m.type === "selection") as { design: { name: string } };
  assert.equal(selection.design.name, "Poster");

  const layout = { width: 512, height: 256, lines: [{ text: "SUMMER SALE", bbox: [32, 32, 288, 64] as [number, number, number, number], color: "#ff0000" }] };
  const images = [
    { bytes: new Uint8Array([1, 2, 3]), seed: 41, prompt: "a summer poster" },
    { bytes: new Uint8Array([4, 5]), seed: 42, prompt: "a summer poster" },
  ];
  await plugin.onMessage({ type: "insert", images, layout, addText: true });

  const names = page.children.map((n) => n.name);
  assert.deepEqual(names, [
    "Poster",
    "Letterpress · seed 41 · a summer poster",
    "Letterpress · seed 42 · a summer poster",
    "Text · SUMMER SALE",
    "Other",
  ]);
  const [, first, , text] = page.children as FakeNode[];
  assert.deepEqual([first.x, first.y, first.width, first.height], [100, 50, 1024, 512]);
  assert.deepEqual(first.fills, [{ type: "IMAGE", imageHash: "hash-0-3", scaleMode: "FILL" }]);
  // Canvas → frame is ×2: the box [32, 32, 288, 64] lands at (164, 114), 512 × 64.
  assert.deepEqual([text.x, text.y, text.width, text.height, text.characters], [164, 114, 512, 64, "SUMMER SALE"]);
  assert.deepEqual(text.fills, [{ type: "SOLID", color: { r: 1, g: 0, b: 0 } }]);
  assert.deepEqual(calls.fonts, [{ family: "Inter", style: "Bold" }]);
  assert.equal(figma.currentPage.selection.length, 3, "the new layers are selected");
  assert.match(calls.notes.at(-1) ?? "", /Inserted 2 image\(s\) above "Poster"/);

  // Without text: only the image.
  figma.currentPage.selection = [frame];
  await plugin.onMessage({ type: "insert", images: images.slice(0, 1), layout, addText: false });
  assert.equal(page.children.length, 6);
  assert.equal(page.children[1].name, "Letterpress · seed 41 · a summer poster");

  // Settings and history persist in clientStorage.
  await plugin.onMessage({ type: "save-server", server: "https://posters.example.com", apiKey: "k" });
  await plugin.onMessage({ type: "save-history", entries: [{ jobId: "gen_1" }] });
  await plugin.onMessage({ type: "ready" });
  assert.deepEqual(calls.posted.filter((m) => m.type === "settings").at(-1), {
    type: "settings", server: "https://posters.example.com", apiKey: "k", history: [{ jobId: "gen_1" }],
  });
});

test("selection changes reach the UI; inserting with nothing selected is refused", async () => {
  const { figma, calls } = fakeFigma();
  const plugin = startPlugin(figma as unknown as FigmaApi, "");
  figma.currentPage.selection = [];
  calls.handlers.selectionchange();
  assert.deepEqual(calls.posted.at(-1), { type: "selection", error: "select a frame to design for" });
  await plugin.onMessage({ type: "insert", images: [], layout: { width: 1, height: 1, lines: [] }, addText: false });
  assert.match(calls.notes.at(-1) ?? "", /Select the frame/);
});

test("layer names are shortened", () => {
  assert.equal(layerName(7, "x".repeat(100)), `Letterpress · seed 7 · ${"x".repeat(79)}…`);
});

test("the manifest allows the configured server", () => {
  const manifest = JSON.parse(readFileSync("figma/manifest.json", "utf8"));
  assert.equal(manifest.main, "dist/code.js");
  assert.equal(manifest.ui, "dist/ui.html");
  assert.ok(manifest.networkAccess.allowedDomains.includes(DEFAULT_SERVER));
  assert.ok(manifest.networkAccess.reasoning);
  const ui = readFileSync("figma/dist/ui.html", "utf8");
  assert.ok(!ui.includes("/*DESIGNER_UI_JS*/") && ui.includes("Letterpress designer"), "ui.html has the designer inlined");
});

test("a build for another server writes a manifest that allows it", () => {
  execFileSync(process.execPath, ["build.mjs"], { env: { ...process.env, LETTERPRESS_SERVER: "https://posters.example.com/base/" } });
  const manifest = JSON.parse(readFileSync("figma/dist/manifest.json", "utf8"));
  rmSync("figma/dist/manifest.json");
  assert.deepEqual(manifest.networkAccess.allowedDomains, ["https://posters.example.com"]);
  assert.deepEqual([manifest.main, manifest.ui], ["code.js", "ui.html"]);
});
