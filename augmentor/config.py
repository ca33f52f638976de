"""Configurations of the generator's commands (`finetune`, `synthesize` and its oracle
and demographic filters): defaults, help texts and flag checks.

Torch-free on purpose: the CLI builds its options from these dataclasses' fields
(`manifests.settings`) and checks a config (a typo answers at once) before it imports torch
or diffusers, so a default lives in one place (the study overrides the same fields by name).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from augmentor.label_spec import split_label_counts
from augmentor.prompt_policy import DEFAULT_POLICY, POLICIES, check_policy
from classifier.training.tracking import check_report_to
from manifests import runfolder
from manifests.demographics import DEFAULT_AGE_EDGES, check_balance_columns, parse_age_edges
from manifests.errors import UserError
from manifests.settings import REPORT_TO_HELP, SEED_HELP, comma_list, setting

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
    """Everything a fine-tuning run depends on (`cxraug finetune`); saved in `DIR/cxraug.json`.

    `None` defaults are resolved from the base: `resolution` = UNet sample size x autoencoder
    downsampling (64 for tiny, 512 for SD 1.5); `learning_rate` = 5e-5 (RoentGen) for a full
    fine-tune of a real base, 1e-4 with LoRA, 5e-4 from `tiny` (trained from scratch);
    `caption_dropout` = 0.1 from `tiny` (it must learn the empty prompt that
    classifier-free guidance needs; a real base already has), else 0; `film_grain` = on
    from `tiny` (its small autoencoder drops the images' grain; `augmentor.grain`), else off.
    """

    manifest: str = setting(
        flag=("--manifest", "-m"), help="Split manifest; its real train rows train."
    )
    base: str = setting(help="'tiny', a local diffusers SD folder, or a hub id (--allow-download).")
    out: str = setting(flag=("--out", "-o"), help="Output generator folder.")
    allow_download: bool = setting(False, help="Let --base be fetched from the hub.")
    resolution: int | None = setting(None, help="Image side (default: the base's).")
    train_text_encoder: bool = setting(False, help="Train the text encoder too (RoentGen's best).")
    lora_rank: int | None = setting(None, help="Train LoRA adapters of this rank instead.")
    learning_rate: float | None = setting(
        None, help="Default: 5e-5 (RoentGen), 1e-4 LoRA, 5e-4 tiny."
    )
    lr_scheduler: str = setting(
        "constant", help="constant, constant_with_warmup, linear, cosine, ..."
    )
    lr_warmup_steps: int = setting(0, help="Steps of linear learning-rate warmup.")
    batch_size: int = setting(4, help="Images per process per step.")
    gradient_accumulation_steps: int = setting(
        1, help="Batches whose gradients add up to one optimizer step."
    )
    max_steps: int = setting(1000, help="Optimizer steps in all.")
    adam_weight_decay: float = setting(1e-2, help="AdamW weight decay.", cli=False)
    max_grad_norm: float = setting(1.0, help="Gradient clipping norm.", cli=False)
    ema: bool = setting(False, help="Keep and save EMA weights.")
    ema_decay: float = setting(0.9999, help="EMA decay per step.")
    gradient_checkpointing: bool = setting(
        False, help="Recompute activations in the backward pass (less memory, slower)."
    )
    mixed_precision: str | None = setting(
        None, help="no, fp16 or bf16 (default: accelerate's, else no)."
    )
    snr_gamma: float | None = setting(None, help="Min-SNR loss weighting (5 is usual).")
    noise_offset: float = setting(0.0, help="Offset noise (0: off).")
    caption_dropout: float | None = setting(
        None, help="Empty-prompt share (default 0.1 tiny, else 0)."
    )
    film_grain: bool | None = setting(
        None,
        flag="--film-grain/--no-film-grain",
        help="Measure the grain the autoencoder drops, for synthesize to add back "
        "(default: on from tiny, else off).",
    )
    balance_labels: tuple[str, ...] = setting(
        (),
        help="A label to balance (repeat the flag for more): each epoch draws images "
        "weighted toward rare findings, their sides and lobes (augmentor.balance).",
    )
    seed: int = setting(0, help=SEED_HELP)
    checkpointing_steps: int = setting(500, help="Optimizer steps between checkpoints.")
    checkpoints_total_limit: int | None = setting(2, help="Keep the last K checkpoints.")
    resume: bool = setting(False, help=runfolder.RESUME_HELP)
    overwrite: bool = setting(False, help=runfolder.OVERWRITE_HELP)
    validation_prompts: tuple[str, ...] = setting(
        (), help="A fixed prompt (repeat the flag for more)."
    )
    validation_steps: int = setting(500, help="Optimizer steps between validation images.")
    validation_inference_steps: int = setting(25, help="Denoising steps of validation images.")
    validation_guidance_scale: float = setting(4.0, help="Guidance scale of validation images.")
    fit_autoencoder: bool = setting(
        False,
        help="tiny only: fit its autoencoder from scratch on the train images instead of "
        "keeping the pretrained one it ships with.",
    )
    # 1,600 keeps the lung markings the oracle reads (docs/results.md, generator levers)
    autoencoder_steps: int = setting(
        1600, help="With --fit-autoencoder: fitting steps (fewer blur the lung markings)."
    )
    autoencoder_learning_rate: float = setting(
        1e-3, help="With --fit-autoencoder: its learning rate.", cli=False
    )
    autoencoder_batch_size: int = setting(8, help="With --fit-autoencoder: images per step.")
    cache_latents_on_disk: bool = setting(
        True,
        flag="--disk-cache/--no-disk-cache",
        help="Keep the latent cache on disk in OUT (--no-disk-cache: in memory only).",
    )
    show_progress: bool = setting(True, cli=False)  # progress bars (off in benchmarks)
    report_to: str = setting("none", help=REPORT_TO_HELP)  # classifier.training.tracking


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


def _balance_columns(text: str | None) -> tuple[str, ...]:
    """`--balance-by sex,age_group` -> ('sex', 'age_group'); no text -> () (no balance)."""
    return comma_list(text) or ()


@dataclass
class SynthesisConfig:
    """Everything a synthesis run needs (`cxraug synthesize`); saved as `OUT/synthesis.json`.

    `images_per_prompt` images (each with its own seed) share a drawn prompt: RoentGen's
    diversity protocol uses 4 (MS-SSIM over their 6 pairs); the label counts stay exact, only
    the number of distinct prompts drawn changes. Each row's generation seed derives from
    `seed` and the row index; `batch_size` changes no image, and `shard_every` bounds the
    work a kill loses. `film_grain` adds the grain the generator measured at fine-tuning
    (`augmentor.grain`; only generators fine-tuned from `tiny` have one). `prompt_policy`
    says what of each report becomes its prompt (`augmentor.prompt_policy`): `clean` drops
    de-identification markers, dates, times, names and result-communication sentences,
    `raw` keeps the report as written (RoentGen). `demographic_prompts` opens each prompt
    with its patient's sex and age ("72-year-old woman."), and `balance_by` splits each
    label's count exactly over the sex x age-group cells (`age_edges`); both are described
    in `augmentor.prompts`.
    """

    model: str = setting(help="Generator directory (diffusers pipeline folder).")
    prompts_from: str = setting(help="Manifest whose train-split reports are the prompts.")
    out: str = setting(flag=("--out", "-o"), help="Output folder.")
    labels: str = setting(
        help="LABEL:COUNT,... e.g. pneumothorax:5000,pleural_effusion:5000 "
        "(at most 10,000,000 images per run).",
    )
    negatives: int = setting(0, help="Extra images from 'No Finding' reports.")
    prompt_policy: str = setting(
        DEFAULT_POLICY,
        help=f"{' or '.join(POLICIES)}: clean removes de-identification markers (___), dates, "
        "times, names and result-communication sentences from each report before it "
        "prompts; raw keeps it as written (RoentGen).",
    )
    images_per_prompt: int = setting(
        1,
        help="Images per drawn prompt, each with its own seed (RoentGen's MS-SSIM "
        "diversity: 4); label counts stay exact.",
    )
    demographic_prompts: bool = setting(
        False,
        help="Open each prompt with its patient's sex and age ('72-year-old woman.'); only "
        "for a generator fine-tuned on reports that carry such headers.",
    )
    balance_by: tuple[str, ...] = setting(
        (),
        parse=_balance_columns,
        help="sex, age_group or sex,age_group: split each label's count exactly over these "
        "subgroup cells, prompting each cell with its own patients' reports.",
    )
    age_edges: tuple[float, ...] = setting(
        DEFAULT_AGE_EDGES,
        flag="--age-groups",
        parse=parse_age_edges,
        help="Age-group edges in years for --balance-by age_group (40,65: <40, 40-64, 65+).",
    )
    seed: int = setting(0, help=SEED_HELP)
    scheduler: str = setting(DEFAULT_SCHEDULER, help=", ".join(SCHEDULERS) + ".")
    num_inference_steps: int = setting(DEFAULT_STEPS, help="Denoising steps (RoentGen: 75).")
    guidance_scale: float = setting(
        DEFAULT_GUIDANCE_SCALE,
        help="Classifier-free guidance (4: RoentGen's fidelity/alignment trade-off).",
    )
    negative_prompt: str | None = setting(None, help="Optional negative prompt.")
    batch_size: int = setting(8, help="Images per call.")
    shard_every: int = setting(1, help="Batches per committed Parquet shard.")
    precision: str = setting("fp32", help="fp32, fp16 or bf16.")
    film_grain: bool = setting(
        True,
        flag="--film-grain/--no-film-grain",
        help="Add the film grain the generator measured at fine-tuning (if it has one).",
    )
    resume: bool = setting(False, help=runfolder.RESUME_HELP)
    overwrite: bool = setting(False, help=runfolder.OVERWRITE_HELP)


def check_synthesis_config(config: SynthesisConfig) -> None:
    """Raise UserError naming the first bad flag value (labels syntax and the size cap first)."""
    split_label_counts(config.labels, config.negatives)
    config.prompt_policy = check_policy(config.prompt_policy)
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
    check_demographic_settings(config)
    runfolder.check_resume_overwrite(config.resume, config.overwrite)


def check_demographic_settings(config: SynthesisConfig) -> None:
    """Normalise `balance_by` and `age_edges` (a study's TOML gives lists) or raise a
    UserError naming the flag; `--age-groups` other than the default needs
    `--balance-by age_group`."""
    given = config.balance_by
    columns = _balance_columns(given) if isinstance(given, str) else tuple(given or ())
    config.balance_by = check_balance_columns(columns) if columns else ()
    edges = parse_age_edges(config.age_edges)
    if not all(math.isfinite(e) for e in edges):
        raise UserError(f"--age-groups: {config.age_edges!r}: edges must be finite ages in years")
    config.age_edges = edges
    if edges != DEFAULT_AGE_EDGES and "age_group" not in config.balance_by:
        raise UserError(
            "--age-groups: only with --balance-by age_group (or sex,age_group); "
            "without it no age group is used"
        )


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


@dataclass
class DemographicFilterConfig:
    """The demographic filter's inputs and defaults (RoentGen-v2's rule).

    Attributes:
        oracle: a demographic oracle folder (`augmentor.demographic_oracle`), trained on
            real train data.
        age_tolerance: keep an image whose predicted age lies within this many years of
            its prompt's (and whose predicted sex is its prompt's).
        age_edges: the age groups its reject counts are kept by.
        cache_dir: prediction cache (default `<manifest folder>/feature_cache`).
        batch_size: images per forward pass.
    """

    oracle: Path
    age_tolerance: float = 16.0
    age_edges: tuple[float, ...] = DEFAULT_AGE_EDGES
    cache_dir: Path | None = None
    batch_size: int = 64
