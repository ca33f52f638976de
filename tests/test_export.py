"""`cxraug manifest export --format imagefolder`: a folder `datasets` loads offline, with a
dataset card carrying provenance, counts, the memorization audit and licence terms."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import cli
from manifests.export import CARD_FILE, dataset_card, export_imagefolder
from manifests.io import read_manifest
from tests.helpers import make_manifest, synthesis_config

datasets = pytest.importorskip("datasets")
runner = CliRunner()


def _export(*args: str):
    return runner.invoke(cli.app, ["manifest", "export", *args])


def _load(folder: Path):
    return datasets.load_dataset("imagefolder", data_dir=str(folder))


def test_real_manifest_exports_and_loads_with_every_column(phantom_manifest, tmp_path):
    out = tmp_path / "hf"
    result = _export(str(phantom_manifest), "--to", str(out))
    assert result.exit_code == 0, result.output
    m = read_manifest(phantom_manifest)
    ds = _load(out)
    assert set(ds) == {"train", "validation", "test"}
    for split, name in (("train", "train"), ("val", "validation"), ("test", "test")):
        rows = m.rows[m.rows["split"] == split].reset_index(drop=True)
        part = ds[name]
        assert len(part) == len(rows)
        assert set(m.rows.columns) | {"image", "file_name"} >= set(part.column_names)
        assert set(m.rows.columns) <= set(part.column_names)  # every manifest column
        for label in m.labels:  # float32 even where a split is all null
            assert part.features[label].dtype == "float32"
        got = np.array([np.nan if v is None else v for v in part["Cardiomegaly"]], np.float64)
        np.testing.assert_array_equal(got, rows["Cardiomegaly"].to_numpy(np.float64))
        assert part["patient_id"] == rows["patient_id"].tolist()
        first = np.asarray(part[0]["image"])
        assert first.shape == (64, 64)
    card = (out / CARD_FILE).read_text()
    assert card.startswith("---\nlicense: other\n")
    assert "task_categories:\n- image-classification" in card
    assert "| Cardiomegaly |" in card and "| train |" in card
    assert "not clinical data" in card  # phantom licence note
    # atomic and refusing: an existing folder stays unless --overwrite
    again = _export(str(phantom_manifest), "--to", str(out))
    assert again.exit_code == 2 and "--overwrite" in again.output
    assert _export(str(phantom_manifest), "--to", str(out), "--overwrite").exit_code == 0
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp left


def test_synthetic_set_card_has_sampler_generator_audit(
    tiny_generator_dir, phantom_manifest, tmp_path
):
    from augmentor.synthesize import synthesize

    syn = tmp_path / "synthetic"
    result = synthesize(
        synthesis_config(
            tiny_generator_dir,
            phantom_manifest,
            syn,
            labels="cardiomegaly:2",
            negatives=1,
            batch_size=3,
        )
    )
    # Stand-in for a study folder (its study.toml) and its evaluate-generator stage's
    # `generator_eval/` (the summary fields only): the card finds the study's audit.
    (syn.parent / "study.toml").write_text('name = "stand-in"\n')
    (syn.parent / "generator_eval").mkdir()
    audit = {
        "config": {"synthetic": str(result.manifest)},
        "memorization": {
            "n_synthetic": 3,
            "n_flagged": 0,
            "n_exact_copies": 0,
            "pixel_threshold": 0.97,
            "feature_threshold": 0.98,
            "pixel_correlation_max": 0.41,
            "feature_cosine_max": 0.52,
            "dropped_manifest": None,
        },
    }
    (syn.parent / "generator_eval" / "generator_eval.json").write_text(json.dumps(audit))
    out = tmp_path / "hf"
    res = _export(str(result.manifest), "--to", str(out), "--copy")
    assert res.exit_code == 0, res.output
    card = (out / CARD_FILE).read_text()
    assert "- synthetic" in card and "depicts no patient" in card
    assert '"scheduler": "pndm"' in card and '"num_inference_steps": 2' in card
    assert '"generator_digest"' in card and "Prompt policy" in card
    assert "0 of 3 synthetic images flagged" in card and "max pixel r 0.410" in card
    assert "| Cardiomegaly | 2 |" in card  # target label counts
    assert "not clinical data" in card  # prompts came from phantom reports
    ds = _load(out)
    assert list(ds) == ["train"] and len(ds["train"]) == 3
    assert ds["train"].features["seed"].dtype == "int64"
    assert sorted(ds["train"]["target_label"]) == ["Cardiomegaly", "Cardiomegaly", "No Finding"]
    assert not any(p.stat().st_nlink > 1 for p in (out / "train").glob("*.png"))  # --copy


def test_card_without_audit_warns_and_credentialed_terms_travel(tmp_path):
    m = make_manifest(tmp_path, n=6, patients=3, images=True)
    m.rows["dataset"] = "mimic-cxr"
    card = dataset_card(m, {"train": 6})
    assert "PhysioNet Credentialed Health Data License" in card
    assert "credentialed users" in card
    syn = m.with_rows(m.rows.assign(source="synthetic", dataset="synthetic"))
    card = dataset_card(syn, {"train": 6}, {"training_datasets": ["mimic-cxr", "chexpert"]})
    assert "No memorization audit was run" in card
    assert "PhysioNet" in card and "CheXpert" in card


def test_export_links_images_and_converts_nothing_it_need_not(tmp_path):
    from manifests.io import write_manifest

    m = make_manifest(tmp_path, n=6, patients=3, images=True)
    path = write_manifest(m, tmp_path / "m.parquet")
    result = export_imagefolder(path, tmp_path / "hf")
    assert result.counts == {"train": 6} and result.linked + result.copied == 6
    assert result.converted == 0
