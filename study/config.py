"""The study's configuration: `StudyConfig` and its sections, TOML in and out, checks.

`StudyConfig` has one section per stage, written as TOML tables `[data]`, `[generator]`,
`[synthesis]`, `[classifier]`, `[report]` (`config_to_toml`: the `study.toml` a study folder
keeps). The generator, synthesis, classifier and report sections are sets of overrides of
their command's config dataclass (`FinetuneConfig`, `SynthesisConfig`, `TrainConfig`,
`ReportConfig`): a table's keys are that dataclass's fields by name (any field but those the
study sets itself, such as the paths), beside the section's own study settings (the arms,
seeds and sizes of `[classifier]`). A new field of a command's config is a study key at once.
A TOML file of the same shape overrides a preset (`study.presets.load_study_config`):
unknown keys and wrong types are a UserError naming the key and the file, and relative paths
are relative to the file's folder. `check_config` refuses settings no study can run.
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from dataclasses import dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import Any, ClassVar

from augmentor.config import FinetuneConfig, SynthesisConfig
from classifier.config import ReportConfig, TrainConfig, parse_comparison
from classifier.training.records import jsonable
from manifests.demographics import check_balance_columns
from manifests.errors import UserError
from manifests.settings import field_default, setting

# ------------------------------------------------------------------------------ config


@dataclass
class DataConfig:
    """Where the real images come from and how they are split by patient."""

    manifest: str | None = setting(None, help="a real manifest; unset: draw the phantom dataset")
    phantom_n: int = setting(600, help="phantom images (one study each)")
    phantom_size: int = setting(64, help="phantom image side, px")
    phantom_patients: int | None = setting(None, help="phantom patients (unset: n/3)")
    fractions: list[float] = setting(
        default_factory=lambda: [0.6, 0.2, 0.2], help="train, val, test shares of patients"
    )
    seed: int = setting(0, help="phantom drawing and split")
    oracle_images: int = setting(
        0,
        help="phantom images of patients no other draw has, for the fidelity oracle alone "
        "(trained on patients neither the generator nor the test set saw); 0: none",
    )
    oracle_fraction: float = setting(
        0.0,
        help="with a real manifest: the share of train patients moved to the fidelity "
        "oracle's own set before anything trains; 0: none",
    )

    @property
    def has_oracle(self) -> bool:
        """The study reserves patients for the fidelity oracle."""
        return self.oracle_images > 0 if self.manifest is None else self.oracle_fraction > 0


GENERATOR_DATA = ("full", "per_size")


@dataclass
class Section:
    """A stage's settings of its command's config dataclass (`COMMAND`), by field name.

    `settings` holds only what differs from the command's defaults (given values are checked
    and converted to the field's type; one equal to the default is dropped), so a section
    is its overrides; `value(name)` is what the stage runs with, and `command_config` the
    stage's config: the command's defaults, these overrides, then what the study sets
    itself (`SET_BY_STUDY`, never a key of the section).
    """

    NAME: ClassVar[str]  # its TOML table
    COMMAND: ClassVar[type]
    SET_BY_STUDY: ClassVar[frozenset[str]]

    settings: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        checked = check_settings(type(self), self.settings, "study")
        defaults = command_defaults(self.COMMAND)
        for f in fields(self.COMMAND):
            if f.name not in defaults and f.name not in self.SET_BY_STUDY | set(checked):
                raise UserError(f"study: {self.NAME}.{f.name} has no default; set it")
        self.settings = {k: v for k, v in checked.items() if v != defaults.get(k)}

    @classmethod
    def own_fields(cls) -> list[str]:
        """The section's study settings (dataclass fields other than `settings`)."""
        return [f.name for f in fields(cls) if f.name != "settings"]

    @classmethod
    def table_keys(cls) -> list[str]:
        """Every key its TOML table takes: its own fields, then the command's."""
        command = [f.name for f in fields(cls.COMMAND) if f.name not in cls.SET_BY_STUDY]
        return [*cls.own_fields(), *(k for k in command if k not in cls.own_fields())]

    def value(self, name: str) -> Any:
        """The setting the stage runs with: the override, else the command's default."""
        if name in self.settings:
            return self.settings[name]
        return command_defaults(self.COMMAND)[name]

    def with_settings(self, **changes: Any):
        """A copy with these overrides added."""
        return replace(self, settings={**self.settings, **changes})

    def command_config(self, **study: Any):
        """The command's config for this stage; `study` gives what the study sets."""
        return self.COMMAND(**{**self.settings, **study})


def command_defaults(cls: type) -> dict[str, Any]:
    """{field: default} of a config dataclass (fields without one left out)."""
    found = {f.name: field_default(f) for f in fields(cls)}
    return {k: v for k, v in found.items() if v is not dataclasses.MISSING}


@dataclass
class GeneratorConfig(Section):
    """Fine-tuning of the generator on the real train split (`cxraug finetune`'s settings).

    The study's defaults: the `tiny` base, the text encoder trained with the UNet
    (RoentGen's best setting), a checkpoint every 100 steps (a cut study resumes there).
    """

    NAME: ClassVar[str] = "generator"
    COMMAND: ClassVar[type] = FinetuneConfig
    SET_BY_STUDY: ClassVar[frozenset[str]] = frozenset({"manifest", "out", "resume", "overwrite"})

    settings: dict[str, Any] = field(
        default_factory=lambda: {
            "base": "tiny",
            "train_text_encoder": True,
            "checkpointing_steps": 100,
        }
    )
    replicates: int = setting(
        1,
        help="generators fitted on the whole train split with seeds seed, seed+1, ...; every "
        "arm that uses them trains each classifier seed on each one's set, so its intervals "
        "hold the generators' variance (a per-size generator is one per classifier seed)",
    )
    data: str = setting(
        "full",
        help="full: generators see the whole train split (a mixed arm at a smaller real "
        "size is then transfer); per_size: each real size in per_size gets, per classifier "
        "seed, a generator fine-tuned on that seed's nested subset alone and prompted by "
        "its reports",
    )
    per_size: list[float] = setting(
        default_factory=list,
        help="with data = per_size: the real sizes that get their own generators (empty: "
        "every real size)",
    )
    per_size_max_steps: int | None = setting(
        None, help="optimizer steps of a per-size generator (unset: max_steps)"
    )


@dataclass
class SynthesisStageConfig(Section):
    """Label-balanced synthesis prompted by real train reports (`cxraug synthesize`'s
    settings; RoentGen's sampler by default: PNDM, 75 steps, guidance 4)."""

    NAME: ClassVar[str] = "synthesis"
    COMMAND: ClassVar[type] = SynthesisConfig
    SET_BY_STUDY: ClassVar[frozenset[str]] = frozenset(
        {"model", "prompts_from", "out", "resume", "overwrite"}
    )

    settings: dict[str, Any] = field(
        default_factory=lambda: {"labels": "pleural_effusion:100,pneumothorax:100"}
    )
    balanced_set: list[str] = setting(
        default_factory=list,
        help="subgroup columns (sex, age_group) of a second synthetic set per whole-split "
        "generator, the same counts balanced over label x subgroup cells (balance_by); every "
        "mixed arm those generators serve gets a twin mix<m>-balanced on it (empty: none)",
    )


@dataclass
class ClassifierStageConfig(Section):
    """Classifier arms x seeds, evaluated on the real test split: the arms below, and
    `cxraug train-classifier`'s settings for every run (the study sets each run's data,
    mix, size, seed and folder)."""

    NAME: ClassVar[str] = "classifier"
    COMMAND: ClassVar[type] = TrainConfig
    SET_BY_STUDY: ClassVar[frozenset[str]] = frozenset(
        {"real", "out", "synthetic", "mix", "train_size", "init_from", "real_size"}
        | {"matched_to", "arm", "seed", "resume", "overwrite", "oversample_to"}
    )

    settings: dict[str, Any] = field(
        default_factory=lambda: {"labels": ("Pleural Effusion", "Pneumothorax")}
    )
    seeds: list[int] = setting(default_factory=lambda: [0, 1, 2], help="one run per arm and seed")
    mixes: list[float] = setting(
        default_factory=lambda: [0.5], help="mixed arms, synthetic fraction 0 < m < 1"
    )
    matched_controls: bool = setting(
        True,
        help="a real-only arm per mixed arm, trained for as many optimizer steps (its real "
        "images repeated to the mixed arm's size): rules out 'more steps'",
    )
    synthetic_arm: bool = setting(True, help="synthetic only, as many images as real (mix 1)")
    larger_synthetic: list[float] = setting(
        default_factory=list, help="synthetic-only arms `synthetic-x<k>` with k x R images"
    )
    real_sizes: list[float] = setting(
        default_factory=list,
        help="real train sizes of the sweep (counts, or fractions < 1): nested, patient-level "
        "subsets on which the real, mixed and matched arms train too",
    )
    full_size_mixes: bool = setting(
        True, help="mixed arms (and controls) on the full real train split too"
    )
    oversample_controls: bool = setting(
        False,
        help="a second control per mixed arm: real only, as many steps, its real positives "
        "drawn to the mixed arm's label balance: rules out 'more positives'",
    )
    pretrain_finetune: bool = setting(True, help="pretrain on synthetic, fine-tune on real")
    pretrain_all_synthetic: bool = setting(
        False, help="pretrain on every synthetic image, not the synthetic arm's run"
    )


@dataclass
class ReportStageConfig(Section):
    """The report (`cxraug report`'s settings: bootstrap resamples, seed, baseline arm, the
    primary endpoint a preset declares before it runs, the macro's minimum of positive test
    patients)."""

    NAME: ClassVar[str] = "report"
    COMMAND: ClassVar[type] = ReportConfig
    SET_BY_STUDY: ClassVar[frozenset[str]] = frozenset(
        {"runs", "out", "synthetic", "generator_eval", "overwrite", "allow_foreign_synthetic"}
    )

    generator_eval: bool = setting(
        True,
        help="evaluate the generator (prompt fidelity, FID/KID, diversity, memorization), the "
        "first real-only run as oracle",
    )
    privacy_audit: bool = setting(
        True,
        help="with generator_eval: the re-identification audit (evaluate-generator --privacy)",
    )
    demographic_fidelity: bool = setting(
        True,
        help="with generator_eval: sex and age oracles judge who the synthetic patients are "
        "(evaluate-generator --demographics; needs sex and age in the real manifest)",
    )


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
    if origin in (list, tuple):
        items = typing.get_args(hint) or (object,)
        if not isinstance(value, list | tuple):
            raise UserError(f"{where}: {value!r} is not a list of {_type_name(items[0])}")
        if origin is list or items[-1] is ...:
            items = (items[0],) * len(value)
        elif len(items) != len(value):
            raise UserError(f"{where}: {value!r} is not a list of {len(items)} values")
        checked = [
            _check_value(v, t, f"{where}[{i}]")
            for i, (v, t) in enumerate(zip(value, items, strict=True))
        ]
        return checked if origin is list else tuple(checked)
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
        if not math.isfinite(value):
            raise UserError(f"{where}: {value!r} is not a finite number")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise UserError(f"{where}: {value!r} is not a string")
        return value
    if hint is Path:
        if not isinstance(value, str | Path):
            raise UserError(f"{where}: {value!r} is not a path")
        return Path(value)
    raise TypeError(f"unsupported config type {hint!r}")  # a bug in the dataclasses


def check_settings(section: type[Section], data: dict, where: str) -> dict:
    """`data` as overrides of the section's command config: each key a field the study
    does not set itself, each value converted to its type (a table for a nested config)."""
    hints = typing.get_type_hints(section.COMMAND)
    defaults = command_defaults(section.COMMAND)
    checked = {}
    for key, value in data.items():
        name = f"{section.NAME}.{key}"
        if key in section.SET_BY_STUDY:
            raise UserError(f"{where}: key {name!r} is set by the study itself; leave it out")
        if key not in hints:
            raise UserError(
                f"{where}: unknown key {name!r}; valid: {', '.join(section.table_keys())}"
            )
        default = defaults.get(key)
        if is_dataclass(default) and not is_dataclass(value):
            if not isinstance(value, dict):
                raise UserError(f"{where}: {name!r} must be a table ([{name}])")
            checked[key] = apply_overrides(default, value, where, name)
        else:
            checked[key] = (
                value
                if is_dataclass(value)
                else _check_value(value, hints[key], f"{where}: key {name!r}")
            )
    return checked


def apply_overrides(obj, data: dict, where: str, section: str = ""):
    """A copy of dataclass `obj` with the keys of `data` set (checked by name and type).

    In a stage's section, a key that is not one of its own fields overrides its command's
    config (`check_settings`); an `options` table (older study.toml files) holds more such
    keys.
    """
    data = dict(data)
    if isinstance(obj, Section):
        data.update(data.pop("options", None) or {})
        own = {k: v for k, v in data.items() if k in obj.own_fields()}
        rest = {k: v for k, v in data.items() if k not in own}
        settings = {**obj.settings, **check_settings(type(obj), rest, where)}
        return replace(_apply_fields(obj, own, where, section), settings=settings)
    return _apply_fields(obj, data, where, section)


def _apply_fields(obj, data: dict, where: str, section: str):
    hints = typing.get_type_hints(type(obj))
    names = [f.name for f in fields(obj)]
    changes = {}
    for key, value in data.items():
        name = f"{section}.{key}" if section else key
        if key not in hints or key == "settings":
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

    def paths(section: Section) -> Section:
        changes = {
            k: Path(absolute(str(v))) for k, v in section.settings.items() if isinstance(v, Path)
        }
        return section.with_settings(**changes)

    base = cfg.generator.value("base")  # 'tiny', a folder, or a hub id (left as is)
    base = absolute(base) if (folder / base).exists() else base
    return replace(
        cfg,
        data=replace(cfg.data, manifest=absolute(cfg.data.manifest)),
        generator=paths(cfg.generator).with_settings(base=base),
        synthesis=paths(cfg.synthesis),
        classifier=paths(cfg.classifier),
        report=paths(cfg.report),
    )


def as_tables(cfg: StudyConfig) -> dict:
    """The config as its TOML tables: each section's own fields, then every setting of its
    command's config that the stage runs with (the study's own overrides and the defaults)."""
    tables: dict = {"name": cfg.name}
    for f in fields(cfg):
        section = getattr(cfg, f.name)
        if isinstance(section, Section):
            own = {k: getattr(section, k) for k in section.own_fields()}
            tables[f.name] = jsonable(
                {**own, **{k: section.value(k) for k in section.table_keys() if k not in own}}
            )
        elif is_dataclass(section):
            tables[f.name] = jsonable(section)
    return tables


def toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value) if math.isfinite(value) else ("nan" if value != value else "inf")
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"cannot write {value!r} as TOML")


def config_to_toml(cfg: StudyConfig) -> str:
    """The config as TOML, every setting written out (None values are left out: they are
    the defaults)."""
    lines = [f"# cxraug study configuration (preset {cfg.name!r}); rerun with --config"]
    tables = as_tables(cfg)
    lines += [f"{k} = {toml_value(v)}" for k, v in tables.items() if not isinstance(v, dict)]
    for section, values in tables.items():
        if not isinstance(values, dict):
            continue
        lines.append(f"\n[{section}]")
        lines += [f"{k} = {toml_value(v)}" for k, v in values.items() if v is not None]
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
    if not c.value("labels"):
        raise UserError("study: classifier.labels is empty")
    g = cfg.generator
    if g.replicates < 1:
        raise UserError(f"study: generator.replicates {g.replicates}; give 1 or more")
    if g.data not in GENERATOR_DATA:
        raise UserError(f"study: generator.data {g.data!r}; valid: {', '.join(GENERATOR_DATA)}")
    if g.data == "per_size" and not c.real_sizes:
        raise UserError("study: generator.data 'per_size' needs classifier.real_sizes")
    for size in g.per_size:
        if size not in c.real_sizes:
            raise UserError(
                f"study: generator.per_size has {size:g}, not one of classifier.real_sizes "
                f"{c.real_sizes}"
            )
    if g.per_size_max_steps is not None and g.per_size_max_steps < 1:
        raise UserError(f"study: generator.per_size_max_steps {g.per_size_max_steps}; give 1+")
    d = cfg.data
    if d.oracle_images < 0 or not 0.0 <= d.oracle_fraction < 1.0:
        raise UserError(
            "study: data.oracle_images must be 0 or more and data.oracle_fraction in [0, 1)"
        )
    if cfg.synthesis.balanced_set:
        check_balance_columns(cfg.synthesis.balanced_set, flag="study: synthesis.balanced_set")
        if not c.mixes:
            raise UserError("study: synthesis.balanced_set needs classifier.mixes (its arms mix)")
    if cfg.report.value("primary") is not None:
        parse_comparison(cfg.report.value("primary"), flag="study: report.primary")


__all__ = [
    "ClassifierStageConfig",
    "DataConfig",
    "GeneratorConfig",
    "ReportStageConfig",
    "StudyConfig",
    "SynthesisStageConfig",
    "Section",
    "apply_overrides",
    "as_tables",
    "check_settings",
    "check_config",
    "config_to_toml",
    "load_toml",
    "resolve_paths",
]
