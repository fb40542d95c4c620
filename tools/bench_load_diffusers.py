#!/usr/bin/env python3
"""Reference for `letterpress bench load`: diffusers' from_pretrained of a ControlNet pipeline.

--write DIR builds the full SD 1.5 configurations with random weights exactly as
tools/bench_pipeline_diffusers.py does (UNet, a ControlNet from it, CLIP ViT-L/14 text encoder,
VAE, the sd1 fixture's tokenizer and DDIM scheduler) and saves them as a diffusers pipeline
folder with safetensors weights.

--model DIR loads that folder's components in this (fresh) process with each class's
from_pretrained, the work `StableDiffusion::load_from` does on our side, then reads every weight
once (a float64 sum of each parameter) and prints one JSON line: load seconds, read seconds,
parameter count, the sum, and the process's peak RSS.
"""
import argparse
import json
import resource
import time

import torch
from diffusers import AutoencoderKL, ControlNetModel, DDIMScheduler, UNet2DConditionModel
from transformers import CLIPTextModel, CLIPTokenizer


def write(folder):
    # The same random models the pipeline benchmark builds: one recipe for both benchmarks.
    from bench_pipeline_diffusers import build

    build().save_pretrained(folder, safe_serialization=True)


def load(folder):
    t0 = time.perf_counter()
    models = [
        CLIPTextModel.from_pretrained(folder, subfolder="text_encoder"),
        UNet2DConditionModel.from_pretrained(folder, subfolder="unet"),
        AutoencoderKL.from_pretrained(folder, subfolder="vae"),
        ControlNetModel.from_pretrained(folder, subfolder="controlnet"),
    ]
    CLIPTokenizer.from_pretrained(folder, subfolder="tokenizer")
    DDIMScheduler.from_pretrained(folder, subfolder="scheduler")
    load_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    params, total = 0, 0.0
    with torch.no_grad():
        for model in models:
            for p in model.parameters():
                params += p.numel()
                total += p.sum(dtype=torch.float64).item()
    read_s = time.perf_counter() - t1
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"load_s": load_s, "read_s": read_s, "params": params, "sum": total, "peak_rss_mb": peak_rss_mb}), flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    group = ap.add_mutually_exclusive_group(required=True)
    group.add_argument("--write", help="save the random SD 1.5 ControlNet pipeline to this folder")
    group.add_argument("--model", help="load this pipeline folder once and print the timings")
    args = ap.parse_args()
    if args.write:
        write(args.write)
    else:
        load(args.model)


if __name__ == "__main__":
    main()
