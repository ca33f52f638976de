"""Provenance: synthetic rows whose prompts or generator saw a val/test patient are refused."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from manifests import provenance
from manifests.errors import UserError
from manifests.io import Manifest
from manifests.schema import CHEXPERT_LABELS


def _real(splits: dict[str, str]) -> Manifest:
    rows = pd.DataFrame(
        {
            "image_path": [f"{p}.png" for p in splits],
            "source": "real",
            "dataset": "phantom",
            "patient_id": list(splits),
            "study_id": [f"s-{p}" for p in splits],
            "split": list(splits.values()),
        }
    )
    for label in CHEXPERT_LABELS:
        rows[label] = np.float32(np.nan)
    return Manifest(rows=rows, labels=CHEXPERT_LABELS, root=".")


def _synthetic(prompt_patients: list[str], generator_patients: list[str] | None, real):
    rows = pd.DataFrame(
        {
            "image_path": [f"images/{i:06d}.png" for i in range(len(prompt_patients))],
            "source": "synthetic",
            "patient_id": [f"synth-{i}" for i in range(len(prompt_patients))],
            "split": "train",
            provenance.PROMPT_PATIENT_COLUMN: prompt_patients,
        }
    )
    record = provenance.synthetic_record("abc", generator_patients, real)
    meta = {provenance.PROVENANCE_KEY: json.dumps(record)}
    return Manifest(rows=rows, labels=CHEXPERT_LABELS, root=".", metadata=meta)


def test_split_twice_with_other_seeds_is_refused_with_one_line():
    real = _real({"a": "train", "b": "train", "c": "val", "d": "test"})
    ok = _synthetic(["a", "b", "a"], ["a", "b"], real)
    assert provenance.check_synthetic(real, ok) == provenance.CHECKED
    # The generator's prompts came from a manifest split with another seed: d is test here.
    leaked = _synthetic(["a", "d", "d"], ["a", "b"], real)
    with pytest.raises(UserError, match=r"2 of 3 rows were prompted by .* patient d, test"):
        provenance.check_synthetic(real, leaked)
    trained_on_test = _synthetic(["a"], ["a", "c"], real)
    with pytest.raises(UserError, match=r"generator was trained on 1 val/test patients .* c, val"):
        provenance.check_synthetic(real, trained_on_test)


def test_foreign_synthetic_needs_explicit_acceptance():
    real = _real({"a": "train", "c": "test"})
    foreign = _synthetic(["a"], None, real)
    with pytest.raises(UserError, match="--allow-foreign-synthetic"):
        provenance.check_synthetic(real, foreign)
    assert provenance.check_synthetic(real, foreign, allow_foreign=True) == provenance.FOREIGN


def test_unsplit_manifest_is_refused_and_digests_are_stable():
    unsplit = _real({"a": "train", "b": "train"})
    with pytest.raises(UserError, match="never split by patient.*cxraug manifest split"):
        provenance.require_patient_split(unsplit, "--manifest m.parquet")
    split = _real({"a": "train", "b": "test"})
    provenance.require_patient_split(split, "--manifest m.parquet")
    assert provenance.split_map_digest(split) != provenance.split_map_digest(unsplit)
    assert provenance.patients_digest(["b", "a", "a"]) == provenance.patients_digest(["a", "b"])


def test_cli_refuses_a_synthetic_set_made_from_another_split(tmp_path, phantom_dir):
    """Split twice with different seeds, fine-tune and prompt on one, train on the other."""
    from typer.testing import CliRunner

    from cli import app
    from manifests.io import read_manifest, write_manifest
    from manifests.splits import split_by_patient

    runner = CliRunner()
    source = read_manifest(phantom_dir / "manifest.parquet")
    for seed in (0, 1):
        split = split_by_patient(source, (0.5, 0.25, 0.25), seed=seed)
        write_manifest(split, phantom_dir / f"split{seed}.parquet", overwrite=True)
    gen, syn = tmp_path / "gen", tmp_path / "syn"
    steps = ["--max-steps", "2", "--autoencoder-steps", "2", "--batch-size", "4"]
    result = runner.invoke(
        app, ["finetune", "--manifest", str(phantom_dir / "split1.parquet"), "--base", "tiny",
              "--out", str(gen), *steps],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    result = runner.invoke(
        app, ["synthesize", "--model", str(gen), "--prompts-from",
              str(phantom_dir / "split1.parquet"), "--labels", "pleural_effusion:6",
              "--num-inference-steps", "1", "--out", str(syn)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    train = ["train-classifier", "--real", str(phantom_dir / "split0.parquet"), "--synthetic",
             str(syn / "manifest.parquet"), "--mix", "0.5", "--backbone", "test_resnet",
             "--epochs", "1", "--image-size", "32"]  # fmt: skip
    refused = runner.invoke(app, [*train, "--out", str(tmp_path / "run")])
    assert refused.exit_code == 2, refused.output
    line = refused.output.strip()
    assert len(line.splitlines()) == 1 and "val/test patients" in line, line
    assert not (tmp_path / "run").exists()
