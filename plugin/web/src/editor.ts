// The box editor: the glyph mask as the canvas, one draggable, resizable box per text line
// over it. Positions are kept in canvas pixels; the DOM shows them in percent, so the stage can
// be any size on screen.

import { HANDLES, type Handle, moveBox, newLine, resizeBox } from "./layout";
import type { Layout, TextLine } from "./types";

export type ChangeReason = "drag" | "resize" | "add" | "delete" | "edit" | "load";

interface Drag {
  index: number;
  handle: Handle | null;
  startX: number;
  startY: number;
  start: TextLine["bbox"];
  moved: boolean;
}

export class LayoutEditor {
  readonly stage: HTMLElement;
  private readonly maskImg: HTMLImageElement;
  private readonly overlay: HTMLElement;
  private layoutValue: Layout = { width: 512, height: 512, lines: [] };
  private selectedIndex = -1;
  private drag: Drag | null = null;
  /** Called after every edit; `final` is false while a drag is still under way. */
  onChange: (layout: Layout, reason: ChangeReason, final: boolean) => void = () => {};
  onSelect: (index: number) => void = () => {};

  constructor(container: HTMLElement) {
    this.stage = document.createElement("div");
    this.stage.className = "stage";
    this.stage.tabIndex = 0;
    this.stage.dataset.testid = "stage";
    this.maskImg = document.createElement("img");
    this.maskImg.className = "mask";
    this.maskImg.alt = "glyph mask preview";
    this.maskImg.dataset.testid = "mask";
    this.overlay = document.createElement("div");
    this.overlay.className = "boxes";
    this.stage.append(this.maskImg, this.overlay);
    container.append(this.stage);

    this.overlay.addEventListener("pointerdown", (e) => this.pointerDown(e));
    window.addEventListener("pointermove", (e) => this.pointerMove(e));
    window.addEventListener("pointerup", () => this.pointerUp());
    this.stage.addEventListener("keydown", (e) => this.key(e));
    this.draw();
  }

  get layout(): Layout {
    return this.layoutValue;
  }

  get selected(): number {
    return this.selectedIndex;
  }

  setLayout(layout: Layout, reason: ChangeReason = "load"): void {
    this.layoutValue = { width: layout.width, height: layout.height, lines: layout.lines.map((l) => ({ ...l })) };
    if (this.selectedIndex >= layout.lines.length) this.selectedIndex = layout.lines.length - 1;
    this.draw();
    this.onChange(this.layoutValue, reason, true);
  }

  /** Shows a mask (an object URL); the previous one is released. */
  setMask(url: string): void {
    const old = this.maskImg.src;
    this.maskImg.src = url;
    if (old.startsWith("blob:")) URL.revokeObjectURL(old);
  }

  select(index: number): void {
    this.selectedIndex = index;
    this.draw();
    this.onSelect(index);
  }

  update(index: number, patch: Partial<TextLine>): void {
    const line = this.layoutValue.lines[index];
    if (!line) return;
    Object.assign(line, patch);
    for (const k of Object.keys(patch) as (keyof TextLine)[]) if (patch[k] === undefined) delete line[k];
    this.draw();
    this.onChange(this.layoutValue, "edit", true);
  }

  add(text?: string): void {
    this.layoutValue.lines.push(newLine(this.layoutValue, text));
    this.selectedIndex = this.layoutValue.lines.length - 1;
    this.draw();
    this.onSelect(this.selectedIndex);
    this.onChange(this.layoutValue, "add", true);
  }

  remove(index = this.selectedIndex): void {
    if (index < 0 || index >= this.layoutValue.lines.length) return;
    this.layoutValue.lines.splice(index, 1);
    this.selectedIndex = Math.min(index, this.layoutValue.lines.length - 1);
    this.draw();
    this.onSelect(this.selectedIndex);
    this.onChange(this.layoutValue, "delete", true);
  }

  private pxPerCanvas(): number {
    const w = this.overlay.getBoundingClientRect().width;
    return w > 0 ? w / this.layoutValue.width : 1;
  }

  private pointerDown(e: PointerEvent): void {
    const target = e.target as HTMLElement;
    const box = target.closest<HTMLElement>(".box");
    if (!box) {
      this.select(-1);
      return;
    }
    e.preventDefault();
    const index = Number(box.dataset.index);
    if (index !== this.selectedIndex) this.select(index);
    this.stage.focus();
    this.drag = {
      index,
      handle: (target.dataset.handle as Handle | undefined) ?? null,
      startX: e.clientX,
      startY: e.clientY,
      start: [...this.layoutValue.lines[index].bbox],
      moved: false,
    };
  }

  private pointerMove(e: PointerEvent): void {
    const d = this.drag;
    if (!d) return;
    const s = this.pxPerCanvas();
    const dx = (e.clientX - d.startX) / s;
    const dy = (e.clientY - d.startY) / s;
    const { width, height } = this.layoutValue;
    const line = this.layoutValue.lines[d.index];
    line.bbox = d.handle ? resizeBox(d.start, d.handle, dx, dy, width, height) : moveBox(d.start, dx, dy, width, height);
    d.moved = true;
    this.draw();
    this.onChange(this.layoutValue, d.handle ? "resize" : "drag", false);
  }

  private pointerUp(): void {
    const d = this.drag;
    this.drag = null;
    if (d?.moved) this.onChange(this.layoutValue, d.handle ? "resize" : "drag", true);
  }

  private key(e: KeyboardEvent): void {
    const i = this.selectedIndex;
    if (i < 0 || (e.target as HTMLElement) !== this.stage) return;
    if (e.key === "Delete" || e.key === "Backspace") {
      e.preventDefault();
      this.remove(i);
      return;
    }
    const step = e.shiftKey ? 10 : 1;
    const arrows: Record<string, [number, number]> = {
      ArrowLeft: [-step, 0],
      ArrowRight: [step, 0],
      ArrowUp: [0, -step],
      ArrowDown: [0, step],
    };
    const delta = arrows[e.key];
    if (!delta) return;
    e.preventDefault();
    const line = this.layoutValue.lines[i];
    line.bbox = moveBox(line.bbox, delta[0], delta[1], this.layoutValue.width, this.layoutValue.height);
    this.draw();
    this.onChange(this.layoutValue, "drag", true);
  }

  private draw(): void {
    const { width, height, lines } = this.layoutValue;
    this.stage.style.aspectRatio = `${width} / ${height}`;
    this.overlay.replaceChildren(
      ...lines.map((line, i) => {
        const box = document.createElement("div");
        box.className = i === this.selectedIndex ? "box selected" : "box";
        box.dataset.index = String(i);
        box.dataset.testid = "box";
        const [l, t, r, b] = line.bbox;
        Object.assign(box.style, {
          left: `${(100 * l) / width}%`,
          top: `${(100 * t) / height}%`,
          width: `${(100 * (r - l)) / width}%`,
          height: `${(100 * (b - t)) / height}%`,
        });
        const label = document.createElement("span");
        label.className = "label";
        label.textContent = line.text.replace(/\n/g, " ⏎ ") || "(empty)";
        box.append(label);
        if (i === this.selectedIndex) {
          for (const h of HANDLES) {
            const handle = document.createElement("div");
            handle.className = `handle ${h}`;
            handle.dataset.handle = h;
            box.append(handle);
          }
        }
        return box;
      }),
    );
  }
}
