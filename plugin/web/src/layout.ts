// Pure layout edits: what dragging, resizing, adding and importing do to boxes. The DOM editor
// (editor.ts) and the Figma plug-in both go through these, and the unit tests check them.

import type { BBox, Layout, TextLine } from "./types";

/** Boxes never get smaller than this many canvas pixels along a side. */
export const MIN_BOX = 8;
/** The API's limits (api/src/input.rs): canvas sides and lines. */
export const MAX_SIDE = 2048;
export const MAX_LINES = 64;

export type Handle = "n" | "s" | "e" | "w" | "ne" | "nw" | "se" | "sw";
export const HANDLES: Handle[] = ["nw", "n", "ne", "e", "se", "s", "sw", "w"];

const clamp = (v: number, lo: number, hi: number) => Math.min(Math.max(v, lo), hi);

/** Moves a box by (dx, dy), keeping it whole on the canvas. */
export function moveBox(b: BBox, dx: number, dy: number, width: number, height: number): BBox {
  const w = b[2] - b[0];
  const h = b[3] - b[1];
  const left = clamp(Math.round(b[0] + dx), 0, Math.max(0, width - w));
  const top = clamp(Math.round(b[1] + dy), 0, Math.max(0, height - h));
  return [left, top, left + w, top + h];
}

/** Drags one edge or corner of a box by (dx, dy); the opposite side stays, the box stays on
 * the canvas and at least `MIN_BOX` wide and high. */
export function resizeBox(b: BBox, handle: Handle, dx: number, dy: number, width: number, height: number): BBox {
  let [l, t, r, bottom] = b;
  if (handle.includes("w")) l = clamp(Math.round(l + dx), 0, r - MIN_BOX);
  if (handle.includes("e")) r = clamp(Math.round(r + dx), l + MIN_BOX, width);
  if (handle.includes("n")) t = clamp(Math.round(t + dy), 0, bottom - MIN_BOX);
  if (handle.includes("s")) bottom = clamp(Math.round(bottom + dy), t + MIN_BOX, height);
  return [l, t, r, bottom];
}

/** A new line in the largest free horizontal band, or centred when the canvas is full. */
export function newLine(layout: Layout, text = "New line"): TextLine {
  const h = Math.max(MIN_BOX, Math.round(layout.height / 10));
  const w = Math.max(MIN_BOX, Math.round(layout.width * 0.6));
  const left = Math.round((layout.width - w) / 2);
  const taken = layout.lines.map((l) => [l.bbox[1], l.bbox[3]] as const);
  let best = Math.round((layout.height - h) / 2);
  let bestGap = -1;
  for (let top = 0; top + h <= layout.height; top += Math.max(1, Math.round(h / 4))) {
    const gap = Math.min(
      ...taken.map(([a, b]) => (top + h <= a ? a - (top + h) : top >= b ? top - b : -1)),
      Number.MAX_SAFE_INTEGER,
    );
    if (gap > bestGap) {
      bestGap = gap;
      best = top;
    }
  }
  return { text, bbox: [left, best, left + w, best + h] };
}

/** Scales a layout to another canvas size (Figma frames, imported files). */
export function scaleLayout(layout: Layout, width: number, height: number): Layout {
  const sx = width / layout.width;
  const sy = height / layout.height;
  return {
    width,
    height,
    lines: layout.lines.map((l) => ({
      ...l,
      bbox: [Math.round(l.bbox[0] * sx), Math.round(l.bbox[1] * sy), Math.round(l.bbox[2] * sx), Math.round(l.bbox[3] * sy)],
    })),
  };
}

/** Layout JSON as `letterpress render` and the API read it, checked with errors that say
 * which line and field are wrong. Extra keys of a plan (planner, seed, …) are dropped. */
export function parseLayoutJson(text: string): Layout {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (e) {
    throw new Error(`not JSON: ${(e as Error).message}`);
  }
  if (typeof v !== "object" || v === null || Array.isArray(v)) throw new Error("a layout must be a JSON object");
  const o = v as Record<string, unknown>;
  const side = (k: "width" | "height") => {
    const s = o[k];
    if (typeof s !== "number" || !Number.isInteger(s) || s < 1 || s > MAX_SIDE) {
      throw new Error(`${k} must be a whole number from 1 to ${MAX_SIDE}`);
    }
    return s;
  };
  const width = side("width");
  const height = side("height");
  const raw = o.lines ?? [];
  if (!Array.isArray(raw) || raw.length > MAX_LINES) throw new Error(`lines must be a list of at most ${MAX_LINES} lines`);
  const lines = raw.map((item: unknown, i): TextLine => {
    const l = item as Record<string, unknown>;
    if (typeof l !== "object" || l === null) throw new Error(`lines[${i}] must be an object`);
    if (typeof l.text !== "string") throw new Error(`lines[${i}].text must be a string`);
    const b = l.bbox;
    if (!Array.isArray(b) || b.length !== 4 || !b.every((x) => Number.isInteger(x))) {
      throw new Error(`lines[${i}].bbox must be [left, top, right, bottom] in whole pixels`);
    }
    if (b[2] <= b[0] || b[3] <= b[1]) throw new Error(`lines[${i}].bbox has no area: right must exceed left and bottom top`);
    const line: TextLine = { text: l.text, bbox: [b[0], b[1], b[2], b[3]] };
    if (typeof l.font === "string") line.font = l.font;
    if (typeof l.color === "string") {
      if (!/^#[0-9a-fA-F]{6}$/.test(l.color)) throw new Error(`lines[${i}].color must be #rrggbb`);
      line.color = l.color;
    }
    if (l.align === "left" || l.align === "center" || l.align === "right") line.align = l.align;
    return line;
  });
  return { width, height, lines };
}

/** Only the fields the API's layout takes (`width`, `height`, `lines`). */
export function bareLayout(layout: Layout): Layout {
  return { width: layout.width, height: layout.height, lines: layout.lines.map((l) => ({ ...l })) };
}

/** Generation sides must be multiples of 8 from 64 to 2048. */
export function generationSide(v: number): number {
  return clamp(Math.ceil(v / 8) * 8, 64, MAX_SIDE);
}
