"""Build the reference fixtures: tiny random models of the real I2VGen-XL architectures, saved in
the diffusers folder layout, plus golden inputs and outputs computed by diffusers/transformers.

CPU, f32, fixed seeds. Run from the repository root:

    python tests/reference/make_fixtures.py            # writes tests/fixtures/

Versions are pinned in tests/reference/requirements.txt (see tests/fixtures/README.md).
"""

import gzip
import importlib.metadata
import json
import os
import shutil
import sys
import types
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

import diffusers
import transformers
from diffusers import AutoencoderKL, DDIMScheduler, I2VGenXLUNet, UNet3DConditionModel
from transformers import (
    CLIPImageProcessor,
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTokenizer,
    CLIPVisionConfig,
    CLIPVisionModelWithProjection,
)

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "tests" / "fixtures"
MODEL = OUT / "tiny-i2vgen"
REFINER = OUT / "tiny-vid2vid"
ORIGINAL = OUT / "tiny-vid2vid-original"
GOLDEN = OUT / "golden"

torch.use_deterministic_algorithms(True)
torch.set_num_threads(1)

# Sizes shared by the tiny components: odd, non-square latents and more than one head everywhere.
HIDDEN = 32  # text hidden = image projection = UNet cross_attention_dim, as in the real model (1024)
LATENT_H, LATENT_W = 6, 10
VAE_BLOCKS = [16, 32, 32]  # 3 blocks → 4× spatial down-sampling (the real VAE has 4 blocks, 8×)
IMAGE_H, IMAGE_W = LATENT_H * 4, LATENT_W * 4
CLIP_IMAGE = 30  # CLIP vision image size (real: 224), patch 6 → 25 patches + class token


def seed(n):
    torch.manual_seed(n)
    np.random.seed(n)


def perturb(module, scale=0.1):
    """Make every weight matter: diffusers and transformers start some layers at zero (temporal
    `conv4`, `proj_out`s) and norms at 1/0; add noise to every parameter so those paths are
    tested. Noise is relative to each tensor's own spread, with a floor for constant tensors."""
    with torch.no_grad():
        for name, p in module.named_parameters():
            spread = p.std().item() if p.numel() > 1 else 0.0
            p.add_(torch.randn_like(p) * max(spread, scale) * 0.5)


def save_component(model, folder, key_prefix="", dtype=torch.float32):
    """Save `model` in the diffusers/hub layout: config.json + one safetensors file."""
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder, safe_serialization=True)
    # Re-write the weights ourselves: the hub layout (with `key_prefix`) and the chosen dtype.
    for f in folder.glob("*.safetensors"):
        f.unlink()
    state = {key_prefix + k: v.detach().to(dtype).contiguous() for k, v in model.state_dict().items()}
    name = "model.safetensors" if isinstance(model, transformers.PreTrainedModel) else "diffusion_pytorch_model.safetensors"
    save_file(state, folder / name)


def round_to(model, dtype):
    """Round the weights to `dtype` and back, so golden outputs match weights stored as `dtype`."""
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.to(dtype).to(torch.float32))


# --- tokenizer: the REAL CLIP vocabulary -------------------------------------------------------

def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [chr(c) for c in cs]


def write_tokenizer(folder):
    """vocab.json + merges.txt built from open_clip's bpe_simple_vocab_16e6.txt.gz, exactly as
    openai/clip-vit-large-patch14 and the I2VGen-XL hub repo ship them (49,408 entries)."""
    import importlib.util

    spec = importlib.util.find_spec("open_clip")
    bpe = Path(spec.submodule_search_locations[0]) / "bpe_simple_vocab_16e6.txt.gz"
    merges = gzip.open(bpe).read().decode("utf-8").split("\n")
    merges = merges[1 : 49152 - 256 - 2 + 1]
    merges = [tuple(m.split()) for m in merges]
    vocab = bytes_to_unicode()
    vocab = vocab + [v + "</w>" for v in vocab]
    vocab += ["".join(m) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    assert len(vocab) == 49408
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}, ensure_ascii=False))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n")
    # The SD 2.x / I2VGen-XL tokenizer pads with "!" (id 0), not with the end token.
    special = {
        "bos_token": "<|startoftext|>",
        "eos_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>",
        "pad_token": "!",
    }
    (folder / "special_tokens_map.json").write_text(json.dumps(special, indent=2))
    config = dict(special, model_max_length=77, do_lower_case=True, tokenizer_class="CLIPTokenizer")
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    return CLIPTokenizer(vocab_file=None, vocab=str(folder / "vocab.json"), merges=str(folder / "merges.txt"), **special)


PROMPTS = [
    "a photo of a cat",
    "",
    "A Photo Of A CAT",
    "   leading and trailing spaces   ",
    "repeated     spaces\tand\ttabs\nand newlines",
    "Papers, please! (and commas; semicolons: colons.)",
    "it's a dog's life, isn't it? we'll see, they'd say, you're right, I've done, I'm here",
    "rock'n'roll o'clock",
    "numbers 0123456789 and 3.14159 and 1,000,000",
    "year 2024, 16 fps, 1280x720",
    "café naïve résumé façade",
    "Ünïcödé ÄÖÜ straße",
    "日本語のテキスト",
    "中文提示词：一只猫在草地上",
    "Привет, мир",
    "emoji 🐱🚀✨ and 👍🏽 and 👨‍👩‍👧",
    "a fox → jumps ← over — the “lazy” dog…",
    "hashtags #sunset @user http://example.com/path?q=1&x=2",
    "under_score and hyphen-ated and slash/separated",
    "ALL CAPS SHOUTING!!!",
    "mixed123letters456 abc123",
    "a  man\u00a0with\u2003odd\u2009spaces",
    "math: x^2 + y^2 = z^2, 5% off, $100, €50",
    "quotes \"double\" and 'single' and `back`",
    "brackets [square] {curly} <angle>",
    "a cinematic shot of waves crashing against a lighthouse at sunset, 4k, highly detailed",
    "ﬁ ligature and full-width ＡＢＣ１２３",
    "tab\tseparated\tvalues",
    "...ellipsis... and ---dashes---",
    "a very long prompt " + " ".join(f"word{i} with detail" for i in range(40)),
    "the quick brown fox jumps over the lazy dog " * 10,
]


def tokenizer_golden(tokenizer):
    cases = []
    for prompt in PROMPTS:
        ids = tokenizer(prompt, padding="max_length", max_length=77, truncation=True).input_ids
        cases.append({"prompt": prompt, "ids": ids})
    assert cases[0]["ids"][:7] == [49406, 320, 1125, 539, 320, 2368, 49407]
    lines = ",\n".join(json.dumps(c, ensure_ascii=False) for c in cases)
    (GOLDEN / "tokenizer.json").write_text("[\n" + lines + "\n]\n")
    return cases


# --- encoders ------------------------------------------------------------------------------------

def text_encoder(tokenizer):
    seed(1)
    config = CLIPTextConfig(
        vocab_size=49408, hidden_size=HIDDEN, intermediate_size=37, num_hidden_layers=3,
        num_attention_heads=4, max_position_embeddings=77, hidden_act="gelu",
        projection_dim=HIDDEN, bos_token_id=49406, eos_token_id=49407, pad_token_id=0,
    )
    model = CLIPTextModel(config).eval()
    perturb(model)
    # Stored as f16 (the token embedding is 49408×32), so golden outputs use f16-rounded weights.
    round_to(model, torch.float16)
    save_component(model, MODEL / "text_encoder", key_prefix="text_model.", dtype=torch.float16)
    # transformers 5 flattened CLIPTextModel; I2VGenXLPipeline reads `text_model.final_layer_norm`.
    model.text_model = types.SimpleNamespace(final_layer_norm=model.final_layer_norm)

    ids = torch.tensor([
        tokenizer(p, padding="max_length", max_length=77, truncation=True).input_ids
        for p in ["a photo of a cat", "waves crashing against a lighthouse, 4k", ""]
    ], dtype=torch.int64)
    with torch.no_grad():
        out = model(ids, output_hidden_states=True)
        penultimate = model.final_layer_norm(out.hidden_states[-2])
    save_file({"input_ids": ids, "last_hidden_state": out.last_hidden_state.contiguous(),
               "penultimate_normed": penultimate.contiguous()}, GOLDEN / "text_encoder.safetensors")
    return model


def image_encoder():
    seed(2)
    config = CLIPVisionConfig(
        hidden_size=HIDDEN, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
        image_size=CLIP_IMAGE, patch_size=6, projection_dim=HIDDEN, hidden_act="quick_gelu",
    )
    model = CLIPVisionModelWithProjection(config).eval()
    perturb(model)
    save_component(model, MODEL / "image_encoder")
    pixel_values = torch.randn(2, 3, CLIP_IMAGE, CLIP_IMAGE)
    with torch.no_grad():
        embeds = model(pixel_values).image_embeds
    save_file({"pixel_values": pixel_values, "image_embeds": embeds.contiguous()},
              GOLDEN / "image_encoder.safetensors")
    processor = CLIPImageProcessor(
        crop_size={"height": CLIP_IMAGE, "width": CLIP_IMAGE}, size={"shortest_edge": CLIP_IMAGE},
        image_mean=[0.48145466, 0.4578275, 0.40821073], image_std=[0.26862954, 0.26130258, 0.27577711],
    )
    processor.save_pretrained(MODEL / "feature_extractor")
    return model


def vae():
    seed(3)
    model = AutoencoderKL(
        in_channels=3, out_channels=3,
        down_block_types=["DownEncoderBlock2D"] * len(VAE_BLOCKS),
        up_block_types=["UpDecoderBlock2D"] * len(VAE_BLOCKS),
        block_out_channels=VAE_BLOCKS, layers_per_block=2, latent_channels=4, norm_num_groups=8,
        sample_size=IMAGE_W, scaling_factor=0.18125,
    ).eval()
    perturb(model)
    save_component(model, MODEL / "vae")
    sample = torch.rand(2, 3, IMAGE_H, IMAGE_W) * 2 - 1
    latents = torch.randn(2, 4, LATENT_H, LATENT_W)
    with torch.no_grad():
        posterior = model.encode(sample).latent_dist
        decoded = model.decode(latents).sample
    save_file({"sample": sample, "latent_mean": posterior.mean.contiguous(),
               "latent_logvar": posterior.logvar.contiguous()}, GOLDEN / "vae_encode.safetensors")
    save_file({"latents": latents, "sample": decoded.contiguous()}, GOLDEN / "vae_decode.safetensors")
    return model


def unet():
    seed(4)
    model = I2VGenXLUNet(
        sample_size=LATENT_W, in_channels=4, out_channels=4,
        down_block_types=("CrossAttnDownBlock3D", "CrossAttnDownBlock3D", "DownBlock3D"),
        up_block_types=("UpBlock3D", "CrossAttnUpBlock3D", "CrossAttnUpBlock3D"),
        block_out_channels=(16, 32, 32), layers_per_block=2, norm_num_groups=8,
        cross_attention_dim=HIDDEN, attention_head_dim=8, num_attention_heads=None,
    ).eval()
    perturb(model)
    save_component(model, MODEL / "unet")
    frames = 3
    inputs = {
        "sample": torch.randn(2, 4, frames, LATENT_H, LATENT_W),
        "timestep": torch.tensor([981, 1], dtype=torch.int64),
        "encoder_hidden_states": torch.randn(2, 77, HIDDEN),
        "fps": torch.tensor([16, 8], dtype=torch.int64),
        "image_latents": torch.randn(2, 4, frames, LATENT_H, LATENT_W),
        "image_embeddings": torch.randn(2, HIDDEN),
    }
    with torch.no_grad():
        out = model(**inputs).sample
    save_file(dict(inputs, out_sample=out.contiguous()), GOLDEN / "unet.safetensors")
    return model


# --- scheduler ------------------------------------------------------------------------------------

I2VGEN_SCHEDULER = {
    "_class_name": "DDIMScheduler",
    "beta_end": 0.02,
    "beta_schedule": "squaredcos_cap_v2",
    "beta_start": 0.0001,
    "clip_sample": False,
    "num_train_timesteps": 1000,
    "prediction_type": "v_prediction",
    "rescale_betas_zero_snr": True,
    "set_alpha_to_one": True,
    "steps_offset": 1,
    "timestep_spacing": "leading",
    "thresholding": False,
}

SCHEDULER_CASES = {
    # name: overrides of the I2VGen-XL config
    "i2vgen": {},
    "i2vgen_trailing": {"timestep_spacing": "trailing"},
    "i2vgen_linspace": {"timestep_spacing": "linspace", "steps_offset": 0},
    "linear_epsilon": {"beta_schedule": "linear", "beta_start": 0.00085, "beta_end": 0.012,
                       "prediction_type": "epsilon", "rescale_betas_zero_snr": False,
                       "set_alpha_to_one": False},
    "scaled_linear_epsilon_trailing": {"beta_schedule": "scaled_linear", "beta_start": 0.00085,
                                       "beta_end": 0.012, "prediction_type": "epsilon",
                                       "rescale_betas_zero_snr": False, "timestep_spacing": "trailing"},
    "scaled_linear_v": {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012},
}


class correctly_rounded_sqrt:
    """torch's f32 `sqrt` on CPUs where it goes through MKL's `vmsSqrt` is an approximate
    reciprocal square root plus one refinement: ~20% of results are one ulp off, and which ones
    depends on the CPU model. `rescale_zero_terminal_snr` takes square roots, and the multistep
    schedulers' sigmas are `x ** 0.5` (the same kernel), so inside this context f32 `sqrt` and
    `** 0.5` are computed in f64 and rounded (the IEEE result every other platform gives), which
    makes the golden schedules reproducible anywhere."""

    def __enter__(self):
        self.original = torch.Tensor.sqrt
        self.original_pow = torch.Tensor.__pow__
        original, original_pow = self.original, self.original_pow
        torch.Tensor.sqrt = lambda t: original(t.double()).to(dtype=t.dtype) if t.dtype == torch.float32 else original(t)

        def pow(t, exponent):
            if t.dtype == torch.float32 and isinstance(exponent, float) and exponent == 0.5:
                return original(t.double()).to(dtype=t.dtype)
            return original_pow(t, exponent)

        torch.Tensor.__pow__ = pow

    def __exit__(self, *exc):
        torch.Tensor.sqrt = self.original
        torch.Tensor.__pow__ = self.original_pow


def scheduler():
    """Timesteps, alphas_cumprod and chains of `step`s. The chain runs in f64 (the scheduler's
    scalars cast to f64 after construction), so the reference is exact to ~1e-15."""
    with correctly_rounded_sqrt():
        _scheduler()


def _scheduler():
    seed(6)
    DDIMScheduler.from_config(I2VGEN_SCHEDULER).save_pretrained(MODEL / "scheduler")
    tensors, cases = {}, {}
    for name, overrides in SCHEDULER_CASES.items():
        config = dict(I2VGEN_SCHEDULER, **overrides)
        cases[name] = config
        for steps in (3, 5, 50):
            s = DDIMScheduler.from_config(config)
            s.set_timesteps(steps)
            key = f"{name}.{steps}"
            tensors[f"{key}.timesteps"] = s.timesteps.clone()
            tensors[f"{name}.alphas_cumprod"] = s.alphas_cumprod.to(torch.float64).clone()
            s.alphas_cumprod = s.alphas_cumprod.to(torch.float64)
            s.final_alpha_cumprod = s.final_alpha_cumprod.to(torch.float64)
            g = torch.Generator().manual_seed(steps)
            sample = torch.randn(2, 3, generator=g, dtype=torch.float64)
            tensors[f"{key}.sample"] = sample.clone()
            outputs, chain = [], []
            for t in s.timesteps:
                model_output = torch.randn(2, 3, generator=g, dtype=torch.float64)
                sample = s.step(model_output, t, sample, eta=0.0).prev_sample
                outputs.append(model_output)
                chain.append(sample)
            tensors[f"{key}.model_outputs"] = torch.stack(outputs)
            tensors[f"{key}.chain"] = torch.stack(chain)
        # add_noise at a few timesteps
        s = DDIMScheduler.from_config(config)
        s.alphas_cumprod = s.alphas_cumprod.to(torch.float64)
        original = torch.randn(4, 3, dtype=torch.float64)
        noise = torch.randn(4, 3, dtype=torch.float64)
        t = torch.tensor([0, 500, 981, 999])
        tensors[f"{name}.add_noise.original"] = original
        tensors[f"{name}.add_noise.noise"] = noise
        tensors[f"{name}.add_noise.timesteps"] = t
        tensors[f"{name}.add_noise.noisy"] = s.add_noise(original, noise, t)
    save_file({k: v.contiguous() for k, v in tensors.items()}, GOLDEN / "scheduler.safetensors")
    (GOLDEN / "scheduler_configs.json").write_text(json.dumps(cases, indent=2))


class f64_steps:
    """DPMSolverMultistepScheduler.step casts the sample to float32 ("upcast to avoid precision
    issues"), which would make an f64 chain an f32 one. Inside this context `.to(torch.float32)`
    leaves float64 tensors as they are, so the chain runs in f64 like the DDIM chains above
    (`correctly_rounded_sqrt` rounds with `.to(dtype=...)`, which this leaves alone)."""

    def __enter__(self):
        self.original = torch.Tensor.to
        original = self.original

        def to(t, *args, **kwargs):
            if t.dtype == torch.float64 and args and args[0] is torch.float32 and not kwargs:
                return t
            return original(t, *args, **kwargs)

        torch.Tensor.to = to

    def __exit__(self, *exc):
        torch.Tensor.to = self.original


# name: (class, overrides of the I2VGen-XL DDIM config passed to from_config, chain lengths)
MULTISTEP_CASES = {
    "dpm_i2vgen_leading": ("DPMSolverMultistepScheduler", {}, (5, 15, 25)),
    "dpm_i2vgen_trailing": ("DPMSolverMultistepScheduler", {"timestep_spacing": "trailing"}, (5, 15, 25)),
    "dpm_i2vgen_linspace": ("DPMSolverMultistepScheduler", {"timestep_spacing": "linspace"}, (5, 15, 25)),
    "dpm_epsilon_trailing": ("DPMSolverMultistepScheduler", {
        "beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012, "prediction_type": "epsilon",
        "rescale_betas_zero_snr": False, "timestep_spacing": "trailing"}, (5, 15, 25)),
    "dpm_epsilon_leading_heun_sigma_min": ("DPMSolverMultistepScheduler", {
        "beta_schedule": "linear", "beta_start": 0.00085, "beta_end": 0.012, "prediction_type": "epsilon",
        "rescale_betas_zero_snr": False, "solver_type": "heun", "final_sigmas_type": "sigma_min"}, (5, 15, 25)),
    "dpm_i2vgen_order1_trailing": ("DPMSolverMultistepScheduler", {"timestep_spacing": "trailing", "solver_order": 1},
                                   (5, 15)),
    "dpm_sample_euler_final": ("DPMSolverMultistepScheduler", {
        "prediction_type": "sample", "rescale_betas_zero_snr": False, "euler_at_final": True,
        "final_sigmas_type": "sigma_min", "lower_order_final": False}, (5, 25)),
    "unipc_i2vgen_leading": ("UniPCMultistepScheduler", {}, (5, 15, 25)),
    "unipc_i2vgen_trailing": ("UniPCMultistepScheduler", {"timestep_spacing": "trailing"}, (5, 15, 25)),
    "unipc_i2vgen_linspace": ("UniPCMultistepScheduler", {"timestep_spacing": "linspace"}, (5, 15, 25)),
    "unipc_epsilon_trailing": ("UniPCMultistepScheduler", {
        "beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012, "prediction_type": "epsilon",
        "rescale_betas_zero_snr": False, "timestep_spacing": "trailing"}, (5, 15, 25)),
    "unipc_epsilon_leading_bh1_sigma_min": ("UniPCMultistepScheduler", {
        "beta_schedule": "linear", "beta_start": 0.00085, "beta_end": 0.012, "prediction_type": "epsilon",
        "rescale_betas_zero_snr": False, "solver_type": "bh1", "final_sigmas_type": "sigma_min"}, (5, 15, 25)),
    "unipc_i2vgen_no_corrector_at_0_2": ("UniPCMultistepScheduler", {
        "timestep_spacing": "trailing", "disable_corrector": [0, 2]}, (5, 15)),
    "unipc_i2vgen_order1_no_lower_final": ("UniPCMultistepScheduler", {
        "timestep_spacing": "trailing", "solver_order": 1, "lower_order_final": False}, (5, 15)),
}


def multistep():
    """DPM-Solver++ and UniPC made the way a preset makes them (`Class.from_config` of the
    shipped DDIM config, with overrides): each case's saved config (as diffusers writes it,
    `-Infinity` included), and per chain length its timesteps, sigmas and a chain of `step`s on
    random model outputs, in f64 (see `f64_steps`)."""
    with correctly_rounded_sqrt(), f64_steps():
        _multistep()


def _multistep():
    folder = GOLDEN / "multistep"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    tensors = {}
    for index, (name, (class_name, overrides, lengths)) in enumerate(MULTISTEP_CASES.items()):
        cls = getattr(diffusers, class_name)
        (folder / f"{name}.json").write_text(cls.from_config(I2VGEN_SCHEDULER, **overrides).to_json_string())
        for steps in lengths:
            s = cls.from_config(I2VGEN_SCHEDULER, **overrides)
            s.set_timesteps(steps)
            s.sigmas = s.sigmas.double()
            key = f"{name}.{steps}"
            tensors[f"{key}.timesteps"] = s.timesteps.clone()
            tensors[f"{key}.sigmas"] = s.sigmas.clone()
            g = torch.Generator().manual_seed(1000 * index + steps)
            sample = torch.randn(2, 3, generator=g, dtype=torch.float64)
            tensors[f"{key}.sample"] = sample.clone()
            outputs, chain = [], []
            for t in s.timesteps:
                model_output = torch.randn(2, 3, generator=g, dtype=torch.float64)
                sample = s.step(model_output, t, sample).prev_sample
                assert sample.dtype == torch.float64
                outputs.append(model_output)
                chain.append(sample)
            tensors[f"{key}.model_outputs"] = torch.stack(outputs)
            tensors[f"{key}.chain"] = torch.stack(chain)
        s = cls.from_config(I2VGEN_SCHEDULER, **overrides)
        s.set_timesteps(lengths[0])
        s.sigmas = s.sigmas.double()
        original = torch.randn(4, 3, dtype=torch.float64)
        noise = torch.randn(4, 3, dtype=torch.float64)
        t = s.timesteps[1]
        tensors[f"{name}.add_noise.original"] = original
        tensors[f"{name}.add_noise.noise"] = noise
        tensors[f"{name}.add_noise.timestep"] = t.reshape(1).clone()
        tensors[f"{name}.add_noise.noisy"] = s.add_noise(original, noise, t.reshape(1))
    save_file({k: v.contiguous() for k, v in tensors.items()}, folder / "chains.safetensors")


def test_image():
    """A 53×37 RGB picture (odd sizes, wider than the output's aspect) with gradients and shapes,
    so both crops and both resamplers see real content. Saved as PNG for the CLI."""
    from PIL import Image, ImageDraw

    w, h = 53, 37
    y, x = np.mgrid[0:h, 0:w]
    rgb = np.stack([x * 255 // (w - 1), y * 255 // (h - 1), (x * y) % 256], axis=-1).astype(np.uint8)
    image = Image.fromarray(rgb, "RGB")
    draw = ImageDraw.Draw(image)
    draw.ellipse((10, 5, 30, 25), fill=(250, 240, 20))
    draw.rectangle((35, 20, 50, 33), fill=(20, 30, 200))
    image.save(GOLDEN / "image.png")
    return image


# --- the refiner: a VideoToVideoSDPipeline folder ------------------------------------------------

# The scheduler of cerspense/zeroscope_v2_XL (MS-Vid2Vid-XL's diffusers port uses the same).
REFINER_SCHEDULER = {
    "_class_name": "DDIMScheduler",
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "clip_sample": False,
    "num_train_timesteps": 1000,
    "prediction_type": "epsilon",
    "set_alpha_to_one": False,
    "steps_offset": 1,
}


def refiner_unet():
    seed(7)
    model = UNet3DConditionModel(
        sample_size=LATENT_W, in_channels=4, out_channels=4,
        down_block_types=("CrossAttnDownBlock3D", "CrossAttnDownBlock3D", "DownBlock3D"),
        up_block_types=("UpBlock3D", "CrossAttnUpBlock3D", "CrossAttnUpBlock3D"),
        block_out_channels=(16, 32, 32), layers_per_block=2, norm_num_groups=8,
        cross_attention_dim=HIDDEN, attention_head_dim=8,
    ).eval()
    perturb(model)
    # Stored in f16 (as the hub's fp16 variants are): half the bytes, and the f16 path is tested.
    round_to(model, torch.float16)
    save_component(model, REFINER / "unet", dtype=torch.float16)
    inputs = {
        "sample": torch.randn(2, 4, 3, LATENT_H, LATENT_W),
        "timestep": torch.tensor([961, 21], dtype=torch.int64),
        "encoder_hidden_states": torch.randn(2, 77, HIDDEN),
    }
    with torch.no_grad():
        out = model(**inputs).sample
    save_file(dict(inputs, out_sample=out.contiguous()), GOLDEN / "refiner_unet.safetensors")


def refiner_folder():
    """The rest of the refiner folder. The text encoder, tokenizer and VAE weights are the base
    model's (as in the real cascade: both use OpenCLIP ViT-H text and the SD 2.1 VAE), linked, not
    copied; the VAE config carries the refiner's own scaling factor."""
    REFINER.mkdir(parents=True, exist_ok=True)
    for name in ("text_encoder", "tokenizer"):
        link = REFINER / name
        if not link.exists():
            link.symlink_to(Path("..") / MODEL.name / name, target_is_directory=True)
    (REFINER / "vae").mkdir(exist_ok=True)
    config = json.loads((MODEL / "vae" / "config.json").read_text())
    config["scaling_factor"] = 0.18215
    (REFINER / "vae" / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    weights = REFINER / "vae" / "diffusion_pytorch_model.safetensors"
    if not weights.exists():
        weights.symlink_to(Path("..") / ".." / MODEL.name / "vae" / weights.name)
    DDIMScheduler.from_config(REFINER_SCHEDULER).save_pretrained(REFINER / "scheduler")
    index = {
        "_class_name": "VideoToVideoSDPipeline",
        "_diffusers_version": diffusers.__version__,
        "scheduler": ["diffusers", "DDIMScheduler"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet3DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    }
    (REFINER / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")


REFINE_CASE = {
    "prompt": "a cat surfing a wave, detailed",
    "negative_prompt": "blurry",
    "strength": 0.6,
    "num_inference_steps": 5,
    "guidance_scale": 15.0,
}


def original_key(key, config):
    """The original ModelScope / VGen `UNetSD` key of a diffusers `UNet3DConditionModel` key: the
    inverse of diffusers' scripts/convert_ms_text_to_video_to_diffusers.py."""
    per_block = config["layers_per_block"] + 1
    has_attention = [t.startswith("CrossAttn") for t in config["up_block_types"]]
    resnet = {"norm1": "in_layers.0", "conv1": "in_layers.2", "norm2": "out_layers.0",
              "conv2": "out_layers.3", "time_emb_proj": "emb_layers.1", "conv_shortcut": "skip_connection"}
    parts = key.split(".")

    def join(*segments):
        return ".".join(str(s) for s in segments if s != "")

    def inner(kind, rest):  # what follows a block's layer index
        if kind == "resnets":
            return join(0, resnet[rest[0]], *rest[1:])
        return join({"temp_convs": "0.temopral_conv", "attentions": 1, "temp_attentions": 2}[kind], *rest)

    head = {"time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
            "conv_norm_out": "out.0", "conv_out": "out.2", "conv_in": "input_blocks.0.0",
            "transformer_in": "input_blocks.0.1"}
    for new, old in head.items():
        if key.startswith(new + "."):
            return old + key[len(new):]
    if parts[0] == "down_blocks":
        b = int(parts[1])
        if parts[2] == "downsamplers":
            return join("input_blocks", 1 + b * per_block + per_block - 1, "op", *parts[5:])
        return join("input_blocks", 1 + b * per_block + int(parts[3]), inner(parts[2], parts[4:]))
    if parts[0] == "mid_block":
        kind, i = parts[1], int(parts[2])
        if kind in ("resnets", "temp_convs"):
            return join("middle_block", 3 * i, inner(kind, parts[3:])[2:])
        return join("middle_block", {"attentions": 1, "temp_attentions": 2}[kind], *parts[3:])
    if parts[0] == "up_blocks":
        b = int(parts[1])
        if parts[2] == "upsamplers":
            return join("output_blocks", b * per_block + per_block - 1, 3 if has_attention[b] else 1, *parts[4:])
        return join("output_blocks", b * per_block + int(parts[3]), inner(parts[2], parts[4:]))
    raise KeyError(key)


def refiner_original():
    """The tiny refiner UNet in the original checkpoint layout, for `weights-tools
    convert-original`: a bare `.pth` state dict and a full-LDM-style `.safetensors`
    (`model.diffusion_model.` prefix). The temporal transformers' projections are Conv1d there."""
    from safetensors.torch import load_file
    config = json.loads((REFINER / "unet" / "config.json").read_text())
    state = load_file(REFINER / "unet" / "diffusion_pytorch_model.safetensors")
    original = {}
    for key, value in state.items():
        temporal = key.startswith("transformer_in.") or ".temp_attentions." in key
        if temporal and key.endswith((".proj_in.weight", ".proj_out.weight")):
            value = value[:, :, None]
        new = original_key(key, config)
        assert new not in original, new
        original[new] = value.contiguous()
    ORIGINAL.mkdir(parents=True, exist_ok=True)
    torch.save(original, ORIGINAL / "unet.pth")
    save_file({"model.diffusion_model." + k: v for k, v in original.items()}, ORIGINAL / "model.safetensors")


def refine():
    """VideoToVideoSDPipeline on the base pipeline's golden frames with explicit noise: with
    strength 0.6 and 5 steps only the last 3 timesteps run."""
    from diffusers import VideoToVideoSDPipeline
    from diffusers.pipelines.deprecated.text_to_video_synthesis import pipeline_text_to_video_synth_img2img as module

    from safetensors.torch import load_file

    video = load_file(GOLDEN / "pipeline.safetensors")["frames"]  # [F, H, W, 3] in [0, 1]
    frames = video.shape[0]
    pipe = VideoToVideoSDPipeline.from_pretrained(REFINER).to("cpu")
    pipe.set_progress_bar_config(disable=True)
    seed(8)
    noise = torch.randn(frames, 4, LATENT_H, LATENT_W)
    vae_sample_noise = torch.randn(frames, 4, LATENT_H, LATENT_W)
    original = module.randn_tensor
    module.randn_tensor = lambda shape, **kwargs: noise.clone()
    try:
        with explicit_posterior_noise(vae_sample_noise), torch.no_grad():
            out = pipe(video=video.numpy(), output_type="np", **REFINE_CASE).frames[0]
    finally:
        module.randn_tensor = original
    save_file({"video": video.contiguous(), "noise": noise, "vae_sample_noise": vae_sample_noise,
               "frames": torch.from_numpy(np.ascontiguousarray(out)).float()},
              GOLDEN / "refine.safetensors")
    (GOLDEN / "refine.json").write_text(json.dumps(REFINE_CASE, indent=2) + "\n")


class explicit_posterior_noise:
    """Make `DiagonalGaussianDistribution.sample` use a given N(0, 1) draw (torch's RNG cannot be
    reproduced elsewhere), so the image latents are an exact function of the inputs."""

    def __init__(self, noise):
        self.noise = noise

    def __enter__(self):
        from diffusers.models.autoencoders import vae as vae_module

        self.cls = vae_module.DiagonalGaussianDistribution
        self.original = self.cls.sample
        noise = self.noise
        self.cls.sample = lambda dist, generator=None: dist.mean + dist.std * noise

    def __exit__(self, *exc):
        self.cls.sample = self.original


PIPELINE_CASE = {
    "prompt": "a cat surfing a wave, 4k",
    "negative_prompt": "blurry, distorted",
    "height": IMAGE_H,
    "width": IMAGE_W,
    "num_frames": 3,
    "target_fps": 16,
    "num_inference_steps": 3,
    "guidance_scale": 9.0,
}


def pipeline():
    """I2VGenXLPipeline end to end on the tiny model with explicit noise: frames in [0, 1]."""
    from diffusers import I2VGenXLPipeline

    image = test_image()
    pipe = I2VGenXLPipeline.from_pretrained(MODEL).to("cpu")
    pipe.set_progress_bar_config(disable=True)
    pipe.text_encoder.text_model = types.SimpleNamespace(final_layer_norm=pipe.text_encoder.final_layer_norm)
    seed(5)
    c = PIPELINE_CASE
    latents = torch.randn(1, 4, c["num_frames"], LATENT_H, LATENT_W)
    vae_sample_noise = torch.randn(1, 4, LATENT_H, LATENT_W)
    # Every UNet call's conditioning and output: the intermediates that localise any drift.
    calls = []
    unet_forward = pipe.unet.forward

    def recording_forward(*args, **kwargs):
        out = unet_forward(*args, **kwargs)
        calls.append((kwargs, out[0] if isinstance(out, tuple) else out.sample))
        return out

    pipe.unet.forward = recording_forward
    with explicit_posterior_noise(vae_sample_noise), torch.no_grad():
        frames = pipe(image=image, latents=latents, output_type="np", **c).frames[0]
    first = calls[0][0]
    trace = {"prompt_embeds": first["encoder_hidden_states"], "image_embeddings": first["image_embeddings"],
             "image_latents": first["image_latents"]}
    trace.update({f"noise_pred.{i}": out for i, (_, out) in enumerate(calls)})
    # The two preprocessed images, as the pipeline computes them (for the image tests).
    from diffusers.pipelines.deprecated.i2vgen_xl import pipeline_i2vgen_xl as module

    crop = pipe.feature_extractor.crop_size
    clip_image = module._resize_bilinear(module._center_crop_wide(image, (c["width"], c["width"])),
                                         (crop["width"], crop["height"]))
    clip_pixels = pipe.feature_extractor(
        images=pipe.video_processor.numpy_to_pt(pipe.video_processor.pil_to_numpy(clip_image)),
        do_normalize=True, do_center_crop=False, do_resize=False, do_rescale=False, return_tensors="pt",
    ).pixel_values
    vae_pixels = pipe.video_processor.preprocess(module._center_crop_wide(image, (c["width"], c["height"])))
    save_file({"latents": latents, "vae_sample_noise": vae_sample_noise,
               "clip_pixel_values": clip_pixels.contiguous(), "vae_pixel_values": vae_pixels.contiguous(),
               "frames": torch.from_numpy(np.ascontiguousarray(frames)).float(),
               **{k: v.contiguous() for k, v in trace.items()}},
              GOLDEN / "pipeline.safetensors")
    (GOLDEN / "pipeline.json").write_text(json.dumps(c, indent=2) + "\n")


def model_index():
    index = {
        "_class_name": "I2VGenXLPipeline",
        "_diffusers_version": diffusers.__version__,
        "feature_extractor": ["transformers", "CLIPImageProcessor"],
        "image_encoder": ["transformers", "CLIPVisionModelWithProjection"],
        "scheduler": ["diffusers", "DDIMScheduler"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "I2VGenXLUNet"],
        "vae": ["diffusers", "AutoencoderKL"],
    }
    (MODEL / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")


def main():
    only = set(sys.argv[1:])
    if not only:
        shutil.rmtree(MODEL, ignore_errors=True)
        shutil.rmtree(REFINER, ignore_errors=True)
        shutil.rmtree(ORIGINAL, ignore_errors=True)
        shutil.rmtree(GOLDEN, ignore_errors=True)
    GOLDEN.mkdir(parents=True, exist_ok=True)
    MODEL.mkdir(parents=True, exist_ok=True)
    steps = {
        "tokenizer": lambda: tokenizer_golden(write_tokenizer(MODEL / "tokenizer")),
        "text_encoder": lambda: text_encoder(CLIPTokenizer.from_pretrained(MODEL / "tokenizer")),
        "image_encoder": image_encoder,
        "vae": vae,
        "unet": unet,
        "scheduler": scheduler,
        "multistep": multistep,
        "model_index": model_index,
        "pipeline": pipeline,
        "refiner_unet": refiner_unet,
        "refiner_folder": refiner_folder,
        "refiner_original": refiner_original,
        "refine": refine,
    }
    for name, step in steps.items():
        if not only or name in only:
            print(f"fixtures: {name}", flush=True)
            step()
    packages = ["torch", "diffusers", "transformers", "safetensors", "pillow", "numpy", "open_clip_torch"]
    versions = {name: importlib.metadata.version(name) for name in packages}
    (OUT / "versions.json").write_text(json.dumps(versions, indent=2) + "\n")


if __name__ == "__main__":
    main()
