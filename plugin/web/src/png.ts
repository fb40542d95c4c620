// PNG text chunks, so a downloaded poster carries how it was made. `parameters` follows the
// AUTOMATIC1111 convention other tools read; `letterpress` holds the full request as JSON.

const SIGNATURE = [137, 80, 78, 71, 13, 10, 26, 10];

const CRC_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();

/** CRC-32 as PNG (ISO 3309) computes it. */
export function crc32(bytes: Uint8Array): number {
  let c = 0xffffffff;
  for (const b of bytes) c = CRC_TABLE[(c ^ b) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

export interface Chunk {
  type: string;
  data: Uint8Array;
}

/** Splits a PNG into chunks, checking the signature and every CRC. */
export function readChunks(png: Uint8Array): Chunk[] {
  if (png.length < 8 || !SIGNATURE.every((b, i) => png[i] === b)) throw new Error("not a PNG file");
  const view = new DataView(png.buffer, png.byteOffset, png.byteLength);
  const chunks: Chunk[] = [];
  let at = 8;
  while (at + 12 <= png.length) {
    const length = view.getUint32(at);
    if (at + 12 + length > png.length) throw new Error("truncated PNG chunk");
    const typeAndData = png.subarray(at + 4, at + 8 + length);
    const type = String.fromCharCode(...typeAndData.subarray(0, 4));
    if (crc32(typeAndData) !== view.getUint32(at + 8 + length)) throw new Error(`bad CRC in ${type} chunk`);
    chunks.push({ type, data: png.slice(at + 8, at + 8 + length) });
    at += 12 + length;
    if (type === "IEND") break;
  }
  return chunks;
}

function chunkBytes(type: string, data: Uint8Array): Uint8Array {
  const out = new Uint8Array(12 + data.length);
  const view = new DataView(out.buffer);
  view.setUint32(0, data.length);
  for (let i = 0; i < 4; i++) out[4 + i] = type.charCodeAt(i);
  out.set(data, 8);
  view.setUint32(8 + data.length, crc32(out.subarray(4, 8 + data.length)));
  return out;
}

/** An `iTXt` chunk (UTF-8, uncompressed): keyword, NUL, flag 0, method 0, empty language
 * and translated keyword, then the text (PNG spec 11.3.4.5). */
function itxt(keyword: string, text: string): Uint8Array {
  const enc = new TextEncoder();
  const k = enc.encode(keyword);
  const t = enc.encode(text);
  const data = new Uint8Array(k.length + 5 + t.length);
  data.set(k, 0);
  // k.length: NUL; +1 compression flag 0; +2 method 0; +3 empty language NUL; +4 empty keyword NUL
  data.set(t, k.length + 5);
  return chunkBytes("iTXt", data);
}

/** The PNG with `entries` added as iTXt chunks just before IEND. */
export function withText(png: Uint8Array, entries: Record<string, string>): Uint8Array {
  const chunks = readChunks(png);
  const parts: Uint8Array[] = [Uint8Array.from(SIGNATURE)];
  for (const c of chunks) {
    if (c.type === "IEND") for (const [k, v] of Object.entries(entries)) parts.push(itxt(k, v));
    parts.push(chunkBytes(c.type, c.data));
  }
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** The text chunks (tEXt and iTXt) of a PNG. */
export function readText(png: Uint8Array): Record<string, string> {
  const dec = new TextDecoder();
  const out: Record<string, string> = {};
  for (const c of readChunks(png)) {
    const nul = c.data.indexOf(0);
    if (nul < 0) continue;
    const key = dec.decode(c.data.subarray(0, nul));
    if (c.type === "tEXt") out[key] = dec.decode(c.data.subarray(nul + 1));
    if (c.type === "iTXt") {
      let at = nul + 3;
      at = c.data.indexOf(0, at) + 1; // language
      at = c.data.indexOf(0, at) + 1; // translated keyword
      out[key] = dec.decode(c.data.subarray(at));
    }
  }
  return out;
}

/** AUTOMATIC1111-style `parameters` text. */
export function parametersText(p: {
  prompt: string;
  negative_prompt?: string;
  steps: number;
  scheduler: string;
  guidance_scale: number;
  seed: number;
  width: number;
  height: number;
}): string {
  const neg = p.negative_prompt ? `\nNegative prompt: ${p.negative_prompt}` : "";
  return `${p.prompt}${neg}\nSteps: ${p.steps}, Sampler: ${p.scheduler}, CFG scale: ${p.guidance_scale}, Seed: ${p.seed}, Size: ${p.width}x${p.height}, Model: letterpress`;
}
