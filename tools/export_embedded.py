"""Copies a trained pipeline folder (the output of `letterpress train controlnet --train-base`)
into the committed embedded model, weights in fp16 (half the bytes; letterpress's loaders cast
them back to fp32 on the CPU). Only the files the binary embeds are written
(src/embedded_model.rs lists them).

    .venv/bin/python tools/export_embedded.py runs/joint models/embedded
"""
import argparse
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
    ap.add_argument("run")
    ap.add_argument("out")
    args = ap.parse_args()
    total = 0
    for f in FILES:
        src, dst = os.path.join(args.run, f), os.path.join(args.out, f)
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        if f.endswith(".safetensors"):
            tensors = {
                k: (v.half() if v.is_floating_point() else v).contiguous()
                for k, v in load_file(src).items()
            }
            save_file(tensors, dst)
        else:
            shutil.copyfile(src, dst)
        total += os.path.getsize(dst)
        print(f"{f:50s} {os.path.getsize(dst) / 2**20:7.2f} MB")
    print(f"{'total':50s} {total / 2**20:7.2f} MB")


if __name__ == "__main__":
    main()
