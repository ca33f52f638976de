"""Tiny stand-ins for MIMIC-CXR-JPG, CheXpert, NIH ChestX-ray14 and an image folder.

Each builder writes, under a test's tmp_path, CSVs with exactly the published column names
and value spellings, plus small generated images where the dataset keeps them. Every id,
label and report sentence here is invented; none is patient data.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
from PIL import Image

from manifests.schema import CHEXPERT_LABELS

# MIMIC-CXR-JPG's metadata header, in the published order.
MIMIC_METADATA_COLUMNS = (
    "dicom_id",
    "subject_id",
    "study_id",
    "PerformedProcedureStepDescription",
    "ViewPosition",
    "Rows",
    "Columns",
    "StudyDate",
    "StudyTime",
    "ProcedureCodeSequence_CodeMeaning",
    "ViewCodeSequence_CodeMeaning",
    "PatientOrientationCodeSequence_CodeMeaning",
)
# MIMIC-IV v2.2 hosp/patients.csv and hosp/admissions.csv headers, in the published order.
MIMIC_IV_PATIENTS_COLUMNS = (
    "subject_id",
    "gender",
    "anchor_age",
    "anchor_year",
    "anchor_year_group",
    "dod",
)
MIMIC_IV_ADMISSIONS_COLUMNS = (
    "subject_id",
    "hadm_id",
    "admittime",
    "dischtime",
    "deathtime",
    "admission_type",
    "admit_provider_id",
    "admission_location",
    "discharge_location",
    "insurance",
    "language",
    "marital_status",
    "race",
    "edregtime",
    "edouttime",
    "hospital_expire_flag",
)
# mimic-cxr-2.0.0-chexpert.csv / -negbio.csv order (alphabetical labels).
MIMIC_LABEL_COLUMNS = ("subject_id", "study_id", *sorted(CHEXPERT_LABELS))
CHEXPERT_COLUMNS = ("Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", *CHEXPERT_LABELS)
NIH_HEADER = (
    "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,"
    "View Position,OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y]"
)


def write_image(path: Path, seed: int = 0, size: int = 8) -> Path:
    """A small random grayscale image; format from the suffix (PNG or JPEG)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, size=(size, size), dtype=np.uint8), mode="L").save(path)
    return path


def write_csv(path: Path, header: tuple[str, ...] | str, rows: list[list[object]]) -> Path:
    """A CSV (gzip when the name ends in .gz) with `header` and string-formatted rows."""
    head = header if isinstance(header, str) else ",".join(header)
    lines = [head] + [",".join("" if v is None else str(v) for v in row) for row in rows]
    text = "\n".join(lines) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".gz":
        with gzip.open(path, "wt") as f:
            f.write(text)
    else:
        path.write_text(text)
    return path


def _labels(values: dict[str, str], order: tuple[str, ...]) -> list[str]:
    """Label cells in `order`; labels not given are blank (not mentioned)."""
    return [values.get(label, "") for label in order]


# ------------------------------------------------------------------ MIMIC-CXR-JPG

# (dicom_id, subject_id, study_id, ViewPosition)
MIMIC_IMAGES = (
    ("0a1b2c3d-00000001", "10000032", "50414267", "PA"),
    ("0a1b2c3d-00000002", "10000032", "50414267", "LATERAL"),
    ("0a1b2c3d-00000003", "10000032", "53189527", "AP"),
    ("0a1b2c3d-00000004", "10000764", "57375967", "AP"),
    ("0a1b2c3d-00000005", "11000011", "51111111", "PA"),
    ("0a1b2c3d-00000006", "11000011", "51111111", "LL"),
    ("0a1b2c3d-00000007", "12000000", "52222222", ""),
)
MIMIC_LABELS = {
    "50414267": {"No Finding": "1.0"},
    "53189527": {"Pleural Effusion": "1.0", "Atelectasis": "-1.0", "Pneumothorax": "0.0"},
    "57375967": {"Cardiomegaly": "1.0", "Edema": "-1.0"},
    "51111111": {"Pneumonia": "1.0", "Pleural Effusion": "0.0", "Support Devices": "1.0"},
    # 52222222 has no label row: its labels are NaN.
}
MIMIC_NEGBIO = {
    "50414267": {"No Finding": "1.0"},
    "53189527": {"Pleural Effusion": "1.0", "Atelectasis": "1.0"},
    "57375967": {"Cardiomegaly": "1.0", "Edema": "0.0"},
    "51111111": {"Pneumonia": "-1.0"},
}
# StudyDate (YYYYMMDD, shifted like the patient's anchor_year); 51111111 has none.
MIMIC_STUDY_DATES = {
    "50414267": "21800506",
    "53189527": "21830101",
    "57375967": "21321102",
    "51111111": "",
    "52222222": "21900101",
}
# MIMIC-IV patients: (subject_id, gender, anchor_age, anchor_year, anchor_year_group, dod).
# 12000000 is missing; 19999999 has no chest X-ray.
MIMIC_IV_PATIENTS = (
    ("10000032", "F", 52, 2180, "2014 - 2016", "2180-09-09"),
    ("10000764", "M", 86, 2132, "2014 - 2016", ""),
    ("11000011", "F", 30, 2150, "2008 - 2010", ""),
    ("19999999", "M", 60, 2170, "2017 - 2019", ""),
)
# Ages the importer derives per study: anchor_age + StudyDate year - anchor_year.
MIMIC_EXPECTED_AGES = {
    "50414267": 52.0,
    "53189527": 55.0,
    "57375967": 86.0,
    "51111111": 30.0,  # no StudyDate: anchor_age
}
# MIMIC-IV admissions: (subject_id, hadm_id, admittime, race).
MIMIC_IV_ADMISSIONS = (
    # Two WHITE, three UNKNOWN: WHITE.
    ("10000032", "22595853", "2180-05-06 22:23:00", "WHITE"),
    ("10000032", "22841357", "2180-06-26 18:27:00", "UNKNOWN"),
    ("10000032", "25742920", "2180-08-05 23:44:00", "UNKNOWN"),
    ("10000032", "29079034", "2180-07-23 12:35:00", "WHITE"),
    ("10000032", "29079035", "2180-07-25 12:35:00", "UNKNOWN"),
    # One each: the latest admission's race wins the tie.
    ("10000764", "27897940", "2132-10-14 23:31:00", "BLACK/AFRICAN AMERICAN"),
    ("10000764", "27897941", "2132-12-01 08:00:00", "WHITE"),
    # Nothing stated.
    ("11000011", "21111111", "2150-03-01 10:00:00", "UNABLE TO OBTAIN"),
    ("11000011", "21111112", "2150-04-01 10:00:00", "PATIENT DECLINED TO ANSWER"),
    ("19999999", "29999999", "2170-01-01 10:00:00", "ASIAN"),
)
MIMIC_EXPECTED_RACES = {
    "10000032": "WHITE",
    "10000764": "WHITE",
    "11000011": None,
    "12000000": None,
}
MIMIC_SPLIT = {"10000032": "train", "10000764": "validate", "11000011": "test", "12000000": "train"}
MIMIC_REPORTS = {
    # Both sections: the impression is taken.
    "50414267": (
        "                                 FINAL REPORT\n"
        " EXAMINATION:  CHEST (PA AND LAT)\n \n"
        " INDICATION:  ___M with cough, evaluate for pneumonia.\n \n"
        " TECHNIQUE:  Chest PA and lateral\n \n"
        " COMPARISON:  None.\n \n"
        " FINDINGS: \n \n"
        " Lungs are clear without consolidation.  No pleural effusion or\n"
        " pneumothorax.  Heart size is normal.\n \n"
        " IMPRESSION: \n \n"
        " No acute cardiopulmonary process.\n"
    ),
    # Findings only.
    "53189527": (
        "                                 FINAL REPORT\n"
        " INDICATION:  Shortness of breath.\n \n"
        " FINDINGS:  Moderate right pleural effusion with adjacent\n"
        " atelectasis, possibly consolidation.  No pneumothorax.\n"
    ),
    # No section headers at all: the last paragraph.
    "57375967": (
        "                                 FINAL REPORT\n"
        " PORTABLE CHEST RADIOGRAPH\n \n"
        " Heart size is enlarged.  Mild vascular congestion,\n"
        " possibly early edema.\n"
    ),
    # A combined header counts as the impression; an empty IMPRESSION is skipped.
    "51111111": (
        " FINAL REPORT\n"
        " HISTORY:  Fever.\n"
        " FINDINGS AND IMPRESSION:  Right lower lobe pneumonia.\n"
        " Endotracheal tube in standard position.\n"
        " IMPRESSION:\n"
    ),
    # 52222222 has no report file.
}
MIMIC_EXPECTED_REPORTS = {
    "50414267": "No acute cardiopulmonary process.",
    "53189527": (
        "Moderate right pleural effusion with adjacent atelectasis, possibly consolidation. "
        "No pneumothorax."
    ),
    "57375967": "Heart size is enlarged. Mild vascular congestion, possibly early edema.",
    "51111111": "Right lower lobe pneumonia. Endotracheal tube in standard position.",
}


def make_mimic(tmp: Path) -> tuple[Path, Path]:
    """MIMIC-CXR-JPG (root) and reports folders: 7 images, 4 patients, 5 studies.

    Metadata, negbio and split CSVs are gzipped, the chexpert CSV plain, as both occur.
    """
    root = tmp / "mimic-cxr-jpg"
    reports = tmp / "mimic-cxr-reports"
    meta_rows = []
    for i, (dicom, subject, study, view) in enumerate(MIMIC_IMAGES):
        write_image(
            root / "files" / f"p{subject[:2]}" / f"p{subject}" / f"s{study}" / f"{dicom}.jpg", i
        )
        meta_rows.append(
            [
                dicom,
                subject,
                study,
                "CHEST (PA AND LAT)",
                view,
                3056,
                2544,
                MIMIC_STUDY_DATES[study],
                213014.531,
                "CHEST (PA AND LAT)",
                "postero-anterior" if view == "PA" else "lateral",
                "Erect",
            ]
        )
    write_csv(root / "mimic-cxr-2.0.0-metadata.csv.gz", MIMIC_METADATA_COLUMNS, meta_rows)
    studies = {(subject, study) for _, subject, study, _ in MIMIC_IMAGES}
    for name, table in (("chexpert.csv", MIMIC_LABELS), ("negbio.csv.gz", MIMIC_NEGBIO)):
        rows = [
            [subject, study, *_labels(table[study], MIMIC_LABEL_COLUMNS[2:])]
            for subject, study in sorted(studies)
            if study in table
        ]
        write_csv(root / f"mimic-cxr-2.0.0-{name}", MIMIC_LABEL_COLUMNS, rows)
    split_rows = [[d, st, su, MIMIC_SPLIT[su]] for d, su, st, _ in MIMIC_IMAGES]
    write_csv(
        root / "mimic-cxr-2.0.0-split.csv.gz",
        ("dicom_id", "study_id", "subject_id", "split"),
        split_rows,
    )
    for subject, study in studies:
        if study in MIMIC_REPORTS:
            path = reports / "files" / f"p{subject[:2]}" / f"p{subject}" / f"s{study}.txt"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(MIMIC_REPORTS[study])
    return root, reports


def make_mimic_iv(tmp: Path) -> tuple[Path, Path]:
    """MIMIC-IV hosp/patients.csv.gz and hosp/admissions.csv for `make_mimic`'s subjects."""
    hosp = tmp / "mimiciv" / "2.2" / "hosp"
    patients = write_csv(
        hosp / "patients.csv.gz", MIMIC_IV_PATIENTS_COLUMNS, [list(p) for p in MIMIC_IV_PATIENTS]
    )
    rows = [
        [subject, hadm, admit, "", "", "EW EMER.", "P874LG", "EMERGENCY ROOM", "HOME"]
        + ["Other", "ENGLISH", "WIDOWED", race, "", "", "0"]
        for subject, hadm, admit, race in MIMIC_IV_ADMISSIONS
    ]
    admissions = write_csv(hosp / "admissions.csv", MIMIC_IV_ADMISSIONS_COLUMNS, rows)
    return patients, admissions


# ------------------------------------------------------------------ CheXpert

# (Path below CheXpert-v1.0-small/, Sex, Age, Frontal/Lateral, AP/PA, labels)
CHEXPERT_TRAIN = (
    (
        "train/patient00001/study1/view1_frontal.jpg",
        "Female",
        68,
        "Frontal",
        "AP",
        {"Support Devices": "1.0", "No Finding": "1.0"},
    ),
    (
        "train/patient00002/study2/view1_frontal.jpg",
        "Female",
        87,
        "Frontal",
        "AP",
        {
            "Cardiomegaly": "-1.0",
            "Lung Opacity": "1.0",
            "Edema": "-1.0",
            "Pleural Effusion": "0.0",
            "Fracture": "1.0",
        },
    ),
    (
        "train/patient00002/study1/view1_frontal.jpg",
        "Female",
        83,
        "Frontal",
        "PA",
        {"Lung Opacity": "1.0", "Fracture": "1.0"},
    ),
    (
        "train/patient00002/study1/view2_lateral.jpg",
        "Female",
        83,
        "Lateral",
        "",
        {"Lung Opacity": "1.0", "Fracture": "1.0"},
    ),
    ("train/patient00003/study1/view1_frontal.jpg", "Male", 41, "Frontal", "AP", {"Edema": "1.0"}),
    (
        "train/patient00004/study1/view1_frontal.jpg",
        "Unknown",
        20,
        "Frontal",
        "PA",
        {"No Finding": "1.0", "Pneumothorax": "0.0"},
    ),
)
CHEXPERT_VALID = (
    (
        "valid/patient64541/study1/view1_frontal.jpg",
        "Male",
        73,
        "Frontal",
        "AP",
        {
            label: ("1.0" if label in ("Cardiomegaly", "Pleural Effusion") else "0.0")
            for label in CHEXPERT_LABELS
        },
    ),
    (
        "valid/patient64542/study1/view1_frontal.jpg",
        "Male",
        70,
        "Frontal",
        "PA",
        {label: ("1.0" if label == "No Finding" else "0.0") for label in CHEXPERT_LABELS},
    ),
    (
        "valid/patient64542/study1/view2_lateral.jpg",
        "Male",
        70,
        "Lateral",
        "",
        {label: ("1.0" if label == "No Finding" else "0.0") for label in CHEXPERT_LABELS},
    ),
)


def make_chexpert(tmp: Path, folder: str = "CheXpert-v1.0-small") -> Path:
    """ROOT holding `folder`/ with train.csv (6 rows, 4 patients) and valid.csv (3 rows,
    2 patients), Path values prefixed with `folder`/ as in the release. Returns ROOT."""
    root = tmp / "chexpert"
    base = root / folder
    for name, table in (("train.csv", CHEXPERT_TRAIN), ("valid.csv", CHEXPERT_VALID)):
        rows = []
        for i, (path, sex, age, fl, appa, labels) in enumerate(table):
            write_image(base / path, i)
            rows.append([f"{folder}/{path}", sex, age, fl, appa, *_labels(labels, CHEXPERT_LABELS)])
        write_csv(base / name, CHEXPERT_COLUMNS, rows)
    return root


# ------------------------------------------------------------------ NIH ChestX-ray14

# (Image Index, Finding Labels, Follow-up #, Patient ID, Patient Age, Patient Gender, View)
NIH_ROWS = (
    ("00000001_000.png", "Cardiomegaly", 0, 1, 58, "M", "PA"),
    ("00000001_001.png", "Cardiomegaly|Emphysema", 1, 1, 58, "M", "PA"),
    ("00000002_000.png", "No Finding", 0, 2, 81, "M", "PA"),
    ("00000003_000.png", "Effusion|Pleural_Thickening", 0, 3, 74, "F", "AP"),
    ("00000003_001.png", "Hernia", 1, 3, 74, "F", "PA"),
    ("00000004_000.png", "Mass|Nodule", 0, 4, 82, "M", "AP"),
)
NIH_TEST = ("00000003_000.png", "00000003_001.png")


def make_nih(tmp: Path, csv_name: str = "Data_Entry_2017_v2020.csv") -> Path:
    """ROOT with the Data_Entry CSV, train_val_list.txt / test_list.txt and images split over
    images_001/images/ and images_002/images/ (the download's layout). 6 images, 4 patients."""
    root = tmp / "nih"
    rows = []
    for i, (name, findings, follow, patient, age, sex, view) in enumerate(NIH_ROWS):
        folder = "images_001" if i < 3 else "images_002"
        write_image(root / folder / "images" / name, i)
        rows.append([name, findings, follow, patient, age, sex, view, 2682, 2749, 0.143, 0.143])
    write_csv(root / csv_name, NIH_HEADER, rows)
    names = [r[0] for r in NIH_ROWS]
    (root / "test_list.txt").write_text("\n".join(n for n in names if n in NIH_TEST) + "\n")
    (root / "train_val_list.txt").write_text(
        "\n".join(n for n in names if n not in NIH_TEST) + "\n"
    )
    return root


# ------------------------------------------------------------------ a plain folder

FOLDER_HEADER = (
    "path",
    "patient_id",
    "view",
    "sex",
    "age",
    "report",
    "Pneumonia",
    "No Finding",
    "pleural_effusion",
)
FOLDER_ROWS = (
    (
        "a/img1.png",
        "P1",
        "PA",
        "F",
        34,
        "FINDINGS: Clear lungs. IMPRESSION: Normal chest.",
        0,
        1,
        0,
    ),
    ("a/img2.jpg", "P1", "lateral", "F", 34, "", 0, 1, ""),
    ("b/img3.png", "P2", "AP", "M", 71, "Right lower lobe pneumonia.", 1, 0, -1),
)


def make_folder(tmp: Path, rows=FOLDER_ROWS, header=FOLDER_HEADER) -> tuple[Path, Path]:
    """An image folder and its labels CSV (3 images, 2 patients). Returns (root, csv)."""
    root = tmp / "folder"
    for i, row in enumerate(rows):
        write_image(root / row[0], i)
    csv = write_csv(tmp / "labels.csv", header, [list(r) for r in rows])
    return root, csv


def write_dicom(
    path: Path,
    pixels: np.ndarray,
    photometric: str = "MONOCHROME1",
    window: tuple[float, float] | None = None,
) -> Path:
    """A minimal 16-bit single-frame DICOM (secondary capture) with an optional VOI window."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "DX"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    ds.PixelData = np.asarray(pixels, dtype=np.uint16).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        ds.save_as(path, enforce_file_format=True)  # pydicom 3
    except TypeError:  # pydicom 2.x
        ds.is_little_endian, ds.is_implicit_VR = True, False
        ds.save_as(path, write_like_original=False)
    return path
