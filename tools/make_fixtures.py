#!/usr/bin/env python3
"""Builds the golden fixtures of letterpress-diffusion with diffusers and transformers (the oracle).

    .venv/bin/python tools/make_fixtures.py [--out diffusion/tests/fixtures]

(`make fixtures` runs it after `scripts/setup --oracle`.) Everything is seeded and saved in a fixed
order, so a second run rewrites the same bytes.

What it writes, under the output folder:
  clip_bpe/vocab.json, merges.txt   CLIP BPE vocabulary built from the open-clip-torch wheel's
                                    bpe_simple_vocab_16e6.txt.gz the way OpenAI's SimpleTokenizer does
                                    (49408 ids). Tokenizer folders link to these files so the 1.5 MB
                                    vocabulary is stored once.
  sd1/, sd2/                        tiny random diffusers pipelines in the standard folder layout
                                    (model_index.json, unet/, controlnet/, vae/, text_encoder/,
                                    tokenizer/, scheduler/) plus refs.safetensors with the inputs
                                    and reference outputs recorded from diffusers/transformers.
  td2_tokenizer/                    CLIP tokenizer plus TextDiffuser-2's 2,175 added tokens.
  tokenizer_ids.json                transformers' CLIPTokenizer ids for the prompts below and
                                    TextDiffuser-2 input ids built as the reference code does.
  full_manifests.json               for the released configurations (SD 1.5 UNet, ControlNet,
                                    VAE, CLIP ViT-L/14 text; SD 2.1 UNet, OpenCLIP ViT-H text):
                                    the config, the number of parameters and the SHA-256 of the
                                    sorted "name shape" lines, so the tests prove that real
                                    checkpoints' keys and shapes are what our models expect
                                    without storing gigabytes (models are built on the meta device).

sd1 is SD-1.x-like: int attention_head_dim, conv proj_in/proj_out, quick_gelu CLIP, legacy VAE
attention keys (query/key/value/proj_attn), ControlNet with a 3-channel hint, epsilon scheduler.
sd2 is SD-2.x-like: per-block attention_head_dim, use_linear_projection, upcast_attention,
transformer_layers_per_block [1, 2, 1], in_channels 9 (inpainting), gelu CLIP read at the
penultimate layer, text encoder stored as the .fp16 variant, ControlNet with a 1-channel hint,
v-prediction scheduler config.
"""
import argparse
import gzip
import json
import os
import shutil
import string

import open_clip
import torch
from diffusers import AutoencoderKL, ControlNetModel, DDIMScheduler, UNet2DConditionModel
from safetensors.torch import load_file, save_file
from tokenizers import AddedToken
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

torch.use_deterministic_algorithms(True)
torch.set_num_threads(1)

PAD_IDS = {"sd1": "<|endoftext|>", "sd2": "!"}  # SD 2.x tokenizers pad with "!" (id 0)


# --- CLIP BPE vocabulary (OpenAI CLIP simple_tokenizer.py construction) ------------------------
def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def write_clip_bpe(out):
    path = os.path.join(os.path.dirname(open_clip.__file__), "bpe_simple_vocab_16e6.txt.gz")
    lines = gzip.open(path).read().decode("utf-8").split("\n")
    merges = [tuple(m.split()) for m in lines[1 : 49152 - 256 - 2 + 1]]
    vocab = list(bytes_to_unicode().values())
    vocab = vocab + [v + "</w>" for v in vocab]
    vocab += ["".join(m) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    assert len(vocab) == 49408
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump({t: i for i, t in enumerate(vocab)}, f, ensure_ascii=False)
    with open(os.path.join(out, "merges.txt"), "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n")


def td2_added_tokens():
    """TextDiffuser-2's added tokens in id order (docs/architecture.md, "TextDiffuser-2's formats")."""
    toks = []
    for i in range(520):
        toks += [f"l{i}", f"t{i}", f"r{i}", f"b{i}"]
    alphabet = string.digits + string.ascii_lowercase + string.ascii_uppercase + string.punctuation + " "
    toks += [f"[{c}]" for c in alphabet]
    assert len(toks) == 2175
    return toks


def write_tokenizer(folder, bpe_dir, pad_token, added=None):
    os.makedirs(folder, exist_ok=True)
    for name in ("vocab.json", "merges.txt"):
        link = os.path.join(folder, name)
        if os.path.lexists(link):
            os.remove(link)
        os.symlink(os.path.relpath(os.path.join(bpe_dir, name), folder), link)
    config = {
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": 77,
        "bos_token": "<|startoftext|>",
        "eos_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>",
        "pad_token": pad_token,
        "do_lower_case": True,
    }
    with open(os.path.join(folder, "tokenizer_config.json"), "w") as f:
        json.dump(config, f, indent=2, sort_keys=True)
    if added is not None:
        with open(os.path.join(folder, "added_tokens.json"), "w") as f:
            json.dump({t: 49408 + i for i, t in enumerate(added)}, f, indent=0, ensure_ascii=False)


def load_tokenizer(folder):
    tok = CLIPTokenizer.from_pretrained(folder)
    path = os.path.join(folder, "added_tokens.json")
    if os.path.exists(path):
        # TextDiffuser-2 called `tokenizer.add_tokens` on the slow tokenizer of transformers 4.x,
        # which matched added tokens case-sensitively on the raw text. transformers 5 would
        # lowercase them (so "[A]" and "[a]" collide) unless they are marked normalized=False.
        added = json.load(open(path))
        tok.add_tokens([AddedToken(t, normalized=False, special=False) for t in sorted(added, key=added.get)])
        for t, i in added.items():
            assert tok.convert_tokens_to_ids(t) == i, (t, i)
    return tok


PROMPTS = [
    "a photo of a cat",
    "A Photo Of A CAT",
    "",
    " ",
    "hello world",
    "  lots   of\twhite\n\nspace  ",
    "a poster that says \"Summer Vibe 2024\"!",
    "it's the cat's pyjamas, isn't it? we'll see, they'd've",
    "numbers 1234567890 and 3.14159",
    "café crème brûlée, naïve façade",
    "Ünïcödé ÀÉÎÕÜ",
    "日本語のポスター",
    "中文海报设计",
    "emoji 🎉🐱 party",
    "Ｆｕｌｌｗｉｄｔｈ text",
    "e\u0301 combining accent",
    "mixed-case CamelCaseWord and snake_case_word",
    "punctuation!!! ??? ... --- ### @@@ $$$",
    "<|startoftext|>special tokens<|endoftext|> inside",
    "url https://example.com/path?q=1&r=2",
    "a very long prompt " * 20,
    "supercalifragilisticexpialidocious antidisestablishmentarianism",
    "Ελληνικά και русский текст",
    "tabs\tand\rcarriage\r\nreturns",
    "l25 t89 r100 b120 [H] [i]",
    "a poster of KFC l12 t34 r56 b78 [K] [F] [C] [ ] [k]",
    "bl250 L25 [a][A] [é] [[x]]",
    "the text 'VIVO50' on a red sign",
    "x" * 300,
    "A cat holding a sign that reads \"Hello, World!\" in the style of a 1950s advertisement, highly detailed, 4k",
    # Unicode whitespace classes, case mapping and compatibility characters, where regex
    # engines and normalisers could disagree.
    "non\u00a0breaking\u3000ideographic\u2009thin\u200bzero\u2028line\u0085nel",
    "İstanbul ΟΔΟΣ ΣΑΣ straße ǅ",
    "ﬁ ligature ½ ² Ⅻ ①",
]

# (caption, lines) for TextDiffuser-2 input ids; each line is the token list letterpress-layout
# produces: l/t/r/b on the 0..128 grid, then one [c] token per character.
TD2_CASES = [
    ("a poster of summer", [["l20", "t20", "r100", "b40"] + [f"[{c}]" for c in "Summer Vibe"]]),
    ("KFC ad", [["l12", "t34", "r56", "b78", "[K]", "[F]", "[C]"], ["l10", "t90", "r120", "b110"] + [f"[{c}]" for c in "VIVO50"]]),
    ("no text at all", []),
    ("many lines", [["l0", "t%d" % (8 * i), "r127", "b%d" % (8 * i + 8)] + [f"[{c}]" for c in "Line %d!" % i] for i in range(8)]),
    ("a long caption " * 10, [["l1", "t2", "r3", "b4", "[a]"]]),
    ("unknown char", [["l5", "t5", "r50", "b20", "[é]", "[x]"]]),
]


def td2_input_ids(tok, caption, lines):
    """TextDiffuser-2 (microsoft/unilm textdiffuser-2 inference): caption ids (with bos and eos),
    then per line its layout and char tokens and an eos, cut to 77 and padded with the pad id."""
    ids = tok(caption, truncation=True, max_length=77).input_ids
    for line in lines:
        ids += tok.convert_tokens_to_ids(line) + [tok.eos_token_id]
    ids = ids[:77]
    ids += [tok.pad_token_id] * (77 - len(ids))
    return ids


def write_tokenizer_ids(out):
    record = {"prompts": PROMPTS, "tokenizers": {}, "td2_inputs": []}
    for name in ("sd1", "sd2", "td2"):
        folder = os.path.join(out, name if name == "td2" else name, "tokenizer") if name != "td2" else os.path.join(out, "td2_tokenizer")
        tok = load_tokenizer(folder)
        record["tokenizers"][name] = {
            "folder": os.path.relpath(folder, out),
            "pad_token_id": tok.pad_token_id,
            "ids": [tok(p, padding="max_length", truncation=True, max_length=77).input_ids for p in PROMPTS],
        }
    tok = load_tokenizer(os.path.join(out, "td2_tokenizer"))
    for caption, lines in TD2_CASES:
        record["td2_inputs"].append({"caption": caption, "lines": lines, "ids": td2_input_ids(tok, caption, lines)})
    with open(os.path.join(out, "tokenizer_ids.json"), "w") as f:
        json.dump(record, f, ensure_ascii=False, indent=None)
        f.write("\n")


# --- models ------------------------------------------------------------------------------------
def randomize(model, gen):
    """diffusers zero-initialises ControlNet's zero convolutions and norms start at weight 1,
    bias 0: parity on such weights would test nothing. Perturb everything, seeded."""
    with torch.no_grad():
        for _, p in sorted(model.named_parameters()):
            noise = torch.randn(p.shape, generator=gen)
            if torch.count_nonzero(p) == 0:
                p.copy_(noise * 0.1)
            else:
                p.add_(noise * 0.02)


def unet_config(kind):
    common = dict(
        sample_size=8,
        out_channels=4,
        norm_num_groups=4,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    )
    if kind == "sd1":
        return dict(common, in_channels=4, layers_per_block=2, attention_head_dim=2, cross_attention_dim=8, block_out_channels=(8, 8, 16))
    return dict(
        common,
        in_channels=9,
        block_out_channels=(8, 16, 16),
        layers_per_block=1,
        cross_attention_dim=4,
        attention_head_dim=(2, 4, 4),
        use_linear_projection=True,
        upcast_attention=True,
        transformer_layers_per_block=(1, 2, 1),
    )


def text_config(kind):
    return CLIPTextConfig(
        vocab_size=49408,
        hidden_size=8 if kind == "sd1" else 4,
        intermediate_size=16,
        num_hidden_layers=3,
        num_attention_heads=2,
        max_position_embeddings=77,
        hidden_act="quick_gelu" if kind == "sd1" else "gelu",
        projection_dim=8 if kind == "sd1" else 4,
        bos_token_id=49406,
        eos_token_id=49407,
        pad_token_id=1,
    )


def vae_config(kind):
    if kind == "sd1":
        return dict(
            block_out_channels=(8, 16),
            down_block_types=("DownEncoderBlock2D",) * 2,
            up_block_types=("UpDecoderBlock2D",) * 2,
            latent_channels=4,
            layers_per_block=1,
            norm_num_groups=4,
            sample_size=16,
        )
    return dict(
        block_out_channels=(8, 16, 16),
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        latent_channels=4,
        layers_per_block=1,
        norm_num_groups=4,
        sample_size=16,
        scaling_factor=0.13025,
    )


def legacy_vae_keys(folder):
    """Rewrites the VAE's attention keys into the pre-0.14 diffusers names that many SD 1.x
    checkpoints still carry (diffusers converts them on load)."""
    path = os.path.join(folder, "diffusion_pytorch_model.safetensors")
    sd = load_file(path)
    renames = {"to_q": "query", "to_k": "key", "to_v": "value", "to_out.0": "proj_attn"}
    out = {}
    for k, v in sd.items():
        for new, old in renames.items():
            if f".attentions.0.{new}." in k:
                k = k.replace(f".attentions.0.{new}.", f".attentions.0.{old}.")
        out[k] = v
    save_file(out, path, metadata={"format": "pt"})


def build(kind, out, bpe_dir):
    root = os.path.join(out, kind)
    gen = torch.Generator().manual_seed(1 if kind == "sd1" else 2)
    torch.manual_seed(10 if kind == "sd1" else 20)
    refs = {}

    # text encoder ---------------------------------------------------------------------------
    write_tokenizer(os.path.join(root, "tokenizer"), bpe_dir, PAD_IDS[kind])
    tok = load_tokenizer(os.path.join(root, "tokenizer"))
    text = CLIPTextModel(text_config(kind)).eval()
    randomize(text, gen)
    # Stored in half precision (the embedding table dominates the fixture size); the reference
    # runs in fp32 on exactly the rounded weights.
    text = text.half().float()
    prompts = ["a photo of a cat", "A Poster that says \"Summer Vibe\", 2024"]
    ids = torch.tensor([tok(p, padding="max_length", truncation=True, max_length=77).input_ids for p in prompts])
    with torch.no_grad():
        o = text(ids, output_hidden_states=True)
        refs["text.input_ids"] = ids.to(torch.int64)
        refs["text.last_hidden_state"] = o.last_hidden_state
        # diffusers' clip_skip=1: hidden_states[-2] through the final layer norm (SD 2.x style)
        refs["text.penultimate"] = text.final_layer_norm(o.hidden_states[-2])
    te = os.path.join(root, "text_encoder")
    text.half().save_pretrained(te, safe_serialization=True)
    if kind == "sd1":
        # Released SD 1.x folders (saved by transformers 4) prefix every key with `text_model.`;
        # transformers 5 saves without it. Keep one of each so the loader is tested on both.
        path = os.path.join(te, "model.safetensors")
        sd = load_file(path)
        save_file({"text_model." + k: v for k, v in sd.items()}, path, metadata={"format": "pt"})
    else:
        os.rename(os.path.join(te, "model.safetensors"), os.path.join(te, "model.fp16.safetensors"))

    # unet + controlnet ----------------------------------------------------------------------
    unet = UNet2DConditionModel(**unet_config(kind)).eval()
    randomize(unet, gen)
    cn_channels = 3 if kind == "sd1" else 1
    controlnet = ControlNetModel.from_unet(
        unet, conditioning_embedding_out_channels=(4, 4, 8, 8), conditioning_channels=cn_channels
    ).eval()
    randomize(controlnet, gen)
    in_ch = unet.config.in_channels
    sample = torch.randn((2, in_ch, 8, 8), generator=gen)
    timestep = torch.tensor(981.0 if kind == "sd1" else 37.0)
    states = torch.randn((2, 77, unet.config.cross_attention_dim), generator=gen)
    hint = torch.rand((2, cn_channels, 64, 64), generator=gen)
    refs.update({"unet.sample": sample, "unet.timestep": timestep.reshape(1), "unet.encoder_hidden_states": states, "controlnet.cond": hint})
    with torch.no_grad():
        refs["unet.out"] = unet(sample, timestep, states, return_dict=False)[0]
        for mode, (scale, guess) in {"scaled": (0.8, False), "guess": (1.0, True)}.items():
            down, mid = controlnet(sample, timestep, states, hint, conditioning_scale=scale, guess_mode=guess, return_dict=False)
            for i, d in enumerate(down):
                refs[f"controlnet.{mode}.down.{i}"] = d
            refs[f"controlnet.{mode}.mid"] = mid
            refs[f"unet.out_with_controlnet.{mode}"] = unet(
                sample, timestep, states, down_block_additional_residuals=down, mid_block_additional_residual=mid, return_dict=False
            )[0]
    unet.save_pretrained(os.path.join(root, "unet"), safe_serialization=True)
    controlnet.save_pretrained(os.path.join(root, "controlnet"), safe_serialization=True)

    # vae ------------------------------------------------------------------------------------
    vae = AutoencoderKL(**vae_config(kind)).eval()
    randomize(vae, gen)
    image = torch.rand((2, 3, 16, 16), generator=gen) * 2 - 1
    side = 16 // 2 ** (len(vae.config.block_out_channels) - 1)
    latents = torch.randn((2, 4, side, side), generator=gen)
    with torch.no_grad():
        dist = vae.encode(image).latent_dist
        refs.update({"vae.image": image, "vae.mean": dist.mean, "vae.logvar": dist.logvar, "vae.latents": latents})
        refs["vae.decoded"] = vae.decode(latents).sample
    vae_dir = os.path.join(root, "vae")
    vae.save_pretrained(vae_dir, safe_serialization=True)
    if kind == "sd1":
        legacy_vae_keys(vae_dir)

    # scheduler and model_index --------------------------------------------------------------
    sched = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
        prediction_type="epsilon" if kind == "sd1" else "v_prediction",
    )
    sched.save_pretrained(os.path.join(root, "scheduler"))
    model_index = {
        "_class_name": "StableDiffusionControlNetPipeline",
        "controlnet": ["diffusers", "ControlNetModel"],
        "scheduler": ["diffusers", "DDIMScheduler"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    }
    with open(os.path.join(root, "model_index.json"), "w") as f:
        json.dump(model_index, f, indent=2, sort_keys=True)
    save_file({k: v.contiguous() for k, v in sorted(refs.items())}, os.path.join(root, "refs.safetensors"), metadata={"format": "pt"})


SD15_UNET = dict(
    sample_size=64,
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    block_out_channels=(320, 640, 1280, 1280),
    layers_per_block=2,
    cross_attention_dim=768,
    attention_head_dim=8,
)
# stabilityai/stable-diffusion-2-1/unet/config.json
SD21_UNET = dict(
    SD15_UNET, sample_size=96, cross_attention_dim=1024, attention_head_dim=(5, 10, 20, 20), use_linear_projection=True, upcast_attention=True
)


def manifest_line(name, shape):
    return f"{name} {list(shape)}"


def write_full_manifests(out):
    from diffusers import AutoencoderKL as VAE

    builders = {
        "sd15_unet": lambda: UNet2DConditionModel(**SD15_UNET),
        "sd15_controlnet": lambda: ControlNetModel(**{k: v for k, v in SD15_UNET.items() if k not in ("up_block_types", "sample_size")}),
        "sd15_vae": lambda: VAE(
            block_out_channels=(128, 256, 512, 512),
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
            layers_per_block=2,
            sample_size=512,
        ),
        "clip_vit_l14_text": lambda: CLIPTextModel(
            CLIPTextConfig(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12, hidden_act="quick_gelu", projection_dim=768)
        ),
        "sd21_unet": lambda: UNet2DConditionModel(**SD21_UNET),
        "openclip_vit_h_text": lambda: CLIPTextModel(
            CLIPTextConfig(hidden_size=1024, intermediate_size=4096, num_hidden_layers=23, num_attention_heads=16, hidden_act="gelu", projection_dim=512)
        ),
    }
    import hashlib

    record = {}
    for name, build_model in builders.items():
        with torch.device("meta"):
            model = build_model()
        lines = sorted(manifest_line(k, v.shape) for k, v in model.state_dict().items() if not k.endswith("position_ids"))
        config = json.loads(model.config.to_json_string()) if hasattr(model.config, "to_json_string") else dict(model.config)
        config.pop("_name_or_path", None)
        config.pop("transformers_version", None)
        config.pop("_diffusers_version", None)
        config.pop("_use_default_values", None)  # a set: its order changes between runs
        record[name] = {
            "class": type(model).__name__,
            "config": config,
            "count": len(lines),
            "sha256": hashlib.sha256("\n".join(lines).encode()).hexdigest(),
        }
    with open(os.path.join(out, "full_manifests.json"), "w") as f:
        json.dump(record, f, indent=1, sort_keys=True)
        f.write("\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "diffusion", "tests", "fixtures"))
    args = ap.parse_args()
    out = os.path.normpath(args.out)
    for sub in ("clip_bpe", "sd1", "sd2", "td2_tokenizer"):
        shutil.rmtree(os.path.join(out, sub), ignore_errors=True)
    bpe_dir = os.path.join(out, "clip_bpe")
    write_clip_bpe(bpe_dir)
    write_tokenizer(os.path.join(out, "td2_tokenizer"), bpe_dir, "<|endoftext|>", td2_added_tokens())
    for kind in ("sd1", "sd2"):
        build(kind, out, bpe_dir)
    write_tokenizer_ids(out)
    write_full_manifests(out)
    print(f"fixtures written to {out}")


if __name__ == "__main__":
    main()
