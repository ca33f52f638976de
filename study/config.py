"""The study's configuration: `StudyConfig` and its sections, TOML in and out, checks.

`StudyConfig` has one dataclass per stage, written as TOML tables `[data]`, `[generator]`,
`[synthesis]`, `[classifier]`, `[report]` (`config_to_toml`: the `study.toml` a study folder
keeps). A TOML file of the same shape overrides a preset (`study.presets.load_study_config`):
unknown keys and wrong types are a UserError naming the key and the file, and relative paths
are relative to the file's folder. `check_config` refuses settings no study can run.
"""

from __future__ import annotations

import json
import math
import types
import typing
from dataclasses import asdict, dataclass, field, fields, is_dataclass, replace
from pathlib import Path

from augmentor.config import FinetuneConfig, SynthesisConfig
from classifier.config import TrainConfig
from manifests.errors import UserError

# ------------------------------------------------------------------------------ config


@dataclass
class DataConfig:
    """Where the real images come from and how they are split by patient."""

    manifest: str | None = None  # a real manifest; None: draw the phantom dataset
    phantom_n: int = 600  # phantom images (one study each)
    phantom_size: int = 64  # phantom image side, pixels
    phantom_patients: int | None = None  # default n/3
    fractions: list[float] = field(default_factory=lambda: [0.6, 0.2, 0.2])  # train,val,test
    seed: int = 0  # phantom drawing and split


@dataclass
class GeneratorConfig:
    """Fine-tuning of the generator on the real train split (RoentGen recipe).

    Defaults are `augmentor.config.FinetuneConfig`'s, except that the text encoder trains
    with the UNet (RoentGen's best setting).
    """

    base: str = "tiny"  # 'tiny' or a local diffusers folder
    max_steps: int = FinetuneConfig.max_steps  # UNet steps
    # only from 'tiny': steps fitting the 1-channel autoencoder
    autoencoder_steps: int = FinetuneConfig.autoencoder_steps
    batch_size: int = FinetuneConfig.batch_size
    learning_rate: float | None = FinetuneConfig.learning_rate  # None: the base's default
    train_text_encoder: bool = True
    checkpointing_steps: int = 100  # an interrupted study resumes from the latest one
    seed: int = 0
    # Any other `augmentor.config.FinetuneConfig` field, passed through by name.
    options: dict = field(default_factory=dict)


@dataclass
class SynthesisStageConfig:
    """Label-balanced synthesis prompted by real train reports."""

    labels: str = "pleural_effusion:100,pneumothorax:100"  # LABEL:COUNT,...
    negatives: int = SynthesisConfig.negatives  # extra images from 'No Finding' reports
    # RoentGen's sampler (augmentor.config): PNDM, 75 steps, guidance 4.
    scheduler: str = SynthesisConfig.scheduler
    num_inference_steps: int = SynthesisConfig.num_inference_steps
    guidance_scale: float = SynthesisConfig.guidance_scale
    batch_size: int = SynthesisConfig.batch_size
    seed: int = SynthesisConfig.seed
    film_grain: bool = SynthesisConfig.film_grain  # add a `tiny` generator's measured grain


@dataclass
class ClassifierStageConfig:
    """Classifier arms x seeds, evaluated on the real test split."""

    labels: list[str] = field(default_factory=lambda: ["Pleural Effusion", "Pneumothorax"])
    # Defaults from `classifier.config.TrainConfig`.
    backbone: str = TrainConfig.backbone
    pretrained: str | None = None  # local timm weights
    image_size: int = TrainConfig.image_size
    epochs: int = TrainConfig.epochs
    batch_size: int = TrainConfig.batch_size
    lr: float = TrainConfig.lr
    patience: int = TrainConfig.patience
    uncertain: str = TrainConfig.uncertain
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    mixes: list[float] = field(default_factory=lambda: [0.5])  # mixed arms (0 < m < 1)
    # A real-only arm per mixed arm trained for the same number of optimizer steps (its real
    # images repeated to the mixed arm's training-set size): rules out "more steps".
    matched_controls: bool = True
    synthetic_arm: bool = True  # mix 1: as many synthetic as real train images
    # Larger synthetic-only arms `synthetic-x<k>`: k x R synthetic images (RoentGen's +3%).
    larger_synthetic: list[float] = field(default_factory=list)
    # Data efficiency: real train sizes (image counts >= 1, or fractions < 1) at which the
    # real, mixed and matched arms are also trained on a nested, patient-level subset.
    real_sizes: list[float] = field(default_factory=list)
    # False: the mixed arms (and their controls) only at the `real_sizes`, not on the full
    # real train split (the real arm on the full split always trains: it is the oracle).
    full_size_mixes: bool = True
    # a synthetic set whose patients cannot be checked
    allow_foreign_synthetic: bool = TrainConfig.allow_foreign_synthetic
    pretrain_finetune: bool = True
    # Pretrain on every synthetic image (its own run under pretrain/) instead of starting
    # from the synthetic arm's run, which saw as many images as the real train split.
    pretrain_all_synthetic: bool = False
    num_workers: int = TrainConfig.num_workers


@dataclass
class ReportStageConfig:
    n_boot: int = 1000  # paired bootstrap resamples
    seed: int = 0
    # Evaluate the generator (fidelity, diversity, prompt alignment, memorization) with the
    # first real-only classifier run as feature extractor and oracle; shown in the report.
    generator_eval: bool = True


@dataclass
class StudyConfig:
    """The whole study; a preset, optionally overridden by a TOML file of the same shape."""

    name: str = "custom"
    data: DataConfig = field(default_factory=DataConfig)
    generator: GeneratorConfig = field(default_factory=GeneratorConfig)
    synthesis: SynthesisStageConfig = field(default_factory=SynthesisStageConfig)
    classifier: ClassifierStageConfig = field(default_factory=ClassifierStageConfig)
    report: ReportStageConfig = field(default_factory=ReportStageConfig)


# ------------------------------------------------------------------------------ TOML


def _type_name(hint) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


def _check_value(value, hint, where: str):
    """`value` converted to the field type `hint`, or a UserError naming `where`."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        for option in options:
            if option is type(None):
                continue
            try:
                return _check_value(value, option, where)
            except UserError:
                continue
        raise UserError(f"{where}: {value!r} is not {_type_name(hint)}")
    if origin is list:
        (item,) = typing.get_args(hint) or (object,)
        if not isinstance(value, list | tuple):
            raise UserError(f"{where}: {value!r} is not a list of {_type_name(item)}")
        return [_check_value(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
    if hint is dict or origin is dict:
        if not isinstance(value, dict):
            raise UserError(f"{where}: {value!r} is not a table")
        return dict(value)
    if hint is bool:
        if not isinstance(value, bool):
            raise UserError(f"{where}: {value!r} is not true/false")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise UserError(f"{where}: {value!r} is not an integer")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise UserError(f"{where}: {value!r} is not a number")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise UserError(f"{where}: {value!r} is not a string")
        return value
    raise TypeError(f"unsupported config type {hint!r}")  # a bug in the dataclasses


def apply_overrides(obj, data: dict, where: str, section: str = ""):
    """A copy of dataclass `obj` with the keys of `data` set (checked by name and type)."""
    hints = typing.get_type_hints(type(obj))
    names = [f.name for f in fields(obj)]
    changes = {}
    for key, value in data.items():
        name = f"{section}.{key}" if section else key
        if key not in hints:
            valid = ", ".join(names)
            raise UserError(f"{where}: unknown key {name!r}; valid: {valid}")
        current = getattr(obj, key)
        if is_dataclass(current):
            if not isinstance(value, dict):
                raise UserError(f"{where}: {name!r} must be a table ([{name}])")
            changes[key] = apply_overrides(current, value, where, name)
        else:
            changes[key] = _check_value(value, hints[key], f"{where}: key {name!r}")
    return replace(obj, **changes)


def load_toml(path: Path) -> dict:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    path = Path(path)
    if not path.is_file():
        raise UserError(f"--config: {path} not found")
    try:
        return tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"--config: {path} is not valid TOML ({exc})") from None


def resolve_paths(cfg: StudyConfig, folder: Path) -> StudyConfig:
    """Relative paths in a config file are relative to the file's folder; made absolute."""

    def absolute(value: str | None) -> str | None:
        if value is None or value == "tiny" or Path(value).is_absolute():
            return value
        return str((folder / value).resolve())

    base = cfg.generator.base  # 'tiny', a folder, or a hub id (left as is)
    base = absolute(base) if (folder / base).exists() else base
    return replace(
        cfg,
        data=replace(cfg.data, manifest=absolute(cfg.data.manifest)),
        generator=replace(cfg.generator, base=base),
        classifier=replace(cfg.classifier, pretrained=absolute(cfg.classifier.pretrained)),
    )


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value) if math.isfinite(value) else ("nan" if value != value else "inf")
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return (
            "{" + ", ".join(f"{json.dumps(k)} = {_toml_value(v)}" for k, v in value.items()) + "}"
        )
    raise TypeError(f"cannot write {value!r} as TOML")


def config_to_toml(cfg: StudyConfig) -> str:
    """The config as TOML (None values are left out: they are the defaults)."""
    lines = [f"# cxraug study configuration (preset {cfg.name!r}); rerun with --config"]
    top = {k: v for k, v in asdict(cfg).items() if not isinstance(v, dict)}
    lines += [f"{k} = {_toml_value(v)}" for k, v in top.items() if v is not None]
    for section, values in asdict(cfg).items():
        if not isinstance(values, dict):
            continue
        lines.append(f"\n[{section}]")
        lines += [f"{k} = {_toml_value(v)}" for k, v in values.items() if v is not None]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------ checks


def check_config(cfg: StudyConfig) -> None:
    c = cfg.classifier
    for m in c.mixes:
        if not 0.0 < m < 1.0:
            raise UserError(
                f"study: classifier.mixes has {m!r}; mixed arms need 0 < m < 1 (the real and "
                "synthetic arms are synthetic_arm and the real baseline)"
            )
    if not c.seeds:
        raise UserError("study: classifier.seeds is empty; give at least one seed")
    if len(set(c.seeds)) != len(c.seeds):
        raise UserError(f"study: classifier.seeds {c.seeds} repeats a seed")
    if not c.labels:
        raise UserError("study: classifier.labels is empty")


__all__ = [
    "ClassifierStageConfig",
    "DataConfig",
    "GeneratorConfig",
    "ReportStageConfig",
    "StudyConfig",
    "SynthesisStageConfig",
    "apply_overrides",
    "check_config",
    "config_to_toml",
    "load_toml",
    "resolve_paths",
]
