"""What a manifest holds: images and patients per split/source, label prevalence, positive
images and patients per label x demographic subgroup, notes."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from manifests.demographics import (
    DEFAULT_AGE_EDGES,
    SEXES,
    age_group_names,
    cell_name,
    with_subgroups,
)
from manifests.errors import UserError
from manifests.io import Manifest, label_prevalence
from manifests.schema import SOURCES, SPLITS
from manifests.splits import split_counts

NOTES_KEY = "cxraug.notes"
NOT_LABELLED = "not labelled"
UNKNOWN = "unknown"
ALL_IMAGES = "all images"


@dataclass
class Summary:
    """Counts per split/source, a label x (split/source) prevalence table, and notes.

    Attributes:
        not_labelled: labels that no row of the manifest holds (all NaN): the source does
            not provide them. Their cells read "not labelled", never "0.0%".
        subgroups: `subgroup_counts`, positive images and patients per split, source,
            label and subgroup.
        subgroup_tables: `subgroup_tables` of it, one label x subgroup table per
            "split/source".
    """

    counts: pd.DataFrame
    prevalence: pd.DataFrame
    notes: list[str] = field(default_factory=list)
    not_labelled: list[str] = field(default_factory=list)
    subgroups: pd.DataFrame = field(default_factory=pd.DataFrame)
    subgroup_tables: dict[str, pd.DataFrame] = field(default_factory=dict)


def _cell(positive: int, uncertain: int, labelled: int, total: int) -> str:
    if not total:
        return "-"
    if not labelled:  # every row NaN: the source says nothing, which is not "0% positive"
        return NOT_LABELLED
    return f"{positive / total:.1%} ({uncertain / total:.1%})"


def _ordered_groups(rows: pd.DataFrame) -> list[tuple[str, str]]:
    """The (split, source) pairs present, train/val/test and real/synthetic first."""
    pairs = set(zip(rows["split"], rows["source"], strict=True))

    def rank(pair: tuple[str, str]) -> tuple:
        split, source = pair
        return (
            SPLITS.index(split) if split in SPLITS else len(SPLITS),
            SOURCES.index(source) if source in SOURCES else len(SOURCES),
            pair,
        )

    return sorted(pairs, key=rank)


def subgroup_counts(
    manifest: Manifest, age_edges: Sequence[float] = DEFAULT_AGE_EDGES
) -> pd.DataFrame:
    """Positive images and patients per split, source, label and demographic subgroup.

    Subgroups are each sex ('sex=F', 'sex=M') and each age group of `age_edges`
    ('age_group=<40', ...), plus '<column>=unknown' when some row of the manifest has no
    known value (a null or other sex, a null age). A row with label `ALL_IMAGES` counts
    every image of the subgroup, the denominators of the positives. A patient whose
    studies fall in two age groups counts in both.

    Returns a frame with columns split, source, label, subgroup, images, patients: every
    (split, source) present x label x subgroup, zeros included.
    """
    labels = list(manifest.labels)
    rows = with_subgroups(
        manifest.rows[["split", "source", "patient_id", "sex", "age", *labels]], age_edges
    )
    groups = _ordered_groups(rows)
    records = []
    for column, values in (("sex", SEXES), ("age_group", age_group_names(age_edges))):
        key = pd.Series(rows[column].to_numpy(dtype=object), index=rows.index)
        key = key.where(key.notna(), UNKNOWN)
        values = [*values, UNKNOWN] if (key == UNKNOWN).any() else list(values)
        for label in (ALL_IMAGES, *labels):
            positive = (
                np.ones(len(rows), dtype=bool)
                if label == ALL_IMAGES
                else rows[label].to_numpy(dtype=np.float64) == 1
            )
            counts = (
                rows.loc[positive, ["split", "source", "patient_id"]]
                .assign(value=key[positive])
                .groupby(["split", "source", "value"])
                .agg(images=("patient_id", "size"), patients=("patient_id", "nunique"))
            )
            for split, source in groups:
                for value in values:
                    at = (split, source, value)
                    images, patients = counts.loc[at] if at in counts.index else (0, 0)
                    records.append(
                        {
                            "split": split,
                            "source": source,
                            "label": label,
                            "subgroup": cell_name({column: value}),
                            "images": int(images),
                            "patients": int(patients),
                        }
                    )
    return pd.DataFrame.from_records(
        records, columns=["split", "source", "label", "subgroup", "images", "patients"]
    )


def subgroup_tables(counts: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """One table per "split/source" of `subgroup_counts`: a row per label (`ALL_IMAGES`
    first), a column per subgroup (headed 'sex F', 'age 65+', short and with a space so
    that the table fits a narrow terminal), each cell "images (patients)"."""
    tables = {}
    for (split, source), group in counts.groupby(["split", "source"], sort=False):
        cells = group.assign(
            cell=[f"{i} ({p})" for i, p in zip(group["images"], group["patients"], strict=True)]
        )
        table = cells.pivot(index="label", columns="subgroup", values="cell")
        table = table.reindex(
            index=list(dict.fromkeys(group["label"])),
            columns=list(dict.fromkeys(group["subgroup"])),
        )
        table.columns = [c.replace("age_group=", "age ").replace("=", " ") for c in table.columns]
        tables[f"{split}/{source}"] = table.reset_index()
    return tables


def summarize(
    manifest: Manifest, where: str = "manifest", age_edges: Sequence[float] = DEFAULT_AGE_EDGES
) -> Summary:
    """Counts per split/source, a label x (split, source) table of prevalence, and the
    positive images (patients) per label x demographic subgroup (`subgroup_counts`).

    A prevalence cell is the positive (uncertain) share of the group's images, or "not
    labelled" when the label is NaN on every image of the group.
    """
    if not len(manifest.rows):
        raise UserError(f"{where}: has no rows; nothing to summarize")
    prev = label_prevalence(manifest)
    labelled = prev[["positive", "negative", "uncertain"]].sum(axis=1)
    prev["cell"] = [
        _cell(p, u, k, k + m)
        for p, u, k, m in zip(
            prev["positive"], prev["uncertain"], labelled, prev["missing"], strict=True
        )
    ]
    prev["column"] = prev["split"] + "/" + prev["source"]
    table = prev.pivot(index="label", columns="column", values="cell")
    table = table.reindex(list(manifest.labels)).reset_index()
    per_label = labelled.groupby(prev["label"]).sum()
    not_labelled = [label for label in manifest.labels if per_label.get(label, 0) == 0]
    try:
        notes = list(json.loads(manifest.metadata.get(NOTES_KEY, "[]")))
    except (ValueError, TypeError):
        raise UserError(f"{where}: its {NOTES_KEY} metadata is not a JSON list") from None
    subgroups = subgroup_counts(manifest, age_edges)
    return Summary(
        counts=split_counts(manifest),
        prevalence=table,
        notes=notes,
        not_labelled=not_labelled,
        subgroups=subgroups,
        subgroup_tables=subgroup_tables(subgroups),
    )
