"""What each arm saw: its information budget, read from the runs' records and the manifests
they name.

A synthetic image carries information about the real images and reports its generator was
fine-tuned on and prompted with; a comparison that credits the synthetic images must say
when the two arms differ in that. For each run, :func:`run_budget` gives

* the real labelled images its classifier trained on, replayed as `classifier.run_data`
  drew them (the real manifest's train rows, the nested subset `real_size` of the run's
  seed, the mix: `manifests.mixing`), with those of the run it started from (`init_from`),
  and the val images that chose its scored epoch;
* for a run trained on synthetic images, its generator: the patients whose images and
  reports fine-tuned it (the synthetic manifest's provenance, `manifests.provenance`),
  their images with a report in the real manifest, and the base it was fine-tuned from;
* the prompt pool: the reports that prompted the synthetic images (how many, of how many
  patients, of which split of the real manifest; template prompts have no report).

:func:`arm_information` gives an arm's budget as report.json keeps it (one value per seed),
and :func:`information_difference` the words a comparison's `information` column holds:
the real images one arm's pipeline saw that the other's did not. A run whose real
manifest cannot be read has the counts its config.json records and no sets: its
differences are "not known".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from classifier import run as run_folder
from classifier.runset import Run
from manifests import provenance
from manifests.errors import UserError
from manifests.io import Manifest, absolutize, read_manifest
from manifests.mixing import mix_manifests, subset_real_train

Pairs = frozenset  # of (absolute image path, patient id)
INFORMATION_FIELDS = (
    "classifier_real_train_images",
    "classifier_real_train_patients",
    "classifier_val_images",
    "classifier_val_patients",
    "classifier_synthetic_train_images",
    "init_from",
    "generator_used",
    "generator_real_images",
    "generator_patients",
    "generator_patients_not_in_real_manifest",
    "generator_base",
    "prompt_reports",
    "prompt_patients",
    "prompt_splits",
    "template_prompts",
    "real_images_seen",
    "real_patients_seen",
)


@dataclass(frozen=True)
class Generator:
    """The generator behind a run's synthetic images, as its synthetic manifest records it."""

    images: Pairs | None  # its patients' real images with a report (None: unknown)
    patients: int | None  # patients that fine-tuned it (None: not recorded)
    outside: int | None  # of those, patients the real manifest does not hold
    base: str | None


@dataclass(frozen=True)
class Prompts:
    """The reports that prompted a synthetic set."""

    reports: int
    patients: int
    splits: dict[str, int]  # prompt patients per split of the real manifest
    templates: int  # synthetic images prompted by a template (no report)


@dataclass(frozen=True)
class RunBudget:
    """What one run saw (None: unknown, e.g. a real manifest that cannot be read)."""

    classifier: Pairs | None  # real train images its classifier trained on
    n_classifier: int | None
    n_val: int | None
    n_val_patients: int | None
    n_synthetic: int | None
    generator: Generator | None  # None: no synthetic images
    prompts: Prompts | None
    init_from: str | None

    @property
    def seen(self) -> Pairs | None:
        """Every real image its pipeline saw: its classifier's and its generator's."""
        if self.classifier is None:
            return None
        if self.generator is None:
            return self.classifier
        if self.generator.images is None:
            return None
        return self.classifier | self.generator.images

    def as_record(self) -> dict:
        """The fields of `INFORMATION_FIELDS`, for one seed."""
        gen, prompts, seen = self.generator, self.prompts, self.seen
        return {
            "classifier_real_train_images": self.n_classifier,
            "classifier_real_train_patients": _patients(self.classifier),
            "classifier_val_images": self.n_val,
            "classifier_val_patients": self.n_val_patients,
            "classifier_synthetic_train_images": self.n_synthetic,
            "init_from": self.init_from,
            "generator_used": gen is not None,
            "generator_real_images": None if gen is None or gen.images is None else len(gen.images),
            "generator_patients": None if gen is None else gen.patients,
            "generator_patients_not_in_real_manifest": None if gen is None else gen.outside,
            "generator_base": None if gen is None else gen.base,
            "prompt_reports": None if prompts is None else prompts.reports,
            "prompt_patients": None if prompts is None else prompts.patients,
            "prompt_splits": None if prompts is None else prompts.splits,
            "template_prompts": None if prompts is None else prompts.templates,
            "real_images_seen": None if seen is None else len(seen),
            "real_patients_seen": _patients(seen),
        }


def _patients(pairs: Pairs | None) -> int | None:
    return None if pairs is None else len({p for _, p in pairs})


class ManifestCache:
    """Manifests read once per report (None for one that cannot be read)."""

    def __init__(self) -> None:
        self._read: dict[str, Manifest | None] = {}

    def get(self, path) -> Manifest | None:
        if not path:
            return None
        key = str(path)
        if key not in self._read:
            try:
                found = Path(key).is_file()
                self._read[key] = read_manifest(Path(key), validate=False) if found else None
            except UserError:
                self._read[key] = None
        return self._read[key]


def _pairs(rows: pd.DataFrame) -> Pairs:
    return frozenset(
        zip(rows["image_path"].astype(str), rows["patient_id"].astype(str), strict=True)
    )


def _real_train(rows: pd.DataFrame) -> pd.DataFrame:
    return rows[(rows["source"] == "real") & (rows["split"] == "train")]


def _classifier_images(config: dict, real: Manifest, synthetic: Manifest | None) -> Pairs | None:
    """The distinct real train images the run's classifier trained on, drawn again as
    `classifier.run_data` drew them (same manifests, subset, mix and seed); None where
    they cannot be drawn again (the manifests changed since)."""
    seed, mix = int(config["seed"]), float(config.get("mix") or 0.0)
    size, train_size = config.get("real_size"), config.get("train_size")
    try:
        pool = real if size is None else subset_real_train(real, float(size), seed)
        if mix > 0 and synthetic is None:
            return None
        mixed = mix_manifests(pool, synthetic if mix > 0 else None, mix, train_size, seed)
    except UserError:
        return None
    return _pairs(_real_train(mixed.rows))


def _generator(synthetic: Manifest, real: Manifest | None) -> Generator:
    record = provenance.read_record(synthetic) or {}
    patients = record.get("generator_patients")
    base = record.get("generator_base")
    if patients is None:
        return Generator(images=None, patients=None, outside=None, base=base)
    if real is None:
        return Generator(images=None, patients=len(patients), outside=None, base=base)
    rows = absolutize(real).rows
    rows = rows[rows["source"] == "real"]
    ids = {str(p) for p in patients}
    theirs = rows[rows["patient_id"].astype(str).isin(ids)]
    has_report = theirs["report"].fillna("").astype(str).str.strip() != ""
    outside = len(ids - set(rows["patient_id"].astype(str)))
    return Generator(_pairs(theirs[has_report]), len(ids), outside, base)


def _prompts(synthetic: Manifest, real: Manifest | None) -> Prompts | None:
    rows = synthetic.rows[synthetic.rows["source"] == "synthetic"]
    if provenance.PROMPT_PATIENT_COLUMN not in rows:
        return None
    patients = rows[provenance.PROMPT_PATIENT_COLUMN].dropna().astype(str)
    studies = rows["prompt_study_id"].dropna() if "prompt_study_id" in rows else pd.Series([])
    templates = int((rows["prompt_source"] == "template").sum()) if "prompt_source" in rows else 0
    splits: dict[str, int] = {}
    if real is not None:
        real_rows = real.rows[real.rows["source"] == "real"].drop_duplicates("patient_id")
        split_of = dict(
            zip(real_rows["patient_id"].astype(str), real_rows["split"].astype(str), strict=True)
        )
        for patient in sorted(set(patients)):
            split = split_of.get(patient, "not in the real manifest")
            splits[split] = splits.get(split, 0) + 1
    return Prompts(
        reports=int(studies.astype(str).nunique()),
        patients=int(patients.nunique()),
        splits=splits,
        templates=templates,
    )


def run_budget(config: dict, cache: ManifestCache, depth: int = 0) -> RunBudget:
    """What a run saw, from its config.json (see the module docstring)."""
    real = cache.get(config.get("real"))
    mix = float(config.get("mix") or 0.0)
    synthetic = cache.get(config.get("synthetic")) if mix > 0 else None
    plan = config.get("mix_plan") or {}
    n_real = plan.get("n_real")
    classifier = None if real is None else _classifier_images(config, real, synthetic)
    if classifier is None:  # the counts config.json records
        n_classifier = None if n_real is None else min(n_real, plan.get("real_available", n_real))
        n_val, n_val_patients = config.get("n_val"), None
    else:
        n_classifier = len(classifier)
        val = real.rows[(real.rows["source"] == "real") & (real.rows["split"] == "val")]
        n_val, n_val_patients = len(val), int(val["patient_id"].nunique())
    generator = prompts = None
    if mix > 0 and synthetic is not None:
        generator, prompts = _generator(synthetic, real), _prompts(synthetic, real)
    elif mix > 0:
        generator = Generator(images=None, patients=None, outside=None, base=None)
    budget = RunBudget(
        classifier=classifier,
        n_classifier=n_classifier,
        n_val=n_val,
        n_val_patients=n_val_patients,
        n_synthetic=config.get("n_synthetic_train"),
        generator=generator,
        prompts=prompts,
        init_from=config.get("init_from"),
    )
    source = config.get("init_from")
    if not source or depth > 8:
        return budget
    try:
        return _with_source(
            budget, run_budget(run_folder.read_config(Path(source)), cache, depth + 1)
        )
    except UserError:  # the run it started from is gone: what it saw is unknown
        return RunBudget(None, None, n_val, n_val_patients, None, generator, prompts, source)


def _with_source(own: RunBudget, source: RunBudget) -> RunBudget:
    """A run started from another run's weights saw what that run saw too."""

    def union(a: Pairs | None, b: Pairs | None) -> Pairs | None:
        return None if a is None or b is None else a | b

    classifier = union(own.classifier, source.classifier)
    synthetic = (
        None
        if own.n_synthetic is None or source.n_synthetic is None
        else own.n_synthetic + source.n_synthetic
    )
    return RunBudget(
        classifier=classifier,
        n_classifier=None if classifier is None else len(classifier),
        n_val=own.n_val,
        n_val_patients=own.n_val_patients,
        n_synthetic=synthetic,
        generator=own.generator or source.generator,
        prompts=own.prompts or source.prompts,
        init_from=own.init_from,
    )


def arm_information(budgets: Sequence[RunBudget]) -> dict:
    """An arm's budget as report.json keeps it: each field one value per seed."""
    records = [b.as_record() for b in budgets]
    return {name: [r[name] for r in records] for name in INFORMATION_FIELDS}


def _span(values: Sequence[int]) -> str:
    lo, hi = min(values), max(values)
    return str(lo) if lo == hi else f"{lo}–{hi}"


def information_difference(
    arm: str, arm_budgets: Sequence[RunBudget], other: str, other_budgets: Sequence[RunBudget]
) -> str:
    """What `arm`'s pipeline saw that `other`'s did not, and the reverse, in words (the
    budgets are paired by seed, in order); 'not known' where a budget has no sets."""
    pairs = list(zip(arm_budgets, other_budgets, strict=False))
    if not pairs or any(a.seen is None or b.seen is None for a, b in pairs):
        return "not known (a run's real manifest or synthetic provenance cannot be read)"
    via_generator, via_classifier, reverse = [], [], []
    for a, b in pairs:
        extra = a.seen - b.seen
        via_classifier.append(extra & a.classifier)
        via_generator.append(extra - a.classifier)
        reverse.append(b.seen - a.seen)
    parts = []
    if any(via_generator):
        parts.append(
            f"{arm}'s generator saw {_count_text(via_generator)} and their reports that "
            f"{other} did not"
        )
    if any(via_classifier):
        parts.append(f"{arm}'s classifier saw {_count_text(via_classifier)} {other} did not")
    if any(reverse):
        parts.append(f"{other} saw {_count_text(reverse)} {arm} did not")
    if not parts:
        return f"equal: both saw the same {_span([len(a.seen) for a, _ in pairs])} real images"
    return "; ".join(parts)


def _count_text(sets: Sequence[Pairs]) -> str:
    images = _span([len(s) for s in sets])
    patients = _span([len({p for _, p in s}) for s in sets])
    return f"{images} real images ({patients} patients)"


def arm_budgets(arms: dict[str, list[Run]]) -> dict[str, list[RunBudget]]:
    """{arm: one RunBudget per run, in the arm's run order}; manifests are read once."""
    cache = ManifestCache()
    return {arm: [run_budget(r.config, cache) for r in runs] for arm, runs in arms.items()}


__all__ = [
    "INFORMATION_FIELDS",
    "RunBudget",
    "arm_budgets",
    "arm_information",
    "information_difference",
    "run_budget",
]
