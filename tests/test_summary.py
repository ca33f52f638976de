"""`manifest summary`: positive images and patients per label x demographic subgroup."""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import pandas as pd
from typer.testing import CliRunner

from cli import app
from manifests.importers import import_mimic_cxr
from manifests.io import Manifest, read_manifest, write_manifest
from manifests.schema import CHEXPERT_LABELS
from manifests.summary import ALL_IMAGES, subgroup_counts, summarize
from tests.fixtures_data import make_mimic, make_mimic_iv
from tests.helpers import make_rows

runner = CliRunner()


def _cells(counts: pd.DataFrame, split: str, label: str) -> dict[str, tuple[int, int]]:
    """subgroup -> (images, patients) of one split's real rows for one label."""
    rows = counts[(counts["split"] == split) & (counts["label"] == label)]
    assert (rows["source"] == "real").all()
    return {
        s: (int(i), int(p))
        for s, i, p in zip(rows["subgroup"], rows["images"], rows["patients"], strict=True)
    }


def test_subgroup_counts_on_the_mimic_fixture(tmp_path):
    root, _ = make_mimic(tmp_path)
    patients, admissions = make_mimic_iv(tmp_path)
    counts = summarize(import_mimic_cxr(root, patients=patients, admissions=admissions)).subgroups
    # train: 10000032 (F; 52 and 55: 40-64; 3 images) and 12000000 (not in patients.csv).
    assert _cells(counts, "train", ALL_IMAGES) == {
        "sex=F": (3, 1),
        "sex=M": (0, 0),
        "sex=unknown": (1, 1),
        "age_group=<40": (0, 0),
        "age_group=40-64": (3, 1),
        "age_group=65+": (0, 0),
        "age_group=unknown": (1, 1),
    }
    assert _cells(counts, "train", "No Finding")["sex=F"] == (2, 1)
    assert _cells(counts, "train", "Pleural Effusion")["age_group=40-64"] == (1, 1)
    # Uncertain (-1) is not positive.
    assert set(_cells(counts, "train", "Atelectasis").values()) == {(0, 0)}
    # val: 10000764, M, 86.
    assert _cells(counts, "val", "Cardiomegaly") == {
        "sex=F": (0, 0),
        "sex=M": (1, 1),
        "sex=unknown": (0, 0),
        "age_group=<40": (0, 0),
        "age_group=40-64": (0, 0),
        "age_group=65+": (1, 1),
        "age_group=unknown": (0, 0),
    }
    assert set(_cells(counts, "val", "Edema").values()) == {(0, 0)}
    # test: 11000011, F, 30 (anchor_age: no StudyDate), two images of one study.
    assert _cells(counts, "test", "Pneumonia")["sex=F"] == (2, 1)
    assert _cells(counts, "test", "Pneumonia")["age_group=<40"] == (2, 1)
    assert _cells(counts, "test", "Support Devices")["age_group=40-64"] == (0, 0)
    # Every split x label x subgroup is there, zeros included.
    assert len(counts) == 3 * (1 + len(CHEXPERT_LABELS)) * 7
    assert counts["images"].sum() == 2 * 7 + 2 * (2 + 1 + 1 + 2 + 2)


def test_without_demographics_everything_is_unknown(tmp_path):
    root, _ = make_mimic(tmp_path)
    summary = summarize(import_mimic_cxr(root))
    table = summary.subgroup_tables["train/real"]
    assert list(table.columns) == [
        "label", "sex F", "sex M", "sex unknown", "age <40", "age 40-64", "age 65+", "age unknown",
    ]  # fmt: skip
    assert table["label"].tolist() == [ALL_IMAGES, *CHEXPERT_LABELS]
    first = table.iloc[0].tolist()
    assert first == [ALL_IMAGES, "0 (0)", "0 (0)", "4 (2)", "0 (0)", "0 (0)", "0 (0)", "4 (2)"]
    assert list(summary.subgroup_tables) == ["train/real", "val/real", "test/real"]


def _brute_force(rows: pd.DataFrame, labels, edges) -> dict:
    """(split, source, label, subgroup) -> (images, patients), one row at a time."""
    names = ["<40", "40-64", "65+"] if tuple(edges) == (40, 65) else None
    assert names is not None
    images, patients = defaultdict(int), defaultdict(set)
    for row in rows.to_dict("records"):
        sex = row["sex"] if row["sex"] in ("F", "M") else "unknown"
        age = row["age"]
        if age is None or np.isnan(age):
            group = "unknown"
        else:
            group = names[0] if age < 40 else names[1] if age < 65 else names[2]
        for label in (ALL_IMAGES, *labels):
            if label != ALL_IMAGES and row[label] != 1:
                continue
            for subgroup in (f"sex={sex}", f"age_group={group}"):
                key = (row["split"], row["source"], label, subgroup)
                images[key] += 1
                patients[key].add(row["patient_id"])
    return {key: (images[key], len(patients[key])) for key in images}


def test_subgroup_counts_match_a_row_by_row_count_on_phantoms(phantom_manifest):
    manifest = read_manifest(phantom_manifest)
    rows = manifest.rows
    assert rows["sex"].isin(["F", "M"]).sum() and rows["sex"].nunique() >= 2
    counts = subgroup_counts(manifest)
    expected = _brute_force(rows, manifest.labels, (40, 65))
    got = {
        (sp, so, la, su): (i, p)
        for sp, so, la, su, i, p in counts.itertuples(index=False)
        if i or p
    }
    assert got == expected
    # An 'unknown' subgroup only where some row has no known value.
    all_known = rows["sex"].isin(["F", "M"]).all() and rows["age"].notna().all()
    assert counts["subgroup"].str.endswith("=unknown").any() == (not all_known)
    assert set(counts["split"]) == {"train", "val", "test"}


def test_subgroup_counts_unknown_values_and_edges(tmp_path):
    rows = make_rows(8, 4, seed=1).iloc[:6].copy()
    rows["patient_id"] = ["a", "a", "b", "c", "c", "d"]
    rows["sex"] = ["F", "F", "M", "U", None, "M"]
    rows["age"] = [30.0, 31.0, 50.0, np.nan, 70.0, 49.999]
    rows["Edema"] = np.array([1, 1, 0, 1, 1, np.nan], dtype=np.float32)
    manifest = Manifest(rows=rows, labels=CHEXPERT_LABELS, root=tmp_path)
    counts = subgroup_counts(manifest, age_edges=(50,))
    assert _cells(counts, "train", "Edema") == {
        "sex=F": (2, 1),
        "sex=M": (0, 0),
        "sex=unknown": (2, 1),  # 'U' and null
        "age_group=<50": (2, 1),
        "age_group=50+": (1, 1),
        "age_group=unknown": (1, 1),
    }
    assert _cells(counts, "train", ALL_IMAGES)["age_group=<50"] == (3, 2)  # 49.999 is <50


def test_cli_summary_prints_subgroup_tables(tmp_path):
    root, _ = make_mimic(tmp_path)
    patients, admissions = make_mimic_iv(tmp_path)
    m = import_mimic_cxr(root, patients=patients, admissions=admissions)
    path = write_manifest(m, tmp_path / "m.parquet")
    result = runner.invoke(app, ["manifest", "summary", str(path)])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "label prevalence" in text  # the existing output stays
    for group in ("train/real", "val/real", "test/real"):
        assert f"{group}: positive images (patients) per subgroup" in text
    assert "unknown" in text and "40-64" in text
    result = runner.invoke(app, ["manifest", "summary", str(path), "--age-groups", "50"])
    assert result.exit_code == 0, result.output
    assert "50+" in result.output and "40-64" not in result.output
    result = runner.invoke(app, ["manifest", "summary", str(path), "--age-groups", "65,40"])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "--age-groups" in lines[0], result.output
