"""Configuration of `train-classifier`, with its defaults and flag checks.

Torch-free on purpose: the CLI builds and checks a config (a typo answers at once) before
it imports torch or timm, and reads each flag's default from the dataclass here, so a
default lives in one place (the study reads them from here too).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from classifier.arms import Arm
from classifier.run import read_config
from classifier.tracking import check_report_to
from manifests import runfolder
from manifests.errors import UserError
from manifests.mixing import check_mix, check_real_size

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

    rotate_deg: float = 10.0
    scale: tuple[float, float] = (0.9, 1.1)
    translate: float = 0.05  # fraction of the image side, each direction
    brightness: float = 0.1  # added, in [0, 1] intensity units
    contrast: float = 0.1  # multiplied around the image mean by 1 ± contrast
    hflip: bool = False  # off: laterality matters on a CXR


@dataclass
class TrainConfig:
    """A classifier run. Saved (with derived facts) as the run's config.json.

    The mix: `mix` is the synthetic fraction of the training set. Without `train_size`, all
    R real train images are kept and round(R * mix / (1 - mix)) synthetic ones added
    (0.5 adds as many synthetic as real); mix 1 is synthetic only, R images. With
    `train_size` T: round(T * mix) synthetic, the rest real (see `manifests.mixing`).
    """

    real: Path
    out: Path
    synthetic: Path | None = None
    mix: float = 0.0
    train_size: int | None = None
    backbone: str = "densenet121"
    labels: tuple[str, ...] | None = None  # None: labels with enough train positives
    pretrained: Path | None = None  # local timm weights (safetensors or .pth)
    init_from: Path | None = None  # another run directory to start from
    uncertain: str = "ignore"  # -1 labels: ignore | zeros | ones
    image_size: int = 224
    epochs: int = 10
    batch_size: int = 32
    lr: float = 3e-4
    weight_decay: float = 0.01
    optimizer: str = "adamw"  # any timm optimizer name
    warmup_epochs: int = 1
    min_lr: float = 1e-6
    patience: int = 3  # epochs without val improvement before stopping; 0 never stops
    seed: int = 0
    num_workers: int = 0  # loader processes; the loader only copies from the cache
    on_bad_image: str = "error"  # error | skip
    real_size: float | None = None  # a nested, patient-level subset of real train images
    allow_foreign_synthetic: bool = False  # accept a synthetic set whose patients are unknown
    matched_to: str | None = None  # the arm whose optimizer steps this real-only control matches
    arm: str | None = None  # default from mix and init_from (see default_arm)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    mixed_precision: str = "auto"  # auto (bf16/fp16 on GPU, none on CPU) | no | fp16 | bf16
    cache_dir: Path | None = None  # memory-mapped image cache for sets larger than RAM
    n_boot: int = 1000
    min_label_count: int = 5  # default label choice: positives and negatives in train
    eval_batch_size: int = 128
    report_to: str = "none"  # none | tensorboard | wandb (classifier.tracking)
    overwrite: bool = False
    resume: bool = False


def default_arm(mix: float, init_from: Path | None) -> str:
    """The arm name a report groups runs by: real, synthetic, mix0.25, pretrain-finetune."""
    return Arm(mix=mix, init_from_run=init_from is not None).name


def check_train_config(cfg: TrainConfig) -> None:
    """Refuse bad flags before any work (one UserError each); the backbone name is checked
    against timm by `classifier.train.check_backbone`."""
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
    runfolder.check_resume_overwrite(cfg.resume, cfg.overwrite)
    if cfg.init_from is not None:
        read_config(Path(cfg.init_from), flag="--init-from")
