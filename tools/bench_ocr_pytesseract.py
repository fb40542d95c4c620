#!/usr/bin/env python3
"""Reference for `letterpress bench ocr`: the same OCR with pytesseract, as a Python
dataset pipeline would run it.

Per image: Pillow reads the header and skips images whose short side is under 256 (as
`dataset build` does, before any OCR), decodes the rest to greyscale, pytesseract runs the
`tesseract` program once with the settings `letterpress dataset build` uses (psm 11, eng) and
both outputs it reads (TSV words and hOCR with character boxes), then the TSV is parsed into
words and `dataset build`'s default filters are applied (words with confidence >= 30 count;
1-8 words, word boxes covering >= 10 % of the image, mean confidence >= 70). Images are spread
over a multiprocessing pool of --jobs workers (one process per core), OMP_THREAD_LIMIT=1 as
for ours. Prints `images:`, `kept:`, `seconds:` and `images_per_s:`.
"""
import argparse
import multiprocessing
import os
import tempfile
import time

os.environ.setdefault("OMP_THREAD_LIMIT", "1")

import pytesseract  # noqa: E402
from PIL import Image  # noqa: E402

CONFIG = "--psm 11 -c tessedit_create_tsv=1 -c tessedit_create_hocr=1 -c hocr_char_boxes=1"


MIN_SIDE = 256
WORD_MIN_CONFIDENCE = 30.0
MIN_WORDS, MAX_WORDS = 1, 8
MIN_TEXT_AREA = 0.10
MIN_MEAN_CONFIDENCE = 70.0


def keep(words, width, height):
    """dataset build's default filters on the recognised words."""
    words = [w for w in words if w[5] >= WORD_MIN_CONFIDENCE]
    if not MIN_WORDS <= len(words) <= MAX_WORDS:
        return False
    area = sum(max(w[3], 0) * max(w[4], 0) for w in words) / max(width * height, 1)
    if min(area, 1.0) < MIN_TEXT_AREA:
        return False
    return sum(w[5] for w in words) / len(words) >= MIN_MEAN_CONFIDENCE


def ocr(path):
    image = Image.open(path)
    if min(image.size) < MIN_SIDE:
        return 0, 0, False
    image = image.convert("L")
    with tempfile.TemporaryDirectory() as tmp:
        source = os.path.join(tmp, "input.png")
        base = os.path.join(tmp, "output")
        image.save(source)
        pytesseract.pytesseract.run_tesseract(
            source, base, extension="tsv", lang="eng", config=CONFIG
        )
        with open(base + ".tsv", encoding="utf-8") as f:
            tsv = f.read()
        with open(base + ".hocr", encoding="utf-8") as f:
            hocr = f.read()
    words = []
    for line in tsv.splitlines()[1:]:
        f = line.split("\t")
        if len(f) >= 12 and f[0] == "5" and f[11].strip():
            words.append((f[11], int(f[6]), int(f[7]), int(f[8]), int(f[9]), float(f[10])))
    return len(words), hocr.count("ocrx_cinfo"), keep(words, *image.size)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", required=True, help="folder of images")
    ap.add_argument("--jobs", type=int, default=2)
    args = ap.parse_args()
    paths = sorted(
        os.path.join(args.images, n)
        for n in os.listdir(args.images)
        if n.lower().endswith((".png", ".jpg", ".jpeg"))
    )
    start = time.perf_counter()
    with multiprocessing.Pool(args.jobs) as pool:
        results = pool.map(ocr, paths, chunksize=1)
    seconds = time.perf_counter() - start
    print(f"images: {len(paths)}")
    print(f"kept: {sum(r[2] for r in results)}")
    print(f"words: {sum(r[0] for r in results)}")
    print(f"chars: {sum(r[1] for r in results)}")
    print(f"seconds: {seconds:.3f}")
    print(f"images_per_s: {len(paths) / seconds:.3f}")


if __name__ == "__main__":
    main()
