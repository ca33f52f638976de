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
