// "Edit text in an uploaded image": the replacements as the user types them (one OLD=NEW per
// line) and the picture as the base64 PNG that `POST /v1/edits` takes.

export interface Replacement {
  old: string;
  new: string;
}

/** One `OLD=NEW` per non-blank line; an error names the line that is not one. */
export function parseReplacements(text: string): Replacement[] {
  const out: Replacement[] = [];
  text.split(/\r?\n/).forEach((line, i) => {
    if (!line.trim()) return;
    const at = line.indexOf("=");
    const old = at < 0 ? "" : line.slice(0, at).trim();
    const rep = at < 0 ? "" : line.slice(at + 1).trim();
    if (!old || !rep) throw new Error(`replacement line ${i + 1} ("${line.trim()}"): write OLD=NEW`);
    out.push({ old, new: rep });
  });
  if (!out.length) throw new Error("write at least one replacement, OLD=NEW");
  if (out.length > 8) throw new Error(`${out.length} replacements: at most 8`);
  return out;
}

/** Standard base64 of `bytes`, in chunks (a single spread would overflow the stack). */
export function bytesToBase64(bytes: Uint8Array): string {
  let binary = "";
  for (let i = 0; i < bytes.length; i += 0x8000) {
    binary += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  }
  return btoa(binary);
}
