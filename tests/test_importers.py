"""Dataset importers on tiny fixtures in the published CSV formats, their CLI, and bad input."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from cli import app
from manifests.errors import UserError
from manifests.images import load_image
from manifests.importers import (
    import_chexpert,
    import_folder,
    import_mimic_cxr,
    import_nih,
    manifest_notes,
    relabel,
    report_section,
)
from manifests.importers.common import parse_age
from manifests.io import read_manifest, write_manifest
from manifests.schema import CHEXPERT_LABELS, NIH_LABELS
from manifests.splits import check_leakage, split_by_patient
from manifests.summary import summarize
from tests.fixtures_data import (
    CHEXPERT_COLUMNS,
    MIMIC_EXPECTED_AGES,
    MIMIC_EXPECTED_RACES,
    MIMIC_EXPECTED_REPORTS,
    MIMIC_IV_ADMISSIONS_COLUMNS,
    MIMIC_IV_PATIENTS_COLUMNS,
    NIH_ROWS,
    make_chexpert,
    make_folder,
    make_mimic,
    make_mimic_iv,
    make_nih,
    write_csv,
    write_dicom,
    write_image,
)

runner = CliRunner()


def labels_of(manifest, column: str, key: str, value: str) -> np.ndarray:
    """The label column `column` of the rows where `key` == `value`."""
    rows = manifest.rows
    return rows.loc[rows[key] == value, column].to_numpy(dtype=np.float64)


def is_nan(values) -> bool:
    return bool(np.isnan(np.asarray(values, dtype=np.float64)).all())


# ------------------------------------------------------------------ shared pieces


@pytest.mark.parametrize(
    ("text", "expected", "kind"),
    [
        (
            " FINDINGS: Clear lungs.\n \n IMPRESSION: \n No acute process.\n",
            "No acute process.",
            "impression",
        ),
        (" FINDINGS:  Small left\n  effusion.\n", "Small left effusion.", "findings"),
        ("FINDINGS: Clear. IMPRESSION: Normal chest.", "Normal chest.", "impression"),
        (" FINDINGS: Edema.\n IMPRESSION:\n", "Edema.", "findings"),  # empty impression skipped
        (" CONCLUSION: Pneumothorax.\n", "Pneumothorax.", "impression"),
        (" FINDINGS AND IMPRESSION: Cardiomegaly.\n", "Cardiomegaly.", "impression"),
        (" PA AND LATERAL CHEST: Lungs clear.\n INDICATION: cough.\n", "Lungs clear.", "findings"),
        (
            " FINAL REPORT\n HISTORY: cough.\n \n Lungs are clear.\n",
            "Lungs are clear.",
            "last paragraph",
        ),
        ("Mild   cardiomegaly.", "Mild cardiomegaly.", "text"),
        (
            "Findings: Heart size: normal. Lungs: clear. Impression: Normal.",
            "Normal.",
            "impression",
        ),
        (
            "Findings: Heart size: normal. Lungs: clear.",
            "Heart size: normal. Lungs: clear.",
            "findings",
        ),
        (
            " FINDINGS: Clear.\n IMPRESSION: No effusion.\n NOTIFICATION: Called Dr. ___.",
            "No effusion.",
            "impression",
        ),
        ("   ", None, "none"),
        (None, None, "none"),
    ],
)
def test_report_section(text, expected, kind):
    assert report_section(text) == (expected, kind)


def test_relabel_maps_corresponding_names_and_leaves_nan():
    values = pd.DataFrame({"Effusion": [1.0, 0.0], "Mass": [1.0, 1.0], "Cardiomegaly": [0.0, 1.0]})
    mapped, unmapped, dropped = relabel(values, CHEXPERT_LABELS)
    assert list(mapped.columns) == list(CHEXPERT_LABELS)
    assert mapped["Pleural Effusion"].tolist() == [1.0, 0.0]
    assert mapped["Cardiomegaly"].tolist() == [0.0, 1.0]
    assert is_nan(mapped["Lung Lesion"]) and "Lung Lesion" in unmapped
    assert dropped == ["Mass"]
    back, _, _ = relabel(mapped, NIH_LABELS)
    assert back["Effusion"].tolist() == [1.0, 0.0] and is_nan(back["Mass"])


def test_parse_age_spellings():
    ages = parse_age(pd.Series(["58", "058Y", "006M", "", None, "41.5"]), list("abcdef"), "Age")
    np.testing.assert_allclose(ages, [58, 58, 0.5, np.nan, np.nan, 41.5])
    with pytest.raises(UserError, match="line 9: column 'Age': 'old'"):
        parse_age(pd.Series(["old"]), ["x.csv line 9"], "Age")


def test_load_dicom_monochrome1_and_voi_window(tmp_path):
    # A 12-bit ramp, MONOCHROME1 (high = dark), window centre 2048 width 1024.
    ramp = np.tile(np.linspace(0, 4095, 16).round().astype(np.uint16), (4, 1))
    path = write_dicom(tmp_path / "x.dcm", ramp, "MONOCHROME1", window=(2048, 1024))
    out = load_image(path)
    assert out.shape == (4, 16) and out.dtype == np.uint8
    row = out[0].astype(int)
    # Below the window (< 1536) everything clips to one value; inverted, that is white.
    assert (row[ramp[0] < 1500] == 255).all()
    assert (row[ramp[0] > 2600] == 0).all()
    # Inside the window the ramp is inverted: it falls strictly.
    inside = (ramp[0] > 1600) & (ramp[0] < 2500)
    assert inside.sum() >= 3 and (np.diff(row[inside]) < 0).all()
    # MONOCHROME2 with the same window keeps the direction.
    plain = load_image(write_dicom(tmp_path / "y.dcm", ramp, "MONOCHROME2", window=(2048, 1024)))
    np.testing.assert_array_equal(plain, 255 - out)


# ------------------------------------------------------------------ MIMIC-CXR-JPG


def test_mimic_import(tmp_path):
    root, reports = make_mimic(tmp_path)
    m = import_mimic_cxr(root, reports=reports)
    rows = m.rows
    assert len(m) == 7 and rows["patient_id"].nunique() == 4 and rows["study_id"].nunique() == 5
    assert m.labels == CHEXPERT_LABELS and set(rows["dataset"]) == {"mimic-cxr"}
    assert all(os.path.isabs(p) and os.path.isfile(p) for p in rows["image_path"])
    assert (
        rows["image_path"].iloc[0].endswith("files/p10/p10000032/s50414267/0a1b2c3d-00000001.jpg")
    )
    # Study labels on every image of the study: 1, 0, -1 and blank -> NaN.
    assert labels_of(m, "Pleural Effusion", "study_id", "53189527").tolist() == [1.0]
    assert labels_of(m, "Atelectasis", "study_id", "53189527").tolist() == [-1.0]
    assert labels_of(m, "Pneumothorax", "study_id", "53189527").tolist() == [0.0]
    assert is_nan(labels_of(m, "Cardiomegaly", "study_id", "53189527"))
    assert labels_of(m, "No Finding", "study_id", "50414267").tolist() == [1.0, 1.0]
    # A study without a label row: every label NaN, and a note says so.
    assert is_nan(rows.loc[rows["study_id"] == "52222222", list(CHEXPERT_LABELS)])
    notes = manifest_notes(m)
    assert any("no row in mimic-cxr-2.0.0-chexpert.csv" in n for n in notes)
    # Official split: train/validate/test -> train/val/test; split follows it.
    by_patient = rows.groupby("patient_id")["official_split"].first().to_dict()
    assert by_patient == {
        "10000032": "train",
        "10000764": "val",
        "11000011": "test",
        "12000000": "train",
    }
    assert (rows["split"] == rows["official_split"]).all()
    # Reports: impression, else findings, else last paragraph; none when the file is missing.
    report = rows.groupby("study_id")["report"].first().to_dict()
    for study, text in MIMIC_EXPECTED_REPORTS.items():
        assert report[study] == text
    assert report["52222222"] is None
    assert any("1 study(ies) have no report file" in n for n in notes)
    assert rows["view"].tolist()[:3] == ["PA", "LATERAL", "AP"] and rows["view"].iloc[6] is None
    assert rows["dicom_id"].iloc[0] == "0a1b2c3d-00000001"
    # No --patients: no demographics, and a note says where they are.
    assert rows["sex"].isna().all() and rows["age"].isna().all() and "race" not in rows
    assert any("no --patients file" in n and "patients.csv" in n for n in notes)


def test_mimic_demographics_from_mimic_iv(tmp_path):
    root, _ = make_mimic(tmp_path)
    patients, admissions = make_mimic_iv(tmp_path)
    m = import_mimic_cxr(root, patients=patients, admissions=admissions)
    rows = m.rows
    by_study = rows.groupby("study_id")
    # Sex is gender; age is anchor_age + (StudyDate year - anchor_year), else anchor_age.
    assert by_study["sex"].first().dropna().to_dict() == {
        "50414267": "F",
        "53189527": "F",
        "57375967": "M",
        "51111111": "F",
    }
    assert by_study["age"].first().dropna().to_dict() == MIMIC_EXPECTED_AGES
    assert rows.loc[rows["study_id"] == "53189527", "age"].tolist() == [55.0]  # 2183 - 2180 + 52
    # 12000000 is not in patients.csv: null sex and age, counted in a note.
    absent = rows["patient_id"] == "12000000"
    assert rows.loc[absent, "sex"].isna().all() and rows.loc[absent, "age"].isna().all()
    notes = manifest_notes(m)
    assert any("1 patient(s) (1 image(s)) are not in patients.csv.gz" in n for n in notes)
    assert any("3 of 4 patient(s) found" in n and "anchor_age for 2 image(s)" in n for n in notes)
    # Race: the most frequent stated race (UNKNOWN ignored), ties to the latest admission.
    race = rows.groupby("patient_id")["race"].first()
    assert {p: (None if pd.isna(r) else r) for p, r in race.items()} == MIMIC_EXPECTED_RACES
    assert any("race from admissions.csv: stated for 2 of 4 patient(s)" in n for n in notes)
    # The demographics survive a write and read; race is an optional string column.
    back = read_manifest(write_manifest(m, tmp_path / "out" / "m.parquet"))
    assert back.rows["race"].tolist()[:4] == ["WHITE", "WHITE", "WHITE", "WHITE"]
    assert pd.isna(back.rows["race"].iloc[4]) and back.rows["age"].iloc[3] == 86.0
    provenance = json.loads(m.metadata["cxraug.import"])
    assert provenance["patients"].endswith("patients.csv.gz")
    assert provenance["admissions"].endswith("admissions.csv")


def test_mimic_iv_fixtures_use_published_headers(tmp_path):
    patients, admissions = make_mimic_iv(tmp_path)
    with gzip.open(patients, "rt") as f:
        assert (
            f.readline().strip() == "subject_id,gender,anchor_age,anchor_year,anchor_year_group,dod"
        )
    assert tuple(admissions.read_text().splitlines()[0].split(",")) == MIMIC_IV_ADMISSIONS_COLUMNS
    assert MIMIC_IV_PATIENTS_COLUMNS[:4] == ("subject_id", "gender", "anchor_age", "anchor_year")
    assert "race" in MIMIC_IV_ADMISSIONS_COLUMNS and "ethnicity" not in MIMIC_IV_ADMISSIONS_COLUMNS


def test_mimic_negbio_frontal_only_and_nih_labels(tmp_path):
    root, _ = make_mimic(tmp_path)
    m = import_mimic_cxr(root, labeler="negbio", label_set="nih", frontal_only=True)
    assert m.labels == NIH_LABELS
    assert m.rows["view"].tolist() == ["PA", "AP", "AP", "PA"]  # LATERAL, LL, blank dropped
    assert labels_of(m, "Atelectasis", "study_id", "53189527").tolist() == [1.0]  # negbio's
    assert labels_of(m, "Effusion", "study_id", "53189527").tolist() == [1.0]  # Pleural Effusion
    assert labels_of(m, "Pneumonia", "study_id", "51111111").tolist() == [-1.0]
    assert is_nan(m.rows["Mass"]) and is_nan(m.rows["Emphysema"])
    notes = manifest_notes(m)
    assert any("--frontal-only dropped 3" in n for n in notes)
    assert any("no --reports folder" in n for n in notes) and m.rows["report"].isna().all()


def test_mimic_written_manifest_keeps_official_split(tmp_path):
    root, reports = make_mimic(tmp_path)
    (root / "mimic-cxr-2.0.0-split.csv.gz").unlink()
    m = import_mimic_cxr(root, reports=reports)
    assert "official_split" not in m.rows.columns and (m.rows["split"] == "train").all()
    assert any("no official split" in n for n in manifest_notes(m))
    root2, reports2 = make_mimic(tmp_path / "again")
    out = write_manifest(import_mimic_cxr(root2, reports=reports2), tmp_path / "out" / "m.parquet")
    back = read_manifest(out)
    assert back.rows["official_split"].tolist()[3] == "val"
    assert all(p.is_file() for p in back.image_paths())
    assert manifest_notes(back) == summarize(back).notes and summarize(back).notes
    split = split_by_patient(back, (0.8, 0.1, 0.1), seed=0)
    assert split.rows.groupby("patient_id")["split"].first()["11000011"] == "test"
    check_leakage(split)


# ------------------------------------------------------------------ CheXpert


def test_chexpert_import(tmp_path):
    m = import_chexpert(make_chexpert(tmp_path))
    rows = m.rows
    assert len(m) == 9 and rows["patient_id"].nunique() == 6 and rows["study_id"].nunique() == 7
    assert all(os.path.isfile(p) for p in rows["image_path"])
    assert (
        rows["image_path"]
        .iloc[0]
        .endswith("CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg")
    )
    assert rows["study_id"].iloc[1] == "patient00002-study2"
    # valid.csv -> official test; train.csv -> no official split (carved later by patient).
    valid = rows["patient_id"].isin(["patient64541", "patient64542"])
    assert (rows.loc[valid, "official_split"] == "test").all()
    assert rows.loc[~valid, "official_split"].isna().all()
    assert (rows.loc[valid, "split"] == "test").all() and (
        rows.loc[~valid, "split"] == "train"
    ).all()
    assert rows["view"].tolist()[:4] == ["AP", "AP", "PA", "LATERAL"]
    assert rows["sex"].tolist()[:6] == ["F", "F", "F", "F", "M", None]
    assert rows["age"].iloc[1] == 87.0
    second = rows.iloc[1]
    assert second["Cardiomegaly"] == -1.0 and second["Pleural Effusion"] == 0.0
    assert np.isnan(second["Pneumonia"]) and second["Fracture"] == 1.0
    assert not rows.loc[valid, list(CHEXPERT_LABELS)].isna().any().any()
    split = split_by_patient(m, (0.8, 0.1, 0.1), seed=0)
    assert set(split.rows.loc[~valid, "split"]) <= {"train", "val"}
    check_leakage(split)


def test_chexpert_root_variants_and_frontal_only(tmp_path):
    root = make_chexpert(tmp_path)
    above = import_chexpert(root)
    inside = import_chexpert(root / "CheXpert-v1.0-small", frontal_only=True)
    frontal = above.rows[above.rows["view"].isin(["PA", "AP"])]
    assert inside.rows["image_path"].tolist() == frontal["image_path"].tolist()
    assert len(inside) == 7 and any("--frontal-only dropped 2" in n for n in manifest_notes(inside))
    nih = import_chexpert(root, label_set="nih")
    assert nih.labels == NIH_LABELS
    assert nih.rows["Effusion"].iloc[1] == 0.0 and nih.rows["Cardiomegaly"].iloc[1] == -1.0
    assert is_nan(nih.rows["Hernia"])


# ------------------------------------------------------------------ NIH ChestX-ray14


def test_nih_import(tmp_path):
    m = import_nih(make_nih(tmp_path))
    rows = m.rows
    assert m.labels == NIH_LABELS and len(m) == 6 and rows["patient_id"].nunique() == 4
    assert all(os.path.isfile(p) for p in rows["image_path"])
    assert "/images_002/images/" in rows["image_path"].iloc[3]
    # Binary labels, never NaN or -1.
    values = rows[list(NIH_LABELS)].to_numpy(dtype=np.float64)
    assert set(np.unique(values)) == {0.0, 1.0}
    assert rows.loc[1, "Cardiomegaly"] == 1 and rows.loc[1, "Emphysema"] == 1
    assert rows.loc[3, "Pleural Thickening"] == 1 and rows.loc[3, "Effusion"] == 1
    assert values[2].sum() == 0  # No Finding
    assert rows["study_id"].tolist()[:2] == ["1-0", "1-1"]
    assert rows["official_split"].tolist() == [None, None, None, "test", "test", None]
    assert rows["split"].tolist() == ["train"] * 3 + ["test"] * 2 + ["train"]
    assert rows["sex"].tolist()[3] == "F" and rows["age"].tolist()[0] == 58.0


def test_nih_to_chexpert_labels_and_legacy_csv(tmp_path):
    root = make_nih(tmp_path, csv_name="Data_Entry_2017.csv")
    # The 2017 file ends every line with a comma (an unnamed empty column): still reads.
    path = root / "Data_Entry_2017.csv"
    path.write_text("".join(line + ",\n" for line in path.read_text().splitlines()))
    m = import_nih(root, label_set="chexpert")
    rows = m.rows
    assert m.labels == CHEXPERT_LABELS
    assert rows["Pleural Effusion"].tolist() == [0, 0, 0, 1, 0, 0]
    assert rows["No Finding"].tolist() == [0, 0, 1, 0, 0, 0]
    assert is_nan(rows["Lung Opacity"]) and is_nan(rows["Support Devices"])
    assert any("dropped: Infiltration, Mass" in n for n in manifest_notes(m))


# ------------------------------------------------------------------ folder


def test_folder_import(tmp_path):
    root, csv = make_folder(tmp_path)
    m = import_folder(root, csv)
    rows = m.rows
    assert len(m) == 3 and rows["patient_id"].tolist() == ["P1", "P1", "P2"]
    assert rows["Pleural Effusion"].iloc[2] == -1.0 and np.isnan(rows["Pleural Effusion"].iloc[1])
    assert rows["No Finding"].tolist() == [1, 1, 0] and rows["Pneumonia"].tolist() == [0, 0, 1]
    assert is_nan(rows["Edema"])
    assert rows["report"].iloc[0] == "Normal chest." and pd.isna(rows["report"].iloc[1])
    assert rows["view"].tolist() == ["PA", "LATERAL", "AP"]
    assert rows["age"].tolist() == [34.0, 34.0, 71.0]
    assert len(import_folder(root, csv, frontal_only=True)) == 2


def test_folder_dicom_no_patient_and_other_label_set(tmp_path):
    root = tmp_path / "data"
    ramp = np.tile(np.arange(0, 4096, 256, dtype=np.uint16), (16, 1))
    write_dicom(root / "scan.dcm", ramp, "MONOCHROME1")
    write_image(root / "x.png", 1)
    csv = write_csv(
        tmp_path / "l.csv", ("path", "Effusion", "Mass"), [["scan.dcm", 1, 0], ["x.png", 0, ""]]
    )
    m = import_folder(root, csv, check_images=True)  # decodes the DICOM too
    assert m.rows["Pleural Effusion"].tolist() == [1.0, 0.0]
    assert m.rows["patient_id"].tolist() == ["scan.dcm", "x.png"]
    notes = manifest_notes(m)
    assert any("each image is its own patient" in n for n in notes)
    assert any("dropped: Mass" in n for n in notes)
    nih = import_folder(root, csv, label_set="nih")
    assert nih.rows["Mass"].iloc[0] == 0.0 and np.isnan(nih.rows["Mass"].iloc[1])
    # Without a CSV: every image under root, unlabelled.
    bare = import_folder(root)
    assert sorted(bare.rows["patient_id"]) == ["scan.dcm", "x.png"]
    assert is_nan(bare.rows[list(CHEXPERT_LABELS)])


def test_folder_split_column_becomes_official_split(tmp_path):
    root, _ = make_folder(tmp_path)
    csv = write_csv(
        tmp_path / "s.csv",
        ("path", "Patient ID", "split"),
        [["a/img1.png", "P1", "validate"], ["a/img2.jpg", "P1", "val"], ["b/img3.png", "P2", ""]],
    )
    m = import_folder(root, csv)
    assert m.rows["official_split"].tolist() == ["val", "val", None]
    assert m.rows["split"].tolist() == ["val", "val", "train"]


# ------------------------------------------------------------------ CLI


def _cli_args(kind: str, tmp_path: Path) -> list[str]:
    if kind == "mimic-cxr":
        root, reports = make_mimic(tmp_path)
        patients, admissions = make_mimic_iv(tmp_path)
        return [
            "--root",
            str(root),
            "--reports",
            str(reports),
            "--patients",
            str(patients),
            "--admissions",
            str(admissions),
        ]
    if kind == "chexpert":
        return ["--root", str(make_chexpert(tmp_path))]
    if kind == "nih":
        return ["--root", str(make_nih(tmp_path))]
    root, csv = make_folder(tmp_path)
    return ["--root", str(root), "--labels-csv", str(csv)]


@pytest.mark.parametrize(
    ("kind", "rows", "patients"),
    [("mimic-cxr", 7, 4), ("chexpert", 9, 6), ("nih", 6, 4), ("folder", 3, 2)],
)
def test_cli_import(kind, rows, patients, tmp_path):
    out = tmp_path / "out" / "m.parquet"
    result = runner.invoke(
        app, ["manifest", "import", kind, *_cli_args(kind, tmp_path), "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert f"{rows} images, {patients} patients" in " ".join(result.output.split())
    m = read_manifest(out)
    assert len(m) == rows and set(m.rows["dataset"]) == {kind}
    assert all(p.is_file() for p in m.image_paths())
    assert json.loads(m.metadata["cxraug.import"])["importer"] == kind
    # Refused the second time, accepted with --overwrite.
    again = runner.invoke(
        app, ["manifest", "import", kind, *_cli_args(kind, tmp_path / "b"), "--out", str(out)]
    )
    assert again.exit_code == 2 and again.output.strip().splitlines() == [
        f"error: {out}: already exists; pass --overwrite to replace it"
    ]
    again = runner.invoke(
        app,
        [
            "manifest",
            "import",
            kind,
            *_cli_args(kind, tmp_path / "c"),
            "--out",
            str(out),
            "--overwrite",
        ],
    )
    assert again.exit_code == 0, again.output


def test_cli_folder_without_patient_prints_note(tmp_path):
    root, _ = make_folder(tmp_path)
    csv = write_csv(
        tmp_path / "l.csv", ("path", "Pneumonia"), [["a/img1.png", 1], ["b/img3.png", 0]]
    )
    out = tmp_path / "m.parquet"
    result = runner.invoke(
        app,
        [
            "manifest",
            "import",
            "folder",
            "--root",
            str(root),
            "--labels-csv",
            str(csv),
            "-o",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "2 images, 2 patients" in " ".join(result.output.split())
    assert "note: no patient_id column: each image is its own patient" in " ".join(
        result.output.split()
    )
    summary = runner.invoke(app, ["manifest", "summary", str(out)])
    assert "each image is its own patient" in " ".join(summary.output.split())


# ------------------------------------------------------------------ bad input


def _drop_first_line_column(path: Path, column: str) -> None:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt") as f:
        frame = pd.read_csv(f, dtype=str)
    frame = frame.drop(columns=[column])
    with opener(path, "wt") as f:
        frame.to_csv(f, index=False)


def _mimic_missing_image(tmp):
    root, _ = make_mimic(tmp)
    (root / "files/p10/p10000764/s57375967/0a1b2c3d-00000004.jpg").unlink()
    return ["mimic-cxr", "--root", str(root)], [
        "mimic-cxr-2.0.0-metadata.csv.gz line 5",
        "image not found",
        "0a1b2c3d-00000004.jpg",
    ]


def _mimic_missing_column(tmp):
    root, _ = make_mimic(tmp)
    _drop_first_line_column(root / "mimic-cxr-2.0.0-metadata.csv.gz", "ViewPosition")
    return ["mimic-cxr", "--root", str(root)], ["mimic-cxr-2.0.0-metadata.csv.gz", "'ViewPosition'"]


def _mimic_missing_label_column(tmp):
    root, _ = make_mimic(tmp)
    _drop_first_line_column(root / "mimic-cxr-2.0.0-chexpert.csv", "Edema")
    return ["mimic-cxr", "--root", str(root)], ["mimic-cxr-2.0.0-chexpert.csv", "'Edema'"]


def _mimic_bad_labeler(tmp):
    root, _ = make_mimic(tmp)
    return ["mimic-cxr", "--root", str(root), "--labeler", "chexbert"], ["--labeler", "negbio"]


def _mimic_no_csv(tmp):
    root, _ = make_mimic(tmp)
    (root / "mimic-cxr-2.0.0-metadata.csv.gz").unlink()
    return ["mimic-cxr", "--root", str(root)], ["mimic-cxr-2.0.0-metadata.csv.gz", "--root"]


def _mimic_bad_split(tmp):
    root, _ = make_mimic(tmp)
    path = root / "mimic-cxr-2.0.0-split.csv.gz"
    with gzip.open(path, "rt") as f:
        text = f.read().replace(",validate", ",holdout")
    with gzip.open(path, "wt") as f:
        f.write(text)
    return ["mimic-cxr", "--root", str(root)], ["split.csv.gz line 5", "'holdout'", "validate"]


def _mimic_iv_args(tmp, patients=None, admissions=None):
    root, _ = make_mimic(tmp)
    default_patients, default_admissions = make_mimic_iv(tmp)
    return [
        "mimic-cxr",
        "--root",
        str(root),
        "--patients",
        str(patients or default_patients),
        "--admissions",
        str(admissions or default_admissions),
    ]


def _mimic_patients_missing_column(tmp):
    args = _mimic_iv_args(tmp)
    _drop_first_line_column(Path(args[4]), "anchor_year")
    return args, ["patients.csv.gz", "'anchor_year'"]


def _mimic_admissions_missing_column(tmp):
    args = _mimic_iv_args(tmp)
    _drop_first_line_column(Path(args[6]), "race")
    return args, ["admissions.csv", "'race'"]


def _mimic_patients_not_a_file(tmp):
    return _mimic_iv_args(tmp, patients=tmp / "hosp"), ["--patients", "hosp", "not a file"]


def _mimic_patients_unreadable(tmp):
    bad = tmp / "patients.csv.gz"
    bad.write_bytes(b"not gzip at all")
    return _mimic_iv_args(tmp, patients=bad), ["patients.csv.gz", "unreadable"]


def _mimic_patients_bad_age(tmp):
    args = _mimic_iv_args(tmp)
    path = Path(args[4])
    with gzip.open(path, "rt") as f:
        text = f.read().replace(",M,86,", ",M,eighty,")
    with gzip.open(path, "wt") as f:
        f.write(text)
    return args, ["patients.csv.gz line 3", "'anchor_age'", "'eighty'"]


def _mimic_bad_study_date(tmp):
    args = _mimic_iv_args(tmp)
    path = Path(args[2]) / "mimic-cxr-2.0.0-metadata.csv.gz"
    with gzip.open(path, "rt") as f:
        text = f.read().replace(",21321102,", ",2132-11-02,")
    with gzip.open(path, "wt") as f:
        f.write(text)
    return args, ["metadata.csv.gz line 5", "'StudyDate'", "YYYYMMDD"]


def _chexpert_missing_first_image(tmp):
    root = make_chexpert(tmp)
    (root / "CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg").unlink()
    return ["chexpert", "--root", str(root)], [
        "train.csv line 2",
        "patient00001/study1/view1_frontal.jpg",
    ]


def _chexpert_missing_later_image(tmp):
    root = make_chexpert(tmp)
    (root / "CheXpert-v1.0-small/valid/patient64542/study1/view2_lateral.jpg").unlink()
    return ["chexpert", "--root", str(root)], [
        "valid.csv line 4",
        "view2_lateral.jpg",
        "image not found",
    ]


def _chexpert_escaping_path(tmp):
    root = make_chexpert(tmp)
    csv = root / "CheXpert-v1.0-small/train.csv"
    lines = csv.read_text().splitlines()
    lines[3] = "CheXpert-v1.0-small/../../secret.jpg" + lines[3][lines[3].index(",") :]
    csv.write_text("\n".join(lines) + "\n")
    return ["chexpert", "--root", str(root)], ["train.csv line 4", "escapes"]


def _chexpert_bad_label(tmp):
    root = make_chexpert(tmp)
    csv = root / "CheXpert-v1.0-small/valid.csv"
    csv.write_text(csv.read_text().replace(",1.0,", ",2.0,", 1))
    return ["chexpert", "--root", str(root)], ["valid.csv line 2", "'2.0'", "valid: 1, 0, -1"]


def _chexpert_two_versions(tmp):
    make_chexpert(tmp, folder="CheXpert-v1.0")
    root = make_chexpert(tmp)
    return ["chexpert", "--root", str(root)], ["several CheXpert folders", "CheXpert-v1.0-small"]


def _chexpert_no_csv(tmp):
    return ["chexpert", "--root", str(tmp)], ["no train.csv or valid.csv"]


def _nih_unknown_finding(tmp):
    root = make_nih(tmp)
    csv = root / "Data_Entry_2017_v2020.csv"
    csv.write_text(csv.read_text().replace("Hernia", "Pneumonitis"))
    return ["nih", "--root", str(root)], ["line 6", "'Pneumonitis'", "Pleural Thickening"]


def _nih_missing_image(tmp):
    root = make_nih(tmp)
    (root / "images_002/images/00000004_000.png").unlink()
    return ["nih", "--root", str(root)], ["Data_Entry_2017_v2020.csv line 7", "00000004_000.png"]


def _nih_missing_column(tmp):
    root = make_nih(tmp)
    csv = root / "Data_Entry_2017_v2020.csv"
    csv.write_text(csv.read_text().replace("Patient ID,", "Patient,", 1))
    return ["nih", "--root", str(root)], ["Data_Entry_2017_v2020.csv", "'Patient ID'"]


def _folder_unknown_label(tmp):
    root, _ = make_folder(tmp)
    csv = write_csv(tmp / "l.csv", ("path", "Pneumothrax"), [["a/img1.png", 1]])
    return ["folder", "--root", str(root), "--labels-csv", str(csv)], [
        "'Pneumothrax'",
        "valid labels: No Finding, Enlarged Cardiomediastinum",
    ]


def _folder_escaping_path(tmp):
    root, _ = make_folder(tmp)
    write_image(tmp / "outside.png")
    csv = write_csv(
        tmp / "l.csv", ("path", "Pneumonia"), [["a/img1.png", 1], ["../outside.png", 0]]
    )
    return ["folder", "--root", str(root), "--labels-csv", str(csv)], ["l.csv line 3", "escapes"]


def _folder_absolute_path(tmp):
    root, _ = make_folder(tmp)
    csv = write_csv(tmp / "l.csv", ("path",), [[str(root / "a/img1.png")]])
    return ["folder", "--root", str(root), "--labels-csv", str(csv)], [
        "l.csv line 2",
        "must be relative",
    ]


def _folder_corrupt_image(tmp):
    root, csv = make_folder(tmp)
    (root / "b/img3.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    return ["folder", "--root", str(root), "--labels-csv", str(csv), "--check-images"], [
        "labels.csv line 4",
        "img3.png",
        "corrupt",
    ]


def _folder_no_frontal(tmp):
    root, _ = make_folder(tmp)
    csv = write_csv(
        tmp / "l.csv", ("path", "view"), [["a/img1.png", "LATERAL"], ["a/img2.jpg", "LL"]]
    )
    return ["folder", "--root", str(root), "--labels-csv", str(csv), "--frontal-only"], [
        "--frontal-only",
        "views found: LATERAL, LL",
    ]


def _folder_no_path_column(tmp):
    root, _ = make_folder(tmp)
    csv = write_csv(tmp / "l.csv", ("patient_id", "Pneumonia"), [["P1", 1]])
    return ["folder", "--root", str(root), "--labels-csv", str(csv)], ["l.csv", "'path'"]


def _folder_bad_label_set(tmp):
    root, csv = make_folder(tmp)
    return ["folder", "--root", str(root), "--labels-csv", str(csv), "--label-set", "mimic"], [
        "--label-set",
        "chexpert, nih",
    ]


def _folder_duplicate_path(tmp):
    root, _ = make_folder(tmp)
    csv = write_csv(tmp / "l.csv", ("path",), [["a/img1.png"], ["./a/img1.png"]])
    return ["folder", "--root", str(root), "--labels-csv", str(csv)], [
        "l.csv line 3",
        "listed twice",
    ]


BAD_INPUTS = [
    _mimic_missing_image,
    _mimic_missing_column,
    _mimic_missing_label_column,
    _mimic_bad_labeler,
    _mimic_no_csv,
    _mimic_bad_split,
    _mimic_patients_missing_column,
    _mimic_admissions_missing_column,
    _mimic_patients_not_a_file,
    _mimic_patients_unreadable,
    _mimic_patients_bad_age,
    _mimic_bad_study_date,
    _chexpert_missing_first_image,
    _chexpert_missing_later_image,
    _chexpert_escaping_path,
    _chexpert_bad_label,
    _chexpert_two_versions,
    _chexpert_no_csv,
    _nih_unknown_finding,
    _nih_missing_image,
    _nih_missing_column,
    _folder_unknown_label,
    _folder_escaping_path,
    _folder_absolute_path,
    _folder_corrupt_image,
    _folder_no_frontal,
    _folder_no_path_column,
    _folder_bad_label_set,
    _folder_duplicate_path,
]


@pytest.mark.parametrize("case", BAD_INPUTS, ids=lambda f: f.__name__.strip("_"))
def test_cli_bad_input_is_one_line_exit_2(case, tmp_path):
    args, expected = case(tmp_path)
    out = tmp_path / "out" / "m.parquet"
    result = runner.invoke(app, ["manifest", "import", *args, "--out", str(out)])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert "Traceback" not in result.output
    for part in expected:
        assert part in lines[0], (part, lines[0])
    assert not out.exists() and not (tmp_path / "out").exists()


def test_chexpert_fixture_uses_published_header(tmp_path):
    header = (make_chexpert(tmp_path) / "CheXpert-v1.0-small/train.csv").read_text().splitlines()[0]
    assert header.split(",") == list(CHEXPERT_COLUMNS)
    assert header.startswith("Path,Sex,Age,Frontal/Lateral,AP/PA,No Finding,")
    assert len(NIH_ROWS) == 6
