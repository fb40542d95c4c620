// The JSON shapes of letterpress-api (api/src/input.rs, routes/*.rs) that the designer uses.

/** `[left, top, right, bottom]` in canvas pixels. */
export type BBox = [number, number, number, number];

export interface TextLine {
  text: string;
  bbox: BBox;
  font?: string;
  /** `#rrggbb` */
  color?: string;
  align?: "left" | "center" | "right";
}

export interface Layout {
  width: number;
  height: number;
  lines: TextLine[];
}

/** `POST /v1/layouts` answers a layout with how it was planned. */
export interface Plan extends Layout {
  planner: string;
  template?: string;
  seed: number;
  warnings: string[];
  prompt: string;
  keywords: string[];
}

export interface GenerationSettings {
  prompt: string;
  negative_prompt: string;
  keywords: string[];
  /** `null` asks the server for a random seed; the one used is echoed. */
  seed: number | null;
  steps: number;
  guidance_scale: number;
  scheduler: string;
  n: number;
  controlnet_conditioning_scale: number;
  preview_every: number;
}

export interface GenerationRequest extends GenerationSettings {
  layout: Layout;
  width: number;
  height: number;
  output_format: "png";
  /** Start from this picture: a file id of an earlier result (or a base64 PNG). */
  init_image?: string;
  /** With `init_image`: repaint only this line (index into `layout.lines`) in place. */
  inpaint_line?: number;
  /** With `init_image`: how much is repainted, (0, 1]. */
  strength?: number;
}

export type JobStatus =
  | "queued"
  | "planning"
  | "rendering"
  | "running"
  | "succeeded"
  | "failed"
  | "canceled";

export interface FileRef {
  id: string;
  url: string;
}

export interface Job {
  id: string;
  status: JobStatus;
  input: GenerationRequest & { seed: number };
  output: null | {
    images: FileRef[];
    mask: FileRef;
    layout: FileRef;
    seed: number;
  };
  error: null | { code: string; message: string };
  urls: { get: string; cancel: string; events: string };
}

/** One server-sent event of `GET /v1/generations/{id}/events`. */
export interface JobEvent {
  id: string;
  event: string;
  data: Record<string, unknown>;
}

/** `POST /v1/edits`: replace text in a picture. */
export interface EditRequest {
  /** A base64 PNG (or the file id of one of your PNG results). */
  image: string;
  replacements: { old: string; new: string }[];
  prompt?: string;
  seed?: number | null;
  steps?: number;
  guidance_scale?: number;
  output_format: "png";
}
