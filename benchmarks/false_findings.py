"""Where a generator's false findings come from: split by what else the prompt states.

    python benchmarks/false_findings.py SYNTHETIC REAL ORACLE [--label Consolidation]

SYNTHETIC is a synthetic manifest, REAL the real manifest it was prompted from (with its
val/test splits), ORACLE a classifier run (e.g. a study's `runs/real-seed0`), thresholded
as `evaluate-generator` does (Youden's J on real val). For each finding, the synthetic
images whose prompt does not state it (the false-finding rate's denominator) are grouped by
which of the other findings their prompt states; beside each group, the oracle's positive
rate on real test images negative for the finding with the same other findings. A
generator that draws what its prompts say matches the real rate in every group: a group
where it does not is where its false findings come from. `matched` is the real rate
weighted by the synthetic groups' sizes (the reference the prompts' mix of findings calls
for, and the fidelity table's: `matched_negative_rate`), `raw` the real rate on all
real test negatives.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from augmentor.features import embed_images, image_hashes, load_run_extractor
from augmentor.generator_metrics import (
    label_thresholds,
    matched_negative_rate,
    other_findings,
    stated_findings,
    unprompted_mask,
)
from manifests.io import read_manifest


def breakdown(
    label: str,
    labels: list[str],
    syn_rows: pd.DataFrame,
    syn_positive: np.ndarray,
    real_rows: pd.DataFrame,
    real_scores: np.ndarray,
    threshold: float,
) -> tuple[pd.DataFrame, dict[str, float]]:
    """Per combination of the other findings' stated values (1 or not): synthetic vs real rate.

    `syn_rows` have `target_label` and one column per label (the prompt's statement);
    `syn_positive` are the oracle's calls for `label` on them (bool, one per row);
    `real_rows` are the real test rows, `real_scores` the oracle's scores for `label` on
    them, positive at `threshold`. Returns the table and {'synthetic', 'matched', 'raw'}
    overall rates ('matched' as `evaluate-generator`'s reference).
    """
    others = other_findings(label, labels)
    unprompted = unprompted_mask(syn_rows, label)
    negative = (real_rows[label] == 0).to_numpy()  # as the fidelity table: not uncertain

    def groups(rows: pd.DataFrame, positive: np.ndarray) -> pd.DataFrame:
        frame = pd.DataFrame(stated_findings(rows, others), columns=others)
        frame["positive"] = positive.astype(float)
        return frame.groupby(others)["positive"].agg(["mean", "size"])

    syn = groups(syn_rows[unprompted], syn_positive[unprompted])
    real = groups(real_rows[negative], real_scores[negative] >= threshold)
    table = syn.add_suffix("_synthetic").join(real.add_suffix("_real"), how="left")
    matched = matched_negative_rate(
        real_scores, threshold, real_rows, negative, syn_rows[unprompted], others
    )
    rates = {
        "synthetic": float(syn_positive[unprompted].mean()),
        "matched": matched,
        "raw": float((real_scores[negative] >= threshold).mean()),
    }
    return table, rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("synthetic", type=Path)
    parser.add_argument("real", type=Path)
    parser.add_argument("oracle", type=Path)
    parser.add_argument("--label", action="append", help="default: every oracle label")
    parser.add_argument("--cache", type=Path, default=Path("/tmp/cxraug-false-findings"))
    args = parser.parse_args()

    extractor = load_run_extractor(args.oracle)
    labels = list(extractor.labels)
    syn, real = read_manifest(args.synthetic), read_manifest(args.real)
    syn_p = embed_images(syn.image_paths(), image_hashes(syn), [extractor], args.cache)[0]
    real_p = embed_images(real.image_paths(), image_hashes(real), [extractor], args.cache)[0]
    split = real.rows["split"].to_numpy()
    val, test = split == "val", split == "test"
    thresholds = label_thresholds(real_p["probs"][val], real.rows[val], labels)
    pd.set_option("display.width", 160)
    for label in args.label or labels:
        j, t = labels.index(label), thresholds[label][0]
        table, rates = breakdown(
            label,
            labels,
            syn.rows,
            syn_p["probs"][:, j] >= t,
            real.rows[test].reset_index(drop=True),
            real_p["probs"][test, j],
            t,
        )
        print(f"\n{label}: oracle-positive share of images whose prompt does not state it")
        print(table.round(2).to_string())
        print(", ".join(f"{name} {rate:.3f}" for name, rate in rates.items()))


if __name__ == "__main__":
    main()
