#!/usr/bin/env python3
"""Reference for `letterpress bench render`: the same layouts drawn with PIL ImageDraw.text.

Each line's font size is found by a size search (binary search over integer sizes for the
largest whose text bbox fits the box, as TextDiffuser-style renderers fit text), then the text
is drawn centred. FreeType font objects are cached per size so font loading is not timed.
Prints per-mask milliseconds for the size search and for drawing with sizes already known.
"""
import argparse
import json
import time

from PIL import Image, ImageDraw, ImageFont


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--layouts", required=True)
    ap.add_argument("--font", required=True)
    ap.add_argument("--font-index", type=int, default=0)
    ap.add_argument("--n", type=int, default=2000)
    args = ap.parse_args()
    layouts = json.load(open(args.layouts))
    fonts = {}

    def font(size):
        if size not in fonts:
            fonts[size] = ImageFont.truetype(args.font, size, index=args.font_index)
        return fonts[size]

    def fit(text, box):
        l, t, r, b = box
        lo, hi = 1, max(2, (b - t) * 2)
        while lo < hi:  # largest size whose ink bbox fits the box
            mid = (lo + hi + 1) // 2
            x0, y0, x1, y1 = font(mid).getbbox(text)
            if x1 - x0 <= r - l and y1 - y0 <= b - t:
                lo = mid
            else:
                hi = mid - 1
        return font(lo)

    def draw(layout, chosen=None):
        img = Image.new("L", (layout["width"], layout["height"]), 0)
        d = ImageDraw.Draw(img)
        used = []
        for i, line in enumerate(layout["lines"]):
            l, t, r, b = line["bbox"]
            f = chosen[i] if chosen else fit(line["text"], line["bbox"])
            x0, y0, x1, y1 = d.textbbox((0, 0), line["text"], font=f)
            x = l + ((r - l) - (x1 - x0)) / 2 - x0
            y = t + ((b - t) - (y1 - y0)) / 2 - y0
            d.text((x, y), line["text"], fill=255, font=f)
            used.append(f)
        return img, used

    # Warm-up (fills the per-size font cache), and the sizes for the known-size variant.
    known = [draw(layout)[1] for layout in layouts]

    start = time.perf_counter()
    for i in range(args.n):
        draw(layouts[i % len(layouts)])
    search_ms = (time.perf_counter() - start) * 1e3 / args.n

    start = time.perf_counter()
    for i in range(args.n):
        draw(layouts[i % len(layouts)], known[i % len(layouts)])
    known_ms = (time.perf_counter() - start) * 1e3 / args.n

    print(f"per_mask_ms_size_search: {search_ms:.4f}")
    print(f"per_mask_ms_known_size: {known_ms:.4f}")


if __name__ == "__main__":
    main()
