#!/usr/bin/env python3
"""End-to-end pipeline fixtures: diffusers' own pipelines on the tiny models, for fixed seeds.

    .venv/bin/python tools/make_pipeline_fixtures.py [--out diffusion/tests/fixtures/pipeline]

Run after tools/make_fixtures.py (it reuses that script's sd1/, sd2/ and td2_tokenizer/);
`make fixtures` runs both. Everything is seeded; a second run rewrites the same bytes.

The sd1/ and sd2/ folders of make_fixtures.py have VAEs with 2 and 3 blocks (2x and 4x
downsampling), but a ControlNet embeds its control image 8x down, as in real SD. So this
script adds one tiny VAE with four blocks (8x, like SD's) and assembles pipeline folders
that link to the existing components:

  vae/              the 8x VAE (sd1-like: scaling_factor 0.18215)
  sd1-controlnet/   sd1's unet, text_encoder, tokenizer, controlnet, scheduler (DDIM, epsilon) + vae
  td2/              a TextDiffuser-2-style pipeline: td2_tokenizer (2,175 added tokens), sd1's text
                    encoder with its embedding table resized to 51,583 rows (as TextDiffuser-2's
                    training does), sd1's unet and scheduler + vae
  sd2-inpaint/      sd2's 9-channel unet, text_encoder, tokenizer, scheduler (v-prediction) + vae
  sd1-glyph/        a glyph-input UNet (sd1's config with 4 + 64 input channels: the latents and the
                    glyph mask folded 8x8 onto the latent grid), sd1's text_encoder, tokenizer,
                    scheduler + vae; diffusers runs it as StableDiffusionPipeline with the UNet
                    wrapped so that every call gets the folded mask after the latents
  control.png       a 64x64 glyph-mask-like control image (white bars on black)
  init.png          a 64x64 RGB image for img2img and inpainting
  inpaint_mask.png  a 64x64 mask, white where a text line is regenerated
  refs.safetensors  for each case `<case>.image`: the pipeline's output (output_type="pt", in [0, 1],
                    before 8-bit quantisation); `td2.input_ids` as well
  cases.json        each case's settings, which the Rust test reads, so both sides run the same thing
"""
import argparse
import json
import os
import shutil
import sys

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(__file__))
from make_fixtures import load_tokenizer, randomize, td2_input_ids  # noqa: E402

from diffusers import (  # noqa: E402
    AutoencoderKL,
    ControlNetModel,
    DDIMScheduler,
    EulerDiscreteScheduler,
    StableDiffusionControlNetPipeline,
    StableDiffusionImg2ImgPipeline,
    StableDiffusionInpaintPipeline,
    StableDiffusionPipeline,
    UNet2DConditionModel,
)
from diffusers.configuration_utils import FrozenDict  # noqa: E402
from transformers import CLIPTextModel  # noqa: E402

torch.use_deterministic_algorithms(True)
torch.set_num_threads(1)

SIDE = 64  # image side; latents are 8x8

# Every case: which pipeline folder, which diffusers pipeline, and its arguments. The Rust test
# reads these from cases.json.
CASES = {
    "controlnet": dict(
        folder="sd1-controlnet", pipeline="controlnet", prompt="a poster that says SALE", negative_prompt="blurry",
        steps=4, guidance_scale=7.5, seeds=[42], control="mask", controlnet_conditioning_scale=0.8,
        control_guidance_start=0.0, control_guidance_end=0.75, guess_mode=False,
    ),
    "controlnet_guess": dict(
        folder="sd1-controlnet", pipeline="controlnet", prompt="jazz night", negative_prompt="",
        steps=3, guidance_scale=5.0, seeds=[7, 8], control="inverse", controlnet_conditioning_scale=1.0,
        control_guidance_start=0.25, control_guidance_end=1.0, guess_mode=True,
    ),
    "controlnet_nocfg": dict(
        folder="sd1-controlnet", pipeline="controlnet", prompt="a sign", negative_prompt="",
        steps=3, guidance_scale=1.0, seeds=[3], control="mask", controlnet_conditioning_scale=0.5,
        control_guidance_start=0.0, control_guidance_end=1.0, guess_mode=False,
    ),
    "td2": dict(
        folder="td2", pipeline="td2", prompt="a poster of summer", negative_prompt="",
        layout_tokens=[["l20", "t20", "r100", "b40"] + [f"[{c}]" for c in "Summer Vibe"], ["l30", "t90", "r90", "b110", "[2]", "[0]", "[2]", "[4]"]],
        steps=4, guidance_scale=7.5, seeds=[5],
    ),
    "img2img": dict(
        folder="sd1-controlnet", pipeline="img2img", prompt="a red poster", negative_prompt="",
        steps=5, guidance_scale=7.5, seeds=[11], strength=0.6,
    ),
    "inpaint_blend": dict(
        folder="sd1-controlnet", pipeline="inpaint", prompt="the word OPEN", negative_prompt="",
        steps=5, guidance_scale=7.5, seeds=[13], strength=0.8,
    ),
    "inpaint_9ch": dict(
        folder="sd2-inpaint", pipeline="inpaint", prompt="the word OPEN", negative_prompt="ugly",
        steps=4, guidance_scale=6.0, seeds=[17], strength=1.0,
    ),
    "inpaint_9ch_strength": dict(
        folder="sd2-inpaint", pipeline="inpaint", prompt="the word OPEN", negative_prompt="",
        steps=4, guidance_scale=6.0, seeds=[19], strength=0.5,
    ),
    "glyph": dict(
        folder="sd1-glyph", pipeline="glyph", prompt="a poster that says SALE", negative_prompt="blurry",
        steps=3, guidance_scale=7.5, seeds=[11, 12], glyph_scale=1.0,
    ),
    "glyph_half_nocfg": dict(
        folder="sd1-glyph", pipeline="glyph", prompt="jazz night", negative_prompt="",
        steps=3, guidance_scale=1.0, seeds=[4], glyph_scale=0.5,
    ),
}
# One more deterministic scheduler over the ControlNet path.
EXTRA_SCHEDULERS = {"euler": EulerDiscreteScheduler}


def link(target, name):
    if os.path.lexists(name):
        os.remove(name)
    os.symlink(os.path.relpath(target, os.path.dirname(name)), name)


def write_model_index(folder, class_name, components):
    index = {"_class_name": class_name}
    classes = {
        "controlnet": ["diffusers", "ControlNetModel"],
        "scheduler": ["diffusers", "DDIMScheduler"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    }
    for c in components:
        index[c] = classes[c]
    with open(os.path.join(folder, "model_index.json"), "w") as f:
        json.dump(index, f, indent=2, sort_keys=True)


def build_vae(out):
    gen = torch.Generator().manual_seed(30)
    torch.manual_seed(30)  # the modules' own initialisation draws from the global generator
    vae = AutoencoderKL(
        block_out_channels=(8, 8, 16, 16),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        latent_channels=4,
        layers_per_block=1,
        norm_num_groups=4,
        sample_size=SIDE,
    ).eval()
    randomize(vae, gen)
    vae.save_pretrained(os.path.join(out, "vae"), safe_serialization=True)


def build_glyph_unet(fixtures, folder):
    """sd1's UNet shape reading 4 latent channels + the 64 of an 8x-folded glyph mask."""
    config = dict(UNet2DConditionModel.load_config(os.path.join(fixtures, "sd1", "unet")))
    config["in_channels"] = 4 + 8 * 8
    gen = torch.Generator().manual_seed(32)
    torch.manual_seed(32)
    unet = UNet2DConditionModel.from_config(config).eval()
    randomize(unet, gen)
    unet.save_pretrained(os.path.join(folder, "unet"), safe_serialization=True)


class GlyphInput(torch.nn.Module):
    """A glyph-input UNet as a pipeline sees a plain one: each call gets the folded glyph mask
    after the latents (for every image and both guidance halves), which is what Letterpress's
    pipeline does for such a UNet (diffusion/src/glyph_input.rs)."""

    def __init__(self, unet, glyphs):
        super().__init__()
        self.inner = unet
        self.glyphs = glyphs
        self.config = FrozenDict({**unet.config, "in_channels": unet.config.out_channels})

    @property
    def dtype(self):
        return self.inner.dtype

    @property
    def device(self):
        return self.inner.device

    def forward(self, sample, timestep, encoder_hidden_states, **kwargs):
        glyphs = self.glyphs.to(sample.dtype).expand(sample.shape[0], -1, -1, -1)
        return self.inner(torch.cat([sample, glyphs], 1), timestep, encoder_hidden_states, **kwargs)


def build_td2_text_encoder(fixtures, out):
    """sd1's text encoder with the embedding table grown to the TextDiffuser-2 vocabulary; the new
    rows are seeded noise (TextDiffuser-2 trains them), stored in fp16 like sd1's."""
    text = CLIPTextModel.from_pretrained(os.path.join(fixtures, "sd1", "text_encoder"), torch_dtype=torch.float32)
    tok = load_tokenizer(os.path.join(fixtures, "td2_tokenizer"))
    old = text.get_input_embeddings().weight.detach().clone()
    text.resize_token_embeddings(len(tok), mean_resizing=False)
    gen = torch.Generator().manual_seed(31)
    with torch.no_grad():
        emb = text.get_input_embeddings().weight
        emb[: old.shape[0]] = old
        emb[old.shape[0] :] = torch.randn((emb.shape[0] - old.shape[0], emb.shape[1]), generator=gen) * 0.02
    text.config.vocab_size = len(tok)
    text.half().save_pretrained(os.path.join(out, "td2", "text_encoder"), safe_serialization=True)


def assemble(fixtures, out):
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    build_vae(out)
    sd1, sd2 = os.path.join(fixtures, "sd1"), os.path.join(fixtures, "sd2")
    folder = os.path.join(out, "sd1-controlnet")
    os.makedirs(folder)
    for c in ("unet", "text_encoder", "tokenizer", "controlnet", "scheduler"):
        link(os.path.join(sd1, c), os.path.join(folder, c))
    link(os.path.join(out, "vae"), os.path.join(folder, "vae"))
    write_model_index(folder, "StableDiffusionControlNetPipeline", ["controlnet", "scheduler", "text_encoder", "tokenizer", "unet", "vae"])

    folder = os.path.join(out, "td2")
    os.makedirs(folder)
    link(os.path.join(fixtures, "td2_tokenizer"), os.path.join(folder, "tokenizer"))
    for c in ("unet", "scheduler"):
        link(os.path.join(sd1, c), os.path.join(folder, c))
    link(os.path.join(out, "vae"), os.path.join(folder, "vae"))
    build_td2_text_encoder(fixtures, out)
    write_model_index(folder, "StableDiffusionPipeline", ["scheduler", "text_encoder", "tokenizer", "unet", "vae"])

    folder = os.path.join(out, "sd2-inpaint")
    os.makedirs(folder)
    for c in ("unet", "text_encoder", "tokenizer", "scheduler"):
        link(os.path.join(sd2, c), os.path.join(folder, c))
    link(os.path.join(out, "vae"), os.path.join(folder, "vae"))
    write_model_index(folder, "StableDiffusionInpaintPipeline", ["scheduler", "text_encoder", "tokenizer", "unet", "vae"])

    folder = os.path.join(out, "sd1-glyph")
    os.makedirs(folder)
    for c in ("text_encoder", "tokenizer", "scheduler"):
        link(os.path.join(sd1, c), os.path.join(folder, c))
    link(os.path.join(out, "vae"), os.path.join(folder, "vae"))
    build_glyph_unet(fixtures, folder)
    write_model_index(folder, "StableDiffusionPipeline", ["scheduler", "text_encoder", "tokenizer", "unet", "vae"])


def write_images(out):
    mask = np.zeros((SIDE, SIDE), np.uint8)
    mask[10:22, 8:56] = 255  # a headline bar
    mask[30:36, 12:30] = 255  # a smaller line in two words
    mask[30:36, 34:52] = 255
    mask[44:52, 20:44] = 200  # anti-aliased grey is kept as it is
    Image.fromarray(mask, "L").save(os.path.join(out, "control.png"))
    y, x = np.mgrid[0:SIDE, 0:SIDE]
    rgb = np.stack([x * 4, y * 4, (x + y) * 2], axis=-1).astype(np.uint8)
    Image.fromarray(rgb, "RGB").save(os.path.join(out, "init.png"))
    region = np.zeros((SIDE, SIDE), np.uint8)
    region[24:40, 8:56] = 255
    Image.fromarray(region, "L").save(os.path.join(out, "inpaint_mask.png"))


def components(out, folder):
    root = os.path.join(out, folder)
    variant = "fp16" if os.path.exists(os.path.join(root, "text_encoder", "model.fp16.safetensors")) else None
    c = dict(
        vae=AutoencoderKL.from_pretrained(os.path.join(root, "vae")),
        unet=UNet2DConditionModel.from_pretrained(os.path.join(root, "unet")),
        text_encoder=CLIPTextModel.from_pretrained(os.path.join(root, "text_encoder"), torch_dtype=torch.float32, variant=variant),
        tokenizer=load_tokenizer(os.path.join(root, "tokenizer")),
        scheduler=DDIMScheduler.from_pretrained(os.path.join(root, "scheduler")),
    )
    if os.path.exists(os.path.join(root, "controlnet")):
        c["controlnet"] = ControlNetModel.from_pretrained(os.path.join(root, "controlnet"))
    return c


def run_case(out, name, case, refs, scheduler_cls=None):
    c = components(out, case["folder"])
    if scheduler_cls is not None:
        c["scheduler"] = scheduler_cls.from_config(c["scheduler"].config)
    common = dict(
        num_inference_steps=case["steps"],
        guidance_scale=case["guidance_scale"],
        num_images_per_prompt=len(case["seeds"]),
        height=SIDE,
        width=SIDE,
    )
    mask = Image.open(os.path.join(out, "control.png")).convert("L")
    init = Image.open(os.path.join(out, "init.png")).convert("RGB")
    region = Image.open(os.path.join(out, "inpaint_mask.png")).convert("L")
    kind = case["pipeline"]
    if kind != "controlnet":
        c.pop("controlnet", None)
    if kind == "controlnet":
        control = mask if case["control"] == "mask" else Image.fromarray(255 - np.array(mask), "L")
        pipe = StableDiffusionControlNetPipeline(**c, safety_checker=None, feature_extractor=None, requires_safety_checker=False)
        call = dict(
            prompt=case["prompt"], image=control.convert("RGB"), negative_prompt=case["negative_prompt"],
            controlnet_conditioning_scale=case["controlnet_conditioning_scale"],
            control_guidance_start=case["control_guidance_start"], control_guidance_end=case["control_guidance_end"],
            guess_mode=case["guess_mode"], **common,
        )
    elif kind == "td2":
        tok, text = c["tokenizer"], c["text_encoder"]
        ids = torch.tensor([td2_input_ids(tok, case["prompt"], case["layout_tokens"])])
        refs[f"{name}.input_ids"] = ids
        with torch.no_grad():
            prompt_embeds = text(ids)[0]
            negative = text(torch.tensor([[49407] * 77]))[0]  # TextDiffuser-2's unconditional input
        pipe = StableDiffusionPipeline(**c, safety_checker=None, feature_extractor=None, requires_safety_checker=False)
        call = dict(prompt_embeds=prompt_embeds, negative_prompt_embeds=negative, **common)
    elif kind == "img2img":
        pipe = StableDiffusionImg2ImgPipeline(**c, safety_checker=None, feature_extractor=None, requires_safety_checker=False)
        common.pop("height"), common.pop("width")
        call = dict(prompt=case["prompt"], image=init, strength=case["strength"], negative_prompt=case["negative_prompt"], **common)
    elif kind == "inpaint":
        pipe = StableDiffusionInpaintPipeline(**c, safety_checker=None, feature_extractor=None, requires_safety_checker=False)
        call = dict(
            prompt=case["prompt"], image=init, mask_image=region, strength=case["strength"], negative_prompt=case["negative_prompt"], **common
        )
    elif kind == "glyph":
        pixels = torch.from_numpy(np.array(mask, dtype=np.float32) / 255.0)[None, None]
        glyphs = torch.nn.functional.pixel_unshuffle(pixels * case["glyph_scale"], 8)
        c["unet"] = GlyphInput(c["unet"], glyphs)
        pipe = StableDiffusionPipeline(**c, safety_checker=None, feature_extractor=None, requires_safety_checker=False)
        call = dict(prompt=case["prompt"], negative_prompt=case["negative_prompt"], **common)
    else:
        raise ValueError(kind)
    pipe.set_progress_bar_config(disable=True)

    def generators():
        g = [torch.Generator().manual_seed(s) for s in case["seeds"]]
        return g if len(g) > 1 else g[0]

    with torch.no_grad():
        image = pipe(**call, generator=generators(), output_type="pt").images
        # The same run again for its final latents, which show differences the tiny VAE blurs.
        latents = pipe(**call, generator=generators(), output_type="latent").images
    refs[f"{name}.image"] = image.float().contiguous()
    refs[f"{name}.latents"] = latents.float().contiguous()
    print(f"{name}: {tuple(image.shape)} mean {image.mean():.4f}, latents std {latents.std():.4f}")


def main():
    here = os.path.dirname(__file__)
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.path.join(here, "..", "diffusion", "tests", "fixtures", "pipeline"))
    args = ap.parse_args()
    out = os.path.normpath(args.out)
    fixtures = os.path.dirname(out)
    assemble(fixtures, out)
    write_images(out)
    refs = {}
    cases = dict(CASES)
    for name, case in CASES.items():
        torch.manual_seed(0)  # nothing should draw from the global generator; make sure it cannot matter
        run_case(out, name, case, refs)
    for sched, cls in EXTRA_SCHEDULERS.items():
        name = f"controlnet_{sched}"
        cases[name] = dict(CASES["controlnet"], scheduler=sched)
        torch.manual_seed(0)
        run_case(out, name, cases[name], refs, cls)
    save_file({k: v.contiguous() for k, v in sorted(refs.items())}, os.path.join(out, "refs.safetensors"), metadata={"format": "pt"})
    with open(os.path.join(out, "cases.json"), "w") as f:
        json.dump(cases, f, indent=1, sort_keys=True)
        f.write("\n")
    print(f"pipeline fixtures written to {out}")


if __name__ == "__main__":
    main()
