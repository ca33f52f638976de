"""The runs a report compares: finished classifier runs read from their folders and aligned
on one shared test set.

:func:`collect_runs` reads run folders through `classifier.run`, their owner, checks that
they share one label set and one test set (the same images with the same labels), and
returns a :class:`RunSet` whose runs' predictions are in one row order. `classifier.report`
computes the statistics over it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from classifier import run as run_folder
from classifier.arms import Arm
from manifests.errors import UserError


@dataclass
class Run:
    """One finished classifier run, its predictions aligned to the shared test images."""

    path: Path
    arm: str
    seed: int
    labels: tuple[str, ...]
    config: dict
    metrics: dict
    prob: np.ndarray  # (n_test, L), rows in the order of RunSet.images, labels RunSet.labels

    @property
    def generator(self) -> str | None:
        """The generator behind its synthetic images (config `synthetic_digest`, or that of
        the run it started from; None for a run without synthetic images): runs of one arm
        and seed may differ only in it."""
        digest = self.config.get("synthetic_digest") or self.config.get(
            "init_from_synthetic_digest"
        )
        return None if digest is None else str(digest)


@dataclass
class RunSet:
    """Runs that share one label set and one test set."""

    runs: list[Run]
    labels: tuple[str, ...]
    images: list[str]  # test image paths, the row order of `truth` and every run's `prob`
    patients: np.ndarray  # (n_test,) patient of each image
    truth: np.ndarray  # (n_test, L) raw test labels: 1, 0, -1, NaN


def _read_run(path: Path) -> tuple[dict, dict, pd.DataFrame, list[str]]:
    config = run_folder.read_config(path)
    metrics = run_folder.read_metrics(path)
    frame, labels = run_folder.read_predictions(path)
    return config, metrics, frame, labels


def collect_runs(paths: Sequence[Path]) -> RunSet:
    """Read finished runs and check they are comparable.

    Args:
        paths: run directories, or folders holding run directories.

    Returns:
        The runs with predictions aligned on the shared test images.

    Raises:
        UserError: a folder that is not a run, an unfinished run, runs of another label
            set or another test set (naming the run), or the same arm and seed twice.
    """
    dirs = run_folder.find_runs(paths)
    if not dirs:
        raise UserError("report: no run directories given")
    runs: list[Run] = []
    first: Path | None = None
    labels: tuple[str, ...] = ()
    images: list[str] = []
    patients = np.zeros(0)
    truth = np.zeros((0, 0))
    seen: dict[tuple[str, str | None, int], Path] = {}
    for path in dirs:
        config, metrics, frame, pred_labels = _read_run(path)
        run_labels = tuple(config["labels"])
        if set(pred_labels) != set(run_labels):
            raise UserError(
                f"{path}: {run_folder.PREDICTIONS_FILE} has labels {pred_labels}, config.json {list(run_labels)}"
            )
        if first is None:
            first, labels = path, run_labels
            frame = frame.drop_duplicates("image_path")
            images = frame["image_path"].astype(str).tolist()
            patients = frame["patient_id"].astype(str).to_numpy()
            truth = frame[[f"true.{x}" for x in labels]].to_numpy(np.float64)
        elif set(run_labels) != set(labels):
            raise UserError(
                f"{path}: label set {sorted(run_labels)} differs from {sorted(labels)} of "
                f"{first}; a report compares runs of one label set"
            )
        frame = frame.drop_duplicates("image_path").set_index("image_path")
        if set(frame.index.astype(str)) != set(images):
            other_patients = set(frame["patient_id"].astype(str))
            raise UserError(
                f"{path}: evaluated on a different test set ({len(frame)} images of "
                f"{len(other_patients)} patients) than {first} ({len(images)} images of "
                f"{len(set(patients))} patients); a report compares runs on the same "
                "real test images"
            )
        frame = frame.loc[images]
        run_truth = frame[[f"true.{x}" for x in labels]].to_numpy(np.float64)
        if not np.array_equal(run_truth, truth, equal_nan=True):
            raise UserError(
                f"{path}: its test labels differ from those of {first} on the same images; "
                "were they evaluated on different manifests?"
            )
        arm = str(config.get("arm") or metrics.get("arm") or "unknown")
        seed = int(config["seed"])
        digest = config.get("synthetic_digest") or config.get("init_from_synthetic_digest")
        key = (arm, None if digest is None else str(digest), seed)
        if key in seen:
            generator = "" if digest is None else f" generator {str(digest)[:12]}"
            raise UserError(
                f"{path}: arm {arm!r}{generator} seed {seed} is also {seen[key]}; give each "
                "run once"
            )
        seen[key] = path
        runs.append(
            Run(
                path=path,
                arm=arm,
                seed=seed,
                labels=labels,
                config=config,
                metrics=metrics,
                prob=frame[[f"prob.{x}" for x in labels]].to_numpy(np.float64),
            )
        )
    return RunSet(runs=runs, labels=labels, images=images, patients=patients, truth=truth)


def matched_controls(runs: Sequence[Run], oversample: bool = False) -> dict[str, str]:
    """{arm: its step-matched real-only control arm} from the runs' configs.

    A control run has ``"matched_to": "<arm>"`` in its config.json (and is named
    ``real-steps-<arm>``); a ``real-steps-<arm>`` run without it matches `<arm>` by name.
    With `oversample`, the positives-matched controls instead (``"oversample": true``,
    ``real-oversample-<arm>``: as many steps, and real positives drawn to the arm's label
    balance). A subgroup-balanced arm (``mix<m>-balanced``) gets its prevalence-matched
    twin's controls: they took as many steps.
    """
    out: dict[str, str] = {}
    arms = [Arm.from_config(run.config, run.arm) for run in runs]
    for run, arm in zip(runs, arms, strict=True):
        if arm.matched_to and arm.oversample == oversample:
            out.setdefault(str(arm.matched_to), run.arm)
    for arm in arms:  # a subgroup-balanced arm shares its twin's controls (same steps)
        if arm.balanced and arm.twin().name in out:
            out.setdefault(arm.name, out[arm.twin().name])
    return out


__all__ = ["Run", "RunSet", "collect_runs", "matched_controls"]
