"""The study folder: its layout, its saved configuration and its stage markers (nobody else
spells them).

A study folder (`cxraug study --out`) holds:

* ``study.toml``: the configuration, written first (`FORMAT`'s started file); a re-run
  with another configuration is refused (:func:`check_same_config`).
* ``data/manifest.parquet``: the real manifest, split by patient (``data/phantom/``: the
  drawn phantoms, when the study draws them).
* ``data/oracle.parquet``: the fidelity oracle's manifest (its own patients as train, the
  study's val and test), when the study reserves patients for it; ``data/subsets/``: the
  nested real subsets per-size generators are fine-tuned on.
* ``generator/``: the fine-tuned generator (`augmentor.generator`'s folder).
* ``synthetic/``: the synthetic set (`augmentor.synthetic_set`'s folder);
  ``synthetic-balanced/`` its subgroup-balanced twin (`synthesis.balanced_set`).
* ``generators/<key>/generator/`` and ``generators/<key>/synthetic/``: every further
  generator and its set (`study.generators.GeneratorUnit.key`).
* ``runs/<arm>-seed<k>/``: one classifier run per arm and seed (`classifier.run`'s folder;
  arm names from `classifier.arms`); ``runs/<arm>-g<r>-seed<k>/`` when the arm is trained
  on each of several generators' sets; ``runs/oracle-seed<k>/``: the fidelity oracle;
  ``pretrain/<arm>-seed<k>/``: pretrain-only runs. Neither of the last two is an arm of the
  report.
* ``generator_eval/``: the generator evaluation (`augmentor.eval_folder`), when configured.
* ``report/``: the report (`classifier.report_render`'s folder).
* ``stages/<stage>.json``: written once a stage's outputs are complete (:class:`Stages`);
  the report stage's marker is written last, so its presence means the study is finished.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from augmentor.eval_folder import audited
from augmentor.synthetic_set import manifest_path
from classifier.arms import PRETRAIN, Arm
from manifests import runfolder
from manifests.errors import UserError
from manifests.files import atomic_path, write_json
from study.config import StudyConfig, as_tables, config_to_toml
from study.presets import load_study_config

STUDY_FILE = "study.toml"
STAGES_DIR = "stages"
# The stages in order; each leaves `stages/<stage>.json` (training leaves each run's own).
STAGES = ("data", "finetune", "synthesize", "train", "evaluate-generator", "report")
FORMAT = runfolder.FolderFormat("study", STUDY_FILE, f"{STAGES_DIR}/report.json")
DATA_DIR = "data"
DATA_MANIFEST = "manifest.parquet"  # in DATA_DIR
ORACLE_MANIFEST = "oracle.parquet"  # in DATA_DIR
ORACLE_PHANTOM_DIR = "oracle_phantom"  # in DATA_DIR
SUBSETS_DIR = "subsets"  # in DATA_DIR
GENERATORS_DIR = "generators"
PHANTOM_DIR = "phantom"  # in DATA_DIR
GENERATOR_DIR = "generator"
SYNTHETIC_DIR = "synthetic"
RUNS_DIR = "runs"
PRETRAIN_DIR = "pretrain"
GENERATOR_EVAL_DIR = "generator_eval"
REPORT_DIR = "report"


@dataclass(frozen=True)
class StudyLayout:
    """Where each stage's output lies in the study folder `out`."""

    out: Path

    @property
    def config_file(self) -> Path:
        return self.out / STUDY_FILE

    @property
    def data(self) -> Path:
        return self.out / DATA_DIR

    @property
    def real_manifest(self) -> Path:
        return self.data / DATA_MANIFEST

    @property
    def oracle_manifest(self) -> Path:
        return self.data / ORACLE_MANIFEST

    def subset_manifest(self, unit) -> Path:
        """The nested real subset a per-size generator (`unit`) is fine-tuned on."""
        return self.data / SUBSETS_DIR / f"{unit.key}.parquet"

    def generator_of(self, unit) -> Path:
        """A generator's folder (`study.generators.GeneratorUnit`)."""
        return (
            self.generator if not unit.key else self.out / GENERATORS_DIR / unit.key / GENERATOR_DIR
        )

    def synthetic_of(self, unit, balanced: bool = False) -> Path:
        """A generator's synthetic set folder (`balanced`: its subgroup-balanced set,
        `synthetic-balanced/` beside it)."""
        name = SYNTHETIC_DIR + ("-balanced" if balanced else "")
        return self.out / name if not unit.key else self.out / GENERATORS_DIR / unit.key / name

    @property
    def generator(self) -> Path:
        return self.out / GENERATOR_DIR

    @property
    def synthetic(self) -> Path:
        return self.out / SYNTHETIC_DIR

    @property
    def synthetic_manifest(self) -> Path:
        return manifest_path(self.synthetic)

    @property
    def generator_eval(self) -> Path:
        return self.out / GENERATOR_EVAL_DIR

    @property
    def report(self) -> Path:
        return self.out / REPORT_DIR

    def run(self, arm: Arm, seed: int, replicate: int | None = None) -> Path:
        """A classifier run's folder: `runs/<arm>-seed<k>` (`pretrain/` for a pretrain run),
        `runs/<arm>-g<r>-seed<k>` for the set of generator replicate r."""
        folder = PRETRAIN_DIR if arm.kind == PRETRAIN else RUNS_DIR
        tag = "" if replicate is None else f"-g{replicate}"
        return self.out / folder / f"{arm.name}{tag}-seed{seed}"


def study_of(path: Path) -> Path | None:
    """The study folder `path` lies in (the nearest folder above with a `study.toml`)."""
    for folder in Path(path).resolve().parents:
        if (folder / STUDY_FILE).is_file():
            return folder
    return None


def generator_eval_for(synthetic_manifest: Path) -> Path | None:
    """The study's generator evaluation of a study's synthetic set, if it was made."""
    study = study_of(synthetic_manifest)
    if study is None:
        return None
    layout = StudyLayout(study)
    if Path(synthetic_manifest).resolve() != layout.synthetic_manifest.resolve():
        return None
    return audited(layout.generator_eval, synthetic_manifest)


# ------------------------------------------------------------------------------ config


def write_config(out: Path, cfg: StudyConfig) -> Path:
    """Save the configuration as `study.toml` (once: a resumed study keeps its file)."""
    path = StudyLayout(Path(out)).config_file
    if not path.is_file():
        with atomic_path(path) as tmp:
            tmp.write_text(config_to_toml(cfg))
    return path


def saved_config(out: Path) -> StudyConfig:
    """The configuration a study folder was made with."""
    return load_study_config(None, StudyLayout(Path(out)).config_file)


def check_same_config(out: Path, cfg: StudyConfig) -> None:
    """Refuse to resume a study folder made with another configuration."""
    saved = StudyLayout(Path(out)).config_file
    if not saved.is_file():
        return
    old = saved_config(out)
    if as_tables(old) != as_tables(cfg):
        diff = _first_difference(as_tables(old), as_tables(cfg))
        raise UserError(
            f"--resume: {out} holds a study made with another configuration ({diff}); use a "
            f"new --out, or the same settings (--config {saved}) to resume it"
        )


def _first_difference(old: dict, new: dict, prefix: str = "") -> str:
    for key in [*old, *(k for k in new if k not in old)]:
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict) and key != "options":
            found = _first_difference(a, b, f"{prefix}{key}.")
            if found:
                return found
        elif a != b:
            return f"{prefix}{key} was {a!r}, now {b!r}"
    return ""


# ------------------------------------------------------------------------------ markers


class Stages:
    """Done markers: `stages/<name>.json` is written once a stage's outputs are complete."""

    def __init__(self, out: Path, log: Callable[[str], None]) -> None:
        self.folder = Path(out) / STAGES_DIR
        self.log = log
        self.skipped: list[str] = []
        self.seconds: dict[str, float] = {}

    def marker(self, name: str) -> Path:
        return self.folder / f"{name}.json"

    def done(self, name: str, *outputs: Path) -> bool:
        """True (and 'skip <name>' logged) when the stage's marker and outputs exist."""
        marker = self.marker(name)
        if marker.is_file() and all(Path(p).exists() for p in outputs):
            self.log(f"skip {name} (done: {marker})")
            self.skipped.append(name)
            return True
        return False

    def finish(self, name: str, start: float, **info) -> None:
        """Write the stage's marker with its duration since `start` (perf_counter)."""
        seconds = time.perf_counter() - start
        self.seconds[name] = seconds
        write_json(self.marker(name), {"stage": name, "seconds": seconds, **info})
        self.log(f"done {name} in {seconds:.1f}s")


__all__ = [
    "FORMAT",
    "STAGES",
    "STUDY_FILE",
    "Stages",
    "StudyLayout",
    "check_same_config",
    "generator_eval_for",
    "saved_config",
    "study_of",
    "write_config",
]
