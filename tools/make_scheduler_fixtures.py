#!/usr/bin/env python3
"""Golden trajectories of diffusers' schedulers for letterpress-diffusion's scheduler tests.

    .venv/bin/python tools/make_scheduler_fixtures.py [--out diffusion/tests/fixtures/schedulers]

(`make fixtures` runs it.) Each case builds a scheduler the way `letterpress generate` does, from a
`scheduler_config.json` and an optional scheduler name (diffusers' `from_config`, so the file's
betas carry over and missing fields take the chosen class's defaults), then runs a whole
denoising loop as StableDiffusionPipeline does: initial latents (noise × init_noise_sigma, or for
img2img `set_begin_index` + `add_noise`), then per timestep `scale_model_input` → stand-in model →
`step`. The stand-in model output is `0.7·tanh(scaled) + 0.3·pattern·cos(t/300)`; it is recorded,
so the Rust side replays the same model outputs. The stochastic schedulers' `randn_tensor` calls
are recorded too (shape and values, in call order).

Writes:
  cases.json                 per case: base config, scheduler name, steps, begin index, class,
                             timesteps, sigmas, init_noise_sigma, and the shapes of the noise draws
  trajectories.safetensors   per case: `{case}.latents` (the loop's initial latents; for img2img
                             also `{case}.original` and `{case}.added_noise`), `{case}.scaled`,
                             `{case}.model_output`, `{case}.prev_sample` ([steps, ...] each), and
                             `{case}.noise` ([draws, ...]) for the stochastic ones
  timesteps.json             timesteps (and sigmas) for every scheduler × spacing × many step counts,
                             and the base configs they start from
Everything is seeded, so a second run writes the same bytes.
"""
import argparse
import inspect
import json
import math
import os
import sys

import torch
from safetensors.torch import save_file
from diffusers import (
    DDIMScheduler,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    LCMScheduler,
    PNDMScheduler,
    UniPCMultistepScheduler,
)

torch.use_deterministic_algorithms(True)
torch.set_num_threads(1)

SHAPE = (1, 4, 3, 3)

# CLI name → (diffusers class, extra from_config kwargs), as letterpress maps them.
KINDS = {
    "ddim": (DDIMScheduler, {}),
    "ddpm": (DDPMScheduler, {}),
    "euler": (EulerDiscreteScheduler, {}),
    "euler-a": (EulerAncestralDiscreteScheduler, {}),
    "dpm++2m": (DPMSolverMultistepScheduler, {}),
    "dpm++2m-karras": (DPMSolverMultistepScheduler, {"use_karras_sigmas": True}),
    "unipc": (UniPCMultistepScheduler, {}),
    "lcm": (LCMScheduler, {}),
}
CLASSES = {cls.__name__: cls for cls, _ in KINDS.values()}


def saved_config(scheduler):
    """The dict `save_pretrained` writes to scheduler_config.json."""
    config = json.loads(scheduler.to_json_string())
    config.pop("_use_default_values", None)
    config.pop("_diffusers_version", None)
    return config


# The scheduler_config.json files of the models letterpress targets.
BASE_CONFIGS = {
    # runwayml/stable-diffusion-v1-5 ships PNDM; from_config to DDIM then takes DDIM's default
    # clip_sample=True, which the Rust side must reproduce.
    "sd15": saved_config(
        PNDMScheduler(
            beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", skip_prk_steps=True,
            steps_offset=1, set_alpha_to_one=False, trained_betas=None,
        )
    ),
    # stabilityai/stable-diffusion-2-1: DDIM, v-prediction.
    "sd21": saved_config(
        DDIMScheduler(
            beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
            set_alpha_to_one=False, steps_offset=1, prediction_type="v_prediction",
        )
    ),
    # TextDiffuser-2-LCM.
    "lcm": saved_config(LCMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", original_inference_steps=50)),
    # class defaults: linear betas, clip_sample, set_alpha_to_one.
    "linear": saved_config(DDIMScheduler()),
    "cosine": saved_config(DDPMScheduler(beta_schedule="squaredcos_cap_v2", clip_sample=False)),
}

# (base config, overrides of the file, scheduler name or None for the file's class, steps, begin index)
CASES = [
    ("sd21", {"prediction_type": "epsilon"}, None, 20, None),
    ("sd21", {}, None, 10, None),
    ("sd15", {}, "ddim", 20, None),
    ("sd21", {"timestep_spacing": "trailing"}, "ddim", 10, None),
    ("sd21", {"timestep_spacing": "linspace", "prediction_type": "epsilon"}, "ddim", 7, None),
    ("linear", {}, "ddim", 12, None),
    ("cosine", {"prediction_type": "sample"}, "ddim", 9, None),
    ("sd21", {"prediction_type": "epsilon"}, "ddim", 20, 10),
    ("sd15", {}, "ddpm", 10, None),
    ("sd21", {"timestep_spacing": "trailing"}, "ddpm", 8, None),
    ("cosine", {"timestep_spacing": "linspace"}, "ddpm", 6, 2),
    ("sd15", {}, "euler", 20, None),
    ("sd21", {"timestep_spacing": "trailing"}, "euler", 10, None),
    ("sd15", {"timestep_spacing": "linspace"}, "euler", 15, None),
    ("sd15", {}, "euler", 20, 8),
    ("sd15", {}, "euler-a", 20, None),
    ("sd21", {"timestep_spacing": "trailing"}, "euler-a", 10, None),
    ("cosine", {"timestep_spacing": "linspace"}, "euler-a", 9, 3),
    ("sd15", {}, "dpm++2m", 20, None),
    ("sd15", {}, "dpm++2m-karras", 20, None),
    ("sd21", {"timestep_spacing": "trailing"}, "dpm++2m", 10, None),
    ("sd21", {"timestep_spacing": "linspace"}, "dpm++2m-karras", 12, None),
    ("linear", {}, "dpm++2m", 25, 12),
    ("sd15", {}, "unipc", 20, None),
    ("sd21", {"timestep_spacing": "trailing"}, "unipc", 10, None),
    ("sd15", {"timestep_spacing": "linspace"}, "unipc", 15, 5),
    ("lcm", {}, None, 4, None),
    ("lcm", {"prediction_type": "v_prediction"}, "lcm", 8, None),
    ("sd15", {}, "lcm", 6, 2),
    ("lcm", {"timestep_spacing": "trailing"}, None, 1, None),
]


def build(base, overrides, kind):
    config = dict(BASE_CONFIGS[base], **overrides)
    if kind is None:
        return config, CLASSES[config["_class_name"]].from_config(config)
    cls, extra = KINDS[kind]
    return config, cls.from_config(config, **extra)


def case_name(base, overrides, kind, steps, begin):
    parts = [kind or "file", base] + [f"{v}" for _, v in sorted(overrides.items())] + [f"{steps}steps"]
    if begin is not None:
        parts.append(f"from{begin}")
    return "-".join(parts)


class NoiseRecorder:
    """Wraps diffusers' randn_tensor in the scheduler modules and keeps every draw."""

    def __init__(self):
        self.draws = []
        self.originals = {}

    def __enter__(self):
        for module in {sys.modules[cls.__module__] for cls in CLASSES.values()}:
            if hasattr(module, "randn_tensor"):
                original = module.randn_tensor
                self.originals[module] = original

                def recording(*args, _original=original, **kwargs):
                    out = _original(*args, **kwargs)
                    self.draws.append(out.clone())
                    return out

                module.randn_tensor = recording
        return self

    def __exit__(self, *exc):
        for module, original in self.originals.items():
            module.randn_tensor = original


def stand_in_model(scaled, t, pattern):
    return 0.7 * torch.tanh(scaled) + 0.3 * pattern * math.cos(float(t) / 300.0)


def as_floats(t):
    return [float(v) for v in t.reshape(-1).tolist()]


def run_case(index, base, overrides, kind, steps, begin, tensors):
    config, scheduler = build(base, overrides, kind)
    name = case_name(base, overrides, kind, steps, begin)
    gen = torch.Generator().manual_seed(1000 + index)
    pattern = torch.randn(SHAPE, generator=gen)
    scheduler.set_timesteps(steps)
    timesteps = scheduler.timesteps
    record = {
        "name": name,
        "config": config,
        "scheduler": kind,
        "class": type(scheduler).__name__,
        "steps": steps,
        "begin_index": begin,
        "timesteps": as_floats(timesteps),
        "init_noise_sigma": float(scheduler.init_noise_sigma),
    }
    if hasattr(scheduler, "sigmas"):
        record["sigmas"] = as_floats(scheduler.sigmas)
    noise = torch.randn(SHAPE, generator=gen)
    if begin is None:
        latents = noise * scheduler.init_noise_sigma
    else:
        original = torch.randn(SHAPE, generator=gen)
        if hasattr(scheduler, "set_begin_index"):  # as the img2img pipelines check
            scheduler.set_begin_index(begin)
        latents = scheduler.add_noise(original, noise, timesteps[begin : begin + 1])
        tensors[f"{name}.original"] = original
        tensors[f"{name}.added_noise"] = noise
        timesteps = timesteps[begin:]
    tensors[f"{name}.latents"] = latents
    scaled_all, outputs, prevs = [], [], []
    step_gen = torch.Generator().manual_seed(2000 + index)
    # StableDiffusionPipeline.prepare_extra_step_kwargs: a generator only where step takes one.
    extra = {"generator": step_gen} if "generator" in inspect.signature(scheduler.step).parameters else {}
    with NoiseRecorder() as recorder:
        for t in timesteps:
            scaled = scheduler.scale_model_input(latents, t)
            model_output = stand_in_model(scaled, t, pattern)
            latents = scheduler.step(model_output, t, latents, **extra, return_dict=False)[0]
            scaled_all.append(scaled)
            outputs.append(model_output)
            prevs.append(latents)
    tensors[f"{name}.scaled"] = torch.stack(scaled_all)
    tensors[f"{name}.model_output"] = torch.stack(outputs)
    tensors[f"{name}.prev_sample"] = torch.stack(prevs)
    record["noise_shapes"] = [list(d.shape) for d in recorder.draws]
    if recorder.draws:
        tensors[f"{name}.noise"] = torch.stack(recorder.draws)
    return record


STEP_COUNTS = [1, 2, 3, 4, 7, 10, 20, 25, 50]


def timestep_tables():
    """Each entry names its config as a base of BASE_CONFIGS plus a timestep_spacing."""
    tables = []
    for kind in ("ddim", "ddpm", "euler", "euler-a", "dpm++2m", "dpm++2m-karras", "unipc", "lcm"):
        for spacing in ("leading", "trailing", "linspace"):
            for base in ("sd15", "lcm"):
                config = dict(BASE_CONFIGS[base], timestep_spacing=spacing)
                cls, extra = KINDS[kind]
                scheduler = cls.from_config(config, **extra)
                for steps in STEP_COUNTS:
                    entry = {"base": base, "spacing": spacing, "scheduler": kind, "steps": steps}
                    try:
                        scheduler.set_timesteps(steps)
                    except ValueError as e:
                        tables.append(dict(entry, error=str(e)))
                        continue
                    entry.update(timesteps=as_floats(scheduler.timesteps), init_noise_sigma=float(scheduler.init_noise_sigma))
                    if hasattr(scheduler, "sigmas"):
                        entry["sigmas"] = as_floats(scheduler.sigmas)
                    tables.append(entry)
    return {"bases": BASE_CONFIGS, "tables": tables}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "diffusion", "tests", "fixtures", "schedulers"))
    args = ap.parse_args()
    out = os.path.normpath(args.out)
    os.makedirs(out, exist_ok=True)
    tensors, records = {}, []
    for i, case in enumerate(CASES):
        records.append(run_case(i, *case, tensors))
    names = [r["name"] for r in records]
    assert len(set(names)) == len(names), "case names must be unique"
    with open(os.path.join(out, "cases.json"), "w") as f:
        json.dump(records, f, indent=1, sort_keys=True)
        f.write("\n")
    with open(os.path.join(out, "timesteps.json"), "w") as f:
        json.dump(timestep_tables(), f, sort_keys=True)
        f.write("\n")
    save_file({k: v.contiguous() for k, v in sorted(tensors.items())}, os.path.join(out, "trajectories.safetensors"), metadata={"format": "pt"})
    print(f"{len(records)} scheduler cases written to {out}")


if __name__ == "__main__":
    main()
