"""The report's comparisons: one primary endpoint, declared before the run, and a family of
secondary ones adjusted for multiplicity.

A report compares each arm with its baseline (the real-only arm of its size) and, for a
mixed arm, with its step-matched control and its positives-matched control (the
step-matched control that also draws real positives to the arm's label balance) where the
runs have them (:class:`Comparison`: every label and the macro).
One cell of those, an arm against another on one label, is the primary endpoint
(:func:`resolve_primary`): the one a preset declares (`ReportConfig.primary`, written into
study.toml before anything runs), or by the default rule, fixed before the run: the first
mixed arm at the smallest real size against its step-matched control, macro AUROC. Its
interval is the plain one. Every other delta shown is secondary (:func:`label_endpoints`):
one family, adjusted by Holm's step-down (`classifier.stats.holm`) on the p-values the
intervals invert (`classifier.stats.seed_p_value`, from the same bootstrap resamples), and
shown with its Holm-adjusted interval beside the unadjusted one.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from classifier.arms import MIX, Arm
from classifier.config import parse_comparison
from classifier.stats import SeedInterval, SeedTerm, holm, seed_interval
from manifests.errors import UserError

MACRO = "macro"
BASELINE, MATCHED, OVERSAMPLE, TWIN = "baseline", "matched", "oversample", "twin"
# the table's columns of each kind, and the column naming the arm compared with
PREFIX = {
    BASELINE: "delta",
    MATCHED: "delta_vs_matched",
    OVERSAMPLE: "delta_vs_oversample",
    TWIN: "delta_vs_twin",
}
OTHER_COLUMN = {
    BASELINE: "baseline",
    MATCHED: "matched_arm",
    OVERSAMPLE: "oversample_arm",
    TWIN: "twin_arm",
}
PRIMARY, SECONDARY = "primary", "secondary"
DEFAULT_RULE = (
    "the first mixed arm at the smallest real size against its step-matched control, macro AUROC"
)


@dataclass
class Comparison:
    """An arm against another (its baseline, or one of its controls), every column."""

    arm: str
    other: str
    kind: str  # BASELINE, MATCHED, OVERSAMPLE or TWIN
    terms: list[SeedTerm]  # what `seed_interval` is computed from (paired as it could be)
    interval: SeedInterval
    p: np.ndarray  # per column, the p-value the interval inverts
    paired: bool  # paired by seed as well as by test patients

    def at_level(self, level: float) -> SeedInterval:
        return seed_interval(self.terms, level, delta=True)


@dataclass(frozen=True)
class Primary:
    """The primary endpoint: `arm` against `other` on `label`."""

    arm: str
    other: str
    label: str
    kind: str
    declared: bool  # declared in the configuration (else the default rule chose it)

    @property
    def text(self) -> str:
        return f"{self.arm} vs {self.other}, {self.label}"


def resolve_primary(
    spec: str | None,
    arms: dict[str, Arm],
    comparisons: dict[tuple[str, str], Comparison],
    names: Sequence[str],
) -> Primary | None:
    """The declared primary comparison (checked against the report's), else the default
    rule's; None when none is declared and no mixed arm has its step-matched control.

    Raises:
        UserError: a declared comparison the report does not make (naming the valid ones).
    """
    if spec is None:
        mixed = [c for c in comparisons.values() if c.kind == MATCHED and arms[c.arm].kind == MIX]
        if not mixed:
            return None

        def order(c: Comparison) -> tuple:
            size = arms[c.arm].real_size
            return (size is None, size or 0.0, arms[c.arm].sort_key())

        first = min(mixed, key=order)
        return Primary(first.arm, first.other, MACRO, MATCHED, declared=False)
    arm, other, label = parse_comparison(spec)
    valid = [f"{c.arm} vs {c.other}" for c in comparisons.values()]
    found = next((c for c in comparisons.values() if (c.arm, c.other) == (arm, other)), None)
    if found is None:
        raise UserError(
            f"--primary: {spec!r} is not a comparison of this report; valid: "
            f"{', '.join(valid) or 'none (no arm has a baseline or control)'}"
        )
    if label not in names:
        raise UserError(f"--primary: {spec!r}: no label {label!r}; valid: {', '.join(names)}")
    return Primary(arm, other, label, found.kind, declared=True)


def label_endpoints(
    rows: list[dict],
    comparisons: dict[tuple[str, str], Comparison],
    primary: Primary | None,
    names: Sequence[str],
    alpha: float,
) -> int:
    """Mark each delta of the table rows primary or secondary, in place, and give every
    secondary one its Holm-adjusted interval and p-value; returns the family's size.

    A row's delta of kind K (columns ``PREFIX[K]*``) gets ``<prefix>_role``,
    ``<prefix>_p``, and for a secondary one ``<prefix>_p_holm``, ``<prefix>_holm_level``,
    ``<prefix>_holm_lo``, ``<prefix>_holm_hi``. Deltas the table leaves out (undefined, no
    interval) are in no family.
    """
    cells = []  # (row, comparison, column) of every delta shown
    for row in rows:
        for kind, prefix in PREFIX.items():
            comparison = comparisons.get((row["arm"], kind))
            if comparison is None or not math.isfinite(row.get(prefix, math.nan)):
                continue
            cells.append((row, comparison, list(names).index(row["label"])))
    secondary = []
    for row, c, k in cells:
        prefix = PREFIX[c.kind]
        is_primary = primary is not None and (c.arm, c.other, names[k]) == (
            primary.arm,
            primary.other,
            primary.label,
        )
        row[f"{prefix}_role"] = PRIMARY if is_primary else SECONDARY
        row[f"{prefix}_p"] = float(c.p[k])
        if not is_primary:
            secondary.append((row, c, k))
    levels, adjusted = holm([float(c.p[k]) for _, c, k in secondary], alpha)
    for (row, c, k), level, p_holm in zip(secondary, levels, adjusted, strict=True):
        if not math.isfinite(level):
            continue
        prefix = PREFIX[c.kind]
        interval = c.at_level(float(level))
        row[f"{prefix}_p_holm"] = float(p_holm)
        row[f"{prefix}_holm_level"] = float(level)
        row[f"{prefix}_holm_lo"] = float(interval.lo[k])
        row[f"{prefix}_holm_hi"] = float(interval.hi[k])
    return int(np.isfinite(levels).sum())


def endpoint_columns(kinds: Sequence[str] = (BASELINE, MATCHED)) -> list[str]:
    """The table columns :func:`label_endpoints` fills for comparisons of `kinds`, in
    their order."""
    out = []
    for prefix in (PREFIX[k] for k in kinds):
        out += [f"{prefix}_{c}" for c in ("role", "p", "p_holm", "holm_level")]
        out += [f"{prefix}_holm_lo", f"{prefix}_holm_hi"]
    return out


def comparisons_table(table) -> list[dict]:
    """Every delta of a report's table as one comparison each, the primary first: role,
    arm, vs, kind, label, delta with its interval, p-value, the Holm adjustment and the
    information column (what the two arms' data differ in)."""
    out = []
    for row in table.to_dict(orient="records"):
        for kind, prefix in PREFIX.items():
            role = row.get(f"{prefix}_role")
            if role not in (PRIMARY, SECONDARY):
                continue
            out.append(
                {
                    "role": role,
                    "arm": row["arm"],
                    "vs": row.get(OTHER_COLUMN[kind]),
                    "kind": kind,
                    "label": row["label"],
                    "delta": row[prefix],
                    "lo": row[f"{prefix}_lo"],
                    "hi": row[f"{prefix}_hi"],
                    "p": row[f"{prefix}_p"],
                    "holm_level": row.get(f"{prefix}_holm_level"),
                    "holm_lo": row.get(f"{prefix}_holm_lo"),
                    "holm_hi": row.get(f"{prefix}_holm_hi"),
                    "p_holm": row.get(f"{prefix}_p_holm"),
                    "information": row.get(f"information_vs_{kind}"),
                }
            )
    return sorted(out, key=lambda c: c["role"] != PRIMARY)  # stable: table order otherwise


__all__ = [
    "BASELINE",
    "DEFAULT_RULE",
    "MATCHED",
    "OVERSAMPLE",
    "TWIN",
    "PRIMARY",
    "SECONDARY",
    "Comparison",
    "Primary",
    "comparisons_table",
    "endpoint_columns",
    "label_endpoints",
    "resolve_primary",
]
