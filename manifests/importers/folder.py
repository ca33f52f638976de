"""Any folder of PNG/JPEG/DICOM images (+ an optional labels CSV) -> manifest.

The CSV has a `path` column (relative to `--root`) and optionally `patient_id`, `study_id`,
`view`, `sex`, `age`, `report`, `split` (an official train/val/test) and one column per
label, named as in the label set (`Pneumonia`, `No Finding`, `pleural_effusion`: any case,
spaces or underscores). Label values: 1, 0, -1, blank (NaN). Columns named after labels of
the other set map where the names correspond (`Effusion` -> `Pleural Effusion`). Any other
column is an error that lists the valid names: a misspelt label must not vanish silently.

Without a CSV every image under `--root` is imported with NaN labels. Without a
`patient_id` column each image is its own patient, which the manifest's notes say.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from manifests.errors import UserError
from manifests.images import DICOM_SUFFIXES, IMAGE_SUFFIXES
from manifests.importers.common import (
    WHERE,
    absolute_posix,
    finish_import,
    import_request,
    label_key,
    normalize_sex,
    normalize_view,
    official_split,
    parse_age,
    parse_label_values,
    read_csv_checked,
    relabel,
    report_section,
    safe_relative,
    section_counts_note,
    where_lines,
)
from manifests.io import Manifest
from manifests.schema import LABEL_SETS, normalize_label_name

DATASET = "folder"
META_COLUMNS = ("path", "patient_id", "study_id", "view", "sex", "age", "report", "split")
ALL_LABELS = tuple(dict.fromkeys(label for labels in LABEL_SETS.values() for label in labels))


def scan_images(root: Path) -> list[str]:
    """Relative POSIX paths of every PNG/JPEG/DICOM file under `root`, sorted."""
    suffixes = set(IMAGE_SUFFIXES) | set(DICOM_SUFFIXES)
    found = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in files:
            if Path(name).suffix.lower() in suffixes and not name.startswith("."):
                found.append(Path(folder, name).relative_to(root).as_posix())
    if not found:
        raise UserError(f"--root {root}: no PNG, JPEG or DICOM images under it")
    return sorted(found)


def classify_columns(
    columns: list[str], target: tuple[str, ...], target_name: str, csv: Path
) -> tuple[dict[str, str], dict[str, str]]:
    """Split CSV columns into (metadata name -> column, canonical label -> column)."""
    meta_keys = {normalize_label_name(c): c for c in META_COLUMNS}
    label_keys = {normalize_label_name(label): label for label in (*target, *ALL_LABELS)}
    meta: dict[str, str] = {}
    labels: dict[str, str] = {}
    seen: dict[str, str] = {}
    for column in columns:
        key = normalize_label_name(column)
        if key in meta_keys:
            name = meta_keys[key]
            if name in meta:
                raise UserError(f"{csv}: columns {meta[name]!r} and {column!r} both mean {name!r}")
            meta[name] = column
        elif key in label_keys:
            label = label_keys[key]
            if label_key(label) in seen:
                raise UserError(
                    f"{csv}: columns {seen[label_key(label)]!r} and {column!r} name the same label"
                )
            seen[label_key(label)] = column
            labels[label] = column
        else:
            raise UserError(
                f"{csv}: column {column!r} is neither a {target_name} label nor a known column; "
                f"valid labels: {', '.join(target)}; other columns: {', '.join(META_COLUMNS)}"
            )
    if "path" not in meta:
        raise UserError(f"{csv}: missing column 'path' (image paths relative to --root)")
    return meta, labels


def import_folder(
    root: Path,
    labels_csv: Path | None = None,
    label_set: str | None = None,
    frontal_only: bool = False,
    check_images: bool = False,
) -> Manifest:
    """Import a folder of images, labelled by an optional CSV (image paths absolute).

    Args:
        root: the folder the CSV's `path` values are relative to.
        labels_csv: the CSV described in this module's docstring; without it every image
            under `root` is imported, unlabelled.
        label_set: `chexpert` (default) or `nih`.
        frontal_only: keep PA/AP images only (needs a `view` column).
        check_images: decode every image (slow); otherwise only check that files exist.
    """
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"--root {root}: not a folder")
    request = import_request(DATASET, root, label_set, "chexpert", frontal_only, check_images)
    target_name, target = request.label_set, request.labels
    notes: list[str] = []

    if labels_csv is None:
        paths = scan_images(root)
        frame = pd.DataFrame({"path": paths})
        where = [f"{root} file {p}" for p in paths]
        meta, label_columns = {"path": "path"}, {}
        notes.append(f"no --labels-csv: {len(paths)} images under {root}, all labels NaN")
    else:
        labels_csv = Path(labels_csv)
        frame = read_csv_checked(labels_csv, [], keep_default_na=False, na_values=[""])
        where = where_lines(labels_csv, len(frame))
        meta, label_columns = classify_columns(list(frame.columns), target, target_name, labels_csv)

    rows = pd.DataFrame(index=frame.index)
    rows[WHERE] = where
    relative = [
        safe_relative(value, where[i], meta["path"], root)
        for i, value in enumerate(frame[meta["path"]].astype("string").fillna(""))
    ]
    duplicated = pd.Series(relative).duplicated().to_numpy()
    if duplicated.any():
        i = int(np.flatnonzero(duplicated)[0])
        raise UserError(f"{where[i]}: image {relative[i]!r} is listed twice")
    prefix = absolute_posix(root)
    rows["image_path"] = [f"{prefix}/{p}" for p in relative]

    def text_column(name: str) -> pd.Series | None:
        if name not in meta:
            return None
        text = frame[meta[name]].astype("string").str.strip()
        return text.where(text.fillna("") != "", pd.NA)

    patient = text_column("patient_id")
    if patient is None:
        rows["patient_id"] = relative
        notes.append(
            "no patient_id column: each image is its own patient, so a patient-disjoint "
            "split cannot keep one patient's images together"
        )
    else:
        if patient.isna().any():
            i = int(np.flatnonzero(patient.isna().to_numpy())[0])
            raise UserError(f"{where[i]}: column {meta['patient_id']!r} is empty")
        rows["patient_id"] = patient.astype(object).to_numpy()
    study = text_column("study_id")
    if study is None:
        rows["study_id"] = relative  # no study grouping known: one study per image
    else:
        rows["study_id"] = study.astype(object).where(study.notna(), pd.Series(relative)).to_numpy()

    rows["view"] = normalize_view(frame[meta["view"]]) if "view" in meta else None
    if frontal_only and "view" not in meta:
        raise UserError("--frontal-only: the labels CSV has no 'view' column to filter on")
    rows["sex"] = normalize_sex(frame[meta["sex"]]) if "sex" in meta else None
    rows["age"] = parse_age(frame[meta["age"]], where, meta["age"]) if "age" in meta else np.nan
    report = text_column("report")
    if report is None:
        rows["report"] = None
    else:
        sections = [report_section(t if pd.notna(t) else None) for t in report]
        rows["report"] = [text for text, _ in sections]
        notes.append(section_counts_note([kind for _, kind in sections], "reports"))
    if "split" in meta:
        rows["official_split"] = official_split(frame[meta["split"]], where, meta["split"])

    if label_columns:
        values = parse_label_values(frame, list(label_columns.values()), where)
        values.columns = list(label_columns)
        mapped, unmapped, dropped = relabel(values, target)
        if unmapped:
            notes.append(f"{len(unmapped)} label(s) not in the CSV are NaN: {', '.join(unmapped)}")
        if dropped:
            notes.append(
                f"CSV label column(s) with no {target_name} counterpart dropped: "
                f"{', '.join(dropped)}"
            )
    else:
        mapped = pd.DataFrame(
            {label: np.full(len(rows), np.nan, dtype=np.float32) for label in target},
            index=rows.index,
        )
        if labels_csv is not None:
            notes.append("the labels CSV has no label columns: all labels NaN")

    sources = {"labels_csv": str(labels_csv.absolute()) if labels_csv is not None else None}
    return finish_import(request, rows, mapped, notes, sources)
