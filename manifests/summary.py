"""What a manifest holds: images and patients per split/source, label prevalence, notes."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import pandas as pd

from manifests.io import Manifest, label_prevalence
from manifests.splits import split_counts

NOTES_KEY = "cxraug.notes"


@dataclass
class Summary:
    counts: pd.DataFrame
    prevalence: pd.DataFrame
    notes: list[str] = field(default_factory=list)


def summarize(manifest: Manifest) -> Summary:
    """Counts per split/source and a label x (split, source) table of prevalence."""
    prev = label_prevalence(manifest)
    prev["cell"] = [
        f"{p / n:.1%} ({u / n:.1%})" if n else "-"
        for p, u, n in zip(
            prev["positive"],
            prev["uncertain"],
            prev[["positive", "negative", "uncertain", "missing"]].sum(axis=1),
            strict=True,
        )
    ]
    prev["column"] = prev["split"] + "/" + prev["source"]
    table = prev.pivot(index="label", columns="column", values="cell")
    table = table.reindex(list(manifest.labels)).reset_index()
    notes = json.loads(manifest.metadata.get(NOTES_KEY, "[]"))
    return Summary(counts=split_counts(manifest), prevalence=table, notes=notes)
