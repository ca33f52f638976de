"""Experiment trackers for training commands (`--report-to tensorboard|wandb|none`).

A thin layer over accelerate's trackers (`accelerate.tracking.TensorBoardTracker`,
`WandBTracker`), so `train-classifier` and `finetune` log the way diffusers' training
scripts do: the run config once, then scalars (loss, learning rate, images/s, val AUROC)
and images (validation grids) by step. Logs go to `RUN/logs/` (`tensorboard --logdir
RUN/logs`); wandb runs offline there (`wandb sync` uploads later). Only the main process
writes; elsewhere a `Tracker` does nothing, as does `--report-to none`.

The training loops make one call per event: `start_tracking(...)` once, `tracker.log(...)`
or `tracker.log_image(...)`, then `tracker.end()`. Part of the training toolkit
(`classifier.training`).
"""

from __future__ import annotations

import importlib.util
import math
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from manifests.errors import UserError

REPORT_TO = ("none", "tensorboard", "wandb")
TRACKING_DIR = "logs"  # under a run folder
PROJECT = "cxraug"

# Classifier epoch record keys -> tracker names.
CLASSIFIER_SCALARS = {
    "train_loss": "train/loss",
    "lr": "train/lr",
    "train_images_per_s": "train/images_per_s",
    "loader_wait_s": "train/loader_wait_s",
    "val_loss": "val/loss",
    "val_macro_auroc": "val/macro_auroc",
}


def check_report_to(value: str) -> str:
    """`value` if valid and its tracker is installed, else a UserError saying what to do."""
    value = (value or "none").strip().lower()
    if value not in REPORT_TO:
        raise UserError(f"--report-to: {value!r} is not valid; valid: {', '.join(REPORT_TO)}")
    needs = {"tensorboard": "tensorboard", "wandb": "wandb"}.get(value)
    if needs and importlib.util.find_spec(needs) is None:
        raise UserError(
            f"--report-to {value}: the {needs} package is not installed; "
            f"pip install 'cxraug[{needs}]' (or pip install {needs}), or use --report-to none"
        )
    return value


def _flat_config(config: Mapping, prefix: str = "") -> dict[str, object]:
    """Nested config -> {'a/b': scalar}; other values as strings (trackers take scalars)."""
    flat: dict[str, object] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(_flat_config(value, f"{name}/"))
        elif value is None or isinstance(value, bool | int | float | str):
            flat[name] = "None" if value is None else value
        else:
            flat[name] = str(value)
    return flat


class Tracker:
    """The trackers of one run; every method is a no-op when there are none."""

    def __init__(self, trackers: list | None = None) -> None:
        self.trackers = list(trackers or [])

    def __bool__(self) -> bool:
        return bool(self.trackers)

    def log(
        self, values: Mapping[str, object], step: int, names: Mapping[str, str] | None = None
    ) -> None:
        """Log the finite numbers of `values` at `step` (renamed through `names`, which also
        selects: keys it lacks are left out)."""
        if not self.trackers:
            return
        scalars = {}
        for key, value in values.items():
            name = names.get(key) if names is not None else key
            if name is None or isinstance(value, bool):
                continue
            if isinstance(value, int | float | np.floating | np.integer) and math.isfinite(value):
                scalars[name] = float(value)
        if scalars:
            for tracker in self.trackers:
                tracker.log(scalars, step=step)

    def log_image(self, name: str, image: np.ndarray | str | Path, step: int) -> None:
        """Log a grayscale or RGB image (uint8 array, or a PNG path) at `step`."""
        if not self.trackers:
            return
        if isinstance(image, str | Path):
            from PIL import Image

            with Image.open(image) as img:
                image = np.asarray(img.convert("L") if img.mode in ("I", "I;16") else img)
        array = np.asarray(image)
        for tracker in self.trackers:
            if tracker.name == "tensorboard":
                formats = "HW" if array.ndim == 2 else "HWC"
                tracker.writer.add_image(name, array, global_step=step, dataformats=formats)
                tracker.writer.flush()
            else:
                tracker.log_images({name: [array]}, step=step)

    def end(self) -> None:
        for tracker in self.trackers:
            tracker.finish()
        self.trackers = []


def start_tracking(
    report_to: str,
    out: Path,
    config: Mapping[str, object],
    accelerator=None,
    run_name: str | None = None,
) -> Tracker:
    """Start the trackers `report_to` names for the run in `out` and store its config.

    Args:
        report_to: none, tensorboard or wandb (see `check_report_to`).
        out: the run folder; logs go to `out/logs/`.
        config: the run's config (nested dicts are flattened to `a/b` keys).
        accelerator: the run's Accelerator (or PartialState); trackers only on its main
            process.
        run_name: the run's name (default: the folder's name).
    """
    report_to = check_report_to(report_to)
    if report_to == "none" or (accelerator is not None and not accelerator.is_main_process):
        return Tracker()
    logging_dir = Path(out) / TRACKING_DIR
    logging_dir.mkdir(parents=True, exist_ok=True)
    run_name = run_name or Path(out).resolve().name
    if report_to == "tensorboard":
        from accelerate.tracking import TensorBoardTracker

        tracker = TensorBoardTracker(run_name, logging_dir)
    else:
        from accelerate.tracking import WandBTracker

        mode = os.environ.get("WANDB_MODE", "offline")  # offline unless the user says otherwise
        tracker = WandBTracker(PROJECT, name=run_name, dir=str(logging_dir), mode=mode)
    if hasattr(tracker, "start"):  # accelerate >= 1.3 starts trackers separately
        tracker.start()
    tracker.store_init_configuration(_flat_config(config))
    return Tracker([tracker])


__all__ = [
    "CLASSIFIER_SCALARS",
    "REPORT_TO",
    "TRACKING_DIR",
    "Tracker",
    "check_report_to",
    "start_tracking",
]
