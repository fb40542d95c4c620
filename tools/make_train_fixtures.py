#!/usr/bin/env python3
"""Training-step fixtures: diffusers/torch compute training steps on the tiny sd1 models.

    .venv/bin/python tools/make_train_fixtures.py [--out diffusion/tests/fixtures/train]

Run after tools/make_fixtures.py (it reads sd1/). Everything is seeded and recorded, so the
Rust test (diffusion/tests/train_parity.rs) feeds the very same latents, noise, timesteps, ids
and control images and compares:

  controlnet.*   two steps of ControlNet training as diffusers' examples/controlnet/
                 train_controlnet.py does them: DDPM add_noise, frozen text encoder and UNet,
                 MSE on the epsilon target, clip_grad_norm_(1.0), torch.optim.AdamW. Recorded: the
                 loss of each step, every ControlNet gradient of step 1, every ControlNet weight
                 after step 1 and after step 2 (Adam's bias correction differs between them).
  vpred.loss     the step-1 loss with prediction_type v_prediction (get_velocity target).
  from_unet.*    ControlNetModel.from_unet(unet): the copied and the zeroed weights (the
                 conditioning encoder's first layers are random and not recorded).
  unet.*         one step of TextDiffuser-2-style fine-tuning: UNet and text encoder trainable,
                 no ControlNet; loss and a few gradients of each (the token-embedding gradient
                 only at the ids the batch uses).
"""
import argparse
import json
import os

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from diffusers import ControlNetModel, DDPMScheduler, UNet2DConditionModel
from transformers import CLIPTextModel

torch.use_deterministic_algorithms(True)
torch.set_num_threads(1)

HERE = os.path.dirname(os.path.abspath(__file__))
SD1 = os.path.join(HERE, "..", "diffusion", "tests", "fixtures", "sd1")

LR = 1e-3
BETAS = (0.9, 0.999)
WEIGHT_DECAY = 1e-2
EPS = 1e-8
MAX_GRAD_NORM = 1.0

# Parameters whose gradients the UNet fine-tuning case records.
UNET_PARAMS = [
    "conv_in.weight",
    "time_embedding.linear_1.weight",
    "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight",
    "mid_block.resnets.0.conv1.weight",
    "up_blocks.2.attentions.1.proj_out.weight",
    "conv_out.bias",
]
TEXT_PARAMS = [
    "encoder.layers.0.self_attn.q_proj.weight",
    "encoder.layers.2.mlp.fc2.weight",
    "final_layer_norm.weight",
    "embeddings.position_embedding.weight",
]


def load(scheduler_prediction="epsilon"):
    unet = UNet2DConditionModel.from_pretrained(os.path.join(SD1, "unet"))
    controlnet = ControlNetModel.from_pretrained(os.path.join(SD1, "controlnet"))
    text_encoder = CLIPTextModel.from_pretrained(
        os.path.join(SD1, "text_encoder"), torch_dtype=torch.float32
    )
    scheduler = DDPMScheduler.from_pretrained(
        os.path.join(SD1, "scheduler"), prediction_type=scheduler_prediction
    )
    return unet, controlnet, text_encoder, scheduler


def target_of(scheduler, latents, noise, timesteps):
    if scheduler.config.prediction_type == "epsilon":
        return noise
    return scheduler.get_velocity(latents, noise, timesteps)


def controlnet_loss(unet, controlnet, text_encoder, scheduler, batch):
    latents, noise, timesteps = batch["latents"], batch["noise"], batch["timesteps"]
    noisy = scheduler.add_noise(latents, noise, timesteps)
    encoder_hidden_states = text_encoder(batch["input_ids"], return_dict=False)[0]
    down, mid = controlnet(
        noisy,
        timesteps,
        encoder_hidden_states=encoder_hidden_states,
        controlnet_cond=batch["control"],
        return_dict=False,
    )
    pred = unet(
        noisy,
        timesteps,
        encoder_hidden_states=encoder_hidden_states,
        down_block_additional_residuals=down,
        mid_block_additional_residual=mid,
        return_dict=False,
    )[0]
    target = target_of(scheduler, latents, noise, timesteps)
    return F.mse_loss(pred.float(), target.float(), reduction="mean")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument(
        "--out", default=os.path.join(HERE, "..", "diffusion", "tests", "fixtures", "train")
    )
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)

    g = torch.Generator().manual_seed(1234)
    batch = {
        "latents": torch.randn(2, 4, 8, 8, generator=g),
        "noise": torch.randn(2, 4, 8, 8, generator=g),
        # One low and one high noise level.
        "timesteps": torch.tensor([17, 803], dtype=torch.long),
        # Glyph-mask-like control images: sparse white on black, in [0, 1].
        "control": (torch.rand(2, 3, 64, 64, generator=g) > 0.8).float(),
        # bos, a few words, eos, padding with eos (sd1's tokenizer pads with 49407).
        "input_ids": torch.tensor(
            [[49406, 320, 1125, 539, 320, 2368, 49407] + [49407] * 70,
             [49406, 3795, 1929, 49407] + [49407] * 73],
            dtype=torch.long,
        ),
    }
    refs = {f"batch.{k}": v.clone() for k, v in batch.items()}

    # ControlNet: two steps.
    unet, controlnet, text_encoder, scheduler = load()
    unet.requires_grad_(False)
    text_encoder.requires_grad_(False)
    controlnet.train()
    opt = torch.optim.AdamW(
        controlnet.parameters(), lr=LR, betas=BETAS, weight_decay=WEIGHT_DECAY, eps=EPS
    )
    names = [n for n, _ in controlnet.named_parameters()]
    losses = []
    for step in range(2):
        loss = controlnet_loss(unet, controlnet, text_encoder, scheduler, batch)
        loss.backward()
        if step == 0:
            for n, p in controlnet.named_parameters():
                refs[f"controlnet.grad.{n}"] = p.grad.detach().clone()
        norm = torch.nn.utils.clip_grad_norm_(controlnet.parameters(), MAX_GRAD_NORM)
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
        for n, p in controlnet.named_parameters():
            refs[f"controlnet.step{step + 1}.{n}"] = p.detach().clone()
        refs[f"controlnet.grad_norm{step + 1}"] = norm.detach().reshape(1).clone()
    refs["controlnet.loss"] = torch.tensor(losses, dtype=torch.float64)

    # v-prediction target.
    unet, controlnet, text_encoder, scheduler = load("v_prediction")
    with torch.no_grad():
        vloss = controlnet_loss(unet, controlnet, text_encoder, scheduler, batch)
    refs["vpred.loss"] = torch.tensor([vloss.item()], dtype=torch.float64)

    # ControlNetModel.from_unet: copied trunk, zeroed zero-convolutions.
    cn = ControlNetModel.from_unet(
        unet, conditioning_embedding_out_channels=(4, 4, 8, 8), conditioning_channels=1
    )
    for n, p in cn.state_dict().items():
        random_part = n.startswith("controlnet_cond_embedding.") and not n.startswith(
            "controlnet_cond_embedding.conv_out."
        )
        if not random_part:
            refs[f"from_unet.{n}"] = p.detach().clone()

    # TextDiffuser-2-style fine-tuning: UNet and text encoder trainable.
    unet, _, text_encoder, scheduler = load()
    unet.train()
    text_encoder.train()
    latents, noise, timesteps = batch["latents"], batch["noise"], batch["timesteps"]
    noisy = scheduler.add_noise(latents, noise, timesteps)
    ehs = text_encoder(batch["input_ids"], return_dict=False)[0]
    pred = unet(noisy, timesteps, encoder_hidden_states=ehs, return_dict=False)[0]
    loss = F.mse_loss(pred.float(), noise.float(), reduction="mean")
    loss.backward()
    refs["unet.loss"] = torch.tensor([loss.item()], dtype=torch.float64)
    unet_params = dict(unet.named_parameters())
    for n in UNET_PARAMS:
        refs[f"unet.grad.unet.{n}"] = unet_params[n].grad.detach().clone()
    te_params = dict(text_encoder.named_parameters())
    for n in TEXT_PARAMS:
        refs[f"unet.grad.text_encoder.{n}"] = te_params[n].grad.detach().clone()
    ids = torch.unique(batch["input_ids"])
    emb_grad = te_params["embeddings.token_embedding.weight"].grad
    refs["unet.token_ids"] = ids.clone()
    refs["unet.grad.token_embedding_rows"] = emb_grad[ids].detach().clone()

    refs = {k: v.contiguous() for k, v in refs.items()}
    save_file(refs, os.path.join(args.out, "refs.safetensors"))
    settings = {
        "lr": LR,
        "betas": BETAS,
        "weight_decay": WEIGHT_DECAY,
        "eps": EPS,
        "max_grad_norm": MAX_GRAD_NORM,
        "controlnet_params": names,
        "unet_params": UNET_PARAMS,
        "text_params": TEXT_PARAMS,
        "losses": losses,
        "vpred_loss": vloss.item(),
        "unet_loss": loss.item(),
    }
    with open(os.path.join(args.out, "settings.json"), "w") as f:
        json.dump(settings, f, indent=2)
        f.write("\n")
    print(json.dumps({k: settings[k] for k in ("losses", "vpred_loss", "unet_loss")}))


if __name__ == "__main__":
    main()
