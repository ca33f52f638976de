"""Manifest v1 as code: columns, types, label sets, and validation.

A manifest is a Parquet table with one row per image (see DESIGN.md). Validation is
vectorised so that a million-row manifest validates in about a second, and every failure
names the column and the first offending row.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
import pandas as pd
import pyarrow as pa

from manifests.errors import UserError

SCHEMA_VERSION = "1"

CHEXPERT_LABELS: tuple[str, ...] = (
    "No Finding",
    "Enlarged Cardiomediastinum",
    "Cardiomegaly",
    "Lung Opacity",
    "Lung Lesion",
    "Edema",
    "Consolidation",
    "Pneumonia",
    "Atelectasis",
    "Pneumothorax",
    "Pleural Effusion",
    "Pleural Other",
    "Fracture",
    "Support Devices",
)

# NIH ChestX-ray14's 14 findings, spelled with spaces ("Pleural_Thickening" in its CSV).
NIH_LABELS: tuple[str, ...] = (
    "Atelectasis",
    "Cardiomegaly",
    "Effusion",
    "Infiltration",
    "Mass",
    "Nodule",
    "Pneumonia",
    "Pneumothorax",
    "Consolidation",
    "Edema",
    "Emphysema",
    "Fibrosis",
    "Pleural Thickening",
    "Hernia",
)

LABEL_SETS: dict[str, tuple[str, ...]] = {"chexpert": CHEXPERT_LABELS, "nih": NIH_LABELS}
DEFAULT_LABEL_SET = "chexpert"

SOURCES = ("real", "synthetic")
SPLITS = ("train", "val", "test")

# Core columns every manifest has, with their Arrow types and whether nulls are allowed.
CORE_COLUMNS: dict[str, tuple[pa.DataType, bool]] = {
    "image_path": (pa.string(), False),
    "source": (pa.string(), False),
    "dataset": (pa.string(), False),
    "patient_id": (pa.string(), False),
    "study_id": (pa.string(), False),
    "split": (pa.string(), False),
    "view": (pa.string(), True),
    "sex": (pa.string(), True),
    "age": (pa.float64(), True),
    "report": (pa.string(), True),
}
# Columns that say exactly how a synthetic row was made; null on real rows.
SYNTHETIC_COLUMNS: dict[str, pa.DataType] = {
    "prompt": pa.string(),
    "seed": pa.int64(),
    "guidance_scale": pa.float64(),
    "num_inference_steps": pa.int64(),
    "scheduler": pa.string(),
    "target_label": pa.string(),
    "generator": pa.string(),
}
HASH_COLUMN = "image_sha256"

META_VERSION = b"cxraug.schema_version"
META_LABELS = b"cxraug.labels"
META_LABEL_SET = b"cxraug.label_set"
META_GENERATOR_DIGEST = b"cxraug.generator_digest"


def label_set(name: str) -> tuple[str, ...]:
    """The labels of a named label set (`chexpert`, `nih`)."""
    key = name.strip().lower()
    if key not in LABEL_SETS:
        raise UserError(f"unknown label set {name!r}; valid: {', '.join(LABEL_SETS)}")
    return LABEL_SETS[key]


def label_set_name(labels: Sequence[str]) -> str:
    """`chexpert`/`nih` when `labels` is exactly that set, else `custom`."""
    for name, values in LABEL_SETS.items():
        if tuple(labels) == values:
            return name
    return "custom"


def normalize_label_name(name: str) -> str:
    """`pleural_effusion`, `Pleural-Effusion` and `pleural effusion` all map to one key."""
    return re.sub(r"[\s_\-]+", " ", name.strip()).lower()


def resolve_label(name: str, labels: Sequence[str], flag: str = "--labels") -> str:
    """Map a user's spelling of a label to its canonical name in `labels` (case-insensitive)."""
    by_key = {normalize_label_name(label): label for label in labels}
    key = normalize_label_name(name)
    if key not in by_key:
        raise UserError(f"{flag}: unknown label {name!r}; valid: {', '.join(labels)}")
    return by_key[key]


def arrow_schema(labels: Sequence[str], synthetic: bool = False, hashes: bool = True) -> pa.Schema:
    """The Arrow schema of a manifest with these label columns."""
    fields = [
        pa.field(name, typ, nullable=nullable) for name, (typ, nullable) in CORE_COLUMNS.items()
    ]
    fields += [pa.field(label, pa.float32()) for label in labels]
    if synthetic:
        fields += [pa.field(name, typ) for name, typ in SYNTHETIC_COLUMNS.items()]
    if hashes or synthetic:
        fields.append(pa.field(HASH_COLUMN, pa.string()))
    return pa.schema(fields)


def _first_bad(mask: np.ndarray) -> int:
    return int(np.flatnonzero(mask)[0])


def _fail(where: str, column: str, row: int, what: str) -> None:
    raise UserError(f"{where}: column {column!r} row {row}: {what}")


def validate_frame(frame: pd.DataFrame, labels: Sequence[str], where: str = "manifest") -> None:
    """Check a manifest table against manifest v1; raise UserError naming column and row.

    `where` names the file (or flag) in the message. Rows are numbered from 0 as in the table.
    """
    missing = [c for c in CORE_COLUMNS if c not in frame.columns]
    missing += [label for label in labels if label not in frame.columns]
    if missing:
        raise UserError(f"{where}: missing column(s) {', '.join(map(repr, missing))}")
    if len(set(labels)) != len(labels):
        raise UserError(f"{where}: duplicate label names in {list(labels)}")

    for column, (_, nullable) in CORE_COLUMNS.items():
        values = frame[column]
        if not nullable:
            bad = values.isna().to_numpy().copy()
            if column != "age":
                bad = bad | (values.astype("string").str.len().fillna(0).to_numpy() == 0)
            if bad.any():
                _fail(where, column, _first_bad(bad), "empty value (required)")

    for column, allowed in (("source", SOURCES), ("split", SPLITS)):
        bad = ~frame[column].isin(allowed).to_numpy()
        if bad.any():
            row = _first_bad(bad)
            _fail(
                where,
                column,
                row,
                f"{frame[column].iloc[row]!r} is not one of {', '.join(allowed)}",
            )

    age = pd.to_numeric(frame["age"], errors="coerce")
    bad = (age.isna() & frame["age"].notna()).to_numpy() | (age < 0).to_numpy()
    if bad.any():
        row = _first_bad(bad)
        _fail(where, "age", row, f"{frame['age'].iloc[row]!r} is not a non-negative number")

    for label in labels:
        values = pd.to_numeric(frame[label], errors="coerce").to_numpy(dtype=np.float64)
        bad = ~(np.isnan(values) | np.isin(values, (1.0, 0.0, -1.0)))
        bad |= (
            np.isnan(values) & frame[label].notna().to_numpy() & ~pd.isna(frame[label]).to_numpy()
        )
        if bad.any():
            row = _first_bad(bad)
            _fail(where, label, row, f"{frame[label].iloc[row]!r} is not 1, 0, -1 or NaN")

    paths = frame["image_path"].astype(str)
    repeated = paths.duplicated().to_numpy()
    if repeated.any():  # importers refuse these too: an image counted twice skews everything
        row = _first_bad(repeated)
        first = _first_bad((paths == paths.iloc[row]).to_numpy())
        _fail(
            where,
            "image_path",
            row,
            f"{paths.iloc[row]!r} is listed twice (first at row {first}); one row per image",
        )
    escapes = paths.str.contains(r"(?:^|[\\/])\.\.(?:[\\/]|$)", regex=True).to_numpy()
    if escapes.any():
        row = _first_bad(escapes)
        _fail(where, "image_path", row, f"{paths.iloc[row]!r} escapes the manifest's root ('..')")

    synthetic = (frame["source"] == "synthetic").to_numpy()
    if synthetic.any():
        bad = synthetic & (frame["split"] != "train").to_numpy()
        if bad.any():
            _fail(where, "split", _first_bad(bad), "synthetic rows must be in split 'train'")
        absolute = synthetic & paths.str.startswith("/").to_numpy()
        if absolute.any():
            _fail(
                where, "image_path", _first_bad(absolute), "synthetic images must be relative paths"
            )
        for column in (*SYNTHETIC_COLUMNS, HASH_COLUMN):
            if column not in frame.columns:
                raise UserError(f"{where}: synthetic rows need column {column!r}")
            bad = synthetic & frame[column].isna().to_numpy()
            if bad.any():
                _fail(where, column, _first_bad(bad), "empty on a synthetic row (required)")


def coerce_frame(frame: pd.DataFrame, labels: Sequence[str]) -> pd.DataFrame:
    """Return `frame` with manifest dtypes (strings, float32 labels) and schema column order."""
    out = frame.copy()
    for column, (typ, _) in CORE_COLUMNS.items():
        if typ == pa.string():
            out[column] = (
                out[column].astype("string").astype(object).where(out[column].notna(), None)
            )
        else:
            out[column] = pd.to_numeric(out[column], errors="coerce").astype("float64")
    for label in labels:
        out[label] = pd.to_numeric(out[label], errors="coerce").astype(np.float32)
    order = list(CORE_COLUMNS) + list(labels)
    rest = [c for c in out.columns if c not in order]
    return out[order + rest]
