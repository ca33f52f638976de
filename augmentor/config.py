"""Configurations of the generator's commands, with their defaults and flag checks.

Torch-free on purpose: the CLI builds and checks a config (a typo answers at once) before
it imports torch or diffusers, and reads each flag's default from the dataclass here, so a
default lives in one place (the study reads them from here too).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from augmentor.label_spec import split_label_counts
from classifier.tracking import check_report_to
from manifests import runfolder
from manifests.errors import UserError

LR_SCHEDULERS = (
    "constant",
    "constant_with_warmup",
    "linear",
    "cosine",
    "cosine_with_restarts",
    "polynomial",
)
MIXED_PRECISION = ("no", "fp16", "bf16")

# Sampler names a user types -> diffusers scheduler classes (swapped in with
# `X.from_config(pipe.scheduler.config)`, so the generator's noise schedule is kept).
SCHEDULERS: dict[str, str] = {
    "pndm": "PNDMScheduler",
    "ddim": "DDIMScheduler",
    "ddpm": "DDPMScheduler",
    "dpm++": "DPMSolverMultistepScheduler",
    "euler": "EulerDiscreteScheduler",
    "euler-a": "EulerAncestralDiscreteScheduler",
    "heun": "HeunDiscreteScheduler",
    "lms": "LMSDiscreteScheduler",
    "unipc": "UniPCMultistepScheduler",
}
# RoentGen's sampling setup (Chambon et al., arXiv 2211.12737): PNDM, 75 steps. Its
# classifier-free guidance sweep found a scale of 4 a good trade-off between image fidelity
# (FID) and report alignment; higher scales over-saturate CXRs. Not re-measured here.
DEFAULT_SCHEDULER = "pndm"
DEFAULT_STEPS = 75
DEFAULT_GUIDANCE_SCALE = 4.0
# `synthesize --fast`: (scheduler, steps, guidance scale), the cheapest setting whose prompt
# fidelity and KID stay within the reference's (the defaults above) own seed-to-seed noise,
# as `python benchmarks/bench_samplers.py` picks it on the demo generator (see its docstring
# for the rule). Measured on the demo generator of 2026-11-29 (README, Benchmarks): DDIM 10
# steps at guidance 4, 20 UNet evaluations per image against PNDM 75's 152 (7.6x fewer),
# 5.6x the images/s, every hit, false-finding and side rate and KID within the reference's
# noise. Measured on the `tiny` demo generator only: re-measure on a real base.
FAST_SAMPLER: tuple[str, int, float] = ("ddim", 10, 4.0)
PRECISION_NAMES = ("fp32", "fp16", "bf16")


@dataclass
class FinetuneConfig:
    """Everything a fine-tuning run depends on; saved in `DIR/cxraug.json`.

    `None` defaults are resolved from the base: `resolution` = UNet sample size x autoencoder
    downsampling (64 for tiny, 512 for SD 1.5); `learning_rate` = 5e-5 (RoentGen) for a full
    fine-tune of a real base, 1e-4 with LoRA, 5e-4 from `tiny` (trained from scratch);
    `caption_dropout` = 0.1 from `tiny` (it must learn the empty prompt that
    classifier-free guidance needs; a real base already has), else 0; `film_grain` = on
    from `tiny` (its small autoencoder drops the images' grain; `augmentor.grain`), else off.
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
    film_grain: bool | None = None  # None: fit it from `tiny` (augmentor.grain), else off
    # draw each epoch's images weighted toward rare findings, sides, lobes (augmentor.balance)
    balance_labels: tuple[str, ...] = ()
    seed: int = 0
    checkpointing_steps: int = 500
    checkpoints_total_limit: int | None = 2
    resume: bool = False  # continue the latest checkpoint in `out`
    overwrite: bool = False
    validation_prompts: tuple[str, ...] = ()
    validation_steps: int = 500
    validation_inference_steps: int = 25
    validation_guidance_scale: float = 4.0
    # tiny only: fit its autoencoder from scratch on the train images instead of keeping the
    # shipped pretrained one (augmentor.base); 1,600 steps kept the lung markings the oracle
    # reads (README, Generator levers)
    fit_autoencoder: bool = False
    autoencoder_steps: int = 1600
    autoencoder_learning_rate: float = 1e-3
    autoencoder_batch_size: int = 8
    cache_latents_on_disk: bool = True
    show_progress: bool = True
    report_to: str = "none"  # none | tensorboard | wandb (classifier.tracking)


# ------------------------------------------------------------------------- config checks


def check_finetune_config(cfg: FinetuneConfig) -> None:
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
    if cfg.fit_autoencoder and cfg.base != "tiny":
        raise UserError(
            f"--fit-autoencoder: only with --base tiny; {cfg.base}'s autoencoder stays frozen"
        )
    runfolder.check_resume_overwrite(cfg.resume, cfg.overwrite)


def resolved_learning_rate(cfg: FinetuneConfig) -> float:
    if cfg.learning_rate is not None:
        return cfg.learning_rate
    if cfg.base == "tiny":
        return 5e-4
    return 1e-4 if cfg.lora_rank else 5e-5


def resolved_film_grain(cfg: FinetuneConfig) -> bool:
    return cfg.base == "tiny" if cfg.film_grain is None else cfg.film_grain


def resolved_caption_dropout(cfg: FinetuneConfig) -> float:
    if cfg.caption_dropout is not None:
        return cfg.caption_dropout
    return 0.1 if cfg.base == "tiny" else 0.0


@dataclass
class SynthesisConfig:
    """Everything a synthesis run needs; saved as `OUT/synthesis.json`.

    Attributes:
        model: generator directory (diffusers Stable Diffusion pipeline folder).
        prompts_from: manifest whose train-split reports are the prompts.
        out: output folder (images/, shards/, manifest.parquet, synthesis.json).
        labels: `LABEL:COUNT,...`, e.g. `pneumothorax:5000,pleural_effusion:5000`.
        negatives: images prompted by 'No Finding' reports.
        images_per_prompt: consecutive rows (images, each with its own seed) per drawn
            prompt; RoentGen's diversity protocol uses 4 (MS-SSIM over their 6 pairs). The
            label counts stay exact: only the number of distinct prompts drawn changes.
        seed: plan seed; each row's generation seed derives from it and the row index.
        scheduler: a key of SCHEDULERS.
        num_inference_steps, guidance_scale, negative_prompt: sampling settings.
        batch_size: images per pipeline call (does not change any image).
        shard_every: batches per committed shard (work lost to a kill is at most this).
        precision: fp32, fp16 or bf16 weights.
        film_grain: add the film grain the generator measured at fine-tuning
            (`augmentor.grain`; only generators fine-tuned from `tiny` have one).
        resume: finish an interrupted run in `out`; overwrite: replace `out`'s outputs.
    """

    model: str
    prompts_from: str
    out: str
    labels: str
    negatives: int = 0
    images_per_prompt: int = 1
    seed: int = 0
    scheduler: str = DEFAULT_SCHEDULER
    num_inference_steps: int = DEFAULT_STEPS
    guidance_scale: float = DEFAULT_GUIDANCE_SCALE
    negative_prompt: str | None = None
    batch_size: int = 8
    shard_every: int = 1
    precision: str = "fp32"
    film_grain: bool = True
    resume: bool = False
    overwrite: bool = False


def check_synthesis_config(config: SynthesisConfig) -> None:
    """Raise UserError naming the first bad flag value (labels syntax and the size cap first)."""
    split_label_counts(config.labels, config.negatives)
    config.scheduler = config.scheduler.strip().lower()
    if config.scheduler not in SCHEDULERS:
        raise UserError(
            f"--scheduler: unknown {config.scheduler!r}; valid: {', '.join(SCHEDULERS)}"
        )
    if config.precision not in PRECISION_NAMES:
        raise UserError(
            f"--precision: unknown {config.precision!r}; valid: {', '.join(PRECISION_NAMES)}"
        )
    for flag, value in (
        ("--num-inference-steps", config.num_inference_steps),
        ("--batch-size", config.batch_size),
        ("--shard-every", config.shard_every),
        ("--images-per-prompt", config.images_per_prompt),
    ):
        if value < 1:
            raise UserError(f"{flag}: {value}; it must be 1 or more")
    if config.guidance_scale < 0:
        raise UserError(f"--guidance-scale: {config.guidance_scale}; it must be 0 or more")
    if config.negatives < 0:
        raise UserError(f"--negatives: {config.negatives}; it must be 0 or more")
    runfolder.check_resume_overwrite(config.resume, config.overwrite)


@dataclass
class OracleFilterConfig:
    """The oracle filter's inputs and defaults.

    Attributes:
        run: the oracle: a cxraug classifier run trained on real data.
        min_prob: keep an image when the oracle's probability of its target label is at
            least this.
        cache_dir: feature cache (default `<manifest folder>/feature_cache`).
        batch_size: images per forward pass.
    """

    run: Path
    min_prob: float = 0.5
    cache_dir: Path | None = None
    batch_size: int = 64
