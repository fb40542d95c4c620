#!/usr/bin/env python3
"""Reference for `letterpress bench unet`: one ControlNet + UNet forward in diffusers.

The full SD 1.5 UNet configuration (stable-diffusion-v1-5/unet/config.json) with random
weights, and a ControlNet copied from it (ControlNetModel.from_unet, as sd-controlnet-* are),
batch 2 (classifier-free guidance), 32x32 latents, 256x256 control image. Prints one JSON line:
build seconds, every timed forward, their median, and the process's peak RSS.

With --interleave it is driven by `letterpress bench unet` over stdin/stdout: after building
it prints `ready`, then answers each `run` line with the seconds of one forward and `done` with
the JSON line. Alternating single forwards with ours keeps a noisy shared machine's load
changes from favouring either side.
"""
import argparse
import json
import resource
import statistics
import sys
import time

import torch
from diffusers import ControlNetModel, UNet2DConditionModel


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--latent", type=int, default=32)
    ap.add_argument("--interleave", action="store_true")
    args = ap.parse_args()
    torch.manual_seed(0)
    t0 = time.perf_counter()
    unet = UNet2DConditionModel(
        sample_size=64,
        in_channels=4,
        out_channels=4,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        block_out_channels=(320, 640, 1280, 1280),
        layers_per_block=2,
        cross_attention_dim=768,
        attention_head_dim=8,
        norm_num_groups=32,
        norm_eps=1e-5,
    ).eval()
    controlnet = ControlNetModel.from_unet(unet).eval()
    build_s = time.perf_counter() - t0
    b, n = args.batch, args.latent
    sample = torch.randn(b, 4, n, n)
    states = torch.randn(b, 77, 768)
    hint = torch.rand(b, 3, 8 * n, 8 * n)
    t = torch.tensor(999)

    def step():
        down, mid = controlnet(sample, t, states, hint, conditioning_scale=1.0, return_dict=False)
        return unet(
            sample, t, states, down_block_additional_residuals=down, mid_block_additional_residual=mid, return_dict=False
        )[0]

    if args.interleave:
        print(json.dumps({"ready": True, "build_s": build_s}), flush=True)
        times = []
        with torch.inference_mode():
            for line in sys.stdin:
                if line.strip() == "run":
                    t1 = time.perf_counter()
                    step()
                    times.append(time.perf_counter() - t1)
                    print(json.dumps({"seconds": times[-1]}), flush=True)
                elif line.strip() == "done":
                    break
        timed = times[1:]  # the first is the warm-up
        peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps({"build_s": build_s, "times_s": timed, "median_s": statistics.median(timed) if timed else None, "peak_rss_mb": peak_rss_mb, "threads": torch.get_num_threads()}), flush=True)
        return

    times = []
    with torch.inference_mode():
        step()  # warm-up
        for _ in range(args.runs):
            t1 = time.perf_counter()
            step()
            times.append(time.perf_counter() - t1)
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"build_s": build_s, "times_s": times, "median_s": statistics.median(times), "peak_rss_mb": peak_rss_mb, "threads": torch.get_num_threads()}))


if __name__ == "__main__":
    main()
