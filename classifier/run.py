"""The classifier run folder: its file names, reader and writer (nobody else spells them).

A run folder holds:

* ``config.json``: written when the run starts. Everything needed to rebuild the model and
  redo the run: ``backbone`` (timm name), ``labels``, ``image_size``, ``in_chans``,
  ``mean``/``std`` (input normalisation), uncertain policy, mix, seed, arm, train counts,
  input digests.
* ``model.safetensors``: the weights of the best validation epoch.
* ``predictions.parquet``: ``image_path``, ``patient_id``, ``study_id``, ``sex``, ``age``,
  then per label ``true.<label>`` (raw 1/0/-1/NaN) and ``prob.<label>`` (runs from before
  demographics lack ``sex`` and ``age``).
* ``val_predictions.parquet``: the same table for the real val rows, from the weights that
  are scored on test; the fairness report fixes its decision thresholds on it (runs from
  before it was written have none).
* ``training_patients.json``: what the run's weights saw (`manifests.provenance.SeenPatients`):
  the patients whose images or reports trained it (its real train rows, its synthetic set's
  prompt, generator and oracle filter patients, its ``--init-from`` run's), their digest,
  and the validation patients that chose its epoch; checked when the run is used as
  ``--init-from`` or ``--filter-with``.
* ``metrics.json``: the test evaluation; written last, so its presence means finished.
* ``checkpoints/checkpoint-N/``: the training state after epoch N (`classifier.training.checkpointer`).

`classifier.train` writes runs, `classifier.evaluate` scores them, `classifier.report`
and `augmentor` (oracle, features) read them, all through this module.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from manifests.errors import UserError
from manifests.files import atomic_path, read_json, write_json
from manifests.provenance import SeenPatients
from manifests.runfolder import FolderFormat

CONFIG_FILE = "config.json"
MODEL_FILE = "model.safetensors"
METRICS_FILE = "metrics.json"
PREDICTIONS_FILE = "predictions.parquet"
VAL_PREDICTIONS_FILE = "val_predictions.parquet"
PATIENTS_FILE = "training_patients.json"
FORMAT = FolderFormat(kind="classifier run", started_file=CONFIG_FILE, done_file=METRICS_FILE)
RUN_KEYS = ("labels", "seed")  # what every reader relies on (report, oracle)
MODEL_KEYS = ("backbone", "labels", "image_size", "mean", "std")  # what `load_model` needs


def is_run(path: Path) -> bool:
    return (Path(path) / CONFIG_FILE).is_file()


def is_finished(path: Path) -> bool:
    return (Path(path) / METRICS_FILE).is_file()


def read_config(run_dir: Path, flag: str = "run", required: Sequence[str] = RUN_KEYS) -> dict:
    """A run's config.json, checked for the `required` keys (UserError otherwise)."""
    run_dir = Path(run_dir)
    if not is_run(run_dir):
        what = "not found" if not run_dir.exists() else f"no {CONFIG_FILE}"
        raise UserError(
            f"{flag} {run_dir}: not a classifier run directory ({what}); pass the output folder "
            "of cxraug train-classifier"
        )
    config = read_json(run_dir / CONFIG_FILE, "classifier run config")
    missing = [k for k in required if k not in config]
    if missing:
        raise UserError(
            f"{run_dir / CONFIG_FILE}: no {', '.join(missing)}; not a cxraug classifier run"
        )
    return config


def write_config(run_dir: Path, config: dict) -> None:
    write_json(Path(run_dir) / CONFIG_FILE, config)


def write_seen_patients(run_dir: Path, seen: SeenPatients) -> None:
    write_json(Path(run_dir) / PATIENTS_FILE, seen.to_dict())


def read_seen_patients(run_dir: Path) -> SeenPatients | None:
    """What the run's weights saw; None for a run from before this record."""
    path = Path(run_dir) / PATIENTS_FILE
    if not path.is_file():
        return None
    return SeenPatients.from_dict(read_json(path, "classifier run patients"), str(path))


def read_metrics(run_dir: Path) -> dict:
    run_dir = Path(run_dir)
    if not is_finished(run_dir):
        raise UserError(
            f"{run_dir}: the run has not finished (no {METRICS_FILE}); finish it with "
            "cxraug train-classifier --resume, or leave it out"
        )
    return read_json(run_dir / METRICS_FILE, "classifier run metrics")


def write_metrics(run_dir: Path, metrics: dict) -> None:
    """Write metrics.json (last: its presence marks the run finished)."""
    write_json(Path(run_dir) / METRICS_FILE, metrics)


def _write_table(path: Path, frame: pd.DataFrame) -> Path:
    with atomic_path(path, overwrite=True) as tmp:
        frame.to_parquet(tmp, index=False)
    return path


def _read_table(path: Path) -> pd.DataFrame:
    try:
        return pd.read_parquet(path)
    except Exception as e:  # pyarrow raises several types for a damaged file
        raise UserError(f"{path}: not a readable Parquet file ({e.__class__.__name__})") from None


def write_predictions(run_dir: Path, frame: pd.DataFrame) -> Path:
    """Write the (test) predictions table atomically (Parquet)."""
    return _write_table(Path(run_dir) / PREDICTIONS_FILE, frame)


def write_val_predictions(run_dir: Path, frame: pd.DataFrame) -> Path:
    """Write the val predictions table (the layout of `predictions.parquet`) atomically."""
    return _write_table(Path(run_dir) / VAL_PREDICTIONS_FILE, frame)


def read_predictions(run_dir: Path) -> tuple[pd.DataFrame, list[str]]:
    """A run's predictions table and its labels (in column order)."""
    path = Path(run_dir) / PREDICTIONS_FILE
    if not path.is_file():
        raise UserError(f"{run_dir}: no {PREDICTIONS_FILE}; the run has not finished")
    frame = _read_table(path)
    labels = [c[len("prob.") :] for c in frame.columns if c.startswith("prob.")]
    return frame, labels


def read_val_predictions(run_dir: Path) -> pd.DataFrame | None:
    """A run's val predictions table; None for a run from before it was written."""
    path = Path(run_dir) / VAL_PREDICTIONS_FILE
    return _read_table(path) if path.is_file() else None


def model_path(run_dir: Path) -> Path:
    return Path(run_dir) / MODEL_FILE


def save_model(model, run_dir: Path) -> None:
    """Write a model's weights as `model.safetensors`, atomically."""
    from safetensors.torch import save_model as st_save_model

    with atomic_path(model_path(run_dir), overwrite=True) as tmp:
        st_save_model(model, str(tmp))


def load_state_dict(run_dir: Path) -> dict:
    """The run's best weights (safetensors only), UserError if missing or damaged."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = model_path(run_dir)
    if not path.is_file():
        raise UserError(f"{run_dir}: no {MODEL_FILE}; the run has not finished an epoch")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError) as e:
        raise UserError(f"{path}: not a readable safetensors file ({e})") from None


def load_model(run_dir: Path, device="cpu", flag: str = "run"):
    """A run's timm model (best weights, eval mode) and its config dict.

    `model(x)` gives logits over `config["labels"]`;
    `model.forward_head(model.forward_features(x), pre_logits=True)` pooled features. Inputs:
    `config["in_chans"]`-channel images of `config["image_size"]`, in [0, 1], normalised
    with `config["mean"]`, `config["std"]` (`classifier.data.to_model_input`).
    """
    import timm

    config = read_config(run_dir, flag, MODEL_KEYS)
    try:
        model = timm.create_model(
            config["backbone"],
            num_classes=len(config["labels"]),
            in_chans=int(config.get("in_chans", 1)),
            pretrained=False,
        )
    except RuntimeError as e:  # timm: "Unknown model (...)"
        raise UserError(f"{run_dir}: timm cannot build {config['backbone']!r} ({e})") from None
    try:
        model.load_state_dict(load_state_dict(run_dir))
    except RuntimeError as e:
        raise UserError(
            f"{model_path(run_dir)}: weights do not fit {config['backbone']!r} "
            f"({str(e).splitlines()[0]})"
        ) from None
    return model.to(device).eval(), config


def find_runs(paths: Sequence[Path]) -> list[Path]:
    """Each path is a run folder or a folder of run folders (e.g. STUDY/runs); no repeats."""
    out: list[Path] = []
    for path in map(Path, paths):
        if is_run(path):
            out.append(path)
            continue
        children = sorted(p for p in path.iterdir() if is_run(p)) if path.is_dir() else []
        if not children:
            what = "does not exist" if not path.exists() else f"has no {CONFIG_FILE}"
            raise UserError(
                f"{path}: not a classifier run directory ({what}); give run folders written by "
                "cxraug train-classifier, or a folder of them"
            )
        out.extend(children)
    seen: set[Path] = set()
    unique = []
    for path in out:
        key = path.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(path)
    return unique


__all__ = [
    "CONFIG_FILE",
    "FORMAT",
    "METRICS_FILE",
    "MODEL_FILE",
    "PATIENTS_FILE",
    "PREDICTIONS_FILE",
    "VAL_PREDICTIONS_FILE",
    "find_runs",
    "is_finished",
    "is_run",
    "load_model",
    "load_state_dict",
    "read_config",
    "read_metrics",
    "read_predictions",
    "read_seen_patients",
    "read_val_predictions",
    "save_model",
    "write_config",
    "write_metrics",
    "write_predictions",
    "write_val_predictions",
    "write_seen_patients",
]
