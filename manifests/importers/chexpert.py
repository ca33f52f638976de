"""CheXpert (v1.0 and v1.0-small) -> manifest.

Layout (as Stanford ships it)::

    ROOT/CheXpert-v1.0-small/train.csv   Path, Sex, Age, Frontal/Lateral, AP/PA, 14 labels
    ROOT/CheXpert-v1.0-small/valid.csv   same columns, radiologist-consensus labels
    ROOT/CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg

`Path` is relative to the folder *above* CheXpert-v1.0-small; `--root` may name either
folder. valid.csv rows get official_split 'test': the 200-study, radiologist-labelled valid
set is the test set of most CheXpert papers (the hidden test set is not public). train.csv
rows get no official split, so `cxraug manifest split` carves train/val from them by
patient. Labels: 1, 0, -1 (uncertain), blank -> NaN.
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
    parse_label_values,
    read_csv_checked,
    relabel,
    relabel_notes,
    safe_relative,
    where_lines,
)
from manifests.io import Manifest
from manifests.schema import CHEXPERT_LABELS

DATASET = "chexpert"
CSV_SPLITS = {"train.csv": None, "valid.csv": "test"}
COLUMNS = ("Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", *CHEXPERT_LABELS)
_PATIENT_STUDY = re.compile(r"(?:^|/)(patient\d+)/(study\d+)/")


def find_csv_dir(root: Path) -> Path:
    """The folder holding train.csv/valid.csv: `root` itself or one folder below it."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"--root {root}: not a folder")
    candidates = [root, *sorted(p for p in root.iterdir() if p.is_dir())]
    found = [f for f in candidates if any((f / name).is_file() for name in CSV_SPLITS)]
    if len(found) > 1 and found[0] != root:
        names = ", ".join(f.name for f in found)
        raise UserError(f"--root {root}: several CheXpert folders ({names}); pass one as --root")
    if found:
        return found[0]
    raise UserError(
        f"--root {root}: no train.csv or valid.csv in it or in a folder below it "
        "(expected ROOT/CheXpert-v1.0-small/train.csv)"
    )


def _image_base(root: Path, csv_dir: Path, first: str, where: str) -> tuple[Path, int]:
    """Where `Path` values are relative to, found from the first row: a (folder, number of
    leading path parts to drop) pair. A missing first image is a UserError naming it."""
    tries = [(root, 0), (csv_dir.parent, 0), (root, 1), (csv_dir, 1), (csv_dir, 0)]
    for base, strip in tries:
        parts = first.split("/")[strip:]
        if parts and os.path.isfile(base.joinpath(*parts)):
            return base, strip
    raise UserError(f"{where}: image not found: {root / first} (nor under {csv_dir})")


def import_chexpert(
    root: Path,
    label_set: str | None = None,
    frontal_only: bool = False,
    check_images: bool = False,
) -> Manifest:
    """Import CheXpert's train.csv and valid.csv into a manifest (image paths absolute).

    Args:
        root: the folder holding CheXpert-v1.0-small/ (or that folder itself).
        label_set: `chexpert` (default) or `nih` (labels mapped where names correspond).
        frontal_only: keep PA/AP images only.
        check_images: decode every image (slow); otherwise only check that files exist.
    """
    root = Path(root)
    csv_dir = find_csv_dir(root)
    request = import_request(DATASET, root, label_set, "chexpert", frontal_only, check_images)
    target_name, target = request.label_set, request.labels
    notes: list[str] = []
    parts = []
    for name, split in CSV_SPLITS.items():
        path = csv_dir / name
        if not path.is_file():
            notes.append(f"no {name} in {csv_dir}: imported without it")
            continue
        frame = read_csv_checked(path, COLUMNS)
        frame[WHERE] = where_lines(path, len(frame))
        frame["official_split"] = split
        parts.append(frame)
    rows = pd.concat(parts, ignore_index=True)
    where = rows[WHERE].tolist()

    relative = [
        safe_relative(value, where[i], "Path", csv_dir.parent)
        for i, value in enumerate(rows["Path"].astype("string").fillna(""))
    ]
    base, strip = _image_base(root, csv_dir, relative[0], where[0])
    prefix = absolute_posix(base)
    rows["image_path"] = [prefix + "/" + "/".join(p.split("/")[strip:]) for p in relative]

    ids = pd.Series(relative).str.extract(_PATIENT_STUDY)
    bad = ids[0].isna().to_numpy()
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise UserError(
            f"{where[i]}: column 'Path': {rows['Path'].iloc[i]!r} has no patientNNNNN/studyN/ "
            "folders to take patient and study from"
        )
    rows["patient_id"] = ids[0].to_numpy()
    rows["study_id"] = (ids[0] + "-" + ids[1]).to_numpy()

    frontal = rows["Frontal/Lateral"].astype("string").str.strip().str.lower()
    ap_pa = normalize_view(rows["AP/PA"])
    rows["view"] = np.where(
        frontal.eq("lateral").fillna(False).to_numpy(dtype=bool),
        "LATERAL",
        ap_pa.where(ap_pa.notna(), "FRONTAL"),
    )
    rows.loc[frontal.isna().to_numpy(dtype=bool) & ap_pa.isna().to_numpy(), "view"] = None
    rows["sex"] = normalize_sex(rows["Sex"])
    rows["age"] = parse_age(rows["Age"], where, "Age")
    rows["report"] = None  # CheXpert ships no report text

    values = parse_label_values(rows, CHEXPERT_LABELS, where)
    mapped, unmapped, dropped = relabel(values, target)
    notes += relabel_notes(unmapped, dropped, "chexpert", target_name)
    notes.append(
        "valid.csv (radiologist labels) -> official_split 'test'; train.csv rows have no "
        "official split"
    )
    notes.append("CheXpert ships no report text: report is empty")
    sources = {"csv_dir": str(csv_dir.absolute())}
    return finish_import(request, rows, mapped, notes, sources)
