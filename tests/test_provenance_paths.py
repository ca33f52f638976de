"""Provenance through chained models: `finetune --base GEN`, `train-classifier --init-from RUN`
and `synthesize --filter-with RUN` carry their source's patients and are refused, in one
line, when the source reaches a val or test patient of the real manifest in use.

One phantom set split twice: A (seed 0) and B (seed 1), where B's train split holds some of
A's val/test patients. C is B without those patients' rows: clean for A on its own.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli import app
from manifests.io import read_manifest, write_manifest
from manifests.provenance import held_out_patients, patients_digest, train_patients
from manifests.splits import split_by_patient

FINETUNE = ["--max-steps", "2", "--batch-size", "4", "--checkpointing-steps", "2"]
CLASSIFIER = ["--backbone", "test_resnet", "--labels", "Support Devices,Pleural Effusion",
              "--epochs", "1", "--batch-size", "8", "--image-size", "32"]  # fmt: skip


@pytest.fixture(scope="module")
def splits(phantom_dir) -> dict:
    source = read_manifest(phantom_dir / "manifest.parquet")
    a = split_by_patient(source, (0.5, 0.25, 0.25), seed=0)
    b = split_by_patient(source, (0.5, 0.25, 0.25), seed=1)
    leaked = set(train_patients(b)) & set(held_out_patients(a))
    assert leaked, "B's train split must hold some of A's val/test patients"
    c = b.with_rows(b.rows[~b.rows["patient_id"].isin(leaked)])
    out = {}
    for name, manifest in (("A", a), ("B", b), ("C", c)):
        out[name] = write_manifest(manifest, phantom_dir / f"paths-{name}.parquet", overwrite=True)
    out["leaked"] = sorted(leaked)
    return out


def invoke(*args) -> tuple[int, str]:
    result = CliRunner().invoke(app, [str(a) for a in args])
    return result.exit_code, result.output


def assert_refused(code: int, output: str, *parts: str) -> None:
    lines = [line for line in output.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1, output
    for part in parts:
        assert part in lines[0], lines[0]


@pytest.fixture(scope="module")
def generator_b(splits, tmp_path_factory) -> Path:
    """A tiny generator fine-tuned on B's train split."""
    out = tmp_path_factory.mktemp("gen") / "B"
    code, output = invoke("finetune", "--manifest", splits["B"], "--base", "tiny",
                          "--out", out, *FINETUNE)  # fmt: skip
    assert code == 0, output
    return out


def _patients(generator: Path) -> list[str]:
    record = json.loads((generator / "training_patients.json").read_text())
    assert record["digest"] == patients_digest(record["patients"])
    return record["patients"]


def test_finetune_from_a_generator_that_saw_test_patients_is_refused(splits, generator_b, tmp_path):
    out = tmp_path / "A-from-B"
    code, output = invoke("finetune", "--manifest", splits["A"], "--base", generator_b,
                          "--out", out, *FINETUNE)  # fmt: skip
    n = len(splits["leaked"])
    assert_refused(code, output, f"--base {generator_b}", f"trained on {n} val/test patients")
    assert not out.exists()


def test_finetune_from_a_generator_records_both_runs_patients(splits, generator_b, tmp_path):
    """C is clean for A on its own; the generator fine-tuned on C from B's generator is not."""
    out, synthetic = tmp_path / "C-from-B", tmp_path / "syn"
    code, output = invoke("finetune", "--manifest", splits["C"], "--base", generator_b,
                          "--out", out, *FINETUNE)  # fmt: skip
    assert code == 0, output
    own = train_patients(read_manifest(splits["C"]))
    assert not set(own) & set(splits["leaked"])
    assert _patients(out) == sorted({*own, *_patients(generator_b)}) != own
    record = json.loads((out / "cxraug.json").read_text())
    assert record["training_patients_digest"] == patients_digest(_patients(out))
    code, output = invoke("synthesize", "--model", out, "--prompts-from", splits["C"],
                          "--labels", "pleural_effusion:2", "--num-inference-steps", "1",
                          "--out", synthetic)  # fmt: skip
    assert code == 0, output
    code, output = invoke("train-classifier", "--real", splits["A"], "--synthetic",
                          synthetic / "manifest.parquet", "--mix", "0.5",
                          "--out", tmp_path / "run", *CLASSIFIER)  # fmt: skip
    assert_refused(code, output, "--synthetic", "generator was trained on")
