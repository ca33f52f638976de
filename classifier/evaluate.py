"""Evaluation on the real test split: AUROC per label and macro with patient-bootstrap CIs
(the statistics are `classifier.stats`'), predictions, and a run's outputs.

Run outputs (beside the run's `config.json`):

* `predictions.parquet`: `image_path` (absolute), `patient_id`, `study_id`, `sex` and `age`
  (the manifest row's; null where unknown or the manifest has no such column), then per
  label `true.<label>` (the raw manifest value: 1, 0, -1 or NaN) and `prob.<label>`
  (sigmoid). A run written by `classifier.train` also holds `val_predictions.parquet`, the
  same table for its real val rows (`classifier.run`).
* `metrics.json`: see :func:`compute_metrics`; NaN is written as null.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from classifier import run
from classifier.config import N_BOOT
from classifier.stats import (
    CI_LEVEL,
    as_2d,
    fixed_macro,
    n_valid,
    patient_resample_weights,
    percentile_ci,
    point_auroc,
    resampled_auroc,
)
from manifests.errors import UserError
from manifests.io import Manifest, filter_manifest, read_manifest
from manifests.splits import check_leakage

# ------------------------------------------------------------------------------ metrics


def _nan_to_none(value: float) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def compute_metrics(
    y_true: np.ndarray,
    y_prob: np.ndarray,
    labels: Sequence[str],
    groups: Sequence,
    n_boot: int = N_BOOT,
    seed: int = 0,
    level: float = CI_LEVEL,
) -> dict:
    """Per-label and macro AUROC with patient-bootstrap CIs, as written to metrics.json.

    Args:
        y_true: ``(n, L)`` raw label values (1, 0, -1, NaN); only 0/1 entries are scored.
        y_prob: ``(n, L)`` predicted probabilities.
        labels: the L label names.
        groups: ``(n,)`` patient ids.

    Returns:
        A dict with keys `labels`, `auroc` ({label: float|None}), `ci` ({label: [lo, hi] or
        None}), `ci_n_valid` ({label: resamples of the `n_boot` in which the label had both
        classes, the ones its CI uses}), `nan_reasons` ({label: reason} for undefined
        labels), `n_positive`, `n_negative` ({label: int}), `macro_auroc`, `macro_ci`
        ([lo, hi]), `macro_ci_n_valid` (resamples in which every macro label had both
        classes: the macro is the mean over the same `macro_labels` in every resample),
        `macro_labels` (labels in the macro mean), `n_test_images`, `n_test_patients`,
        `n_boot`, `ci_level`, `bootstrap_seed`. NaN values are None (JSON null).
    """
    y_true, y_prob = as_2d(y_true), as_2d(y_prob)
    labels = list(labels)
    point, reasons = point_auroc(y_true, y_prob)
    keep = np.isfinite(point)
    weights, codes = patient_resample_weights(groups, n_boot, seed)
    resampled = (
        resampled_auroc(y_true, y_prob, weights, codes, 20_000_000)
        if keep.any()
        else np.full((n_boot, len(labels)), np.nan)
    )
    auroc, ci, ci_valid, nan_reasons, n_pos, n_neg = {}, {}, {}, {}, {}, {}
    for j, label in enumerate(labels):
        n_pos[label] = int((y_true[:, j] == 1).sum())
        n_neg[label] = int((y_true[:, j] == 0).sum())
        auroc[label] = _nan_to_none(point[j])
        if keep[j]:
            lo, hi = percentile_ci(resampled[:, j], level)
            ci[label] = [_nan_to_none(lo), _nan_to_none(hi)]
            ci_valid[label] = n_valid(resampled[:, j])
        else:
            ci[label] = None
            ci_valid[label] = 0
            nan_reasons[label] = reasons[j]
    if keep.any():
        macro = float(point[keep].mean())
        macro_samples = fixed_macro(resampled, keep)
        macro_lo, macro_hi = percentile_ci(macro_samples, level)
        macro_ci = [_nan_to_none(macro_lo), _nan_to_none(macro_hi)]
        macro_valid = n_valid(macro_samples)
    else:
        macro, macro_ci, macro_valid = math.nan, None, 0
        nan_reasons["macro"] = "no label has both classes in the test set"
    return {
        "labels": labels,
        "auroc": auroc,
        "ci": ci,
        "ci_n_valid": ci_valid,
        "nan_reasons": nan_reasons,
        "n_positive": n_pos,
        "n_negative": n_neg,
        "macro_auroc": _nan_to_none(macro),
        "macro_ci": macro_ci,
        "macro_ci_n_valid": macro_valid,
        "macro_labels": [label for label, k in zip(labels, keep, strict=True) if k],
        "n_test_images": int(len(y_true)),
        "n_test_patients": int(len(set(groups))),
        "n_boot": int(n_boot),
        "ci_level": float(level),
        "bootstrap_seed": int(seed),
    }


def macro_auroc(y_true: np.ndarray, y_prob: np.ndarray) -> float:
    """Mean AUROC over the labels where it is defined (NaN if none); for validation."""
    point, _ = point_auroc(y_true, y_prob)
    finite = point[np.isfinite(point)]
    return float(finite.mean()) if finite.size else math.nan


# ------------------------------------------------------------------------------ predictions


@torch.no_grad()
def predict(
    model: torch.nn.Module,
    images: np.ndarray,
    mean: float,
    std: float,
    batch_size: int = 64,
    device: torch.device | str = "cpu",
) -> np.ndarray:
    """Sigmoid probabilities ``(N, L)`` for uint8 images ``(N, 1, S, S)`` (no augmentation)."""
    from classifier.data import to_model_input

    model.eval()
    out = []
    for start in range(0, len(images), batch_size):
        batch = torch.from_numpy(np.ascontiguousarray(images[start : start + batch_size]))
        x = to_model_input(batch.to(device), mean, std)
        out.append(torch.sigmoid(model(x).float()).cpu().numpy())
    n_labels = getattr(model, "num_classes", 0)
    return np.concatenate(out) if out else np.zeros((0, n_labels), dtype=np.float32)


def predictions_frame(rows: pd.DataFrame, labels: Sequence[str], probs: np.ndarray) -> pd.DataFrame:
    """The predictions table: ids, the rows' `sex` and `age` (None / NaN where unknown, for
    the fairness report's subgroups), then `true.<label>` (raw) and `prob.<label>` per label."""
    missing = pd.Series([None] * len(rows), index=rows.index, dtype=object)
    sex, age = rows.get("sex", missing), rows.get("age", missing)
    frame = pd.DataFrame(
        {
            "image_path": rows["image_path"].astype(str).to_numpy(),
            "patient_id": rows["patient_id"].astype(str).to_numpy(),
            "study_id": rows["study_id"].astype(str).to_numpy(),
            "sex": np.where(sex.notna(), sex.astype(object), None),
            "age": pd.to_numeric(age, errors="coerce").to_numpy(dtype=np.float64),
        }
    )
    for j, label in enumerate(labels):
        frame[f"true.{label}"] = rows[label].to_numpy(dtype=np.float32)
        frame[f"prob.{label}"] = probs[:, j].astype(np.float32)
    return frame


def evaluate_run(
    run_dir: Path,
    manifest: Path | Manifest | None = None,
    split: str = "test",
    out_dir: Path | None = None,
    n_boot: int = N_BOOT,
    seed: int = 0,
    batch_size: int = 64,
    on_bad_image: str = "error",
    device: str | None = None,
) -> dict:
    """Evaluate a trained run on the real rows of `split` of a manifest.

    Args:
        run_dir: a run directory (`model.safetensors`, `config.json`).
        manifest: a manifest path or object; default: the real manifest the run trained on.
        split: which split to score (`test`).
        out_dir: where `predictions.parquet` and `metrics.json` go (default `run_dir`).
        n_boot, seed: patient bootstrap resamples and seed.
        batch_size: inference batch size.
        on_bad_image: `error` or `skip` unreadable images (counted in metrics).
        device: torch device (default: cuda if available).

    Returns:
        The metrics dict (also written), see :func:`compute_metrics`, plus run fields `arm`,
        `mix`, `seed`, `backbone`, `bad_images`.
    """
    from classifier.data import decode_images

    model, config = run.load_model(run_dir)
    if manifest is None:
        manifest = Path(config["real"])
    m = manifest if isinstance(manifest, Manifest) else read_manifest(Path(manifest))
    where = str(manifest) if not isinstance(manifest, Manifest) else "manifest"
    check_leakage(m, where=where)
    missing = [label for label in config["labels"] if label not in m.labels]
    if missing:
        raise UserError(
            f"{where}: label(s) {', '.join(missing)} of run {run_dir} are not in the manifest; "
            f"valid: {', '.join(m.labels)}"
        )
    m = filter_manifest(m, split=split, source="real", where=f"{where} (split {split})")
    paths = m.image_paths()
    cache = decode_images(
        paths, int(config["image_size"]), on_bad_image=on_bad_image, num_threads=4
    )
    rows = m.rows.iloc[cache.keep].reset_index(drop=True)
    rows = rows.assign(image_path=[paths[i].as_posix() for i in cache.keep])
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model.to(dev)
    probs = predict(model, cache.images, config["mean"], config["std"], batch_size, dev)
    extra = {
        "arm": config.get("arm"),
        "mix": config.get("mix"),
        "seed": config.get("seed"),
        "backbone": config.get("backbone"),
        "bad_images": {split: len(cache.bad)},
    }
    return finish_evaluation(
        rows, config["labels"], probs, Path(out_dir or run_dir), n_boot, seed, extra
    )


def finish_evaluation(
    rows: pd.DataFrame,
    labels: Sequence[str],
    probs: np.ndarray,
    out_dir: Path,
    n_boot: int,
    seed: int,
    extra: dict,
) -> dict:
    """Write predictions and metrics for scored rows; return the metrics dict."""
    frame = predictions_frame(rows, labels, probs)
    metrics = compute_metrics(
        rows[list(labels)].to_numpy(np.float64),
        probs,
        labels,
        rows["patient_id"].astype(str).to_numpy(),
        n_boot=n_boot,
        seed=seed,
    )
    metrics.update(extra)
    out_dir.mkdir(parents=True, exist_ok=True)
    run.write_predictions(out_dir, frame)
    run.write_metrics(out_dir, metrics)  # written last: its presence marks "done"
    return metrics
