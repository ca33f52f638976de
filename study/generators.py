"""The study's generators: which it fits, on which real images, and which runs use which.

A generator is one source of variance like a classifier seed, and what it saw is part of
every arm's information budget, so a study can fit several (`GeneratorConfig`):

* ``replicates = G``: G generators on the whole train split, with generator and synthesis
  seeds ``seed + r``; every run that uses synthetic images is trained for each classifier
  seed on each generator's set (G x seeds runs, folders ``<arm>-g<r>-seed<k>``), and the
  report's interval for such an arm has the generators as its units (generator and seed
  variance both inside it).
* ``data = "per_size"``: each real size of `per_size` (default: every size of the sweep)
  gets, per classifier seed, a generator fine-tuned on exactly that seed's nested subset
  (`manifests.mixing.subset_real_train`) and prompted by that subset's reports alone, so
  the mixed arm at size n uses n real labelled studies in all. Its synthetic set is scaled
  down, label balance kept, to what the arms at that size draw (`scaled_labels`).
  Otherwise a mixed arm at a smaller real size uses a generator that saw the whole train
  split: transfer, which the report states.

A :class:`GeneratorUnit` names one generator; `plan_generators` lists them,
`units_for` says which a run at a real size and seed uses. Folders are
`study.folder.StudyLayout`'s.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from augmentor.label_spec import split_label_counts
from classifier.arms import Arm
from manifests.mixing import plan_mix


@dataclass(frozen=True)
class GeneratorUnit:
    """One generator of the study: a replicate on the whole train split, or the generator
    of one real size's nested subset for one classifier seed."""

    replicate: int = 0
    real_size: float | None = None  # per-size: the nested subset it was fine-tuned on
    seed: int | None = None  # per-size: the classifier seed whose subset that is

    @property
    def per_size(self) -> bool:
        return self.real_size is not None

    @property
    def key(self) -> str:
        """Its folder name under `generators/`; '' for the first whole-split generator
        (`generator/` and `synthetic/`, as in a study with one generator)."""
        if self.per_size:
            return f"{Arm(real_size=self.real_size).size_tag[1:]}-seed{self.seed}"
        return "" if self.replicate == 0 else f"full-g{self.replicate}"

    def describe(self) -> str:
        if self.per_size:
            return f"the {self.real_size:g}-image subset of classifier seed {self.seed}"
        return f"the whole train split (replicate {self.replicate})"


def plan_generators(generator_cfg, classifier_cfg) -> list[GeneratorUnit]:
    """The generators a study fits, whole-split replicates first."""
    units = [GeneratorUnit(replicate=r) for r in range(generator_cfg.replicates)]
    if generator_cfg.data == "per_size":
        sizes = generator_cfg.per_size or classifier_cfg.real_sizes
        units += [
            GeneratorUnit(real_size=float(size), seed=seed)
            for size in sizes
            for seed in classifier_cfg.seeds
        ]
    return units


def units_for(
    units: list[GeneratorUnit], real_size: float | None, seed: int
) -> list[GeneratorUnit]:
    """The generators a run at `real_size` (None: the whole split) and classifier `seed`
    uses: its size's own generator for that seed, else every whole-split replicate."""
    if real_size is not None:
        own = [u for u in units if u.per_size and u.real_size == real_size and u.seed == seed]
        if own:
            return own
    return [u for u in units if not u.per_size]


def finetune_settings(generator_cfg, unit: GeneratorUnit) -> dict:
    """What a unit's fine-tune changes of the section's settings: its seed, and a per-size
    generator's steps."""
    seed = int(generator_cfg.value("seed"))
    if not unit.per_size:
        return {"seed": seed + unit.replicate}
    steps = generator_cfg.per_size_max_steps or generator_cfg.value("max_steps")
    return {"seed": seed + 1000 + int(unit.seed), "max_steps": int(steps)}


def scaled_labels(labels: str, negatives: int, needed: int) -> tuple[str, int]:
    """`labels` and `negatives` scaled down, in proportion, to about `needed` images in all
    (each count at least 1, rounded up); unchanged when they hold no more than that."""
    items = split_label_counts(labels, negatives)
    total = sum(n for _, n in items) + negatives
    if needed <= 0 or total <= needed:
        return labels, negatives
    factor = needed / total
    scaled = ",".join(f"{name}:{max(1, math.ceil(n * factor))}" for name, n in items)
    return scaled, math.ceil(negatives * factor)


def synthetic_needed(classifier_cfg, n_real: int) -> int:
    """Synthetic images the mixed arms at a real size with `n_real` real images draw."""
    return max((plan_mix(n_real, 1, m).n_synthetic for m in classifier_cfg.mixes), default=0)


def synthesis_settings(synthesis_cfg, unit: GeneratorUnit, needed: int | None) -> dict:
    """What a unit's synthesis changes of the section's settings: its seed, and a per-size
    set's counts (`needed`: what the arms at its size draw)."""
    seed = int(synthesis_cfg.value("seed"))
    if not unit.per_size:
        return {"seed": seed + unit.replicate}
    labels, negatives = scaled_labels(
        synthesis_cfg.value("labels"), int(synthesis_cfg.value("negatives")), needed or 0
    )
    return {"seed": seed + 1000 + int(unit.seed), "labels": labels, "negatives": negatives}


__all__ = [
    "GeneratorUnit",
    "finetune_settings",
    "plan_generators",
    "scaled_labels",
    "synthesis_settings",
    "synthetic_needed",
    "units_for",
]
