"""The laterality metric: does a synthetic image show its finding on the side its prompt
states?

A side detector per lateral label (`augmentor.report_text.LATERAL_LABELS`) is a logistic
regression on the oracle's probabilities for the two half-mirrored images of a radiograph
(and their difference), fit on the oracle's held-out calibration images (its validation
patients, `augmentor.generator_metrics.OracleHoldout`) with one known side (phantom ground
truth, else the report's side word, `true_side`); the image-to-patient side convention is
learnt, not assumed. `laterality_table` scores it on real test images the oracle never saw
(its own accuracy, the ceiling) and on synthetic images against the side the prompt states. `augmentor.evaluate`
runs it; `augmentor.generator_metrics.prompt_fidelity_table` reads its table.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pandas as pd

from augmentor.generator_metrics import OracleHoldout, patient_clusters, prompt_clusters
from augmentor.metrics import clustered_rate_interval
from augmentor.report_text import LATERAL_LABELS, stated_side
from manifests.io import Manifest


def true_side(row: pd.Series, label: str) -> str | None:
    """Ground-truth side of a real row: phantom_findings where present, else its report."""
    findings = row.get("phantom_findings")
    if isinstance(findings, str) and findings:
        entry = json.loads(findings).get(label)
        if isinstance(entry, dict) and entry.get("side") in ("left", "right", "both"):
            return entry["side"]
        if entry is None:
            return None
    return stated_side(row.get("report"), label)


def side_design(halves: dict[str, np.ndarray], idx: np.ndarray, j: int) -> np.ndarray:
    """The side detector's inputs for rows `idx`: the oracle's probability of label `j` on
    each half-mirrored image and their difference."""
    a, b = halves["probs_image_left"][idx, j], halves["probs_image_right"][idx, j]
    return np.stack([a, b, a - b], axis=1)


@dataclass
class SideDetector:
    """A fitted side detector for one label and the real rows it was fit and judged on.

    `model` predicts True for 'left' (the patient's) from `side_design`; `sides` holds each
    real row's true side (None where unknown), `held` the one-sided real rows outside train.
    """

    label: str
    j: int
    model: object
    sides: np.ndarray
    held: np.ndarray
    n_fit: int

    def predict_left(self, halves: dict[str, np.ndarray], idx: np.ndarray) -> np.ndarray:
        if not len(idx):  # no image to judge (e.g. no held-out real case of this label)
            return np.zeros(0, dtype=bool)
        return self.model.predict(side_design(halves, idx, self.j)).astype(bool)


def fit_side_detector(
    real: Manifest,
    halves_real: dict[str, np.ndarray],
    label: str,
    oracle_labels: tuple[str, ...],
    seed: int = 0,
    holdout: OracleHoldout | None = None,
) -> SideDetector | None:
    """Logistic regression on `side_design`, fit on the oracle's held-out calibration images
    of `label` with one known side (`holdout.calibrate`: its validation patients, images it
    did not train on, whose probabilities are not overconfident as its train images' are;
    default the val split) and judged on `holdout.reference`; None with fewer than 2 left
    and 2 right such images."""
    from sklearn.linear_model import LogisticRegression

    holdout = holdout or OracleHoldout.from_splits(real.rows)
    j = list(oracle_labels).index(label)
    positive = np.flatnonzero(real.rows[label].to_numpy() == 1)
    sides = np.full(len(real), None, dtype=object)
    sides[positive] = [true_side(real.rows.iloc[i], label) for i in positive]
    one_sided = np.isin(sides, ["left", "right"]) & (real.rows[label].to_numpy() == 1)
    fit = np.flatnonzero(one_sided & holdout.calibrate)
    y_fit = sides[fit] == "left"
    if len(fit) < 4 or y_fit.all() or not y_fit.any():
        return None
    model = LogisticRegression(random_state=seed).fit(side_design(halves_real, fit, j), y_fit)
    held = np.flatnonzero(one_sided & holdout.reference)
    return SideDetector(label, j, model, sides, held, len(fit))


def prompt_sides(synthetic: Manifest, label: str) -> np.ndarray:
    """The side each synthetic row's prompt states for `label` (`stated_side`), per row."""
    prompts = synthetic.rows.get("prompt", pd.Series([None] * len(synthetic)))
    return np.array([stated_side(p, label) for p in prompts], dtype=object)


def _side_rate(hits: np.ndarray, clusters: np.ndarray) -> tuple[float, float, float]:
    """Share of hits and its 95% interval clustered by `clusters` (NaNs for none)."""
    if not len(hits):
        return float("nan"), float("nan"), float("nan")
    low, high = clustered_rate_interval(hits, clusters)
    return float(np.mean(hits)), low, high


def laterality_table(
    synthetic: Manifest,
    real: Manifest,
    halves_syn: dict[str, np.ndarray],
    halves_real: dict[str, np.ndarray],
    oracle_labels: tuple[str, ...],
    seed: int = 0,
    holdout: OracleHoldout | None = None,
) -> tuple[pd.DataFrame, list[str]]:
    """Per lateral label: side hit rate on real held-out images and on synthetic images.

    The side detector (`fit_side_detector`) is a logistic regression on the oracle's
    probabilities for the two half-mirrored images (and their difference), fit on the
    oracle's held-out calibration images with one known side (`holdout`); the
    image-to-patient side convention is learnt, not assumed. Each rate has its 95% interval,
    clustered by prompt (synthetic) or patient (real): `clustered_rate_interval`.
    """
    notes: list[str] = []
    records = []
    targets = synthetic.rows.get("target_label", pd.Series([None] * len(synthetic)))
    syn_clusters = prompt_clusters(synthetic.rows)
    real_clusters = patient_clusters(real.rows)
    for label in LATERAL_LABELS:
        if label not in oracle_labels or label not in set(targets.dropna()):
            continue
        detector = fit_side_detector(real, halves_real, label, oracle_labels, seed, holdout)
        if detector is None:
            notes.append(
                f"laterality {label}: fewer than 2 left and 2 right real calibration "
                "(oracle held-out) cases"
            )
            continue
        held = detector.held
        truth = detector.sides[held] == "left"
        real_hits = detector.predict_left(halves_real, held) == truth
        real_rate, real_low, real_high = _side_rate(real_hits, real_clusters[held])
        stated = prompt_sides(synthetic, label)
        syn = np.flatnonzero((targets == label).to_numpy() & np.isin(stated, ["left", "right"]))
        syn_hits = detector.predict_left(halves_syn, syn) == (stated[syn] == "left")
        syn_rate, syn_low, syn_high = _side_rate(syn_hits, syn_clusters[syn])
        records.append(
            {
                "label": label,
                "synthetic_side_hit_rate": syn_rate,
                "synthetic_side_hit_rate_low": syn_low,
                "synthetic_side_hit_rate_high": syn_high,
                "n_synthetic_sided": len(syn),
                "n_synthetic_sided_prompts": len(pd.unique(syn_clusters[syn])),
                "real_heldout_side_hit_rate": real_rate,
                "real_heldout_side_hit_rate_low": real_low,
                "real_heldout_side_hit_rate_high": real_high,
                "n_real_heldout_sided": len(held),
                "n_real_calibration_sided": detector.n_fit,
            }
        )
    return pd.DataFrame(records), notes


__all__ = [
    "SideDetector",
    "fit_side_detector",
    "laterality_table",
    "prompt_sides",
    "side_design",
    "true_side",
]
