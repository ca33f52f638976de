"""Base models: a local diffusers Stable Diffusion directory, a hub id, or `tiny`.

`tiny` is a faithful miniature of Stable Diffusion v1.x built from config in code: the real
CLIP BPE vocabulary (the file open_clip_torch ships) as a `CLIPTokenizer`, a small
`CLIPTextModel`, a small `UNet2DConditionModel` and a 1-channel `AutoencoderKL`. It exists
so the whole study runs without downloads. Its text encoder and UNet start random; its
autoencoder, like Stable Diffusion's, is pretrained and ships with the package
(`augmentor/pretrained/tiny_vae/`, fitted once by `benchmarks/fit_tiny_autoencoder.py` on
phantoms from a patient pool no study draws, its recipe in `recipe.json`), and fine-tuning
keeps it frozen. This module owns that folder: `save_tiny_autoencoder` writes it,
`tiny_autoencoder` reads it.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import tempfile
from pathlib import Path

import torch
from diffusers import (
    AutoencoderKL,
    PNDMScheduler,
    StableDiffusionPipeline,
    UNet2DConditionModel,
)
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from manifests.errors import UserError
from manifests.files import check_safetensors, file_sha256, read_json, write_json

PIPELINE_COMPONENTS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")
PIPELINE_LIBRARIES = ("diffusers", "transformers")
COMPONENT_CONFIGS = {
    "unet": "config.json",
    "vae": "config.json",
    "text_encoder": "config.json",
    "scheduler": "scheduler_config.json",
}
TINY_IMAGE_SIZE = 64
CLIP_CONTEXT_LENGTH = 77
# `tiny`'s pretrained autoencoder: diffusers' own layout (config.json and
# diffusion_pytorch_model.safetensors, so `AutoencoderKL.from_pretrained` reads it too) plus
# the recipe that made it, with the weights' digest.
TINY_AUTOENCODER_DIR = Path(__file__).parent / "pretrained" / "tiny_vae"
TINY_AUTOENCODER_WEIGHTS = "diffusion_pytorch_model.safetensors"
TINY_AUTOENCODER_RECIPE = "recipe.json"


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte -> printable unicode map."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    bs += list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs], strict=True))


def clip_vocab_files(folder: Path) -> tuple[Path, Path]:
    """Write CLIP's `vocab.json` and `merges.txt` from open_clip_torch's shipped BPE file.

    The result is the same 49,408-token vocabulary that `openai/clip-vit-large-patch14`
    (Stable Diffusion v1's tokenizer) uses, so tokenisation of reports is the real one.
    """
    import open_clip

    bpe = Path(open_clip.__file__).parent / "bpe_simple_vocab_16e6.txt.gz"
    if not bpe.is_file():
        raise UserError(f"{bpe}: CLIP BPE vocabulary missing; reinstall open_clip_torch")
    with gzip.open(bpe, "rt", encoding="utf-8") as f:
        merges = f.read().split("\n")
    merges = merges[1 : 49152 - 256 - 2 + 1]
    vocab = list(_bytes_to_unicode().values())
    vocab += [v + "</w>" for v in vocab]
    vocab += ["".join(m.split()) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    folder.mkdir(parents=True, exist_ok=True)
    vocab_path, merges_path = folder / "vocab.json", folder / "merges.txt"
    vocab_path.write_text(json.dumps({tok: i for i, tok in enumerate(vocab)}))
    merges_path.write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    return vocab_path, merges_path


def tiny_tokenizer() -> CLIPTokenizer:
    """The real CLIP tokenizer (vocabulary from open_clip_torch), max length 77."""
    with tempfile.TemporaryDirectory() as tmp:
        clip_vocab_files(Path(tmp))
        # from_pretrained reads vocab.json/merges.txt in transformers 4.x and 5.x alike.
        return CLIPTokenizer.from_pretrained(
            tmp, model_max_length=CLIP_CONTEXT_LENGTH, pad_token="<|endoftext|>"
        )


def save_tiny_autoencoder(vae: AutoencoderKL, recipe: dict, folder: Path) -> dict:
    """Write `vae` and its `recipe` (with the weights' sha256 added) to `folder`.

    Returns the recipe as written.
    """
    folder = Path(folder)
    vae.save_pretrained(folder, safe_serialization=True)
    recipe = {**recipe, "weights_sha256": file_sha256(folder / TINY_AUTOENCODER_WEIGHTS)}
    write_json(folder / TINY_AUTOENCODER_RECIPE, recipe)
    return recipe


def tiny_autoencoder_recipe(folder: Path = TINY_AUTOENCODER_DIR) -> dict:
    """The recipe of `tiny`'s shipped autoencoder: data, fit, and the weights' sha256."""
    return read_json(Path(folder) / TINY_AUTOENCODER_RECIPE, "tiny autoencoder recipe")


def load_tiny_autoencoder(vae: AutoencoderKL, folder: Path = TINY_AUTOENCODER_DIR) -> None:
    """Load the shipped weights and latent scaling factor into `tiny`'s autoencoder `vae`.

    The weights must match the recipe's sha256 and `vae`'s architecture exactly (a strict
    load), so a change to `tiny`'s autoencoder cannot silently run on stale weights.
    """
    from safetensors.torch import load_file

    folder = Path(folder)
    weights = folder / TINY_AUTOENCODER_WEIGHTS
    recipe = tiny_autoencoder_recipe(folder)
    if not weights.is_file():
        raise UserError(f"{weights}: tiny's pretrained autoencoder is missing; reinstall cxraug")
    if file_sha256(weights) != recipe.get("weights_sha256"):
        raise UserError(
            f"{weights}: sha256 differs from {TINY_AUTOENCODER_RECIPE}'s; refit it with "
            "benchmarks/fit_tiny_autoencoder.py or reinstall cxraug"
        )
    try:
        vae.load_state_dict(load_file(weights))
    except RuntimeError as e:
        raise UserError(
            f"{weights}: does not fit tiny's autoencoder ({str(e).splitlines()[0]}); refit it "
            "with benchmarks/fit_tiny_autoencoder.py"
        ) from None
    config = read_json(folder / "config.json", "tiny autoencoder config")
    vae.register_to_config(scaling_factor=float(config["scaling_factor"]))


def build_tiny_pipeline(
    seed: int = 0, pretrained_autoencoder: bool = True
) -> StableDiffusionPipeline:
    """A miniature Stable Diffusion v1.x for 64x64 grayscale images.

    Same architecture family and interfaces as SD v1.x (CLIP text encoder with 77 tokens,
    cross-attention UNet on 4-channel latents, KL autoencoder, PNDM scheduler), only small:
    the autoencoder downsamples 4x (64 px -> 16x16x4 latents) and takes 1 channel. Text
    encoder and UNet are initialised randomly from `seed`; the autoencoder holds the shipped
    pretrained weights, or with `pretrained_autoencoder=False` its random initialisation
    (what a fit from scratch starts from). Either way the random draws are the same, so the
    text encoder and UNet do not depend on that choice.
    """
    torch.manual_seed(seed)
    tokenizer = tiny_tokenizer()
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=tokenizer.vocab_size,
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=CLIP_CONTEXT_LENGTH,
            projection_dim=64,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    )
    vae = AutoencoderKL(
        in_channels=1,
        out_channels=1,
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        # 16 channels at 64x64 and 32 at 32x32, not 32 and 64: half the cost of a fitting
        # step, so a fit four times as long costs twice the old one. The fit's length, not
        # the width, keeps the lung markings: fitted 1,600 steps, both widths put the
        # oracle's ceiling within the fidelity targets, at 400 neither
        # (benchmarks/oracle_ceiling.py --fit-steps; README, Generator levers).
        block_out_channels=(16, 32, 64),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=8,
        sample_size=TINY_IMAGE_SIZE,
    )
    if pretrained_autoencoder:
        load_tiny_autoencoder(vae)
    # Three levels (16 -> 8 -> 4 on 16x16 latents) with cross-attention at 8x8 and 4x4 and
    # plain ResNet blocks at 16x16, as SD's UNet has none at its deepest level: attention at
    # the full latent size cost more than half of a training step on a CPU; without it a
    # step is ~2.5x cheaper, and the 4x4 level sees the whole chest at once (heart size,
    # the side of an effusion are global). 64 channels at 16x16, not 32: the full-size
    # level draws the fine texture (ribs, lung markings); with 32 the lungs came out hazy and
    # the oracle read them as consolidation (`benchmarks/generator_fidelity.py --arch
    # narrow16` rebuilds the 32-channel UNet; README, Generator levers). It costs little in
    # the whole fine-tune loop: 81.5 against 89.2 images/s in the paper preset's.
    unet = UNet2DConditionModel(
        sample_size=TINY_IMAGE_SIZE // 4,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        block_out_channels=(64, 64, 128),
        layers_per_block=1,
        cross_attention_dim=64,
        attention_head_dim=8,
        norm_num_groups=16,
    )
    # SD v1's scheduler config, `clip_sample: false` included: a sampler switched to DDIM
    # or DDPM from it must not clip predicted latents to [-1, 1] (their pixel-space default).
    scheduler = PNDMScheduler.from_config(
        {
            "beta_start": 0.00085,
            "beta_end": 0.012,
            "beta_schedule": "scaled_linear",
            "num_train_timesteps": 1000,
            "skip_prk_steps": True,
            "steps_offset": 1,
            "set_alpha_to_one": False,
            "clip_sample": False,
        }
    )
    return StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def check_pipeline_dir(path: Path) -> None:
    """Raise UserError naming what a diffusers SD directory lacks or holds that is not one:
    a missing or corrupt index, config or weights file, or an index naming a class outside
    diffusers and transformers (whose module loading it would import)."""
    path = Path(path)
    if not path.is_dir():
        raise UserError(f"{path}: model directory not found")
    if not (path / "model_index.json").is_file():
        raise UserError(f"{path}: not a diffusers pipeline directory (missing model_index.json)")
    missing = [c for c in PIPELINE_COMPONENTS if not (path / c).is_dir()]
    if missing:
        raise UserError(f"{path}: missing component folder(s) {', '.join(missing)}")
    index = read_json(path / "model_index.json", "pipeline index")
    for component in PIPELINE_COMPONENTS:
        entry = index.get(component)
        if not (isinstance(entry, list) and len(entry) == 2 and entry[0] in PIPELINE_LIBRARIES):
            raise UserError(
                f"{path / 'model_index.json'}: {component} is {entry!r}; a Stable Diffusion "
                f"folder names a class of {' or '.join(PIPELINE_LIBRARIES)} for it"
            )
    for component, name in COMPONENT_CONFIGS.items():
        config = read_json(path / component / name, f"{component} config")
        if component in ("unet", "vae") and "_class_name" not in config:
            raise UserError(f"{path / component / name}: no _class_name; not a diffusers config")
    if not any((path / "tokenizer" / f).is_file() for f in ("tokenizer.json", "vocab.json")):
        raise UserError(f"{path / 'tokenizer'}: no tokenizer.json or vocab.json")
    for component in ("unet", "vae", "text_encoder"):
        folder = path / component
        weights = [folder / f for f in os.listdir(folder) if f.endswith(".safetensors")]
        if not weights and any(f.endswith(".bin") for f in os.listdir(folder)):
            raise UserError(
                f"{folder}: only .bin (pickle) weights; cxraug loads safetensors only. Convert "
                "once where you trust the file: StableDiffusionPipeline.from_pretrained(DIR)"
                ".save_pretrained(NEW_DIR, safe_serialization=True)"
            )
        if not weights:
            raise UserError(f"{folder}: no weights (*.safetensors)")
        for file in weights:
            check_safetensors(file)


def check_pipeline_parts(pipe: StableDiffusionPipeline, where: str) -> None:
    """Refuse a loaded pipeline whose parts do not fit together (a folder mixing models),
    which would otherwise fail only when sampling or training starts."""
    unet, vae, text_encoder, tokenizer = pipe.unet, pipe.vae, pipe.text_encoder, pipe.tokenizer
    latent = int(vae.config.latent_channels)
    if (unet.config.in_channels, unet.config.out_channels) != (latent, latent):
        raise UserError(
            f"{where}: its UNet takes {unet.config.in_channels} latent channels, its "
            f"autoencoder makes {latent}; the parts come from different models"
        )
    attention = unet.config.cross_attention_dim
    if isinstance(attention, int) and attention != text_encoder.config.hidden_size:
        raise UserError(
            f"{where}: its UNet attends to {attention}-wide text features, its text encoder "
            f"makes {text_encoder.config.hidden_size}; the parts come from different models"
        )
    positions = int(text_encoder.config.max_position_embeddings)
    if tokenizer.model_max_length > positions or len(tokenizer) > text_encoder.config.vocab_size:
        raise UserError(
            f"{where}: its tokenizer ({len(tokenizer)} tokens, up to "
            f"{tokenizer.model_max_length} per prompt) does not fit its text encoder "
            f"({text_encoder.config.vocab_size} tokens, {positions} positions)"
        )


def dtype_kwargs(dtype: torch.dtype) -> dict[str, torch.dtype]:
    """`from_pretrained`'s dtype argument: `dtype` where diffusers takes it, else `torch_dtype`.

    diffusers followed transformers in renaming `torch_dtype` to `dtype` (and warns on the
    old name); releases before the rename only know `torch_dtype`.
    """
    from diffusers.utils import deprecation_utils

    if hasattr(deprecation_utils, "_resolve_dtype"):
        return {"dtype": dtype}
    return {"torch_dtype": dtype}


def load_pipeline(
    spec: str | Path,
    allow_download: bool = False,
    dtype: torch.dtype = torch.float32,
    pretrained_autoencoder: bool = True,
    flag: str = "--base",
) -> StableDiffusionPipeline:
    """Load a base or generator: `tiny`, a local diffusers directory, or a hub id.

    Offline by default: a hub id is only fetched with `allow_download`, otherwise the error
    says which local folder was looked for. `pretrained_autoencoder=False`: `tiny` with its
    autoencoder randomly initialised, to be fitted (ignored for any other base).
    says which local folder was looked for. A folder that does not load, or whose parts do
    not fit together, is one UserError naming it (after `flag`); nothing is written.
    """
    spec = str(spec)
    if spec == "tiny":
        return build_tiny_pipeline(pretrained_autoencoder=pretrained_autoencoder)
    path = Path(spec)
    looks_local = path.exists() or spec.startswith((".", "/", "~")) or spec.count("/") != 1
    if looks_local:
        check_pipeline_dir(path)
    elif not allow_download:
        raise UserError(
            f"{flag} {spec}: no local directory {path} and downloads are off; "
            "pass a local diffusers folder, 'tiny', or --allow-download to fetch the hub id"
        )
    from safetensors import SafetensorError

    try:
        pipe = StableDiffusionPipeline.from_pretrained(
            path if looks_local else spec,
            **dtype_kwargs(dtype),
            safety_checker=None,
            requires_safety_checker=False,
            local_files_only=looks_local,
            use_safetensors=True,
        )
    # What a foreign or damaged folder raises from deep in diffusers and transformers.
    except (
        OSError,
        ValueError,
        TypeError,
        KeyError,
        OverflowError,
        RuntimeError,
        SafetensorError,
    ) as e:
        raise UserError(f"{flag} {spec}: cannot load it ({_first_sentence(e)})") from None
    check_pipeline_parts(pipe, f"{flag} {spec}")
    return pipe


def _first_sentence(error: BaseException) -> str:
    """An exception's message up to its first full stop, on one line (library messages go
    on with advice that does not apply here)."""
    text = " ".join(str(error).split())
    if not text:
        return error.__class__.__name__
    match = re.match(r"(.+?[.!?])\s+[A-Z]", text)
    return match.group(1) if match else text


def image_channels(pipe: StableDiffusionPipeline) -> int:
    """Channels the autoencoder takes: 1 for `tiny`, 3 for Stable Diffusion's RGB VAE."""
    return int(pipe.vae.config.in_channels)
