"""MIMIC-CXR-JPG v2.0.0 -> manifest.

Layout (as PhysioNet ships it)::

    ROOT/files/pXX/pSUBJECT/sSTUDY/DICOM_ID.jpg
    ROOT/mimic-cxr-2.0.0-metadata.csv(.gz)   dicom_id, subject_id, study_id, ViewPosition, ...
    ROOT/mimic-cxr-2.0.0-chexpert.csv(.gz)   subject_id, study_id, 14 CheXpert labels
    ROOT/mimic-cxr-2.0.0-negbio.csv(.gz)     same columns, NegBio labeler
    ROOT/mimic-cxr-2.0.0-split.csv(.gz)      dicom_id, study_id, subject_id, split
    REPORTS/files/pXX/pSUBJECT/sSTUDY.txt    free-text reports (MIMIC-CXR, optional)
    MIMIC-IV hosp/patients.csv(.gz)          subject_id, gender, anchor_age, anchor_year, ...
    MIMIC-IV hosp/admissions.csv(.gz)        subject_id, hadm_id, admittime, ..., race, ...

Labels are per study (1, 0, -1 uncertain, blank -> NaN); a study without a label row gets
NaN everywhere. The official split (train/validate/test) is kept in `official_split`.

MIMIC-CXR-JPG has no demographics; MIMIC-IV has them, keyed by the same `subject_id`
(both optional). Sex is `gender`. Age at a study is `anchor_age + (study year -
anchor_year)`: MIMIC shifts every date of a patient by one offset, the same in the
metadata's `StudyDate` and in `anchor_year`, so the difference of years is real. Race
(column `race`) is a patient's most frequent stated race over their admissions.
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
    normalize_sex,
    normalize_view,
    official_split,
    parse_age,
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
# MIMIC-CXR's StudyDate is YYYYMMDD (a re-saved CSV may write it as a float: 21800506.0).
_STUDY_DATE = re.compile(r"^(\d{4})(\d{2})(\d{2})(?:\.0*)?$")
# MIMIC-IV race values that say nothing about the patient's race.
UNKNOWN_RACES = ("UNKNOWN", "UNABLE TO OBTAIN", "PATIENT DECLINED TO ANSWER")
PATIENTS_COLUMNS = ("subject_id", "gender", "anchor_age", "anchor_year")
ADMISSIONS_COLUMNS = ("subject_id", "admittime", "race")


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


# ------------------------------------------------------------------ MIMIC-IV demographics


def _mimic_iv_table(path: Path, flag: str, required: tuple[str, ...]) -> pd.DataFrame:
    """A MIMIC-IV hosp table given by `flag` (.csv or .csv.gz), its ids checked."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{flag} {path}: not a file; valid: MIMIC-IV's hosp/{flag[2:]}.csv(.gz)")
    frame = read_csv_checked(path, list(required))
    frame[WHERE] = where_lines(path, len(frame))
    _check_ids(frame, ("subject_id",), frame[WHERE].tolist())
    return frame


def _parse_year(values: pd.Series, where: list[str], column: str) -> np.ndarray:
    """Whole years as floats (blank -> NaN); anything else is a UserError naming the row."""
    text = values.astype("string").str.strip()
    years = pd.to_numeric(text, errors="coerce").to_numpy(dtype=np.float64)
    bad = (text.fillna("") != "").to_numpy() & np.isnan(years)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise UserError(f"{where[i]}: column {column!r}: {values.iloc[i]!r} is not a year")
    return years


def read_patients(path: Path) -> pd.DataFrame:
    """MIMIC-IV patients.csv(.gz) as subject_id -> sex ('F'/'M'/None), anchor_age, anchor_year."""
    frame = _mimic_iv_table(path, "--patients", PATIENTS_COLUMNS)
    where = frame[WHERE].tolist()
    repeated = frame["subject_id"].duplicated().to_numpy()
    if repeated.any():
        i = int(np.flatnonzero(repeated)[0])
        raise UserError(f"{where[i]}: subject {frame['subject_id'].iloc[i]} is listed twice")
    return pd.DataFrame(
        {
            "sex": normalize_sex(frame["gender"]).to_numpy(dtype=object),
            "anchor_age": parse_age(frame["anchor_age"], where, "anchor_age"),
            "anchor_year": _parse_year(frame["anchor_year"], where, "anchor_year"),
        },
        index=pd.Index(frame["subject_id"].to_numpy(dtype=object), name="subject_id"),
    )


def read_races(path: Path) -> pd.Series:
    """subject_id -> race from MIMIC-IV admissions.csv(.gz): the patient's most frequent
    stated race (not blank, not one of `UNKNOWN_RACES`); a tie goes to the race of the
    latest admission. Patients with no stated race are absent."""
    frame = _mimic_iv_table(path, "--admissions", ADMISSIONS_COLUMNS)
    race = frame["race"].astype("string").str.strip()
    stated = (race.fillna("") != "") & ~race.str.upper().isin(UNKNOWN_RACES).fillna(False)
    admit_text = frame["admittime"].astype("string").str.strip()
    admit = pd.to_datetime(admit_text, errors="coerce", format="ISO8601")
    bad = (admit_text.fillna("") != "").to_numpy() & admit.isna().to_numpy()
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise UserError(
            f"{frame[WHERE].iloc[i]}: column 'admittime': {frame['admittime'].iloc[i]!r} is "
            "not a date and time (YYYY-MM-DD HH:MM:SS)"
        )
    rows = pd.DataFrame({"subject_id": frame["subject_id"], "race": race, "admit": admit})
    counts = (
        rows[stated.to_numpy(dtype=bool)]
        .groupby(["subject_id", "race"])
        .agg(n=("admit", "size"), last=("admit", "max"))
        .reset_index()
    )
    counts = counts.sort_values(
        ["subject_id", "n", "last", "race"],
        ascending=[True, False, False, True],
        na_position="last",
        kind="stable",
    )
    best = counts.drop_duplicates("subject_id")
    return pd.Series(
        best["race"].astype(object).to_numpy(), index=best["subject_id"].to_numpy(dtype=object)
    )


def study_years(meta: pd.DataFrame) -> np.ndarray:
    """The (shifted) year of each metadata row's StudyDate; NaN where it is blank or absent."""
    if "StudyDate" not in meta.columns:
        return np.full(len(meta), np.nan)
    text = meta["StudyDate"].astype("string").str.strip()
    parts = text.str.extract(_STUDY_DATE)
    years = pd.to_numeric(parts[0], errors="coerce").to_numpy(dtype=np.float64)
    bad = (text.fillna("") != "").to_numpy() & np.isnan(years)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise UserError(
            f"{meta[WHERE].iloc[i]}: column 'StudyDate': {meta['StudyDate'].iloc[i]!r} is not "
            "a date; valid: YYYYMMDD"
        )
    return years


def add_demographics(rows: pd.DataFrame, patients: Path | None, notes: list[str]) -> None:
    """Fill `sex` and `age` (in place) from MIMIC-IV patients.csv, age at each study's year.

    `rows` needs subject_id and a `study_year` column (NaN where the date is unknown). Without
    `patients` both stay null and a note says where they are.
    """
    rows["sex"] = None
    rows["age"] = np.nan
    if patients is None:
        notes.append(
            "no --patients file: sex and age are null (MIMIC-CXR-JPG has none; they are in "
            "MIMIC-IV's hosp/patients.csv(.gz))"
        )
        return
    table = read_patients(patients)
    found = rows["subject_id"].isin(table.index).to_numpy()
    known = table.reindex(rows["subject_id"].to_numpy(dtype=object))
    rows["sex"] = known["sex"].astype(object).where(known["sex"].notna(), None).to_numpy()
    anchor_age = known["anchor_age"].to_numpy(dtype=np.float64)
    shift = rows["study_year"].to_numpy(dtype=np.float64) - known["anchor_year"].to_numpy(
        dtype=np.float64
    )
    dated = ~np.isnan(shift)
    age = np.where(dated, anchor_age + shift, anchor_age)
    negative = age < 0  # NaN compares False
    rows["age"] = np.where(negative, np.nan, age)
    name = Path(patients).name
    n_patients = rows["subject_id"].nunique()
    at_study = int((dated & ~np.isnan(anchor_age)).sum())
    anchored = int((~dated & ~np.isnan(anchor_age)).sum())
    notes.append(
        f"sex and age from {name}: {rows.loc[found, 'subject_id'].nunique()} of {n_patients} "
        f"patient(s) found; age at the study (anchor_age + StudyDate year - anchor_year) for "
        f"{at_study} image(s), anchor_age for {anchored} image(s) without a StudyDate (or "
        "anchor_year)"
    )
    if not found.all():
        notes.append(
            f"{rows.loc[~found, 'subject_id'].nunique()} patient(s) ({int((~found).sum())} "
            f"image(s)) are not in {name}: their sex and age are null"
        )
    if negative.any():
        notes.append(
            f"{int(negative.sum())} image(s) dated before their patient's birth year "
            f"(StudyDate vs {name}): their age is null"
        )


def add_races(rows: pd.DataFrame, admissions: Path, notes: list[str]) -> None:
    """Fill a `race` column (in place) from MIMIC-IV admissions.csv (`read_races`)."""
    races = read_races(admissions)
    race = rows["subject_id"].map(races)
    rows["race"] = race.astype(object).where(race.notna(), None)
    known = rows.loc[race.notna(), "subject_id"].nunique()
    notes.append(
        f"race from {Path(admissions).name}: stated for {known} of "
        f"{rows['subject_id'].nunique()} patient(s) (the most frequent over their admissions; "
        f"{', '.join(UNKNOWN_RACES)} count as unknown)"
    )


def import_mimic_cxr(
    root: Path,
    reports: Path | None = None,
    labeler: str = "chexpert",
    label_set: str | None = None,
    frontal_only: bool = False,
    check_images: bool = False,
    patients: Path | None = None,
    admissions: Path | None = None,
) -> Manifest:
    """Import MIMIC-CXR-JPG into a manifest (image paths absolute).

    Args:
        root: the MIMIC-CXR-JPG folder holding files/ and the mimic-cxr-2.0.0-*.csv(.gz).
        reports: the MIMIC-CXR reports folder (files/pXX/pSUBJECT/sSTUDY.txt); optional.
        labeler: which label file to use, `chexpert` or `negbio`.
        label_set: `chexpert` (default) or `nih` (labels mapped where names correspond).
        frontal_only: keep PA/AP images only.
        check_images: decode every image (slow); otherwise only check that files exist.
        patients: MIMIC-IV hosp/patients.csv(.gz) for sex and age; optional.
        admissions: MIMIC-IV hosp/admissions.csv(.gz) for race (column `race`); optional.
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
    meta["study_year"] = study_years(meta) if patients is not None else np.nan

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
    add_demographics(rows, patients, notes)
    if admissions is not None:
        add_races(rows, admissions, notes)
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
        "patients": str(Path(patients).absolute()) if patients is not None else None,
        "admissions": str(Path(admissions).absolute()) if admissions is not None else None,
    }
    labels = rows[list(target)]
    extra = ["dicom_id", *(["race"] if admissions is not None else [])]
    return finish_import(request, rows, labels, notes, sources, extra=extra)
