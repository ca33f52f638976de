"""Demographic subgroups of a manifest: sex, age groups and their cells.

One vocabulary for every module that asks who the patients are (synthesis balanced over
label x subgroup cells, demographic prompts, the demographic oracles, the fairness
report, `manifest summary`):

* sex is the manifest's `sex` column, 'F' or 'M' (importers normalise it); anything else
  is unknown and belongs to no sex subgroup;
* an age group is a half-open interval of the `age` column in years, named as
  ``"<40"``, ``"40-64"``, ``"65+"`` for the default edges (40, 65): an age of exactly 40
  is in ``"40-64"``, 65 in ``"65+"``; a missing age belongs to no age group;
* a subgroup is named ``"<column>=<value>"`` (``"sex=F"``, ``"age_group=65+"``) and an
  intersection joins them with ``" & "`` (``"sex=F & age_group=65+"``).

The edges are the user's (`parse_age_edges`, flag ``--age-groups 40,65``); the default
follows the common adult split into young, middle-aged and older patients.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import pairwise

import numpy as np
import pandas as pd

from manifests.errors import UserError

SEXES = ("F", "M")
SEX_WORDS = {"F": "woman", "M": "man"}
DEFAULT_AGE_EDGES: tuple[float, ...] = (40.0, 65.0)
BALANCE_COLUMNS = ("sex", "age_group")


def parse_age_edges(spec: str | Sequence[float] | None, flag: str = "--age-groups") -> tuple:
    """Age-group edges from ``"40,65"`` (or a sequence): strictly increasing, positive.

    None gives `DEFAULT_AGE_EDGES`.
    """
    if spec is None:
        return DEFAULT_AGE_EDGES
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    try:
        edges = tuple(float(str(x).strip()) for x in items if str(x).strip())
    except ValueError:
        raise UserError(
            f"{flag}: {spec!r} is not a list of ages; valid: increasing ages in years, e.g. 40,65"
        ) from None
    infinite = [e for e in edges if not math.isfinite(e)]
    if infinite:
        raise UserError(f"{flag}: {infinite[0]}; it must be a finite number")
    if not edges or any(e <= 0 for e in edges) or any(b <= a for a, b in pairwise(edges)):
        raise UserError(
            f"{flag}: {spec!r}: edges must be positive and strictly increasing, e.g. 40,65"
        )
    return edges


def _fmt(age: float) -> str:
    return f"{age:g}"


def age_group_names(edges: Sequence[float] = DEFAULT_AGE_EDGES) -> list[str]:
    """The names of the groups `edges` make, youngest first: ``['<40', '40-64', '65+']``.

    A group's upper bound is shown as the last whole year inside it (edge - 1) when the
    edges are whole years, else as ``a-<b``.
    """
    edges = tuple(float(e) for e in edges)
    whole = all(e == int(e) for e in edges)
    names = [f"<{_fmt(edges[0])}"]
    for lo, hi in pairwise(edges):
        names.append(f"{_fmt(lo)}-{_fmt(hi - 1)}" if whole else f"{_fmt(lo)}-<{_fmt(hi)}")
    names.append(f"{_fmt(edges[-1])}+")
    return names


def age_group_bounds(edges: Sequence[float] = DEFAULT_AGE_EDGES) -> dict[str, tuple]:
    """Group name -> (low inclusive, high exclusive) in years; the ends are 0 and inf."""
    cuts = (0.0, *(float(e) for e in edges), float("inf"))
    names = age_group_names(edges)
    return {name: (cuts[i], cuts[i + 1]) for i, name in enumerate(names)}


def age_groups(ages: Sequence[float] | pd.Series, edges: Sequence[float] = DEFAULT_AGE_EDGES):
    """Each age's group name (object array); a missing age gives None."""
    values = pd.to_numeric(pd.Series(ages), errors="coerce").to_numpy(dtype=np.float64)
    names = np.array(age_group_names(edges), dtype=object)
    index = np.searchsorted(np.asarray(edges, dtype=np.float64), values, side="right")
    out = names[np.clip(index, 0, len(names) - 1)]
    out[np.isnan(values)] = None
    return out


def known_sex(values: Sequence | pd.Series) -> np.ndarray:
    """Each value if it is 'F' or 'M', else None (object array)."""
    series = pd.Series(values, dtype=object)
    return series.where(series.isin(SEXES), None).to_numpy(dtype=object)


def with_subgroups(rows: pd.DataFrame, edges: Sequence[float] = DEFAULT_AGE_EDGES) -> pd.DataFrame:
    """A copy of `rows` with `sex` reduced to 'F'/'M'/None and an `age_group` column."""
    out = rows.copy()
    out["sex"] = known_sex(rows["sex"]) if "sex" in rows else None
    out["age_group"] = age_groups(rows["age"], edges) if "age" in rows else None
    return out


def check_balance_columns(columns: Sequence[str], flag: str = "--balance-by") -> tuple[str, ...]:
    """The subgroup columns to balance over, from ``sex,age_group``; anything else is a
    UserError naming the valid ones."""
    cols = tuple(c.strip() for c in columns if c.strip())
    bad = [c for c in cols if c not in BALANCE_COLUMNS]
    if not cols or bad or len(set(cols)) != len(cols):
        raise UserError(
            f"{flag}: {','.join(columns)!r}; valid: one or both of {', '.join(BALANCE_COLUMNS)}"
        )
    return cols


def cell_name(values: dict[str, str]) -> str:
    """``{'sex': 'F', 'age_group': '65+'}`` -> ``'sex=F & age_group=65+'``."""
    return " & ".join(f"{k}={v}" for k, v in values.items())


def demographic_phrase(sex: str | None, age: float | None) -> str:
    """The header real reports use: ``'72-year-old woman.'``; '' when both are unknown."""
    word = SEX_WORDS.get(sex or "", "patient")
    if age is None or (isinstance(age, float) and np.isnan(age)):
        return f"{word.capitalize()}." if sex in SEX_WORDS else ""
    return f"{int(age)}-year-old {word}."
