#!/usr/bin/env python3
"""The embedded demo model's starting point: random-initialised diffusers folders built from
the committed configs in models/configs/ (see models/README.md for the sizes and the plan).

    .venv/bin/python tools/make_embedded_init.py [--out models/embedded-init] [--seed 0]
        [--configs models/configs]

Writes a StableDiffusionControlNetPipeline folder: unet/, vae/, text_encoder/ (transformers'
CLIPTextModel), tokenizer/ (the CLIP BPE files of the test fixtures), scheduler/, and
controlnet/ made with ControlNetModel.from_unet (copied encoder, zeroed zero-convolutions), all
as safetensors, and prints the parameter count and fp32/fp16 size of each component.
Seeded: the same seed writes the same bytes.

--configs names another folder of configs (e.g. models/configs/glyph-f4): its files replace
those of models/configs, and a folder without controlnet.json makes a StableDiffusionPipeline
without a ControlNet (a UNet that reads the glyph mask as input channels needs none).
"""
import argparse
import json
import os
import shutil

import torch
from diffusers import AutoencoderKL, ControlNetModel, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.join(HERE, "..")
CONFIGS = os.path.join(ROOT, "models", "configs")
BPE = os.path.join(ROOT, "diffusion", "tests", "fixtures", "clip_bpe")


def config(name, folder=CONFIGS):
    path = os.path.join(folder, name)
    if not os.path.exists(path):
        path = os.path.join(CONFIGS, name)
    with open(path) as f:
        c = json.load(f)
    return {k: v for k, v in c.items() if not k.startswith("_")}


def size(model):
    n = sum(p.numel() for p in model.parameters())
    return n, n * 4 / 2**20, n * 2 / 2**20


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(ROOT, "models", "embedded-init"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--configs", default=CONFIGS)
    args = ap.parse_args()
    with_controlnet = os.path.exists(os.path.join(args.configs, "controlnet.json"))
    torch.manual_seed(args.seed)
    os.makedirs(args.out, exist_ok=True)

    unet = UNet2DConditionModel(**config("unet.json", args.configs))
    vae = AutoencoderKL(**config("vae.json", args.configs))
    te_config = config("text_encoder.json", args.configs)
    te_config.pop("architectures", None)
    text_encoder = CLIPTextModel(CLIPTextConfig(**te_config))
    models = [("unet", unet), ("vae", vae), ("text_encoder", text_encoder)]
    if with_controlnet:
        cn = config("controlnet.json", args.configs)
        controlnet = ControlNetModel.from_unet(
            unet,
            conditioning_channels=cn["conditioning_channels"],
            conditioning_embedding_out_channels=tuple(cn["conditioning_embedding_out_channels"]),
        )
        models.append(("controlnet", controlnet))
    total = [0, 0.0, 0.0]
    for name, model in models:
        model.save_pretrained(os.path.join(args.out, name), safe_serialization=True)
        n, mb32, mb16 = size(model)
        total = [total[0] + n, total[1] + mb32, total[2] + mb16]
        print(f"{name:13s} {n:>10,d} parameters  {mb32:6.1f} MB fp32  {mb16:6.1f} MB fp16")
    print(f"{'total':13s} {total[0]:>10,d} parameters  {total[1]:6.1f} MB fp32  {total[2]:6.1f} MB fp16")

    tok = os.path.join(args.out, "tokenizer")
    os.makedirs(tok, exist_ok=True)
    for f in ("vocab.json", "merges.txt"):
        shutil.copyfile(os.path.join(BPE, f), os.path.join(tok, f))
    with open(os.path.join(tok, "tokenizer_config.json"), "w") as f:
        json.dump(
            {
                "bos_token": "<|startoftext|>",
                "do_lower_case": True,
                "eos_token": "<|endoftext|>",
                "model_max_length": 77,
                "pad_token": "<|endoftext|>",
                "tokenizer_class": "CLIPTokenizer",
                "unk_token": "<|endoftext|>",
            },
            f,
            indent=2,
        )
    sched = os.path.join(args.out, "scheduler")
    os.makedirs(sched, exist_ok=True)
    scheduler_config = os.path.join(args.configs, "scheduler_config.json")
    if not os.path.exists(scheduler_config):
        scheduler_config = os.path.join(CONFIGS, "scheduler_config.json")
    shutil.copyfile(
        scheduler_config,
        os.path.join(sched, "scheduler_config.json"),
    )
    index = {
        "_class_name": "StableDiffusionControlNetPipeline",
        "_diffusers_version": "0.42.1",
        "controlnet": ["diffusers", "ControlNetModel"],
        "scheduler": ["diffusers", "DDIMScheduler"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    }
    if not with_controlnet:
        index["_class_name"] = "StableDiffusionPipeline"
        del index["controlnet"]
    with open(os.path.join(args.out, "model_index.json"), "w") as f:
        json.dump(index, f, indent=2)
        f.write("\n")


if __name__ == "__main__":
    main()
