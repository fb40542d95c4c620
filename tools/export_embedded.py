"""Copies a trained pipeline folder (the output of `letterpress train controlnet --train-base`)
into the committed embedded model, weights in fp16 (half the bytes; letterpress's loaders cast
them back to fp32 on the CPU). Only the files the binary embeds are written
(src/embedded_model.rs lists them).

    .venv/bin/python tools/export_embedded.py runs/joint models/embedded

A run stopped at a checkpoint exports too: `--checkpoint runs/joint/checkpoint-N --base
runs/vae16` takes the trained components' EMA averages from the checkpoint's
`ema.safetensors` (their live weights when it has none) and the rest from the base.
"""
import argparse
import json
import os
import shutil

import torch
from safetensors.torch import load_file, save_file

FILES = [
    "model_index.json",
    "scheduler/scheduler_config.json",
    "tokenizer/vocab.json",
    "tokenizer/merges.txt",
    "tokenizer/tokenizer_config.json",
    "text_encoder/config.json",
    "text_encoder/model.safetensors",
    "unet/config.json",
    "unet/diffusion_pytorch_model.safetensors",
    "vae/config.json",
    "vae/diffusion_pytorch_model.safetensors",
    "controlnet/config.json",
    "controlnet/diffusion_pytorch_model.safetensors",
]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("run", help="a finished run folder, or with --base a checkpoint folder")
    ap.add_argument("out")
    ap.add_argument("--base", help="where the components a checkpoint lacks come from")
    args = ap.parse_args()
    ema_path = os.path.join(args.run, "ema.safetensors")
    ema = load_file(ema_path) if args.base and os.path.exists(ema_path) else {}
    total = 0
    for f in FILES:
        src, dst = os.path.join(args.run, f), os.path.join(args.out, f)
        if args.base and not os.path.exists(src):
            src = os.path.join(args.base, f)
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
