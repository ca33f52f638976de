"""What a manifest holds: images and patients per split/source, label prevalence, notes."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import pandas as pd

from manifests.errors import UserError
from manifests.io import Manifest, label_prevalence
from manifests.splits import split_counts

NOTES_KEY = "cxraug.notes"
NOT_LABELLED = "not labelled"


@dataclass
class Summary:
    """Counts per split/source, a label x (split/source) prevalence table, and notes.

    Attributes:
        not_labelled: labels that no row of the manifest holds (all NaN): the source does
            not provide them. Their cells read "not labelled", never "0.0%".
    """

    counts: pd.DataFrame
    prevalence: pd.DataFrame
    notes: list[str] = field(default_factory=list)
    not_labelled: list[str] = field(default_factory=list)


def _cell(positive: int, uncertain: int, labelled: int, total: int) -> str:
    if not total:
        return "-"
    if not labelled:  # every row NaN: the source says nothing, which is not "0% positive"
        return NOT_LABELLED
    return f"{positive / total:.1%} ({uncertain / total:.1%})"


def summarize(manifest: Manifest, where: str = "manifest") -> Summary:
    """Counts per split/source and a label x (split, source) table of prevalence.

    A cell is the positive (uncertain) share of the group's images, or "not labelled" when
    the label is NaN on every image of the group.
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
    return Summary(
        counts=split_counts(manifest), prevalence=table, notes=notes, not_labelled=not_labelled
    )
