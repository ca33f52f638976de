"""Arm names: the one module that prints and parses them.

An arm is what a group of classifier runs (one per training seed) trained on. Each run's
config.json records the facts: the synthetic fraction `mix`, a nested real subset
`real_size`, the arm a step-matched real-only control `matched_to` (with `oversample_to`,
the label balance an oversampling control draws to), and `init_from` (a run it started
from). :class:`Arm` holds those facts and prints the arm's name from them;
`study.planning` names the study's runs with it, `classifier.config.default_arm` names a
run trained on its own, and `classifier.report` and `classifier.efficiency` read each run's
arm from its recorded config (:meth:`Arm.from_config`) to order, pair and group runs.

The names (``<m>``, ``<k>`` and ``<q>`` printed with ``:g``):

* ``real``: mix 0. ``synthetic``: mix 1, as many synthetic images as real train images.
* ``synthetic-x<k>``: mix 1, k times as many synthetic images as real train images.
* ``mix<m>``: synthetic fraction m (0 < m < 1).
* ``mix<m>-balanced``: the same, its synthetic set balanced over label x demographic
  subgroup cells (`augmentor.synthesize`'s ``balance_by``) instead of the real set's
  prevalence; it shares its prevalence-matched twin's step-matched controls (same steps).
* ``real-steps-<arm>``: a real-only control trained for as many optimizer steps as
  ``<arm>`` (its `matched_to`; ``<arm>`` carries its own real size).
* ``real-oversample-<arm>``: the same control with its real positives drawn more often, to
  ``<arm>``'s label balance (`oversample`): rules out 'more positives' as well as 'more steps'.
* ``pretrain-finetune`` (``pretrain-finetune-mix<m>``): started from another run.
* ``synthetic-pretrain``: the synthetic-only run a pretrain-finetune run starts from.
* a suffix ``-n<N>`` (``-f<q>``): trained on a nested subset of N real train images (a
  fraction q of them), e.g. ``real-n80``, ``mix0.5-n80``.

Three facts have no field of their own in config.json and are read from the recorded
name: the factor k of ``synthetic-x<k>``, the pretrain run's role and a mixed arm's
subgroup-balanced set. A run recorded under a
name these facts do not print (``train-classifier --arm``) keeps that name
(`Arm.given_name`): runs are grouped by name, ordered and paired by their facts.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace

# What an arm is (Arm.kind), in report order within one real size.
REAL = "real"
CONTROL = "control"
MIX = "mix"
SYNTHETIC = "synthetic"
PRETRAIN_FINETUNE = "pretrain-finetune"
PRETRAIN = "pretrain"
OTHER = "other"  # a name outside the grammar, read without its config

CONTROL_PREFIX = "real-steps-"
OVERSAMPLE_PREFIX = "real-oversample-"
BALANCED_SUFFIX = "-balanced"
_SIZE_TAG = re.compile(r"-(n\d+|f[0-9.]+)$")


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _fraction(text: str) -> float | None:
    value = _number(text)
    return value if value is not None and 0.0 <= value <= 1.0 else None


@dataclass(frozen=True)
class Arm:
    """An arm's facts, and its name (:attr:`name`)."""

    mix: float | None = 0.0  # synthetic fraction; None: unknown (kind OTHER)
    real_size: float | None = None  # None: the whole real train split
    matched_to: str | None = None  # a step-matched control: the arm whose steps it matches
    synthetic_scale: float | None = None  # mix 1 with k x as many synthetic images
    init_from_run: bool = False  # started from another classifier run
    pretrain: bool = False  # the synthetic-only run another arm starts from
    oversample: bool = False  # a control drawing real positives to its matched arm's balance
    balanced: bool = False  # a mixed arm whose synthetic set is balanced over subgroups
    given_name: str | None = None  # the run's own name, when the facts print another one

    # -------------------------------------------------------------------- printing

    @property
    def kind(self) -> str:
        """REAL, CONTROL, MIX, SYNTHETIC, PRETRAIN_FINETUNE, PRETRAIN or OTHER."""
        if self.mix is None:
            return OTHER
        if self.pretrain:
            return PRETRAIN
        if self.init_from_run:
            return PRETRAIN_FINETUNE
        if self.matched_to:
            return CONTROL
        if self.mix == 0:
            return REAL
        return SYNTHETIC if self.mix == 1 else MIX

    @property
    def size_tag(self) -> str:
        """The name's real-size suffix: '-n80', '-f0.5', or '' for the whole split."""
        if self.real_size is None:
            return ""
        size = float(self.real_size)
        return f"-n{int(size)}" if size >= 1 else f"-f{size:g}"

    @property
    def standard_name(self) -> str | None:
        """The name the facts print (None for kind OTHER)."""
        kind = self.kind
        if kind == OTHER:
            return None
        if kind == CONTROL:  # the matched arm carries its size
            prefix = OVERSAMPLE_PREFIX if self.oversample else CONTROL_PREFIX
            return f"{prefix}{self.matched_to}"
        base = {
            REAL: "real",
            MIX: f"mix{self.mix:g}" + (BALANCED_SUFFIX if self.balanced else ""),
            SYNTHETIC: "synthetic"
            if self.synthetic_scale is None
            else f"synthetic-x{self.synthetic_scale:g}",
            PRETRAIN: "synthetic-pretrain",
            PRETRAIN_FINETUNE: "pretrain-finetune"
            if self.mix == 0
            else f"pretrain-finetune-mix{self.mix:g}",
        }[kind]
        return base + self.size_tag

    @property
    def name(self) -> str:
        """What runs of this arm are grouped by (report rows, run folders)."""
        name = self.given_name or self.standard_name
        if name is None:
            raise ValueError("an arm of unknown facts needs a given name")
        return name

    @property
    def family(self) -> str:
        """The name without its real-size suffix: one data-efficiency curve per family."""
        name, tag = self.name, self.size_tag
        return name[: -len(tag)] if tag and name.endswith(tag) else name

    def named(self, name: str | None) -> Arm:
        """This arm under `name` (kept as `given_name` only when the facts print another)."""
        return replace(self, given_name=None if name in (None, self.standard_name) else name)

    def at_size(self, real_size: float | None) -> Arm:
        """The same arm on another real subset (a given name keeps its family)."""
        other = replace(self, real_size=real_size, given_name=None)
        if self.given_name is None:
            return other
        return replace(other, given_name=self.family + other.size_tag)

    def control(self, oversample: bool = False) -> Arm:
        """The step-matched real-only control of this arm (`oversample`: the one that
        also draws real positives to this arm's label balance); a balanced arm's is its
        prevalence-matched twin's (the same steps)."""
        matched = self.twin().name if self.balanced else self.name
        return Arm(mix=0.0, real_size=self.real_size, matched_to=matched, oversample=oversample)

    def twin(self) -> Arm:
        """A subgroup-balanced arm's prevalence-matched twin (itself when not balanced)."""
        return replace(self, balanced=False, given_name=None) if self.balanced else self

    def sort_key(self) -> tuple:
        """Report order: the whole train split first, then each real size (ascending);
        within a size: real, its step-matched controls (by the matched ratio), mixes (by
        ratio), synthetic, larger synthetic sets (k ascending), pretrain-finetune, then
        the rest; ties by name."""
        size = (0, 0.0) if self.real_size is None else (1, float(self.real_size))
        kind = self.kind
        if kind == REAL:
            rank = (0, 0.0)
        elif kind == CONTROL:
            matched = Arm.parse(str(self.matched_to))
            rank = (1, matched.mix if matched.kind == MIX else math.inf, float(self.oversample))
        elif kind == MIX:
            rank = (2, float(self.mix), float(self.balanced))
        elif kind == SYNTHETIC:
            rank = (3, self.synthetic_scale or 1.0)
        elif kind == PRETRAIN_FINETUNE:
            rank = (4, 0.0)
        else:
            rank = (5, 0.0)
        return (*size, *rank, self.family, self.name)

    # -------------------------------------------------------------------- reading

    @classmethod
    def parse(cls, name: str) -> Arm:
        """The facts a name states; a name outside the grammar is kind OTHER.

        ``Arm.parse(arm.name).name == arm.name`` for every arm.
        """
        base, real_size = name, None
        tag = _SIZE_TAG.search(name)
        if tag:
            text = tag.group(1)
            size = _number(text[1:])
            if size is not None and size > 0:
                base, real_size = name[: tag.start()], size
        arm = cls._parse_base(base, name, real_size)
        return arm.named(name)

    @classmethod
    def _parse_base(cls, base: str, name: str, real_size: float | None) -> Arm:
        for prefix in (CONTROL_PREFIX, OVERSAMPLE_PREFIX):
            if base.startswith(prefix) and len(base) > len(prefix):
                return cls(
                    real_size=real_size,
                    matched_to=name[len(prefix) :],
                    oversample=prefix == OVERSAMPLE_PREFIX,
                )
        fixed = {
            "real": cls(),
            "synthetic": cls(mix=1.0),
            "synthetic-pretrain": cls(mix=1.0, pretrain=True),
            "pretrain-finetune": cls(init_from_run=True),
        }
        if base in fixed:
            return replace(fixed[base], real_size=real_size)
        if base.startswith("pretrain-finetune-mix"):
            mix = _fraction(base[len("pretrain-finetune-mix") :])
            if mix is not None:
                return cls(mix=mix, real_size=real_size, init_from_run=True)
        elif base.startswith("synthetic-x"):
            scale = _number(base[len("synthetic-x") :])
            if scale is not None and scale > 0:
                return cls(mix=1.0, real_size=real_size, synthetic_scale=scale)
        elif base.startswith("mix"):
            balanced = base.endswith(BALANCED_SUFFIX)
            text = base[len("mix") : len(base) - len(BALANCED_SUFFIX) if balanced else None]
            mix = _fraction(text)
            if mix is not None and (not balanced or 0 < mix < 1):
                return cls(mix=mix, real_size=real_size, balanced=balanced)
        return cls(mix=None, real_size=real_size, given_name=name)

    @classmethod
    def from_config(cls, config: dict, name: str | None = None) -> Arm:
        """A run's arm from its config.json: its recorded `mix`, `real_size`,
        `matched_to` and `init_from`; `name` (default: the recorded `arm`) for what has no
        field (see the module docstring) and for runs recorded before a field existed."""
        name = name or config.get("arm")
        parsed = cls.parse(name) if name else cls()
        mix = config.get("mix")
        mix = float(mix) if mix is not None else parsed.mix
        arm = cls(
            mix=mix,
            real_size=config.get("real_size", parsed.real_size),
            matched_to=config.get("matched_to") or parsed.matched_to,
            synthetic_scale=parsed.synthetic_scale if mix == 1 else None,
            init_from_run=(
                config["init_from"] is not None if "init_from" in config else parsed.init_from_run
            ),
            pretrain=parsed.pretrain,
            balanced=parsed.balanced and mix is not None and 0 < mix < 1,
            oversample=bool(config.get("oversample_to")) or parsed.oversample,
        )
        if arm.mix is None:  # no recorded mix and a name outside the grammar
            return replace(arm, given_name=name)
        return arm.named(name)


__all__ = [
    "BALANCED_SUFFIX",
    "CONTROL",
    "CONTROL_PREFIX",
    "MIX",
    "OTHER",
    "OVERSAMPLE_PREFIX",
    "PRETRAIN",
    "PRETRAIN_FINETUNE",
    "REAL",
    "SYNTHETIC",
    "Arm",
]
