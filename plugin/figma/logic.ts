// The Figma plug-in's sandbox side: reads the selected frame (size, text layers) for the UI,
// and places generated images (and optionally the layout's text) as layers above it.
//
// It is written against the small part of the Plugin API it uses (`FigmaApi` below), so the
// tests drive it with a fake `figma` object and node's test runner.

import { generationSide } from "../web/src/layout";
import type { Layout, TextLine } from "../web/src/types";

/** The server the plug-in talks to until the user sets another (manifest.json allows it). */
export const DEFAULT_SERVER = "http://localhost:8080";
/** Frames are planned at this longest side: what Stable Diffusion 1.x models paint best. */
export const CANVAS_LONG_SIDE = 512;
/** The planner takes at most 8 keywords of at most 200 characters (letterpress-layout). */
export const MAX_KEYWORDS = 8;
export const MAX_KEYWORD_CHARS = 200;
const TEXT_FONT = { family: "Inter", style: "Bold" };

export interface Rect {
  x: number;
  y: number;
  width: number;
  height: number;
}

/** The node fields the plug-in reads. */
export interface NodeLike {
  id: string;
  type: string;
  name: string;
  visible?: boolean;
  x: number;
  y: number;
  width: number;
  height: number;
  absoluteBoundingBox?: Rect | null;
  characters?: string;
  parent?: ParentLike | null;
  children?: readonly NodeLike[];
}

export interface ParentLike {
  children: readonly NodeLike[];
  insertChild(index: number, child: NodeLike): void;
}

export interface CreatedNode extends NodeLike {
  resize(width: number, height: number): void;
  fills: unknown;
}

export interface CreatedText extends CreatedNode {
  characters: string;
  fontName: { family: string; style: string };
  fontSize: number;
  textAutoResize: string;
  textAlignHorizontal: string;
}

export interface FigmaApi {
  showUI(html: string, options?: { width?: number; height?: number; title?: string; themeColors?: boolean }): void;
  ui: { postMessage(msg: unknown): void; onmessage: ((msg: unknown) => void) | undefined };
  on(event: "selectionchange", cb: () => void): void;
  notify(message: string, options?: { error?: boolean }): void;
  clientStorage: { getAsync(key: string): Promise<unknown>; setAsync(key: string, value: unknown): Promise<void> };
  currentPage: { selection: readonly NodeLike[] };
  createImage(bytes: Uint8Array): { hash: string };
  createRectangle(): CreatedNode;
  createText(): CreatedText;
  loadFontAsync(font: { family: string; style: string }): Promise<void>;
}

/** What the UI gets for the current selection. */
export interface SelectionDesign {
  nodeId: string;
  name: string;
  /** The frame's own size, in Figma units. */
  frame: { width: number; height: number };
  /** The frame scaled to a `CANVAS_LONG_SIDE` canvas, its text layers as lines. */
  layout: Layout;
  keywords: string[];
}

export type SelectionAnswer = { design: SelectionDesign } | { error: string };

/** Reads the one selected frame-like node: its size and its visible text layers. */
export function readSelection(selection: readonly NodeLike[]): SelectionAnswer {
  if (selection.length === 0) return { error: "select a frame to design for" };
  if (selection.length > 1) return { error: `select one frame (${selection.length} layers are selected)` };
  const node = selection[0];
  if (!(node.width > 0 && node.height > 0)) return { error: `"${node.name}" has no size` };
  const scale = CANVAS_LONG_SIDE / Math.max(node.width, node.height);
  const width = Math.max(64, Math.round(node.width * scale));
  const height = Math.max(64, Math.round(node.height * scale));
  const origin = node.absoluteBoundingBox ?? { x: node.x, y: node.y, width: node.width, height: node.height };
  const texts = textLayers(node);
  const lines: TextLine[] = [];
  const keywords: string[] = [];
  for (const t of texts) {
    const text = (t.characters ?? "").trim();
    if (!text) continue;
    const b = t.absoluteBoundingBox ?? { x: origin.x + t.x, y: origin.y + t.y, width: t.width, height: t.height };
    const l = clamp(Math.round((b.x - origin.x) * scale), 0, width - 1);
    const top = clamp(Math.round((b.y - origin.y) * scale), 0, height - 1);
    const r = clamp(Math.round((b.x - origin.x + b.width) * scale), l + 1, width);
    const bottom = clamp(Math.round((b.y - origin.y + b.height) * scale), top + 1, height);
    lines.push({ text, bbox: [l, top, r, bottom] });
    const keyword = text.replace(/\s+/g, " ").slice(0, MAX_KEYWORD_CHARS);
    if (keywords.length < MAX_KEYWORDS && !keywords.includes(keyword)) keywords.push(keyword);
  }
  return {
    design: {
      nodeId: node.id,
      name: node.name,
      frame: { width: node.width, height: node.height },
      layout: { width, height, lines },
      keywords,
    },
  };
}

function textLayers(node: NodeLike): NodeLike[] {
  if (node.type === "TEXT") return node.visible === false ? [] : [node];
  const out: NodeLike[] = [];
  for (const child of node.children ?? []) if (child.visible !== false) out.push(...textLayers(child));
  return out;
}

const clamp = (v: number, lo: number, hi: number) => Math.min(Math.max(v, lo), hi);

/** `Letterpress · seed 42 · a poster that says …` (prompt shortened to 80 characters). */
export function layerName(seed: number, prompt: string): string {
  const p = prompt.replace(/\s+/g, " ").trim();
  return `Letterpress · seed ${seed} · ${p.length > 80 ? `${p.slice(0, 79)}…` : p}`;
}

export interface InsertImage {
  bytes: Uint8Array;
  seed: number;
  prompt: string;
}

/**
 * Places each image as a rectangle with an image fill, the size and position of `target`,
 * directly above it in its parent's layer order; with `addText`, the layout's lines follow as
 * editable text layers on top. Answers the new layers, bottom first.
 */
export async function insertResults(
  figma: FigmaApi,
  target: NodeLike,
  images: InsertImage[],
  layout: Layout,
  addText: boolean,
): Promise<CreatedNode[]> {
  const parent = target.parent;
  if (!parent) throw new Error(`"${target.name}" has no parent to insert into`);
  let index = parent.children.indexOf(target) + 1;
  const created: CreatedNode[] = [];
  for (const image of images) {
    const hash = figma.createImage(image.bytes).hash;
    const rect = figma.createRectangle();
    rect.resize(target.width, target.height);
    rect.x = target.x;
    rect.y = target.y;
    rect.fills = [{ type: "IMAGE", imageHash: hash, scaleMode: "FILL" }];
    rect.name = layerName(image.seed, image.prompt);
    parent.insertChild(index++, rect);
    created.push(rect);
  }
  if (addText && layout.lines.length) {
    await figma.loadFontAsync(TEXT_FONT);
    const sx = target.width / layout.width;
    const sy = target.height / layout.height;
    for (const line of layout.lines) {
      const [l, t, r, b] = line.bbox;
      const text = figma.createText();
      text.fontName = TEXT_FONT;
      text.characters = line.text;
      text.textAutoResize = "NONE";
      text.resize(Math.max(1, (r - l) * sx), Math.max(1, (b - t) * sy));
      // The renderer fills the box's height with the ink of its sub-lines; cap height is about
      // 0.7 of the font size in most faces.
      const subLines = line.text.split("\n").length;
      text.fontSize = Math.max(1, Math.round(((b - t) * sy) / subLines / 1.2));
      text.textAlignHorizontal = (line.align ?? "center").toUpperCase();
      if (line.color) text.fills = [{ type: "SOLID", color: hexToRgb(line.color) }];
      text.x = target.x + l * sx;
      text.y = target.y + t * sy;
      text.name = `Text · ${line.text.replace(/\s+/g, " ")}`;
      parent.insertChild(index++, text);
      created.push(text);
    }
  }
  return created;
}

function hexToRgb(hex: string): { r: number; g: number; b: number } {
  const n = Number.parseInt(hex.slice(1), 16);
  return { r: ((n >> 16) & 255) / 255, g: ((n >> 8) & 255) / 255, b: (n & 255) / 255 };
}

/** Messages from the UI iframe. */
export type UiMessage =
  | { type: "ready" }
  | { type: "insert"; images: InsertImage[]; layout: Layout; addText: boolean }
  | { type: "save-server"; server: string; apiKey: string }
  | { type: "save-history"; entries: unknown[] };

/** Starts the plug-in: shows the UI, keeps it told of the selection, answers its messages. */
export function startPlugin(figma: FigmaApi, html: string): { onMessage: (msg: UiMessage) => Promise<void> } {
  figma.showUI(html, { width: 980, height: 760, title: "Letterpress", themeColors: true });
  let lastTarget: NodeLike | null = null;
  const postSelection = () => {
    const answer = readSelection(figma.currentPage.selection);
    if ("design" in answer) lastTarget = figma.currentPage.selection[0];
    figma.ui.postMessage({ type: "selection", ...answer });
  };
  figma.on("selectionchange", postSelection);

  const onMessage = async (msg: UiMessage) => {
    switch (msg.type) {
      case "ready": {
        const server = (await figma.clientStorage.getAsync("server")) ?? DEFAULT_SERVER;
        const apiKey = (await figma.clientStorage.getAsync("apiKey")) ?? "";
        const history = (await figma.clientStorage.getAsync("history")) ?? [];
        figma.ui.postMessage({ type: "settings", server, apiKey, history });
        postSelection();
        break;
      }
      case "insert": {
        const target = figma.currentPage.selection.length === 1 ? figma.currentPage.selection[0] : lastTarget;
        if (!target) {
          figma.notify("Select the frame to place the results over", { error: true });
          return;
        }
        const created = await insertResults(figma, target, msg.images, msg.layout, msg.addText);
        figma.currentPage.selection = created;
        figma.notify(`Inserted ${msg.images.length} image(s) above "${target.name}"`);
        figma.ui.postMessage({ type: "inserted", count: created.length });
        break;
      }
      case "save-server":
        await figma.clientStorage.setAsync("server", msg.server);
        await figma.clientStorage.setAsync("apiKey", msg.apiKey);
        break;
      case "save-history":
        await figma.clientStorage.setAsync("history", msg.entries);
        break;
    }
  };
  figma.ui.onmessage = (msg: unknown) => {
    onMessage(msg as UiMessage).catch((e: Error) => figma.notify(e.message, { error: true }));
  };
  return { onMessage };
}

/** The canvas a frame's generation uses (sides rounded to multiples of 8). */
export function generationSize(layout: Layout): { width: number; height: number } {
  return { width: generationSide(layout.width), height: generationSide(layout.height) };
}
