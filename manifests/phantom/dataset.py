"""The phantom dataset on disk: PNG images plus a manifest v1 (`write_phantom_dataset`)."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from manifests.errors import UserError
from manifests.files import check_output_folder
from manifests.io import Manifest, write_manifest
from manifests.phantom.drawing import draw_phantom
from manifests.phantom.findings import (
    PHANTOM_DESIGN,
    Study,
    phantom_studies,
    study_ctr,
    study_labels,
)
from manifests.phantom.reports import study_report
from manifests.schema import CHEXPERT_LABELS

DATASET = "phantom"
NOTE = (
    "synthetic phantom chest radiographs drawn by cxraug demo-data: a demo and test "
    "fixture, never clinical data"
)


def encode_png(image: np.ndarray) -> bytes:
    """An 8-bit grayscale PNG of `image` (deterministic bytes)."""
    buf = io.BytesIO()
    Image.fromarray(image, mode="L").save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def _study_row(study: Study, image_path: str, sha: str, seed: int) -> dict:
    rng = np.random.default_rng([seed, study.patient.index, study.study_index + 1, 7])
    impression, findings_text = study_report(study, rng)
    row = {
        "image_path": image_path,
        "source": "real",
        "dataset": DATASET,
        "patient_id": study.patient.patient_id,
        "study_id": study.study_id,
        "split": "train",
        "view": study.view,
        "sex": study.patient.sex,
        "age": study.age,
        "report": impression,
    }
    row.update(study_labels(study))
    row["report_findings"] = findings_text
    row["phantom_findings"] = json.dumps(study.findings, sort_keys=True)
    row["phantom_ctr"] = study_ctr(study)
    row["image_sha256"] = sha
    return row


def write_phantom_dataset(
    out: Path,
    n: int,
    size: int = 128,
    seed: int = 0,
    patients: int | None = None,
    overwrite: bool = False,
    first_patient: int = 0,
) -> Path:
    """Draw `n` phantom studies as PNGs under `out/images/` and write the manifest.

    Args:
        out: output folder; gets `images/*.png` and `manifest.parquet`.
        n: number of images (one per study).
        size: image side in pixels (at least 32).
        seed: everything (anatomy, findings, reports, noise) is deterministic in it.
        patients: number of patients (default n/3: several studies each).
        first_patient: number of the first patient (`manifests.phantom.phantom_studies`);
            a pool drawn from past every other draw's patients shares none with them.
        overwrite: replace an existing `manifest.parquet`.

    Returns:
        The path of `out/manifest.parquet` (all rows real, split 'train').
    """
    if n <= 0:
        raise UserError(f"--n: {n} images requested; valid: a positive number")
    if size < 32:
        raise UserError(f"--size: {size} px is too small; valid: 32 or more")
    out = Path(out)
    path = out / "manifest.parquet"
    check_output_folder(out, "OUT")  # a link, a file in the way, no permission: first
    if path.exists() and not overwrite:
        raise UserError(f"{path}: already exists; pass --overwrite to replace it")
    studies = phantom_studies(n, seed=seed, patients=patients, first_patient=first_patient)
    images = out / "images"
    images.mkdir(parents=True, exist_ok=True)
    rows = []
    for study in studies:
        data = encode_png(draw_phantom(study, size))
        rel = f"images/{study.study_id}.png"
        (out / rel).write_bytes(data)
        rows.append(_study_row(study, rel, hashlib.sha256(data).hexdigest(), seed))
    frame = pd.DataFrame.from_records(rows)
    meta = {
        "cxraug.notes": json.dumps([NOTE]),
        "cxraug.phantom": json.dumps(
            {
                "n": n,
                "size": size,
                "seed": seed,
                "patients": len({s.patient.index for s in studies}),
                "first_patient": first_patient,
                "design": PHANTOM_DESIGN,
            }
        ),
    }
    manifest = Manifest(rows=frame, labels=CHEXPERT_LABELS, root=out, metadata=meta)
    return write_manifest(manifest, path, overwrite=overwrite)
