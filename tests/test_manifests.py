"""Manifest v1: schema validation, atomic Parquet I/O, helpers, splits, leakage, CLI.

The helpers come from the `manifests` package, as users import them."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from cli import app
from manifests import (
    CHEXPERT_LABELS,
    NIH_LABELS,
    Manifest,
    UserError,
    check_leakage,
    concat_manifests,
    filter_manifest,
    label_prevalence,
    label_set,
    read_manifest,
    resolve_label,
    split_by_patient,
    write_manifest,
)
from manifests.schema import arrow_schema, validate_frame
from manifests.splits import parse_fractions
from tests.helpers import make_manifest, make_rows

runner = CliRunner()


def test_label_sets_and_resolution():
    assert len(CHEXPERT_LABELS) == 14 and len(NIH_LABELS) == 14
    assert label_set("NIH") == NIH_LABELS
    for spelling in ("pleural_effusion", "Pleural Effusion", "PLEURAL-effusion"):
        assert resolve_label(spelling, CHEXPERT_LABELS) == "Pleural Effusion"
    with pytest.raises(
        UserError, match=r"--labels: unknown label 'pneumonitis'; valid: No Finding"
    ):
        resolve_label("pneumonitis", CHEXPERT_LABELS)
    with pytest.raises(UserError, match="valid: chexpert, nih"):
        label_set("mimic")


def test_arrow_schema_has_every_column():
    schema = arrow_schema(CHEXPERT_LABELS, synthetic=True)
    for column in ("image_path", "report", "Pneumothorax", "prompt", "seed", "image_sha256"):
        assert column in schema.names
    assert str(schema.field("Cardiomegaly").type) == "float"


def test_roundtrip_keeps_rows_labels_and_metadata(tmp_path):
    m = make_manifest(tmp_path)
    m.metadata["cxraug.generator_digest"] = "abc123"
    path = write_manifest(m, tmp_path / "m.parquet")
    back = read_manifest(path)
    assert back.labels == CHEXPERT_LABELS
    assert back.metadata["cxraug.generator_digest"] == "abc123"
    pd.testing.assert_frame_equal(
        back.rows[list(CHEXPERT_LABELS)].astype("float32"),
        m.rows[list(CHEXPERT_LABELS)].astype("float32"),
    )
    assert back.rows["image_path"].tolist() == m.rows["image_path"].tolist()
    meta = pq.read_schema(path).metadata
    assert meta[b"cxraug.schema_version"] == b"1"
    assert json.loads(meta[b"cxraug.labels"]) == list(CHEXPERT_LABELS)
    assert meta[b"cxraug.label_set"] == b"chexpert"
    assert back.image_paths()[0] == tmp_path / "images/000000.png"


def test_write_rebases_paths_to_output_folder(tmp_path):
    m = make_manifest(tmp_path / "data")
    inside = write_manifest(m, tmp_path / "data" / "sub" / "..x" / "m.parquet")
    # Images are not under the output folder: stored absolute, never with '..'.
    stored = read_manifest(inside).rows["image_path"]
    assert all(p.startswith("/") for p in stored)
    above = write_manifest(m, tmp_path / "m.parquet")
    assert read_manifest(above).rows["image_path"][0] == "data/images/000000.png"


@pytest.mark.parametrize(
    ("column", "value", "message"),
    [
        ("Pneumothorax", 2.0, r"column 'Pneumothorax' row 3: 2.0 is not 1, 0, -1 or NaN"),
        ("split", "holdout", r"column 'split' row 3: 'holdout' is not one of train, val, test"),
        ("source", "fake", r"column 'source' row 3: 'fake' is not one of real, synthetic"),
        ("patient_id", None, r"column 'patient_id' row 3: empty value"),
        (
            "image_path",
            "../../etc/passwd",
            r"column 'image_path' row 3: .* escapes the manifest's root",
        ),
        ("age", "old", r"column 'age' row 3: 'old' is not a non-negative number"),
    ],
)
def test_validation_names_column_and_row(column, value, message):
    rows = make_rows(6, 3)
    rows[column] = rows[column].astype(object)
    rows.loc[3, column] = value
    with pytest.raises(UserError, match=message):
        validate_frame(rows, CHEXPERT_LABELS, where="m.parquet")


def test_validation_missing_column_and_synthetic_rules():
    rows = make_rows(4, 2).drop(columns=["Edema"])
    with pytest.raises(UserError, match=r"m.parquet: missing column\(s\) 'Edema'"):
        validate_frame(rows, CHEXPERT_LABELS, where="m.parquet")
    rows = make_rows(4, 2)
    rows.loc[1, "source"] = "synthetic"
    with pytest.raises(UserError, match="synthetic rows need column 'prompt'"):
        validate_frame(rows, CHEXPERT_LABELS)
    rows.loc[1, "split"] = "test"
    with pytest.raises(
        UserError, match=r"column 'split' row 1: synthetic rows must be in split 'train'"
    ):
        validate_frame(rows, CHEXPERT_LABELS)


def test_write_refuses_existing_and_leaves_nothing_half_written(tmp_path):
    m = make_manifest(tmp_path)
    path = write_manifest(m, tmp_path / "m.parquet")
    before = path.read_bytes()
    with pytest.raises(UserError, match=r"m.parquet: already exists; pass --overwrite"):
        write_manifest(m, path)
    bad = m.with_rows(m.rows.assign(Edema=np.float32(5)))
    with pytest.raises(UserError):
        write_manifest(bad, path, overwrite=True)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.parquet"]


def test_read_errors(tmp_path):
    with pytest.raises(UserError, match="manifest not found"):
        read_manifest(tmp_path / "nope.parquet")
    (tmp_path / "x.parquet").write_text("not parquet")
    with pytest.raises(UserError, match="not a Parquet manifest"):
        read_manifest(tmp_path / "x.parquet")
    pd.DataFrame({"a": [1]}).to_parquet(tmp_path / "plain.parquet")
    with pytest.raises(UserError, match="not a cxraug manifest"):
        read_manifest(tmp_path / "plain.parquet")


def test_read_selected_columns(tmp_path):
    m = make_manifest(tmp_path)
    m.rows["extra"] = "x"
    path = write_manifest(m, tmp_path / "m.parquet")
    assert "extra" not in read_manifest(path, columns=[]).rows.columns
    assert "extra" in read_manifest(path, columns=["extra"]).rows.columns


def test_concat_filter_prevalence(tmp_path):
    a = make_manifest(tmp_path / "a", n=10, seed=1)
    b = make_manifest(tmp_path / "b", n=6, seed=2)
    both = concat_manifests([a, b])
    assert len(both) == 16
    assert both.image_paths()[10] == tmp_path / "b/images/000000.png"
    with pytest.raises(UserError, match="label sets differ"):
        concat_manifests([a, Manifest(rows=make_rows(2, 1, labels=NIH_LABELS), labels=NIH_LABELS)])
    val = filter_manifest(
        both.with_rows(both.rows.assign(split=["val"] * 4 + ["train"] * 12)), split="val"
    )
    assert len(val) == 4
    with pytest.raises(
        UserError, match=r"--frontal-only: no rows left after filtering \(views=\['AP'\]\)"
    ):
        filter_manifest(a, views=["AP"], where="--frontal-only")
    prev = label_prevalence(a)
    row = prev[prev["label"] == "Pneumothorax"].iloc[0]
    values = a.rows["Pneumothorax"].to_numpy()
    assert row["positive"] == int((values == 1).sum())
    assert row["positive"] + row["negative"] + row["uncertain"] + row["missing"] == 10


def test_split_is_patient_disjoint_deterministic_and_stratified():
    rows = make_rows(600, 200, seed=3)
    m = Manifest(rows=rows, labels=CHEXPERT_LABELS)
    first = split_by_patient(m, (0.8, 0.1, 0.1), seed=7)
    again = split_by_patient(m, (0.8, 0.1, 0.1), seed=7)
    other = split_by_patient(m, (0.8, 0.1, 0.1), seed=8)
    assert first.rows["split"].tolist() == again.rows["split"].tolist()
    assert first.rows["split"].tolist() != other.rows["split"].tolist()
    assert (first.rows.groupby("patient_id")["split"].nunique() == 1).all()
    patients = first.rows.groupby("split")["patient_id"].nunique()
    assert patients["train"] == pytest.approx(160, abs=8)
    assert patients["val"] == pytest.approx(20, abs=6)
    # Stratified: every split sees positives of every label.
    for label in CHEXPERT_LABELS:
        assert (first.rows.groupby("split")[label].apply(lambda v: (v == 1).sum()) > 0).all()


def test_split_keeps_official_test_and_carves_val_from_the_rest():
    rows = make_rows(60, 30, seed=4)
    rows["official_split"] = [("test" if int(p[1:]) < 6 else None) for p in rows["patient_id"]]
    out = split_by_patient(Manifest(rows=rows, labels=CHEXPERT_LABELS), seed=0)
    official = rows["official_split"].notna()
    assert (out.rows.loc[official, "split"] == "test").all()
    assert set(out.rows.loc[~official, "split"]) == {"train", "val"}


def test_leakage_check():
    rows = make_rows(6, 3)
    rows["split"] = [
        "train",
        "test",
        "val",
        "train",
        "test",
        "val",
    ]  # p0 in train and train; p1 in test, test...
    check_leakage(Manifest(rows=rows, labels=CHEXPERT_LABELS))
    rows.loc[3, "split"] = "val"  # patient p00000 now in train and val
    with pytest.raises(UserError, match=r"patient 'p00000' is in splits train, val"):
        check_leakage(Manifest(rows=rows, labels=CHEXPERT_LABELS), where="m.parquet")


def test_parse_fractions():
    assert parse_fractions("0.7,0.15,0.15") == (0.7, 0.15, 0.15)
    for bad in ("0.5,0.5", "a,b,c", "0.9,0.2,0.1"):
        with pytest.raises(UserError, match="--fractions"):
            parse_fractions(bad)


def test_cli_split_and_summary(tmp_path):
    m = make_manifest(tmp_path, n=40, patients=20)
    path = write_manifest(m, tmp_path / "m.parquet")
    result = runner.invoke(app, ["manifest", "split", str(path), "--seed", "1"])
    assert result.exit_code == 0, result.output
    splits = read_manifest(path).rows.groupby("patient_id")["split"].nunique()
    assert (splits == 1).all()
    result = runner.invoke(app, ["manifest", "summary", str(path)])
    assert result.exit_code == 0, result.output
    assert "Pneumothorax" in result.output and "train" in result.output and "test" in result.output
    # An explicit --out that exists is refused without --overwrite.
    result = runner.invoke(app, ["manifest", "split", str(path), "--out", str(path)])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        f"error: {path}: already exists; pass --overwrite to replace it"
    ]


def test_cli_bad_input_is_one_line_exit_2(tmp_path):
    result = runner.invoke(app, ["manifest", "summary", str(tmp_path / "missing.parquet")])
    assert result.exit_code == 2
    assert result.output.strip() == f"error: {tmp_path / 'missing.parquet'}: manifest not found"
    path = write_manifest(make_manifest(tmp_path), tmp_path / "m.parquet")
    result = runner.invoke(app, ["manifest", "split", str(path), "--fractions", "1,1,1"])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert result.output.count("\n") == 1 and "--fractions" in result.output


def test_split_spreads_a_rare_label_whose_patients_have_common_labels_too():
    # Regression: patients with a rare label plus common ones all went to train before.
    rows = make_rows(600, 200, seed=5)
    rare = rows["patient_id"].str[1:].astype(int) % 7 == 0  # ~29 patients, every study
    rows["Cardiomegaly"] = rare.astype("float32")
    for label in ("Pleural Effusion", "Support Devices"):
        rows.loc[rare, label] = 1.0
    out = split_by_patient(
        Manifest(rows=rows, labels=CHEXPERT_LABELS), (0.8, 0.1, 0.1), seed=0
    ).rows
    per_split = out[out["Cardiomegaly"] == 1].groupby("split")["patient_id"].nunique()
    assert per_split["val"] >= 2 and per_split["test"] >= 2


def test_atomic_writes_get_ordinary_permissions(tmp_path):
    import os
    import stat

    path = write_manifest(make_manifest(tmp_path), tmp_path / "m.parquet")
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask
