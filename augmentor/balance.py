"""Balanced fine-tuning order: rare findings, sides and lobes drawn more often.

A generator learns each finding's side (and a consolidation's lobe) from the few training
images that show it: in the demo's 320, six right-middle-lobe consolidations against 146
normal chests. With `FinetuneConfig.balance_labels`, each epoch draws its images with
replacement, an image weighted by 1 / sqrt(count) of its rarest *unit* (a listed finding
with the side its report states, or for a consolidation the lobe its report names; 'none'
for an image with no listed finding), so rare units are seen more often and common ones
less, without dropping any (`benchmarks/generator_fidelity.py --set
balance_labels=...`; README, Generator levers). The order keeps `epoch_batches`' shape and
seeding, so a resumed run draws the same images.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch

from augmentor.report_text import named_lobe, stated_side
from manifests.errors import UserError

LOBE_LABELS = ("Consolidation",)  # findings placed by lobe, not only by side


def finding_units(row: pd.Series, labels: Sequence[str]) -> list[str]:
    """What one training image teaches about `labels`: 'Label:side' (or 'Label:lobe' for
    LOBE_LABELS, from the first lobe its report names) per listed finding it shows, or
    ['none']."""
    report = row.get("report") if isinstance(row.get("report"), str) else ""
    units = []
    for label in labels:
        if row.get(label) != 1:
            continue
        where = stated_side(report, label) or ""
        if label in LOBE_LABELS:
            where = named_lobe(report) or where
        units.append(f"{label}:{where}")
    return units or ["none"]


def balanced_weights(rows: pd.DataFrame, labels: Sequence[str]) -> np.ndarray:
    """Per row, 1 / sqrt(count) of its rarest unit (`finding_units`), scaled to mean 1."""
    missing = [x for x in labels if x not in rows.columns]
    if missing:
        raise UserError(
            f"--balance-labels: {', '.join(missing)} not a label column of the training "
            f"manifest; valid: {', '.join(c for c in rows.columns if rows[c].dtype.kind == 'f')}"
        )
    units = [finding_units(row, labels) for _, row in rows.iterrows()]
    counts = pd.Series([u for us in units for u in us]).value_counts()
    weights = np.array([max(counts[u] ** -0.5 for u in us) for us in units])
    return weights / weights.mean()


def weighted_batches(
    weights: np.ndarray, batch: int, world: int, epoch: int, seed: int
) -> torch.Tensor:
    """`finetune.epoch_batches`' (micro-batches, world, batch) order and seeding, with the
    rows drawn by `weights` with replacement."""
    per = batch * world
    steps = -(-len(weights) // per)
    generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
    probs = torch.as_tensor(weights, dtype=torch.float64)
    order = torch.multinomial(probs, steps * per, replacement=True, generator=generator)
    return order.view(steps, world, batch)
