"""Small builders shared by tests (not fixtures: plain functions)."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from manifests.images import save_png
from manifests.io import Manifest, read_manifest, write_manifest
from manifests.phantom import write_phantom_dataset
from manifests.schema import CHEXPERT_LABELS
from manifests.splits import split_by_patient

if TYPE_CHECKING:
    from augmentor.config import SynthesisConfig


def make_rows(n: int, patients: int, seed: int = 0, labels=CHEXPERT_LABELS) -> pd.DataFrame:
    """`n` valid real rows over `patients` patients with random 1/0/-1/NaN labels."""
    rng = np.random.default_rng(seed)
    patient = [f"p{i % patients:05d}" for i in range(n)]
    rows = pd.DataFrame(
        {
            "image_path": [f"images/{i:06d}.png" for i in range(n)],
            "source": "real",
            "dataset": "test",
            "patient_id": patient,
            "study_id": [f"{p}-s{i // patients}" for i, p in enumerate(patient)],
            "split": "train",
            "view": "PA",
            "sex": rng.choice(["M", "F"], size=n),
            "age": rng.integers(20, 90, size=n).astype(float),
            "report": "No acute cardiopulmonary process.",
        }
    )
    for label in labels:
        rows[label] = rng.choice(np.array([1.0, 0.0, -1.0, np.nan], dtype=np.float32), size=n)
    return rows


def set_synthesis_columns(rows: pd.DataFrame, **values) -> None:
    """Fill the columns of synthetic rows (prompt, seed, sampler, generator, hash) with
    constants, in place; `values` overrides the defaults by column name."""
    defaults = {
        "prompt": "Small left effusion.",
        "seed": 1,
        "guidance_scale": 4.0,
        "num_inference_steps": 20,
        "scheduler": "DDIMScheduler",
        "target_label": "Pleural Effusion",
        "generator": "gen",
        "image_sha256": "0" * 64,
    }
    for column, value in {**defaults, **values}.items():
        rows[column] = value


def make_manifest(
    root: Path, n: int = 20, patients: int = 8, seed: int = 0, images: bool = False
) -> Manifest:
    """A valid manifest rooted at `root`; with `images`, also writes small PNGs."""
    rows = make_rows(n, patients, seed)
    if images:
        (root / "images").mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(seed)
        for p in rows["image_path"]:
            save_png(rng.integers(0, 255, size=(16, 16), dtype=np.uint8), root / p)
    return Manifest(rows=rows, labels=CHEXPERT_LABELS, root=root)


def synthesis_config(model: Path, prompts: Path, out: Path, **kw) -> SynthesisConfig:
    """A seconds-long synthesis from the generator folder `model` and the prompts manifest
    `prompts` into `out`: 2 sampling steps, batches of 2, labels `x:1` unless `kw` says."""
    # Deferred: the synthesis module pulls in torch and diffusers, which most tests never need.
    from augmentor.config import SynthesisConfig

    kw.setdefault("num_inference_steps", 2)
    kw.setdefault("batch_size", 2)
    return SynthesisConfig(
        model=str(model), prompts_from=str(prompts), out=str(out), **{"labels": "x:1", **kw}
    )


def write_split_phantom(out: Path, n: int, seed: int, patients: int) -> Path:
    """A phantom dataset of `n` 64 px images over `patients` patients in `out`, split
    0.6/0.2/0.2 by patient; returns its manifest's path."""
    path = write_phantom_dataset(out, n=n, size=64, seed=seed, patients=patients)
    split = split_by_patient(read_manifest(path), (0.6, 0.2, 0.2), seed=0)
    write_manifest(split, path, overwrite=True)
    return path


def image_folder(tmp_path_factory, name: str) -> Path:
    """A fresh temporary folder `name` with an empty `images/` in it, to root a manifest."""
    root = tmp_path_factory.mktemp(name)
    (root / "images").mkdir()
    return root


def free_port() -> int:
    """A TCP port free right now (the OS picks it): `accelerate launch --main_process_port`,
    so two-process tests running side by side never meet on the default port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
