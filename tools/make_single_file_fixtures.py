#!/usr/bin/env python3
"""Single-file checkpoints in the original (ldm / cldm) key scheme, made from the tiny diffusers
fixtures of tools/make_fixtures.py, for letterpress-diffusion's single-file loader tests.

    .venv/bin/python tools/make_single_file_fixtures.py [--fixtures diffusion/tests/fixtures]

(`make fixtures` runs it after make_fixtures.py.) Writes, under `single_file/`:
  sd1.safetensors             the sd1 pipeline as an SD 1.x checkpoint: `model.diffusion_model.*`
                              (UNet), `first_stage_model.*` (VAE, 1×1-conv attention),
                              `cond_stage_model.transformer.*` (CLIP), plus the buffers and EMA
                              scalars real checkpoints carry (`alphas_cumprod`, `model_ema.decay`, …)
  sd2.safetensors             the sd2 pipeline (in_channels 9: inpainting) as an SD 2.x checkpoint,
                              its text encoder as OpenCLIP (`cond_stage_model.model.*`, fused
                              in_proj q/k/v, `text_projection`, and one resblock more than the
                              text encoder uses, as SD 2.x's 24-layer OpenCLIP-H has)
  sd1_controlnet.safetensors  the sd1 ControlNet in the cldm scheme (`control_model.*`: zero_convs,
                              input_hint_block, middle_block_out), as released ControlNets are
  sd2_controlnet.safetensors  the sd2 ControlNet (1-channel hint, GlyphControl-like) likewise
  full_layouts.json           key → shape of the released layouts (SD 1.5, SD 2.1-768 with
                              OpenCLIP-H's 24 layers, an SD 1.5 ControlNet), from meta-device models
The ldm names are written by this script's own inverse mapping; it then checks with diffusers' own
conversion code (`diffusers.loaders.single_file_utils`: convert_ldm_unet_checkpoint,
convert_ldm_vae_checkpoint, convert_ldm_clip_checkpoint, convert_open_clip_checkpoint,
convert_controlnet_checkpoint) that every file maps back exactly to the folder weights.
"""
import argparse
import json
import os
import sys

import torch
from diffusers import AutoencoderKL, ControlNetModel, UNet2DConditionModel
from diffusers.loaders.single_file_utils import (
    convert_controlnet_checkpoint,
    convert_ldm_clip_checkpoint,
    convert_ldm_unet_checkpoint,
    convert_ldm_vae_checkpoint,
    convert_open_clip_checkpoint,
)
from safetensors.torch import save_file
from transformers import CLIPTextModel

RESNET = [("norm1", "in_layers.0"), ("conv1", "in_layers.2"), ("time_emb_proj", "emb_layers.1"), ("norm2", "out_layers.0"), ("conv2", "out_layers.3"), ("conv_shortcut", "skip_connection")]
TRUNK = {"time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2", "conv_in": "input_blocks.0.0", "conv_norm_out": "out.0", "conv_out": "out.2"}


def resnet_name(rest):
    for new, old in RESNET:
        if rest.startswith(new + "."):
            return old + rest[len(new) :]
    raise KeyError(rest)


def trunk_to_ldm(key, lpb, up_has_attention):
    """One diffusers UNet/ControlNet key → its ldm name (without the model prefix)."""
    for new, old in TRUNK.items():
        if key.startswith(new + "."):
            return old + key[len(new) :]
    p = key.split(".")
    rest = ".".join(p[4:])
    if p[0] == "down_blocks":
        i, kind, j = int(p[1]), p[2], int(p[3])
        if kind == "resnets":
            return f"input_blocks.{1 + i * (lpb + 1) + j}.0.{resnet_name(rest)}"
        if kind == "attentions":
            return f"input_blocks.{1 + i * (lpb + 1) + j}.1.{rest}"
        if kind == "downsamplers":  # downsamplers.0.conv.weight → op.weight
            return f"input_blocks.{(i + 1) * (lpb + 1)}.0.op.{'.'.join(p[5:])}"
    if p[0] == "mid_block":
        kind, j = p[1], int(p[2])
        rest = ".".join(p[3:])
        if kind == "resnets":
            return f"middle_block.{2 * j}.{resnet_name(rest)}"
        return f"middle_block.1.{rest}"
    if p[0] == "up_blocks":
        i, kind, j = int(p[1]), p[2], int(p[3])
        if kind == "resnets":
            return f"output_blocks.{i * (lpb + 1) + j}.0.{resnet_name(rest)}"
        if kind == "attentions":
            return f"output_blocks.{i * (lpb + 1) + j}.1.{rest}"
        if kind == "upsamplers":
            slot = 2 if up_has_attention[i] else 1
            return f"output_blocks.{i * (lpb + 1) + lpb}.{slot}.{'.'.join(p[4:])}"
    raise KeyError(key)


def unet_to_ldm(unet):
    lpb = unet.config.layers_per_block
    up_attn = [t.startswith("CrossAttn") for t in unet.config.up_block_types]
    return {"model.diffusion_model." + trunk_to_ldm(k, lpb, up_attn): v for k, v in unet.state_dict().items()}


def controlnet_to_ldm(controlnet):
    lpb = controlnet.config.layers_per_block
    n_blocks = len(controlnet.controlnet_cond_embedding.blocks)
    out = {}
    for k, v in controlnet.state_dict().items():
        p = k.split(".")
        if p[0] == "controlnet_cond_embedding":
            if p[1] == "conv_in":
                name = f"input_hint_block.0.{p[2]}"
            elif p[1] == "conv_out":
                name = f"input_hint_block.{2 * (n_blocks + 1)}.{p[2]}"
            else:
                name = f"input_hint_block.{2 * (int(p[2]) + 1)}.{p[3]}"
        elif p[0] == "controlnet_down_blocks":
            name = f"zero_convs.{p[1]}.0.{p[2]}"
        elif p[0] == "controlnet_mid_block":
            name = f"middle_block_out.0.{p[1]}"
        else:
            name = trunk_to_ldm(k, lpb, [])
        out["control_model." + name] = v
    return out


VAE_ATTENTION = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


def vae_to_ldm(vae):
    n = len(vae.config.up_block_types)
    out = {}
    for k, v in vae.state_dict().items():
        p = k.split(".")
        name = k
        if p[1] == "down_blocks":
            if p[3] == "resnets":
                name = f"{p[0]}.down.{p[2]}.block.{p[4]}." + ".".join(p[5:]).replace("conv_shortcut", "nin_shortcut")
            else:
                name = f"{p[0]}.down.{p[2]}.downsample.conv.{p[6]}"
        elif p[1] == "up_blocks":
            block = n - 1 - int(p[2])
            if p[3] == "resnets":
                name = f"{p[0]}.up.{block}.block.{p[4]}." + ".".join(p[5:]).replace("conv_shortcut", "nin_shortcut")
            else:
                name = f"{p[0]}.up.{block}.upsample.conv.{p[6]}"
        elif p[1] == "mid_block":
            if p[2] == "resnets":
                name = f"{p[0]}.mid.block_{int(p[3]) + 1}." + ".".join(p[4:])
            else:
                rest = ".".join(p[4:])
                for new, old in VAE_ATTENTION.items():
                    if rest.startswith(new + "."):
                        rest = old + rest[len(new) :]
                name = f"{p[0]}.mid.attn_1.{rest}"
                if v.dim() == 2:  # the original attention projections are 1×1 convolutions
                    v = v[:, :, None, None]
        elif p[1] == "conv_norm_out":
            name = f"{p[0]}.norm_out.{p[2]}"
        out["first_stage_model." + name] = v
    return out


def prefixed_state_dict(text):
    """transformers 5 saves CLIPTextModel without the `text_model.` prefix that released
    checkpoints (and diffusers' conversion) use."""
    return {k if k.startswith("text_model.") else "text_model." + k: v for k, v in text.state_dict().items()}


def clip_to_ldm(text):
    out = {"cond_stage_model.transformer." + k: v for k, v in prefixed_state_dict(text).items()}
    out["cond_stage_model.transformer.text_model.embeddings.position_ids"] = torch.arange(77)[None]
    return out


OPEN_CLIP = [("self_attn.out_proj", "attn.out_proj"), ("layer_norm1", "ln_1"), ("layer_norm2", "ln_2"), ("mlp.fc1", "mlp.c_fc"), ("mlp.fc2", "mlp.c_proj")]


def open_clip_to_ldm(text, gen, random_extra=True):
    prefix = "cond_stage_model.model."
    sd = prefixed_state_dict(text)
    hidden = text.config.hidden_size
    layers = text.config.num_hidden_layers
    out = {
        prefix + "token_embedding.weight": sd["text_model.embeddings.token_embedding.weight"],
        prefix + "positional_embedding": sd["text_model.embeddings.position_embedding.weight"],
        prefix + "ln_final.weight": sd["text_model.final_layer_norm.weight"],
        prefix + "ln_final.bias": sd["text_model.final_layer_norm.bias"],
    }
    dtype = sd["text_model.final_layer_norm.weight"].dtype
    for i in range(layers + 1):
        base = f"text_model.encoder.layers.{min(i, layers - 1)}."
        block = f"{prefix}transformer.resblocks.{i}."
        for what in ("weight", "bias"):
            qkv = torch.cat([sd[f"{base}self_attn.{x}_proj.{what}"] for x in "qkv"])
            out[f"{block}attn.in_proj_{what}"] = qkv
            for new, old in OPEN_CLIP:
                out[f"{block}{old}.{what}"] = sd[f"{base}{new}.{what}"]
        if i == layers and random_extra:
            # The layer SD 2.x never reads (it conditions on the penultimate one): random values,
            # which the loaders must drop.
            for k in [k for k in out if k.startswith(block)]:
                out[k] = torch.randn(out[k].shape, generator=gen).to(dtype)
    out[prefix + "text_projection"] = torch.randn((hidden, 8), generator=gen).to(dtype)
    out[prefix + "logit_scale"] = torch.tensor(4.6052).to(dtype)
    return out


def same(label, converted, reference, ignore=(), shapes_only=False):
    converted = {k: v for k, v in converted.items() if not any(k.startswith(i) for i in ignore)}
    assert set(converted) == set(reference), (label, sorted(set(converted) ^ set(reference))[:10])
    for k, v in reference.items():
        assert converted[k].shape == v.shape, (label, k, converted[k].shape, v.shape)
        assert shapes_only or torch.equal(converted[k].to(v.dtype), v), (label, k)
    print(f"verified {label}: diffusers maps {len(reference)} tensors back exactly")


def build(kind, fixtures, out):
    root = os.path.join(fixtures, kind)
    gen = torch.Generator().manual_seed(7 if kind == "sd1" else 8)
    unet = UNet2DConditionModel.from_pretrained(os.path.join(root, "unet"))
    vae = AutoencoderKL.from_pretrained(os.path.join(root, "vae"))
    variant = None if kind == "sd1" else "fp16"
    text = CLIPTextModel.from_pretrained(os.path.join(root, "text_encoder"), variant=variant, torch_dtype=torch.float16)
    controlnet = ControlNetModel.from_pretrained(os.path.join(root, "controlnet"))

    ckpt = {}
    ckpt.update(unet_to_ldm(unet))
    ckpt.update(vae_to_ldm(vae))
    if kind == "sd1":
        ckpt.update(clip_to_ldm(text))
        # Buffers and EMA bookkeeping that original checkpoints carry and loaders skip.
        betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2
        ckpt["betas"] = betas.float()
        ckpt["alphas_cumprod"] = torch.cumprod(1 - betas, 0).float()
        ckpt["model_ema.decay"] = torch.tensor(0.9999)
        ckpt["model_ema.num_updates"] = torch.tensor(0, dtype=torch.int32)
    else:
        ckpt.update(open_clip_to_ldm(text, gen))

    same(f"{kind} unet", convert_ldm_unet_checkpoint(ckpt, dict(unet.config)), unet.state_dict())
    same(f"{kind} vae", convert_ldm_vae_checkpoint(ckpt, dict(vae.config)), vae.state_dict())
    if kind == "sd1":
        converted = convert_ldm_clip_checkpoint(ckpt)
        same(f"{kind} clip", converted, prefixed_state_dict(text), ignore=("text_model.embeddings.position_ids",))
    else:
        converted = convert_open_clip_checkpoint(text, ckpt)
        extra = f"text_model.encoder.layers.{text.config.num_hidden_layers}."
        same(f"{kind} open_clip", converted, prefixed_state_dict(text), ignore=(extra,))
    cn = controlnet_to_ldm(controlnet)
    same(f"{kind} controlnet", convert_controlnet_checkpoint(cn, dict(controlnet.config)), controlnet.state_dict())

    save_file({k: v.contiguous() for k, v in sorted(ckpt.items())}, os.path.join(out, f"{kind}.safetensors"))
    save_file({k: v.contiguous() for k, v in sorted(cn.items())}, os.path.join(out, f"{kind}_controlnet.safetensors"))


def full_layouts(out):
    """The key → shape listings of released checkpoints' layouts (SD 1.5, SD 2.1-768, an SD 1.5
    ControlNet), built on the meta device from the configs tools/make_fixtures.py records in
    full_manifests.json, so the Rust tests can check config inference and key mapping on the
    real layouts without gigabytes of weights."""
    from transformers import CLIPTextConfig

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from make_fixtures import SD15_UNET, SD21_UNET

    vae_config = dict(block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4, layers_per_block=2, sample_size=512)
    clip_l = CLIPTextConfig(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12, hidden_act="quick_gelu", projection_dim=768)
    open_clip_h = CLIPTextConfig(hidden_size=1024, intermediate_size=4096, num_hidden_layers=23, num_attention_heads=16, hidden_act="gelu", projection_dim=512)
    layouts = {}
    with torch.device("meta"):
        vae = AutoencoderKL(**vae_config)
        for name, unet_config, text_config in (("sd15", SD15_UNET, clip_l), ("sd21", SD21_UNET, open_clip_h)):
            unet = UNet2DConditionModel(**unet_config)
            text = CLIPTextModel(text_config)
            ckpt = {**unet_to_ldm(unet), **vae_to_ldm(vae)}
            ckpt.update(clip_to_ldm(text) if name == "sd15" else open_clip_to_ldm(text, None, random_extra=False))
            same(f"full {name} unet", convert_ldm_unet_checkpoint(ckpt, dict(unet.config)), unet.state_dict(), shapes_only=True)
            same(f"full {name} vae", convert_ldm_vae_checkpoint(ckpt, dict(vae.config)), vae.state_dict(), shapes_only=True)
            if name == "sd15":
                converted = convert_ldm_clip_checkpoint(ckpt)
                same("full sd15 clip", converted, prefixed_state_dict(text), ignore=("text_model.embeddings.position_ids",), shapes_only=True)
            else:
                extra = f"text_model.encoder.layers.{text_config.num_hidden_layers}."
                same("full sd21 open_clip", convert_open_clip_checkpoint(text, ckpt), prefixed_state_dict(text), ignore=(extra,), shapes_only=True)
            layouts[name] = {k: list(v.shape) for k, v in sorted(ckpt.items())}
        controlnet = ControlNetModel(**{k: v for k, v in SD15_UNET.items() if k not in ("up_block_types", "sample_size")})
        cn = controlnet_to_ldm(controlnet)
        same("full sd15 controlnet", convert_controlnet_checkpoint(cn, dict(controlnet.config)), controlnet.state_dict(), shapes_only=True)
        layouts["sd15_controlnet"] = {k: list(v.shape) for k, v in sorted(cn.items())}
    with open(os.path.join(out, "full_layouts.json"), "w") as f:
        json.dump(layouts, f, sort_keys=True, separators=(",", ":"))
        f.write("\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fixtures", default=os.path.join(os.path.dirname(__file__), "..", "diffusion", "tests", "fixtures"))
    args = ap.parse_args()
    fixtures = os.path.normpath(args.fixtures)
    out = os.path.join(fixtures, "single_file")
    os.makedirs(out, exist_ok=True)
    for kind in ("sd1", "sd2"):
        build(kind, fixtures, out)
    full_layouts(out)
    print(f"single-file checkpoints written to {out}")


if __name__ == "__main__":
    main()
