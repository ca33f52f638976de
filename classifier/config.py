"""Configurations of the classifier's commands (`train-classifier`, `report`): defaults,
help texts and flag checks, and the bootstrap's resample count `N_BOOT`.

Torch-free on purpose: the CLI builds its options from these dataclasses' fields
(`manifests.settings`) and checks a config (a typo answers at once) before it imports torch
or timm, so a default lives in one place (the study overrides the same fields by name).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from classifier.arms import Arm
from classifier.run import read_config
from classifier.training.tracking import check_report_to
from manifests import runfolder
from manifests.errors import UserError
from manifests.mixing import check_mix, check_real_size
from manifests.settings import REPLACE_HELP, REPORT_TO_HELP, SEED_HELP, comma_list, setting

# Bootstrap resamples of test patients behind every interval (train-classifier's metrics,
# report, the text-encoder probe, the study), unless a command is told otherwise.
N_BOOT = 1000
BASELINE_ARM = "real"  # the arm a report's deltas are taken against
# A label enters a report's macro only with this many positive test patients: with fewer,
# a handful of patients decides its AUROC and dominates the macro's interval.
MIN_POSITIVE_PATIENTS = 10
UNCERTAIN_POLICIES = ("ignore", "zeros", "ones")
BAD_IMAGE_POLICIES = ("skip", "error")


# ------------------------------------------------------------------------------ labels


def check_choice(value: str, choices: Sequence[str], flag: str) -> str:
    """`value` if it is one of `choices`, else a UserError listing them."""
    if value not in choices:
        raise UserError(f"{flag}: {value!r} is not valid; valid: {', '.join(choices)}")
    return value


@dataclass
class AugmentConfig:
    """Random augmentation of training batches (saved in a run's config.json)."""

    rotate_deg: float = setting(10.0, help="Random rotation, up to this many degrees.", cli=False)
    scale: tuple[float, float] = setting((0.9, 1.1), help="Random zoom range (min max).", cli=False)
    translate: float = setting(0.05, help="Random shift, a fraction of the image side.", cli=False)
    brightness: float = setting(
        0.1, help="Random brightness shift, in [0, 1] intensity units.", cli=False
    )
    contrast: float = setting(
        0.1, help="Random contrast: x(1 ± this) around the image mean.", cli=False
    )
    hflip: bool = setting(False, help="Random horizontal flips (off: laterality matters on a CXR).")


@dataclass
class TrainConfig:
    """A classifier run (`cxraug train-classifier`). Saved (with derived facts) as the run's
    config.json.

    The mix: `mix` is the synthetic fraction of the training set. Without `train_size`, all
    R real train images are kept and round(R * mix / (1 - mix)) synthetic ones added
    (0.5 adds as many synthetic as real); mix 1 is synthetic only, R images. With
    `train_size` T: round(T * mix) synthetic, the rest real (see `manifests.mixing`).
    """

    real: Path = setting(help="Real manifest, split by patient.")
    out: Path = setting(flag=("--out", "-o"), help="Run directory to write.")
    synthetic: Path | None = setting(None, help="Synthetic manifest (needed when --mix > 0).")
    mix: float = setting(
        0.0,
        help="Synthetic fraction of the training set, 0 to 1. 0: real only; 1: synthetic "
        "only (as many images as real train); m in (0, 1): all R real train images plus "
        "round(R*m/(1-m)) synthetic, so 0.5 adds as many synthetic as real. Val/test stay real.",
    )
    train_size: int | None = setting(
        None,
        help="Fix the training set size T: round(T*mix) synthetic + the rest real "
        "(drawn with repetition only if too few exist; said in the output).",
    )
    backbone: str = setting("densenet121", help="Any timm model name.")
    labels: tuple[str, ...] | None = setting(
        None,
        parse=comma_list,
        help="Comma list (default: labels with 5+ train positives and negatives).",
    )
    pretrained: Path | None = setting(None, help="Local timm weights (.safetensors/.pth).")
    init_from: Path | None = setting(
        None, help="Start from another run's weights (pretrain-then-finetune)."
    )
    uncertain: str = setting("ignore", help="-1 labels: ignore | zeros | ones.")
    image_size: int = setting(224, help="Input side, pixels.")
    epochs: int = setting(10, help="Passes over the training set (at most).")
    batch_size: int = setting(32, help="Images per batch.")
    lr: float = setting(3e-4, help="Peak learning rate (cosine, warmup).")
    weight_decay: float = setting(0.01, help="Optimizer weight decay.", cli=False)
    optimizer: str = setting("adamw", help="timm optimizer name.")
    warmup_epochs: int = setting(1, help="Epochs of linear learning-rate warmup.", cli=False)
    min_lr: float = setting(
        1e-6, help="Learning rate at the end of the cosine schedule.", cli=False
    )
    patience: int = setting(3, help="Early stop after N epochs without val gain; 0 off.")
    seed: int = setting(0, help=SEED_HELP)
    num_workers: int = setting(
        0, help="Loader processes (the loader only copies from the image cache)."
    )
    on_bad_image: str = setting("error", help="Unreadable images: error | skip (counted).")
    real_size: float | None = setting(
        None,
        help="Train on a nested, patient-level, label-stratified subset of the real train "
        "split: N images (>= 1) or a fraction (< 1). Val/test stay whole.",
    )
    allow_foreign_synthetic: bool = setting(
        False,
        help="Accept a synthetic set whose prompt and generator patients cannot be checked "
        "against the val/test patients of --real, or an --init-from run trained on one "
        "(reports say so).",
    )
    matched_to: str | None = setting(
        None,
        help="Record that this real-only run is the step-matched control of ARM (give it "
        "--train-size equal to ARM's training-set size so it takes as many steps).",
    )
    oversample_to: str | None = setting(
        None,
        help="LABEL:SHARE,...: draw the real train images (with --mix 0 and --train-size) so "
        "each label's positive share is about SHARE, e.g. a mixed arm's label balance.",
    )
    arm: str | None = setting(
        None, help="Arm name (default: real, synthetic, mix0.5, ...)."
    )  # default_arm
    augment: AugmentConfig = setting(default_factory=AugmentConfig)
    mixed_precision: str = setting(
        "auto", help="auto (bf16/fp16 on GPU, none on CPU) | no | fp16 | bf16.", cli=False
    )
    cache_dir: Path | None = setting(
        None, help="Memory-mapped image cache (sets larger than memory)."
    )
    n_boot: int = setting(
        N_BOOT, help="Bootstrap resamples of test patients (metrics' CIs).", cli=False
    )
    min_label_count: int = setting(
        5,
        help="Default label choice: labels with this many train positives and negatives.",
        cli=False,
    )
    eval_batch_size: int = setting(128, help="Images per forward pass when evaluating.", cli=False)
    report_to: str = setting("none", help=REPORT_TO_HELP)  # classifier.training.tracking
    overwrite: bool = setting(False, help=runfolder.OVERWRITE_HELP)
    resume: bool = setting(False, help=runfolder.RESUME_HELP)


@dataclass
class ReportConfig:
    """`cxraug report`: AUROC per arm and label over seeds, deltas with paired bootstrap CIs."""

    runs: list[Path] = setting(
        argument=True, help="Classifier run directories (or folders of them)."
    )
    out: Path = setting(flag=("--out", "-o"), help="Output folder for report.*.")
    synthetic: Path | None = setting(
        None, help="Synthetic manifest for the sample grid (default: the runs')."
    )
    generator_eval: Path | None = setting(None, help="An evaluate-generator folder to include.")
    baseline: str = setting(BASELINE_ARM, help="Arm the deltas are taken against.")
    n_boot: int = setting(N_BOOT, help="Bootstrap resamples.")
    seed: int = setting(0, help=SEED_HELP)
    primary: str | None = setting(
        None,
        help="The primary comparison, declared before the run: 'ARM vs OTHER, LABEL' (OTHER "
        "its baseline or step-matched control; LABEL default macro). Default: the first "
        "mixed arm at the smallest real size vs its step-matched control, macro. Every other "
        "delta is secondary (Holm-adjusted).",
    )
    min_positive_patients: int = setting(
        MIN_POSITIVE_PATIENTS,
        help="A label enters the macro only with at least this many positive test patients "
        "(the report names the labels left out).",
    )
    allow_foreign_synthetic: bool = setting(
        False,
        help="Report runs whose synthetic images' patients were never checked (said in the "
        "report's header).",
    )
    overwrite: bool = setting(False, help=REPLACE_HELP)


def parse_comparison(text: str, flag: str = "--primary") -> tuple[str, str, str]:
    """`(arm, other, label)` of 'ARM vs OTHER, LABEL' (label default 'macro'); UserError
    naming `flag` and the form otherwise."""
    head, _, label = str(text).partition(",")
    arm, sep, other = head.partition(" vs ")
    arm, other, label = arm.strip(), other.strip(), label.strip() or "macro"
    if not sep or not arm or not other or " " in arm or " " in other:
        raise UserError(
            f"{flag}: {text!r} is not a comparison; valid: 'ARM vs OTHER, LABEL', e.g. "
            "'mix0.5-n80 vs real-n80, macro'"
        )
    return arm, other, label


def default_arm(mix: float, init_from: Path | None) -> str:
    """The arm name a report groups runs by: real, synthetic, mix0.25, pretrain-finetune."""
    return Arm(mix=mix, init_from_run=init_from is not None).name


def check_train_config(cfg: TrainConfig) -> None:
    """Refuse bad flags before any work (one UserError each); the backbone name is checked
    against timm by `classifier.models.check_backbone`."""
    cfg.mix = check_mix(cfg.mix)
    cfg.real_size = check_real_size(cfg.real_size)
    if cfg.mix > 0 and cfg.synthetic is None:
        raise UserError(f"--mix {cfg.mix:g} needs synthetic images; pass --synthetic MANIFEST")
    check_choice(cfg.uncertain, UNCERTAIN_POLICIES, "--uncertain")
    check_choice(cfg.on_bad_image, BAD_IMAGE_POLICIES, "--on-bad-image")
    check_choice(cfg.mixed_precision, ("auto", "no", "fp16", "bf16"), "--mixed-precision")
    cfg.report_to = check_report_to(cfg.report_to)
    for flag, value, low in (
        ("--epochs", cfg.epochs, 1),
        ("--batch-size", cfg.batch_size, 2),
        ("--image-size", cfg.image_size, 16),
        ("--patience", cfg.patience, 0),
        ("--num-workers", cfg.num_workers, 0),
    ):
        if int(value) != value or value < low:
            raise UserError(f"{flag}: {value!r} must be an integer >= {low}")
    if not cfg.lr > 0:
        raise UserError(f"--lr: {cfg.lr!r} must be positive")
    if cfg.oversample_to is not None and (cfg.mix != 0 or cfg.train_size is None):
        raise UserError(
            "--oversample-to: only for a real-only run (--mix 0) with --train-size (the "
            "training-set size of the arm whose label balance it matches)"
        )
    runfolder.check_resume_overwrite(cfg.resume, cfg.overwrite)
    if cfg.init_from is not None:
        read_config(Path(cfg.init_from), flag="--init-from")
