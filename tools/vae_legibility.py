#!/usr/bin/env python3
"""How much text a VAE keeps: tesseract (--psm 11) on 256x256 corpus posters and on their
reconstructions (encode to the posterior mean, decode), counting the caption's quoted words it
reads back. The first limit of a small model's legibility (models/README.md).

    .venv/bin/python tools/vae_legibility.py --data data/synth/00000.tar --n 24 \
        runs/vae-f4/vae models/embedded/vae

Needs the oracle venv (scripts/setup --oracle) and tesseract.
"""
import argparse
import io
import json
import re
import subprocess
import tarfile
import tempfile

import numpy as np
import torch
from diffusers import AutoencoderKL
from PIL import Image


def samples(tar_path, n):
    with tarfile.open(tar_path) as tar:
        members = {m.name: m for m in tar.getmembers()}
        keys = sorted({name.split(".")[0] for name in members})
        for key in keys[:n]:
            image = Image.open(io.BytesIO(tar.extractfile(members[f"{key}.png"]).read())).convert("RGB")
            meta = json.loads(tar.extractfile(members[f"{key}.json"]).read())
            words = [w for q in re.findall(r"'([^']*)'", meta["caption"]) for w in q.split()]
            yield key, image, words


def words_read(image):
    with tempfile.NamedTemporaryFile(suffix=".png") as f:
        image.save(f.name)
        out = subprocess.run(
            ["tesseract", f.name, "-", "--psm", "11"], capture_output=True, text=True, check=True
        ).stdout
    return {w.lower() for w in re.findall(r"[A-Za-z0-9]+", out)}


def reconstruct(vae, image):
    x = torch.from_numpy(np.asarray(image, dtype=np.float32) / 127.5 - 1.0).permute(2, 0, 1)[None]
    with torch.no_grad():
        z = vae.encode(x).latent_dist.mean
        y = vae.decode(z).sample
    y = ((y[0].permute(1, 2, 0).clamp(-1, 1) + 1) * 127.5).round().byte().numpy()
    return Image.fromarray(y, "RGB")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="a shard .tar of `letterpress dataset synth`")
    ap.add_argument("--n", type=int, default=24)
    ap.add_argument("vaes", nargs="+", help="diffusers AutoencoderKL folders")
    args = ap.parse_args()
    torch.set_num_threads(2)
    vaes = [(p, AutoencoderKL.from_pretrained(p, torch_dtype=torch.float32).eval()) for p in args.vaes]
    total = 0
    read = {"original": 0, **{p: 0 for p, _ in vaes}}
    l1 = {p: [] for p, _ in vaes}
    for _, image, words in samples(args.data, args.n):
        wanted = [w.lower() for w in words]
        total += len(wanted)
        found = words_read(image)
        read["original"] += sum(w in found for w in wanted)
        for p, vae in vaes:
            rec = reconstruct(vae, image)
            l1[p].append(np.abs(np.asarray(rec, np.float32) - np.asarray(image, np.float32)).mean() / 127.5)
            found = words_read(rec)
            read[p] += sum(w in found for w in wanted)
    print(f"| images | source | mean L1 ([-1, 1] scale) | words read |")
    print(f"| --- | --- | --- | --- |")
    print(f"| {args.n} | original | 0 | {read['original']} / {total} |")
    for p, _ in vaes:
        print(f"| {args.n} | {p} | {np.mean(l1[p]):.4f} | {read[p]} / {total} |")


if __name__ == "__main__":
    main()
