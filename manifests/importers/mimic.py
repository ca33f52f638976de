"""MIMIC-CXR-JPG v2.0.0 -> manifest.

Layout (as PhysioNet ships it)::

    ROOT/files/pXX/pSUBJECT/sSTUDY/DICOM_ID.jpg
    ROOT/mimic-cxr-2.0.0-metadata.csv(.gz)   dicom_id, subject_id, study_id, ViewPosition, ...
    ROOT/mimic-cxr-2.0.0-chexpert.csv(.gz)   subject_id, study_id, 14 CheXpert labels
    ROOT/mimic-cxr-2.0.0-negbio.csv(.gz)     same columns, NegBio labeler
    ROOT/mimic-cxr-2.0.0-split.csv(.gz)      dicom_id, study_id, subject_id, split
    REPORTS/files/pXX/pSUBJECT/sSTUDY.txt    free-text reports (MIMIC-CXR, optional)

Labels are per study (1, 0, -1 uncertain, blank -> NaN); a study without a label row gets
NaN everywhere. The official split (train/validate/test) is kept in `official_split`.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from manifests.errors import UserError
from manifests.importers.common import (
    WHERE,
    absolute_posix,
    find_table,
    finish_import,
    import_request,
    normalize_view,
    official_split,
    parse_label_values,
    read_csv_checked,
    relabel,
    relabel_notes,
    report_section,
    section_counts_note,
    where_lines,
)
from manifests.io import Manifest
from manifests.schema import CHEXPERT_LABELS

DATASET = "mimic-cxr"
LABELERS = ("chexpert", "negbio")
PREFIX = "mimic-cxr-2.0.0"
_DIGITS = re.compile(r"^\d+$")
_DICOM_ID = re.compile(r"^[0-9A-Za-z.-]+$")


def _check_ids(frame: pd.DataFrame, columns: tuple[str, ...], where: list[str]) -> None:
    """Ids become path parts: subject/study ids must be digits, dicom ids plain tokens."""
    for column in columns:
        pattern = _DICOM_ID if column == "dicom_id" else _DIGITS
        text = frame[column].astype("string").str.strip().fillna("")
        ok = text.str.match(pattern).to_numpy(dtype=bool) & ~text.isin([".", ".."]).to_numpy()
        if not ok.all():
            i = int(np.flatnonzero(~ok)[0])
            raise UserError(
                f"{where[i]}: column {column!r}: {frame[column].iloc[i]!r} is not a valid id"
            )
        frame[column] = text


def study_folder(subject_id: str, study_id: str) -> str:
    """`pXX/pSUBJECT/sSTUDY` as in MIMIC-CXR's files/ tree."""
    return f"p{subject_id[:2]}/p{subject_id}/s{study_id}"


def _reports_files_dir(reports: Path) -> Path:
    """The `files/` folder of a MIMIC-CXR reports tree (accepts it or its parent)."""
    reports = Path(reports)
    if (reports / "files").is_dir():
        return reports / "files"
    if reports.is_dir() and any(p.name.startswith("p") for p in reports.iterdir() if p.is_dir()):
        return reports
    raise UserError(
        f"--reports {reports}: expected a folder holding files/pXX/pSUBJECT/sSTUDY.txt "
        "(the mimic-cxr-reports folder)"
    )


def read_reports(reports: Path, studies: pd.DataFrame) -> tuple[pd.Series, str, int]:
    """Prompt text per (subject_id, study_id) row of `studies`.

    Returns (text or None per row, a note on which sections were used, missing file count).
    """
    files = absolute_posix(_reports_files_dir(reports))
    texts, kinds, missing = [], [], 0
    for subject, study in zip(studies["subject_id"], studies["study_id"], strict=True):
        # Plain strings and open(): pathlib costs more than the read on 200k small files.
        path = f"{files}/{study_folder(subject, study)}.txt"
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                raw = f.read()
        except FileNotFoundError:
            missing += 1
            texts.append(None)
            kinds.append("none")
            continue
        text, kind = report_section(raw)
        texts.append(text)
        kinds.append(kind)
    return (
        pd.Series(texts, index=studies.index, dtype=object),
        section_counts_note(kinds, "report sections per study"),
        missing,
    )


def import_mimic_cxr(
    root: Path,
    reports: Path | None = None,
    labeler: str = "chexpert",
    label_set: str | None = None,
    frontal_only: bool = False,
    check_images: bool = False,
) -> Manifest:
    """Import MIMIC-CXR-JPG into a manifest (image paths absolute).

    Args:
        root: the MIMIC-CXR-JPG folder holding files/ and the mimic-cxr-2.0.0-*.csv(.gz).
        reports: the MIMIC-CXR reports folder (files/pXX/pSUBJECT/sSTUDY.txt); optional.
        labeler: which label file to use, `chexpert` or `negbio`.
        label_set: `chexpert` (default) or `nih` (labels mapped where names correspond).
        frontal_only: keep PA/AP images only.
        check_images: decode every image (slow); otherwise only check that files exist.
    """
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"--root {root}: not a folder")
    labeler = labeler.strip().lower()
    if labeler not in LABELERS:
        raise UserError(f"--labeler: unknown labeler {labeler!r}; valid: {', '.join(LABELERS)}")
    request = import_request(DATASET, root, label_set, "chexpert", frontal_only, check_images)
    target_name, target = request.label_set, request.labels
    notes: list[str] = []

    meta_csv = find_table(root, f"{PREFIX}-metadata")
    meta = read_csv_checked(meta_csv, ["dicom_id", "subject_id", "study_id", "ViewPosition"])
    meta[WHERE] = where_lines(meta_csv, len(meta))
    _check_ids(meta, ("dicom_id", "subject_id", "study_id"), meta[WHERE].tolist())

    label_csv = find_table(root, f"{PREFIX}-{labeler}")
    label_rows = read_csv_checked(label_csv, ["subject_id", "study_id", *CHEXPERT_LABELS])
    label_where = where_lines(label_csv, len(label_rows))
    _check_ids(label_rows, ("subject_id", "study_id"), label_where)
    duplicated = label_rows.duplicated(["subject_id", "study_id"]).to_numpy()
    if duplicated.any():
        i = int(np.flatnonzero(duplicated)[0])
        raise UserError(f"{label_where[i]}: study {label_rows['study_id'].iloc[i]} is listed twice")
    values = parse_label_values(label_rows, CHEXPERT_LABELS, label_where)
    mapped, unmapped, dropped = relabel(values, target)
    notes += relabel_notes(unmapped, dropped, "chexpert", target_name)
    study_labels = pd.concat([label_rows[["subject_id", "study_id"]], mapped], axis=1)
    rows = meta.merge(study_labels, on=["subject_id", "study_id"], how="left", indicator=True)
    unlabelled = (rows.pop("_merge") == "left_only").to_numpy()
    if unlabelled.any():
        notes.append(
            f"{int(unlabelled.sum())} image(s) of {rows.loc[unlabelled, 'study_id'].nunique()} "
            f"study(ies) have no row in {label_csv.name}; their labels are NaN"
        )

    try:
        split_csv = find_table(root, f"{PREFIX}-split")
    except UserError:
        split_csv = None
        notes.append(f"no {PREFIX}-split.csv(.gz) in {root}: no official split")
    if split_csv is not None:
        split_rows = read_csv_checked(split_csv, ["dicom_id", "split"])
        split_rows["dicom_id"] = split_rows["dicom_id"].astype("string").str.strip()
        split_rows["official_split"] = official_split(
            split_rows["split"], where_lines(split_csv, len(split_rows)), "split"
        )
        split_rows = split_rows.drop_duplicates("dicom_id")[["dicom_id", "official_split"]]
        rows = rows.merge(split_rows.astype({"dicom_id": object}), on="dicom_id", how="left")
        rows["official_split"] = rows["official_split"].astype(object)
        rows["official_split"] = rows["official_split"].where(rows["official_split"].notna(), None)

    folders = [
        study_folder(s, t) for s, t in zip(rows["subject_id"], rows["study_id"], strict=True)
    ]
    files = absolute_posix(root / "files")
    rows["image_path"] = [
        f"{files}/{folder}/{dicom}.jpg"
        for folder, dicom in zip(folders, rows["dicom_id"], strict=True)
    ]
    rows["patient_id"] = rows["subject_id"]
    rows["view"] = normalize_view(rows["ViewPosition"])
    rows["sex"] = None  # MIMIC-CXR-JPG has no demographics (they live in MIMIC-IV)
    rows["age"] = np.nan
    rows["report"] = None
    if reports is not None:
        studies = rows[["subject_id", "study_id"]].drop_duplicates()
        text, note, missing = read_reports(reports, studies)
        by_study = dict(zip(studies["study_id"], text, strict=True))
        rows["report"] = rows["study_id"].map(by_study).astype(object)
        rows["report"] = rows["report"].where(rows["report"].notna(), None)
        notes.append(note)
        if missing:
            notes.append(f"{missing} study(ies) have no report file under {reports}")
    else:
        notes.append("no --reports folder: report is empty (synthesis needs report prompts)")

    sources = {
        "reports": str(Path(reports).absolute()) if reports is not None else None,
        "labeler": labeler,
    }
    labels = rows[list(target)]
    return finish_import(request, rows, labels, notes, sources, extra=["dicom_id"])
