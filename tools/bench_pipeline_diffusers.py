#!/usr/bin/env python3
"""Reference for `letterpress bench pipeline`: diffusers' StableDiffusionControlNetPipeline end to end.

The full SD 1.5 configurations with random weights: UNet (stable-diffusion-v1-5/unet/config.json),
a ControlNet copied from it (ControlNetModel.from_unet, as sd-controlnet-* are), the CLIP ViT-L/14
text encoder and the SD VAE; the CLIP tokenizer and DDIM scheduler config of the sd1 test fixture
(SD 1.5's betas). One generation = prompt encoding, 20 DDIM steps with classifier-free guidance at
256x256 (32x32 latents) and the VAE decode, fp32 CPU.

Driven by `letterpress bench pipeline` over stdin/stdout: it builds, prints `ready`, answers each
`run` line with the seconds of one generation and `done` with the peak RSS. `--device cuda --dtype fp16` runs it on a GPU
(the generator stays on the CPU, as for our side).
"""
import argparse
import json
import os
import resource
import sys
import time

import torch
from diffusers import AutoencoderKL, ControlNetModel, DDIMScheduler, StableDiffusionControlNetPipeline, UNet2DConditionModel
from PIL import Image
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

FIXTURE = os.path.join(os.path.dirname(__file__), "..", "diffusion", "tests", "fixtures", "sd1")


def build():
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=64,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        block_out_channels=(320, 640, 1280, 1280),
        layers_per_block=2,
        cross_attention_dim=768,
        attention_head_dim=8,
    ).eval()
    controlnet = ControlNetModel.from_unet(unet).eval()
    text = CLIPTextModel(
        CLIPTextConfig(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12, hidden_act="quick_gelu", projection_dim=768)
    ).eval()
    vae = AutoencoderKL(
        block_out_channels=(128, 256, 512, 512),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        layers_per_block=2,
        sample_size=512,
    ).eval()
    tokenizer = CLIPTokenizer.from_pretrained(os.path.join(FIXTURE, "tokenizer"))
    scheduler = DDIMScheduler.from_pretrained(os.path.join(FIXTURE, "scheduler"))
    pipe = StableDiffusionControlNetPipeline(
        vae=vae, text_encoder=text, tokenizer=tokenizer, unet=unet, controlnet=controlnet, scheduler=scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--control", required=True, help="control image (the glyph mask), PNG")
    ap.add_argument("--prompt", default="a poster that says SUMMER SALE")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="fp32", choices=["fp32", "fp16", "bf16"])
    args = ap.parse_args()
    t0 = time.perf_counter()
    pipe = build()
    dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[args.dtype]
    if args.device != "cpu" or dtype != torch.float32:
        pipe = pipe.to(args.device, dtype)
    build_s = time.perf_counter() - t0
    control = Image.open(args.control).convert("RGB")
    print(json.dumps({"ready": True, "build_s": build_s}), flush=True)
    with torch.inference_mode():
        for line in sys.stdin:
            if line.strip() == "run":
                t1 = time.perf_counter()
                image = pipe(
                    args.prompt, image=control, num_inference_steps=args.steps, guidance_scale=7.5, height=args.size, width=args.size,
                    generator=torch.Generator().manual_seed(42), output_type="np",
                ).images
                seconds = time.perf_counter() - t1
                assert image.shape == (1, args.size, args.size, 3)
                print(json.dumps({"seconds": seconds}), flush=True)
            elif line.strip() == "done":
                break
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"peak_rss_mb": peak_rss_mb, "threads": torch.get_num_threads()}), flush=True)


if __name__ == "__main__":
    main()
