"""Fine-tune a Stable Diffusion base on chest X-rays and their reports (the RoentGen recipe).

Reads top to bottom as diffusers' `examples/text_to_image/train_text_to_image.py` does:
config, output folder, accelerator, models, data, optimizer and schedule, loop, save. The
differences are for speed and safety:

* Each training image is encoded by the autoencoder once; its posterior (mean and
  log-variance) is cached and every step samples from it (`augmentor.latents`). Report
  embeddings are cached too while the text encoder is frozen.
* From `tiny` (no pretrained autoencoder), a first stage fits the 1-channel autoencoder on
  the training images (`augmentor.autoencoder.fit_autoencoder`).
* Checkpoints (`DIR/checkpoints/checkpoint-STEP`, accelerate state) are written under a
  temporary name and renamed, so a run killed at any moment resumes from a whole one.
* The result is a plain diffusers pipeline folder (safetensors; EMA weights with `ema`;
  LoRA merged into the weights, adapters also kept in `DIR/lora/`) plus `DIR/cxraug.json`,
  written last: its presence means the run finished.

Runs unchanged in one process or under `accelerate launch` (DDP): every rank trains on its
share of each batch, only the main process writes, and noise seeds are offset per rank.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from augmentor.autoencoder import fit_autoencoder
from augmentor.base import check_pipeline_dir, cpu_only, image_channels, load_pipeline
from augmentor.latents import cache_latents, load_pixels, sample_latents
from classifier.tracking import check_report_to, start_tracking
from manifests.errors import UserError
from manifests.io import Manifest, atomic_path, manifest_digest, read_manifest, write_json
from manifests.progress import progress, quiet_library_bars
from manifests.splits import check_leakage

RUN_FILE = "cxraug.json"
CHECKPOINTS = "checkpoints"
RUN_CONFIG = "config.json"  # under checkpoints/: the config a --resume must match
AUTOENCODER_DIR = "autoencoder"  # under checkpoints/: the fitted `tiny` autoencoder
CACHE_DIR = "cache"
VALIDATION_DIR = "validation"
LORA_DIR = "lora"
_CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")
_TMP_PREFIX = ".tmp-checkpoint-"

LR_SCHEDULERS = (
    "constant",
    "constant_with_warmup",
    "linear",
    "cosine",
    "cosine_with_restarts",
    "polynomial",
)
MIXED_PRECISION = ("no", "fp16", "bf16")
UNET_LORA_TARGETS = ("to_k", "to_q", "to_v", "to_out.0")
TEXT_LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "out_proj")

# Settings a --resume may change without changing what is being trained.
_RESUME_FREE = {
    "max_steps",
    "checkpointing_steps",
    "checkpoints_total_limit",
    "resume",
    "overwrite",
    "validation_prompts",
    "validation_steps",
    "validation_inference_steps",
    "validation_guidance_scale",
    "cache_latents_on_disk",
    "mixed_precision",
    "report_to",
    "gradient_checkpointing",
    "allow_download",
    "show_progress",
    "out",
    "manifest",
    "base",
}


@dataclass
class FinetuneConfig:
    """Everything a fine-tuning run depends on; saved in `DIR/cxraug.json`.

    `None` defaults are resolved from the base: `resolution` = UNet sample size x autoencoder
    downsampling (64 for tiny, 512 for SD 1.5); `learning_rate` = 5e-5 (RoentGen) for a full
    fine-tune of a real base, 1e-4 with LoRA, 5e-4 from `tiny` (trained from scratch);
    `caption_dropout` = 0.1 from `tiny` (it must learn the empty prompt that
    classifier-free guidance needs; a real base already has), else 0.
    """

    manifest: str
    base: str
    out: str
    allow_download: bool = False
    resolution: int | None = None
    train_text_encoder: bool = False
    lora_rank: int | None = None
    learning_rate: float | None = None
    lr_scheduler: str = "constant"
    lr_warmup_steps: int = 0
    batch_size: int = 4
    gradient_accumulation_steps: int = 1
    max_steps: int = 1000
    adam_weight_decay: float = 1e-2
    max_grad_norm: float = 1.0
    ema: bool = False
    ema_decay: float = 0.9999
    gradient_checkpointing: bool = False
    mixed_precision: str | None = None  # None: accelerate launch's setting, else "no"
    snr_gamma: float | None = None
    noise_offset: float = 0.0
    caption_dropout: float | None = None
    seed: int = 0
    checkpointing_steps: int = 500
    checkpoints_total_limit: int | None = 2
    resume: str | None = None  # "latest" or a checkpoint folder
    overwrite: bool = False
    validation_prompts: tuple[str, ...] = ()
    validation_steps: int = 500
    validation_inference_steps: int = 25
    validation_guidance_scale: float = 4.0
    autoencoder_steps: int = 300
    autoencoder_learning_rate: float = 1e-3
    autoencoder_batch_size: int = 8
    cache_latents_on_disk: bool = True
    show_progress: bool = True
    report_to: str = "none"  # none | tensorboard | wandb (classifier.tracking)


# ------------------------------------------------------------------------- config checks


def check_config(cfg: FinetuneConfig) -> None:
    """Raise UserError naming the first bad flag value."""
    cfg.report_to = check_report_to(cfg.report_to)
    positive = {
        "--max-steps": cfg.max_steps,
        "--batch-size": cfg.batch_size,
        "--gradient-accumulation-steps": cfg.gradient_accumulation_steps,
        "--checkpointing-steps": cfg.checkpointing_steps,
        "--validation-steps": cfg.validation_steps,
        "--validation-inference-steps": cfg.validation_inference_steps,
        "--autoencoder-batch-size": cfg.autoencoder_batch_size,
    }
    if cfg.lora_rank is not None:
        positive["--lora-rank"] = cfg.lora_rank
    if cfg.checkpoints_total_limit is not None:
        positive["--checkpoints-total-limit"] = cfg.checkpoints_total_limit
    if cfg.resolution is not None:
        positive["--resolution"] = cfg.resolution
    for flag, value in positive.items():
        if value < 1:
            raise UserError(f"{flag}: {value}; it must be 1 or more")
    for flag, value in (
        ("--lr-warmup-steps", cfg.lr_warmup_steps),
        ("--autoencoder-steps", cfg.autoencoder_steps),
        ("--noise-offset", cfg.noise_offset),
        ("--validation-guidance-scale", cfg.validation_guidance_scale),
    ):
        if value < 0:
            raise UserError(f"{flag}: {value}; it must be 0 or more")
    if cfg.learning_rate is not None and not cfg.learning_rate > 0:
        raise UserError(f"--learning-rate: {cfg.learning_rate}; it must be above 0")
    if cfg.snr_gamma is not None and not cfg.snr_gamma > 0:
        raise UserError(f"--snr-gamma: {cfg.snr_gamma}; it must be above 0 (5 is usual)")
    if not 0 < cfg.ema_decay < 1:
        raise UserError(f"--ema-decay: {cfg.ema_decay}; it must be between 0 and 1")
    if cfg.caption_dropout is not None and not 0 <= cfg.caption_dropout < 1:
        raise UserError(f"--caption-dropout: {cfg.caption_dropout}; it must be in [0, 1)")
    if cfg.lr_scheduler not in LR_SCHEDULERS:
        raise UserError(
            f"--lr-scheduler: unknown {cfg.lr_scheduler!r}; valid: {', '.join(LR_SCHEDULERS)}"
        )
    if cfg.mixed_precision is not None and cfg.mixed_precision not in MIXED_PRECISION:
        raise UserError(
            f"--mixed-precision: unknown {cfg.mixed_precision!r}; valid: {', '.join(MIXED_PRECISION)}"
        )
    if cfg.resume is not None and cfg.overwrite:
        raise UserError("--resume and --overwrite exclude each other; pick one")


def resolved_learning_rate(cfg: FinetuneConfig) -> float:
    if cfg.learning_rate is not None:
        return cfg.learning_rate
    if cfg.base == "tiny":
        return 5e-4
    return 1e-4 if cfg.lora_rank else 5e-5


def resolved_caption_dropout(cfg: FinetuneConfig) -> float:
    if cfg.caption_dropout is not None:
        return cfg.caption_dropout
    return 0.1 if cfg.base == "tiny" else 0.0


# ------------------------------------------------------------------------- output folder


def _jsonable(value):
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple | list):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    return value


def checkpoint_step(path: Path) -> int | None:
    m = _CHECKPOINT_RE.match(Path(path).name)
    return int(m[1]) if m else None


def list_checkpoints(out: Path) -> list[Path]:
    """Complete checkpoints, oldest first (a half-written one still has its temporary name)."""
    folder = Path(out) / CHECKPOINTS
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if p.is_dir() and checkpoint_step(p) is not None]
    return sorted(found, key=checkpoint_step)


def latest_checkpoint(out: Path) -> Path | None:
    done = list_checkpoints(out)
    return done[-1] if done else None


def _is_run_dir(out: Path) -> bool:
    return (out / CHECKPOINTS / RUN_CONFIG).is_file() or (out / RUN_FILE).is_file()


def out_dir_state(cfg: FinetuneConfig) -> str:
    """'fresh', 'resume', 'done' or 'overwrite'; refuses an occupied folder otherwise.

    Read-only, so every process can call it before anyone writes.
    """
    out = Path(cfg.out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out: {out} exists and is not a directory")
    if not out.exists() or not any(out.iterdir()):
        if cfg.resume not in (None, "latest"):
            raise UserError(f"--resume: {out} holds no run to resume from {cfg.resume}")
        return "fresh"
    if cfg.resume is not None:
        if not _is_run_dir(out):
            raise UserError(
                f"--resume: {out} is not a finetune output (no {CHECKPOINTS}/{RUN_CONFIG})"
            )
        run_file = out / RUN_FILE
        if run_file.is_file():
            done = json.loads(run_file.read_text())
            if int(done.get("global_step", 0)) >= cfg.max_steps:
                return "done"
        return "resume"
    if cfg.overwrite:
        if not _is_run_dir(out) and not (out / "model_index.json").is_file():
            raise UserError(
                f"--overwrite: {out} is not empty and not a finetune output; refusing to delete it"
            )
        return "overwrite"
    raise UserError(
        f"--out: {out} already exists and is not empty; pass --resume latest to continue "
        "that run or --overwrite to replace it"
    )


def _resume_path(cfg: FinetuneConfig) -> Path | None:
    """The checkpoint to load: the newest whole one for 'latest', else the given folder."""
    out = Path(cfg.out)
    if cfg.resume == "latest":
        return latest_checkpoint(out)
    path = Path(cfg.resume)
    if not path.is_dir() and (out / CHECKPOINTS / path.name).is_dir():
        path = out / CHECKPOINTS / path.name
    if not path.is_dir() or checkpoint_step(path) is None:
        found = ", ".join(p.name for p in list_checkpoints(out)) or "none"
        raise UserError(
            f"--resume: {cfg.resume} is not a checkpoint folder (checkpoint-STEP); "
            f"valid: latest or one of {found}"
        )
    return path


def run_config(cfg: FinetuneConfig) -> dict:
    """The config as JSON, paths absolute, with the manifest digest a resume must match."""
    config = _jsonable(asdict(cfg))
    config["manifest"] = os.path.abspath(cfg.manifest)
    config["out"] = os.path.abspath(cfg.out)
    if cfg.base != "tiny" and Path(cfg.base).exists():
        config["base"] = os.path.abspath(cfg.base)
    config["manifest_digest"] = manifest_digest(Path(cfg.manifest))
    return config


def _check_resume_config(saved: dict, new: dict, out: Path) -> None:
    for key, value in new.items():
        if key in _RESUME_FREE or key not in saved:
            continue
        if saved[key] != value:
            what = "the manifest changed" if key == "manifest_digest" else f"{key}={saved[key]!r}"
            raise UserError(
                f"--resume: {out} was started with {what}, now {value!r}; "
                "use the same settings or a new --out"
            )


# --------------------------------------------------------------------------------- data


@dataclass
class TrainData:
    """The training rows of a manifest: image paths, prompts, image hashes."""

    manifest: Manifest
    paths: list[Path]
    prompts: list[str]
    shas: list[str | None]
    dropped_empty: int


def load_train_data(manifest_path: Path) -> TrainData:
    """Real train rows with report text (the prompt); refuses leakage and empty input."""
    manifest = read_manifest(Path(manifest_path))
    check_leakage(manifest, where=str(manifest_path))
    rows = manifest.rows
    train = rows[(rows["split"] == "train") & (rows["source"] == "real")]
    if train.empty:
        raise UserError(
            f"{manifest_path}: no real rows with split 'train'; split it first "
            "(cxraug manifest split)"
        )
    reports = train["report"].astype("string").fillna("").str.strip()
    keep = reports != ""
    if not keep.any():
        raise UserError(
            f"{manifest_path}: no report text in the {len(train)} train rows (column 'report'); "
            "fine-tuning needs reports as prompts"
        )
    train_manifest = manifest.with_rows(train[keep.to_numpy()])
    shas = (
        [s if isinstance(s, str) and s else None for s in train_manifest.rows["image_sha256"]]
        if "image_sha256" in train_manifest.rows
        else [None] * len(train_manifest)
    )
    return TrainData(
        manifest=train_manifest,
        paths=train_manifest.image_paths(),
        prompts=list(reports[keep]),
        shas=shas,
        dropped_empty=int((~keep).sum()),
    )


def tokenize_prompts(tokenizer, prompts: Sequence[str]) -> tuple[torch.Tensor, int]:
    """Token ids (N, max_length), truncated to the tokenizer's length; also how many were cut."""
    max_length = tokenizer.model_max_length
    ids = tokenizer(
        list(prompts),
        padding="max_length",
        max_length=max_length,
        truncation=True,
        return_tensors="pt",
    ).input_ids
    lengths = [len(x) for x in tokenizer(list(prompts), truncation=False, verbose=False).input_ids]
    return ids, sum(n > max_length for n in lengths)


@torch.no_grad()
def encode_prompts(text_encoder, input_ids: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """Text encoder hidden states for token ids (what the UNet cross-attends to)."""
    device = next(text_encoder.parameters()).device
    out = [
        text_encoder(input_ids[s : s + batch_size].to(device))[0]
        for s in range(0, len(input_ids), batch_size)
    ]
    return torch.cat(out)


def epoch_batches(n: int, batch: int, world: int, epoch: int, seed: int) -> torch.Tensor:
    """This epoch's order as (micro-batches, world, batch) row indices.

    The same on every rank (seeded by run seed and epoch), so rank r takes [:, r] and no
    two ranks see the same rows in a step; wraps around to fill the last micro-batch.
    """
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))
    per = batch * world
    steps = math.ceil(n / per)
    order = order.repeat(math.ceil(steps * per / n))[: steps * per]
    return order.view(steps, world, batch)


# ------------------------------------------------------------------------ loss and models


def diffusion_loss(
    unet,
    noise_scheduler,
    latents: torch.Tensor,
    encoder_hidden_states: torch.Tensor,
    generator: torch.Generator | None = None,
    snr_gamma: float | None = None,
    noise_offset: float = 0.0,
) -> torch.Tensor:
    """The denoising loss of diffusers' text-to-image recipe for one batch.

    The target follows the base's `prediction_type` (epsilon for SD 1.x, v_prediction for
    SD 2.x 768); Min-SNR weighting (`snr_gamma`) and noise offset as in diffusers.
    """
    from diffusers.training_utils import compute_snr

    bsz, device = latents.shape[0], latents.device
    noise = torch.randn(latents.shape, generator=generator, device=device, dtype=latents.dtype)
    if noise_offset:
        noise = noise + noise_offset * torch.randn(
            (bsz, latents.shape[1], 1, 1), generator=generator, device=device, dtype=latents.dtype
        )
    timesteps = torch.randint(
        0, noise_scheduler.config.num_train_timesteps, (bsz,), generator=generator, device=device
    ).long()
    noisy = noise_scheduler.add_noise(latents, noise, timesteps)
    prediction_type = noise_scheduler.config.prediction_type
    if prediction_type == "epsilon":
        target = noise
    elif prediction_type == "v_prediction":
        target = noise_scheduler.get_velocity(latents, noise, timesteps)
    else:
        raise UserError(
            f"scheduler prediction_type {prediction_type!r} is not supported; "
            "valid: epsilon, v_prediction"
        )
    pred = unet(noisy, timesteps, encoder_hidden_states, return_dict=False)[0]
    if snr_gamma is None:
        return F.mse_loss(pred.float(), target.float(), reduction="mean")
    snr = compute_snr(noise_scheduler, timesteps)
    weights = torch.stack([snr, snr_gamma * torch.ones_like(timesteps)], dim=1).min(dim=1)[0]
    weights = weights / snr if prediction_type == "epsilon" else weights / (snr + 1)
    loss = F.mse_loss(pred.float(), target.float(), reduction="none")
    return (loss.mean(dim=list(range(1, loss.ndim))) * weights).mean()


def add_lora(model: torch.nn.Module, rank: int, targets: Sequence[str]) -> None:
    """LoRA adapters (peft) on `targets`; only they train. Gaussian init, alpha = rank.

    `inject_adapter_in_model` works alike on the diffusers UNet and the transformers text
    encoder (whose own `add_adapter` wants a newer peft in transformers 5).
    """
    from peft import LoraConfig, inject_adapter_in_model

    config = LoraConfig(
        r=rank, lora_alpha=rank, init_lora_weights="gaussian", target_modules=list(targets)
    )
    model.requires_grad_(False)
    inject_adapter_in_model(config, model, adapter_name="default")
    model.peft_config = {"default": config}  # what peft's state-dict helpers read
    for name, param in model.named_parameters():
        param.requires_grad_("lora_" in name)


def lora_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The adapter weights in diffusers' LoRA format."""
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft.utils import get_peft_model_state_dict

    return convert_state_dict_to_diffusers(get_peft_model_state_dict(model))


def merge_lora_(model: torch.nn.Module) -> torch.nn.Module:
    """Fold LoRA into the base weights and drop the adapter layers (plain model again)."""
    from diffusers.utils import recurse_remove_peft_layers
    from peft.tuners.tuners_utils import BaseTunerLayer

    for module in model.modules():
        if isinstance(module, BaseTunerLayer):
            module.merge()
    recurse_remove_peft_layers(model)
    if hasattr(model, "peft_config"):
        del model.peft_config
    if hasattr(model, "_hf_peft_config_loaded"):
        # transformers saves adapters only while this is set.
        model._hf_peft_config_loaded = False
    return model


class TrainerState:
    """Step counters, timings and the per-rank noise generator; checkpointed by accelerate."""

    def __init__(self, generator: torch.Generator) -> None:
        self.generator = generator
        self.global_step = 0
        self.micro_step = 0
        self.train_seconds = 0.0
        self.losses: list[list[float]] = []  # [step, mean loss over the logging window]
        self.resumed_from: list[int] = []

    def state_dict(self) -> dict:
        return {
            "global_step": self.global_step,
            "micro_step": self.micro_step,
            "train_seconds": self.train_seconds,
            "losses": self.losses,
            "resumed_from": self.resumed_from,
            "generator": self.generator.get_state(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.global_step = int(state["global_step"])
        self.micro_step = int(state["micro_step"])
        self.train_seconds = float(state["train_seconds"])
        self.losses = [list(x) for x in state["losses"]]
        self.resumed_from = list(state["resumed_from"])
        self.generator.set_state(state["generator"])


def make_accelerator(cfg: FinetuneConfig):
    from accelerate import Accelerator

    cpu = cpu_only()
    mp = cfg.mixed_precision
    if mp is None and not os.environ.get("ACCELERATE_MIXED_PRECISION"):
        mp = "no"
    if cpu and (mp or os.environ.get("ACCELERATE_MIXED_PRECISION")) == "fp16":
        raise UserError("--mixed-precision fp16 needs a GPU; use bf16 or no on a CPU")
    return Accelerator(
        cpu=cpu,
        mixed_precision=mp,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
    )


# ------------------------------------------------------------------------- checkpoints


def save_checkpoint(accelerator, state: TrainerState, out: Path, total_limit: int | None) -> Path:
    """Save the accelerate state as checkpoint-STEP (temp name, then rename); prune old ones."""
    folder = Path(out) / CHECKPOINTS
    final = folder / f"checkpoint-{state.global_step}"
    tmp = folder / f"{_TMP_PREFIX}{state.global_step}"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        write_json(tmp / "trainer_state.json", {"global_step": state.global_step})
        if final.exists():  # the same step saved again (e.g. resumed at the end): replace
            shutil.rmtree(final)
        os.replace(tmp, final)
        if total_limit is not None:
            for old in list_checkpoints(out)[:-total_limit]:
                shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def _clean_temporaries(out: Path) -> None:
    folder = Path(out) / CHECKPOINTS
    if folder.is_dir():
        for p in folder.glob(f"{_TMP_PREFIX}*"):
            shutil.rmtree(p, ignore_errors=True)


# --------------------------------------------------------------------------- validation


def _grid(images: np.ndarray, columns: int = 4) -> np.ndarray:
    """(N, H, W[, C]) floats in [0, 1] as one grayscale uint8 grid."""
    if images.ndim == 4:
        images = images.mean(axis=-1)
    n, h, w = images.shape
    cols = min(columns, n)
    rows = math.ceil(n / cols)
    grid = np.zeros((rows * h, cols * w), dtype=np.float32)
    for i, img in enumerate(images):
        r, c = divmod(i, cols)
        grid[r * h : (r + 1) * h, c * w : (c + 1) * w] = img
    return (np.clip(grid, 0, 1) * 255).round().astype(np.uint8)


def _pipeline(base_pipe, unet, text_encoder, vae):
    from diffusers import StableDiffusionPipeline

    return StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=base_pipe.tokenizer,
        unet=unet,
        scheduler=base_pipe.scheduler.__class__.from_config(base_pipe.scheduler.config),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def run_validation(pipe, cfg: FinetuneConfig, resolution: int, step: int, out: Path) -> Path:
    """One image per validation prompt (fixed seed) as a PNG grid in DIR/validation/."""
    from manifests.images import save_png

    pipe.set_progress_bar_config(disable=True)
    generator = torch.Generator(device="cpu").manual_seed(cfg.seed)
    images = pipe(
        list(cfg.validation_prompts),
        height=resolution,
        width=resolution,
        num_inference_steps=cfg.validation_inference_steps,
        guidance_scale=cfg.validation_guidance_scale,
        generator=generator,
        output_type="np",
    ).images
    path = Path(out) / VALIDATION_DIR / f"step-{step:07d}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    prompts = path.parent / "prompts.txt"
    if not prompts.exists():
        prompts.write_text("\n".join(cfg.validation_prompts) + "\n")
    with atomic_path(path, overwrite=True) as tmp:
        save_png(_grid(np.asarray(images)), tmp)
    return path


# ------------------------------------------------------------------------------ export


def export_pipeline(pipe, out: Path, lora: dict | None) -> None:
    """Save the pipeline into `out` (safetensors), component by component, via a temp folder."""
    from diffusers import StableDiffusionPipeline

    out = Path(out)
    tmp = out / ".pipeline-tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    pipe.save_pretrained(tmp, safe_serialization=True)
    if lora:
        StableDiffusionPipeline.save_lora_weights(tmp / LORA_DIR, safe_serialization=True, **lora)
    for item in sorted(tmp.iterdir()):
        target = out / item.name
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()
        os.replace(item, target)
    tmp.rmdir()


# --------------------------------------------------------------------------------- run


def finetune(cfg: FinetuneConfig, log: Callable[[str], None] | None = None) -> Path:
    """Fine-tune `cfg.base` on the train split of `cfg.manifest`; return the output folder.

    The folder loads with plain `StableDiffusionPipeline.from_pretrained(out)`.
    """
    from diffusers import DDPMScheduler
    from diffusers.optimization import get_scheduler

    check_config(cfg)
    quiet_library_bars()
    out = Path(cfg.out)
    accelerator = make_accelerator(cfg)
    state_name = out_dir_state(cfg)  # every rank decides before anyone writes
    accelerator.wait_for_everyone()
    main = accelerator.is_main_process
    rank, world = accelerator.process_index, accelerator.num_processes

    def say(text: str) -> None:
        if main:
            (log or print)(text)

    if state_name == "done":
        say(f"{out}: already fine-tuned to step {cfg.max_steps}; nothing to do")
        return out
    if cfg.base != "tiny" and Path(cfg.base).exists():
        check_pipeline_dir(Path(cfg.base))
    data = load_train_data(Path(cfg.manifest))
    config = run_config(cfg)
    if state_name == "resume":
        saved_path = out / CHECKPOINTS / RUN_CONFIG
        if saved_path.is_file():
            _check_resume_config(json.loads(saved_path.read_text()), config, out)
    if main:
        if state_name == "overwrite":
            shutil.rmtree(out)
        (out / CHECKPOINTS).mkdir(parents=True, exist_ok=True)
        _clean_temporaries(out)
        if state_name != "resume" or not (out / CHECKPOINTS / RUN_CONFIG).is_file():
            write_json(out / CHECKPOINTS / RUN_CONFIG, config)
        if (out / RUN_FILE).is_file():  # re-exported at the end; until then not finished
            (out / RUN_FILE).unlink()
    accelerator.wait_for_everyone()
    timings: dict[str, float] = {}
    t0 = time.perf_counter()

    # ---- models
    pipe = load_pipeline(cfg.base, allow_download=cfg.allow_download)
    vae, unet, text_encoder, tokenizer = pipe.vae, pipe.unet, pipe.text_encoder, pipe.tokenizer
    channels = image_channels(pipe)
    vae_scale = 2 ** (len(vae.config.block_out_channels) - 1)
    resolution = cfg.resolution or int(unet.config.sample_size) * vae_scale
    multiple = vae_scale * 2 ** (len(unet.config.block_out_channels) - 1)
    if resolution % multiple:
        raise UserError(
            f"--resolution: {resolution}; this base needs a multiple of {multiple} "
            f"(default {int(unet.config.sample_size) * vae_scale})"
        )
    noise_scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
    device = accelerator.device
    timings["load"] = time.perf_counter() - t0
    say(
        f"finetune: {len(data.paths)} train images with reports"
        + (f" ({data.dropped_empty} without report dropped)" if data.dropped_empty else "")
        + f", base {cfg.base}, {resolution}px, {channels}-channel autoencoder, "
        f"prediction {noise_scheduler.config.prediction_type}, {world} process(es)"
    )

    # ---- stage one (tiny only): fit the autoencoder, once per run
    fit_record = None
    ae_dir = out / CHECKPOINTS / AUTOENCODER_DIR
    if cfg.base == "tiny":
        if not (ae_dir / "config.json").is_file():
            if main:
                t = time.perf_counter()
                pixels = load_pixels(data.paths, resolution, channels)
                fit = fit_autoencoder(
                    vae,
                    pixels,
                    steps=cfg.autoencoder_steps,
                    batch_size=cfg.autoencoder_batch_size,
                    learning_rate=cfg.autoencoder_learning_rate,
                    seed=cfg.seed,
                    log=say,
                    show_progress=cfg.show_progress,
                )
                fit_record = asdict(fit)
                tmp = ae_dir.with_name(f".{AUTOENCODER_DIR}-tmp")
                shutil.rmtree(tmp, ignore_errors=True)
                vae.save_pretrained(tmp, safe_serialization=True)
                write_json(tmp / "fit.json", fit_record)
                os.replace(tmp, ae_dir)
                timings["autoencoder_fit"] = time.perf_counter() - t
            accelerator.wait_for_everyone()
        from diffusers import AutoencoderKL

        vae = AutoencoderKL.from_pretrained(ae_dir)
        if fit_record is None and (ae_dir / "fit.json").is_file():
            fit_record = json.loads((ae_dir / "fit.json").read_text())
    vae.requires_grad_(False).eval().to(device)

    # ---- data: posterior cache (encoder runs once per image), prompts, text cache
    t = time.perf_counter()
    cache_dir = out / CACHE_DIR if cfg.cache_latents_on_disk else None
    if cache_dir is not None and world > 1:
        # Each rank encodes its share into the disk cache; then all read everything.
        cache_latents(
            vae,
            data.paths,
            resolution,
            channels,
            cache_dir,
            shas=data.shas,
            only=range(rank, len(data.paths), world),
        )
        accelerator.wait_for_everyone()
    posteriors = cache_latents(vae, data.paths, resolution, channels, cache_dir, shas=data.shas)
    timings["latent_cache"] = time.perf_counter() - t
    scaling = float(vae.config.scaling_factor)

    input_ids, truncated = tokenize_prompts(tokenizer, data.prompts)
    empty_ids, _ = tokenize_prompts(tokenizer, [""])
    if truncated:
        say(
            f"finetune: {truncated} report(s) longer than {tokenizer.model_max_length} tokens truncated"
        )
    caption_dropout = resolved_caption_dropout(cfg)

    text_encoder.to(device)
    if cfg.train_text_encoder:
        text_cache = empty_cache = None
    else:
        t = time.perf_counter()
        text_encoder.requires_grad_(False).eval()
        unique, inverse = np.unique(np.asarray(data.prompts, dtype=object), return_inverse=True)
        unique_ids, _ = tokenize_prompts(tokenizer, list(unique))
        # Kept on the CPU (one row per distinct report); each batch moves its rows over.
        text_cache = encode_prompts(text_encoder, unique_ids).cpu()
        prompt_index = torch.as_tensor(inverse.reshape(-1), dtype=torch.long)
        empty_cache = encode_prompts(text_encoder, empty_ids)[0].cpu()
        timings["text_cache"] = time.perf_counter() - t

    # ---- what trains
    torch.manual_seed(cfg.seed)  # LoRA init; identical on every rank (DDP also broadcasts)
    if cfg.lora_rank:
        add_lora(unet, cfg.lora_rank, UNET_LORA_TARGETS)
        if cfg.train_text_encoder:
            add_lora(text_encoder, cfg.lora_rank, TEXT_LORA_TARGETS)
    else:
        unet.requires_grad_(True)
        text_encoder.requires_grad_(cfg.train_text_encoder)
    if cfg.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
        if cfg.train_text_encoder:
            text_encoder.gradient_checkpointing_enable()
    unet.train().to(device)
    if cfg.train_text_encoder:
        text_encoder.train()
    models = [unet, text_encoder] if cfg.train_text_encoder else [unet]
    params = [p for m in models for p in m.parameters() if p.requires_grad]
    lr = resolved_learning_rate(cfg)
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=cfg.adam_weight_decay)
    lr_scheduler = get_scheduler(
        cfg.lr_scheduler,
        optimizer=optimizer,
        num_warmup_steps=cfg.lr_warmup_steps * world,
        num_training_steps=cfg.max_steps * world,
    )
    ema = None
    if cfg.ema:
        from diffusers.training_utils import EMAModel

        ema = EMAModel(params, decay=cfg.ema_decay)
        ema.to(device)
    prepared = accelerator.prepare(*models, optimizer, lr_scheduler)
    models_p, optimizer, lr_scheduler = list(prepared[: len(models)]), prepared[-2], prepared[-1]
    unet_p = models_p[0]
    text_encoder_p = models_p[1] if cfg.train_text_encoder else text_encoder

    gen_device = "cpu" if device.type == "cpu" else device
    generator = torch.Generator(device=gen_device).manual_seed(cfg.seed + rank)
    state = TrainerState(generator)
    accelerator.register_for_checkpointing(state)
    if ema is not None:
        accelerator.register_for_checkpointing(ema)

    if state_name == "resume":
        path = _resume_path(cfg)
        if path is None:
            say(f"{out}: no complete checkpoint yet; starting from step 0")
        else:
            accelerator.load_state(str(path))
            state.resumed_from.append(state.global_step)
            say(f"finetune: resumed from {path.name} (step {state.global_step})")
    elif cfg.resume == "latest":
        say("finetune: nothing to resume yet; starting a new run")

    # ---- loop
    n = len(data.paths)
    per_epoch = math.ceil(n / (cfg.batch_size * world))
    images_per_micro = cfg.batch_size * world
    log_every = max(1, cfg.max_steps // 200)
    window: list[float] = []
    start_step = state.global_step
    train_before = state.train_seconds
    bar = progress(
        total=cfg.max_steps,
        initial=state.global_step,
        desc="finetune",
        disable=not (main and cfg.show_progress),
    )
    tracker = start_tracking(cfg.report_to, out, config, accelerator)
    session_start = time.perf_counter()
    val_seconds = 0.0
    order, order_epoch = None, -1
    while state.global_step < cfg.max_steps:
        epoch, position = divmod(state.micro_step, per_epoch)
        if epoch != order_epoch:
            order, order_epoch = epoch_batches(n, cfg.batch_size, world, epoch, cfg.seed), epoch
        idx = order[position, rank]
        with accelerator.accumulate(*models_p):
            latents = sample_latents(posteriors[idx].to(device), scaling, generator)
            drop = torch.rand(len(idx), generator=generator, device=gen_device) < caption_dropout
            drop = drop.cpu()
            if text_cache is not None:
                hidden = text_cache[prompt_index[idx]].clone()
                hidden[drop] = empty_cache
                hidden = hidden.to(device)
            else:
                ids = input_ids[idx].clone()
                ids[drop] = empty_ids[0]
                hidden = text_encoder_p(ids.to(device), return_dict=False)[0]
            with accelerator.autocast():
                loss = diffusion_loss(
                    unet_p,
                    noise_scheduler,
                    latents,
                    hidden,
                    generator,
                    snr_gamma=cfg.snr_gamma,
                    noise_offset=cfg.noise_offset,
                )
            accelerator.backward(loss)
            if accelerator.sync_gradients and cfg.max_grad_norm:
                accelerator.clip_grad_norm_(params, cfg.max_grad_norm)
            optimizer.step()
            lr_scheduler.step()
            optimizer.zero_grad(set_to_none=True)
        state.micro_step += 1
        window.append(float(accelerator.gather(loss.detach()[None]).mean()))
        if not accelerator.sync_gradients:
            continue
        state.global_step += 1
        if ema is not None:
            ema.step(params)
        elapsed = time.perf_counter() - session_start - val_seconds
        rate = (state.micro_step - start_step * cfg.gradient_accumulation_steps) * images_per_micro
        bar.update(1)
        bar.set_postfix(loss=f"{window[-1]:.4f}", img_s=f"{rate / max(elapsed, 1e-9):.1f}")
        tracker.log(
            {
                "train/loss": window[-1],
                "train/lr": lr_scheduler.get_last_lr()[0],
                "train/images_per_s": rate / max(elapsed, 1e-9),
            },
            step=state.global_step,
        )
        if state.global_step % log_every == 0 or state.global_step == cfg.max_steps:
            state.losses.append([state.global_step, float(np.mean(window))])
            window = []
        state.train_seconds = train_before + elapsed
        if cfg.validation_prompts and (
            state.global_step % cfg.validation_steps == 0 or state.global_step == cfg.max_steps
        ):
            tv = time.perf_counter()
            if main:
                grid = _with_ema(
                    ema,
                    params,
                    lambda: run_validation(
                        _pipeline(
                            pipe,
                            accelerator.unwrap_model(unet_p),
                            accelerator.unwrap_model(text_encoder_p),
                            vae,
                        ),
                        cfg,
                        resolution,
                        state.global_step,
                        out,
                    ),
                )
                tracker.log_image("validation/grid", grid, state.global_step)
            accelerator.wait_for_everyone()
            val_seconds += time.perf_counter() - tv
        if state.global_step % cfg.checkpointing_steps == 0 or state.global_step == cfg.max_steps:
            tc = time.perf_counter()
            save_checkpoint(accelerator, state, out, cfg.checkpoints_total_limit)
            val_seconds += time.perf_counter() - tc
    bar.close()
    session_images = (
        state.micro_step - start_step * cfg.gradient_accumulation_steps
    ) * images_per_micro
    session_train = time.perf_counter() - session_start - val_seconds
    timings["train_this_session"] = session_train

    # ---- save
    accelerator.wait_for_everyone()
    if main:
        unet_final = accelerator.unwrap_model(unet_p)
        te_final = accelerator.unwrap_model(text_encoder_p)
        if ema is not None:
            ema.copy_to(params)
        lora = None
        if cfg.lora_rank:
            lora = {"unet_lora_layers": lora_state_dict(unet_final)}
            if cfg.train_text_encoder:
                lora["text_encoder_lora_layers"] = lora_state_dict(te_final)
            merge_lora_(unet_final)
            if cfg.train_text_encoder:
                merge_lora_(te_final)
        t = time.perf_counter()
        final = _pipeline(pipe, unet_final.float(), te_final.float(), vae)
        export_pipeline(final.to("cpu"), out, lora)
        timings["export"] = time.perf_counter() - t
        timings["total_this_session"] = time.perf_counter() - t0
        import diffusers
        import transformers

        record = {
            "kind": "cxraug.generator",
            "config": config,
            "global_step": state.global_step,
            "resumed_from": state.resumed_from,
            "manifest_digest": config["manifest_digest"],
            "base": config["base"],
            "resolution": resolution,
            "image_channels": channels,
            "prediction_type": noise_scheduler.config.prediction_type,
            "learning_rate": lr,
            "caption_dropout": caption_dropout,
            "n_train_images": n,
            "n_dropped_without_report": data.dropped_empty,
            "n_prompts_truncated": truncated,
            "num_processes": world,
            "images_per_second": session_images / max(session_train, 1e-9),
            "train_seconds": state.train_seconds,
            "timings": timings,
            "autoencoder_fit": fit_record,
            "latent_scaling_factor": scaling,
            "losses": state.losses,
            "ema": cfg.ema,
            "lora_rank": cfg.lora_rank,
            "train_text_encoder": cfg.train_text_encoder,
            "versions": {
                "torch": torch.__version__,
                "diffusers": diffusers.__version__,
                "transformers": transformers.__version__,
            },
        }
        write_json(out / RUN_FILE, _jsonable(record))  # last: marks the run finished
        say(
            f"finetune: step {state.global_step}/{cfg.max_steps}, "
            f"{record['images_per_second']:.1f} images/s; wrote {out}"
        )
    accelerator.wait_for_everyone()
    tracker.end()
    accelerator.end_training()
    return out


def _with_ema(ema, params, fn):
    """Run `fn` with the EMA weights swapped in (validation shows what will be saved)."""
    if ema is None:
        return fn()
    ema.store(params)
    ema.copy_to(params)
    try:
        return fn()
    finally:
        ema.restore(params)
