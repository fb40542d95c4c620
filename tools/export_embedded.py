"""Copies a trained pipeline folder (the output of `letterpress train controlnet --train-base`)
into the committed embedded model, weights in fp16 (half the bytes; letterpress's loaders cast
them back to fp32 on the CPU). Only the files the binary embeds are written
(src/embedded_model.rs lists them).

    .venv/bin/python tools/export_embedded.py runs/joint models/embedded

A pipeline without a ControlNet (a UNet that reads the glyph mask as input channels) exports
without one. A run stopped at a checkpoint exports too: `runs/joint/checkpoint-N models/embedded --base
runs/vae16` takes the trained components' EMA averages from the checkpoint's
`ema.safetensors` (their live weights when it has none) and the rest from the base.
"""
import argparse
import json
import os
import re
import shutil

from safetensors.torch import load_file, save_file


def embedded_files():
    """The files the binary embeds, as `embedded![...]` in src/embedded_model.rs lists them (one
    list, so the export and the binary cannot disagree)."""
    src = open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src",
                            "embedded_model.rs")).read()
    block = src[src.index("embedded![") : src.index("];", src.index("embedded!["))]
    return re.findall(r'"([^"]+)"', block)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("run", help="a finished run folder, or with --base a checkpoint folder")
    ap.add_argument("out")
    ap.add_argument("--base", help="where the components a checkpoint lacks come from")
    args = ap.parse_args()
    if not os.path.isdir(args.run):
        ap.error(f"{args.run} is not a folder (a finished run, or a checkpoint kept by --keep-checkpoints)")
    ema_path = os.path.join(args.run, "ema.safetensors")
    ema = load_file(ema_path) if args.base and os.path.exists(ema_path) else {}
    total = 0
    has_controlnet = os.path.isdir(os.path.join(args.run, "controlnet"))
    for f in embedded_files():
        src, dst = os.path.join(args.run, f), os.path.join(args.out, f)
        if args.base and not os.path.exists(src):
            src = os.path.join(args.base, f)
        if f.startswith("controlnet/") and not has_controlnet:
            # A glyph-input UNet's pipeline has no ControlNet (docs/architecture.md).
            continue
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        if f.endswith(".safetensors"):
            component = f.split("/")[0]
            tensors = load_file(src)
            for k in tensors:
                if f"{component}.{k}" in ema:
                    tensors[k] = ema[f"{component}.{k}"]
            tensors = {
                k: (v.half() if v.is_floating_point() else v).contiguous()
                for k, v in tensors.items()
            }
            save_file(tensors, dst)
        elif f == "model_index.json" and args.base:
            with open(src) as fh:
                index = json.load(fh)
            if has_controlnet:
                index["controlnet"] = ["diffusers", "ControlNetModel"]
            with open(dst, "w") as fh:
                json.dump(index, fh, indent=2)
                fh.write("\n")
        else:
            shutil.copyfile(src, dst)
        total += os.path.getsize(dst)
        print(f"{f:50s} {os.path.getsize(dst) / 2**20:7.2f} MB")
    print(f"{'total':50s} {total / 2**20:7.2f} MB")


if __name__ == "__main__":
    main()
