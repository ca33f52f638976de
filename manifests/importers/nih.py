"""NIH ChestX-ray14 -> manifest.

Layout (as the NIH Clinical Center ships it)::

    ROOT/Data_Entry_2017.csv (or Data_Entry_2017_v2020.csv)
        Image Index, Finding Labels ("Cardiomegaly|Effusion" or "No Finding"), Follow-up #,
        Patient ID, Patient Age, Patient Gender, View Position, OriginalImage[Width, Height],
        OriginalImagePixelSpacing[x, y]
    ROOT/train_val_list.txt, ROOT/test_list.txt   one image name per line (official split)
    ROOT/images/*.png   or   ROOT/images_001/images/*.png ... images_012/images/*.png

NIH labels are text-mined and binary: a finding listed is 1, any other finding is 0 (no
uncertain, no NaN). test_list.txt images get official_split 'test'; train_val_list.txt
images get none, so `cxraug manifest split` carves train/val from them by patient.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pandas as pd

from manifests.errors import UserError
from manifests.importers.common import (
    WHERE,
    absolute_posix,
    finish_import,
    import_request,
    normalize_sex,
    normalize_view,
    parse_age,
    read_csv_checked,
    relabel,
    relabel_notes,
    where_lines,
)
from manifests.io import Manifest
from manifests.schema import NIH_LABELS, normalize_label_name

DATASET = "nih"
NO_FINDING = "No Finding"
COLUMNS = (
    "Image Index",
    "Finding Labels",
    "Follow-up #",
    "Patient ID",
    "Patient Age",
    "View Position",
)
SEX_COLUMNS = ("Patient Gender", "Patient Sex")  # the 2017 and 2020 spellings
MAX_AGE = 120  # the first release has a few ages in the hundreds (typos): NaN them
_IMAGE_NAME = re.compile(r"^[\w.-]+$")


def find_data_entry(root: Path) -> Path:
    """Data_Entry_2017*.csv in `root` (the last by name, i.e. v2020 over the 2017 file)."""
    found = sorted(Path(root).glob("Data_Entry_2017*.csv")) + sorted(
        Path(root).glob("Data_Entry_2017*.csv.gz")
    )
    if not found:
        raise UserError(f"--root {root}: no Data_Entry_2017*.csv in it (pass --csv)")
    return found[-1]


def image_index(root: Path) -> dict[str, str]:
    """Image name -> absolute path over images/ and images_0XX/images/ (first one wins)."""
    root = Path(root)
    folders = [root / "images"]
    for sub in sorted(root.glob("images_*")):
        folders += [sub / "images", sub]
    found: dict[str, str] = {}
    for folder in folders:
        if not folder.is_dir():
            continue
        with os.scandir(folder) as entries:
            for entry in entries:
                if entry.name not in found and not entry.is_dir():
                    found[entry.name] = absolute_posix(Path(entry.path))
    if not found:
        raise UserError(
            f"--root {root}: no images in images/ or images_0XX/images/ (the NIH layout)"
        )
    return found


def read_image_list(path: Path) -> set[str]:
    """Image names listed one per line (train_val_list.txt, test_list.txt)."""
    return {line.strip() for line in path.read_text().splitlines() if line.strip()}


def finding_matrix(findings: pd.Series, where: list[str], csv: Path) -> pd.DataFrame:
    """0/1 columns for the 14 NIH findings and No Finding from 'A|B' strings."""
    names = {normalize_label_name(n): n for n in (*NIH_LABELS, NO_FINDING)}
    tokens = findings.astype("string").fillna("").str.split("|").explode().str.strip()
    keys = tokens.map(normalize_label_name)
    canonical = keys.map(names)
    bad = canonical.isna().to_numpy()
    if bad.any():
        row = int(tokens.index[np.flatnonzero(bad)[0]])
        token = tokens.iloc[int(np.flatnonzero(bad)[0])]
        what = f"unknown finding {token!r}" if token else "empty"
        raise UserError(
            f"{where[row]}: column 'Finding Labels': {what}; "
            f"valid: {', '.join((*NIH_LABELS, NO_FINDING))} (joined by '|')"
        )
    onehot = pd.crosstab(canonical.index, canonical).reindex(
        index=range(len(findings)), columns=[*NIH_LABELS, NO_FINDING], fill_value=0
    )
    onehot = (onehot > 0).astype(np.float32)
    both = (onehot[NO_FINDING] > 0) & (onehot[list(NIH_LABELS)].sum(axis=1) > 0)
    if both.any():
        row = int(np.flatnonzero(both.to_numpy())[0])
        raise UserError(f"{where[row]}: 'No Finding' listed together with a finding")
    onehot.index = findings.index
    return onehot


def import_nih(
    root: Path,
    csv: Path | None = None,
    label_set: str | None = None,
    frontal_only: bool = False,
    check_images: bool = False,
) -> Manifest:
    """Import NIH ChestX-ray14 into a manifest (image paths absolute).

    Args:
        root: the folder holding Data_Entry_2017*.csv, the split lists and the images.
        csv: the Data_Entry CSV if not in `root` (default: the newest Data_Entry_2017*.csv).
        label_set: `nih` (default) or `chexpert` (labels mapped where names correspond;
            'No Finding' maps to CheXpert's No Finding).
        frontal_only: keep PA/AP images only (all NIH images are frontal).
        check_images: decode every image (slow); otherwise only check that files exist.
    """
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"--root {root}: not a folder")
    request = import_request(DATASET, root, label_set, "nih", frontal_only, check_images)
    target_name, target = request.label_set, request.labels
    notes: list[str] = []
    csv = Path(csv) if csv is not None else find_data_entry(root)
    rows = read_csv_checked(csv, COLUMNS)
    sex_column = next((c for c in SEX_COLUMNS if c in rows.columns), None)
    if sex_column is None:
        raise UserError(f"{csv}: missing column 'Patient Gender'")
    where = where_lines(csv, len(rows))
    rows[WHERE] = where

    names = rows["Image Index"].astype("string").str.strip().fillna("")
    bad = ~names.str.match(_IMAGE_NAME).to_numpy(dtype=bool)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise UserError(
            f"{where[i]}: column 'Image Index': {rows['Image Index'].iloc[i]!r} is not a plain "
            "file name"
        )
    files = image_index(root)
    found = names.isin(list(files)).to_numpy(dtype=bool)
    if not found.all():
        i = int(np.flatnonzero(~found)[0])
        raise UserError(
            f"{where[i]}: image {names.iloc[i]} not found in {root}/images/ or "
            f"{root}/images_0XX/images/ ({int((~found).sum())} missing)"
        )
    rows["image_path"] = [files[n] for n in names]

    patient = rows["Patient ID"].astype("string").str.strip()
    if patient.fillna("").eq("").any():
        i = int(np.flatnonzero(patient.fillna("").eq("").to_numpy())[0])
        raise UserError(f"{where[i]}: column 'Patient ID' is empty")
    rows["patient_id"] = patient.astype(object)
    follow_up = rows["Follow-up #"].astype("string").str.strip().fillna("")
    rows["study_id"] = [
        f"{p}-{f}" if f else f"{p}-{n}" for p, f, n in zip(patient, follow_up, names, strict=True)
    ]
    rows["view"] = normalize_view(rows["View Position"])
    rows["sex"] = normalize_sex(rows[sex_column])
    age = parse_age(rows["Patient Age"], where, "Patient Age")
    implausible = age > MAX_AGE
    if implausible.any():
        notes.append(f"{int(implausible.sum())} age(s) over {MAX_AGE} set to NaN (CSV typos)")
        age = np.where(implausible, np.nan, age)
    rows["age"] = age
    rows["report"] = None  # ChestX-ray14 ships no report text

    findings = finding_matrix(rows["Finding Labels"], where, csv)
    if NO_FINDING not in target:
        findings = findings.drop(columns=[NO_FINDING])
    mapped, unmapped, dropped = relabel(findings, target)
    notes += relabel_notes(unmapped, dropped, "nih", target_name)

    test_list = root / "test_list.txt"
    if test_list.is_file():
        test = read_image_list(test_list)
        rows["official_split"] = [("test" if n in test else None) for n in names]
    else:
        notes.append(f"no test_list.txt in {root}: no official split")
    notes.append("NIH ships no report text: report is empty")

    sources = {"csv": str(csv.absolute())}
    return finish_import(request, rows, mapped, notes, sources)
