"""Provenance through chained models: `finetune --base GEN`, `train-classifier --init-from RUN`
and `synthesize --filter-with RUN` carry their source's patients and are refused, in one
line, when the source reaches a val or test patient of the real manifest in use.

One phantom set split twice: A (seed 0) and B (seed 1), where B's train split holds some of
A's val/test patients. C is B without those patients' rows: clean for A on its own.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli import app
from manifests.errors import UserError
from manifests.io import read_manifest, write_manifest
from manifests.provenance import (
    CHECKED,
    FOREIGN,
    PROVENANCE_KEY,
    SeenPatients,
    check_seen,
    held_out_patients,
    patients_digest,
    train_patients,
)
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


# ---------------------------------------------------------------- train-classifier --init-from


@pytest.fixture(scope="module")
def classifier_b(splits, tmp_path_factory) -> Path:
    """A classifier run trained on B."""
    out = tmp_path_factory.mktemp("runs") / "B"
    code, output = invoke("train-classifier", "--real", splits["B"], "--out", out, *CLASSIFIER)
    assert code == 0, output
    return out


def _run_patients(run: Path) -> dict:
    record = json.loads((run / "training_patients.json").read_text())
    assert record["digest"] == patients_digest(record["patients"])
    return record


def test_classifier_run_records_what_it_saw(splits, classifier_b):
    b = read_manifest(splits["B"])
    record = _run_patients(classifier_b)
    assert record["patients"] == train_patients(b) and record["complete"] is True
    val = b.rows.loc[b.rows["split"] == "val", "patient_id"]
    assert record["val_patients"] == sorted(set(val))


def test_init_from_a_run_that_saw_test_patients_is_refused(splits, classifier_b, tmp_path):
    out = tmp_path / "A-from-B"
    code, output = invoke("train-classifier", "--real", splits["A"], "--init-from",
                          classifier_b, "--out", out, *CLASSIFIER)  # fmt: skip
    n = len(splits["leaked"])
    assert_refused(code, output, f"--init-from {classifier_b}: trained on {n} val/test "
                   f"patients of {splits['A']}")  # fmt: skip
    assert not out.exists()


def test_init_from_carries_the_source_runs_patients(splits, classifier_b, tmp_path):
    """C is clean for A; a run on C started from B's run is not, and is refused as a source."""
    chained = tmp_path / "C-from-B"
    code, output = invoke("train-classifier", "--real", splits["C"], "--init-from",
                          classifier_b, "--out", chained, *CLASSIFIER)  # fmt: skip
    assert code == 0, output
    assert set(_run_patients(classifier_b)["patients"]) <= set(_run_patients(chained)["patients"])
    code, output = invoke("train-classifier", "--real", splits["A"], "--init-from", chained,
                          "--out", tmp_path / "A-from-C", *CLASSIFIER)  # fmt: skip
    assert_refused(code, output, f"--init-from {chained}: trained on")


def test_init_from_a_run_without_a_patient_record_reads_its_config(splits, classifier_b, tmp_path):
    """A run from before the record: its config's manifests, or refused as unchecked."""
    old = tmp_path / "old"
    shutil.copytree(classifier_b, old)
    (old / "training_patients.json").unlink()
    args = ["train-classifier", "--real", splits["A"], "--init-from", old, *CLASSIFIER]
    code, output = invoke(*args, "--out", tmp_path / "a")
    assert_refused(code, output, f"--init-from {old}: trained on")
    config = json.loads((old / "config.json").read_text())
    (old / "config.json").write_text(json.dumps({**config, "real_digest": "changed"}))
    code, output = invoke(*args, "--out", tmp_path / "b")
    assert_refused(code, output, "cannot be checked", "--allow-foreign-synthetic")
    code, output = invoke(*args, "--out", tmp_path / "c", "--allow-foreign-synthetic")
    assert code == 0, output
    assert json.loads((tmp_path / "c" / "config.json").read_text())["init_from_provenance"] == (
        FOREIGN
    )
    assert _run_patients(tmp_path / "c")["complete"] is False


def test_a_source_that_chose_its_epoch_on_test_patients_is_refused():
    held = {"p1": "val", "p2": "test"}
    assert check_seen(held, SeenPatients.of(["p0"], ["p1"]), "--x R", "M", "fix") == CHECKED
    with pytest.raises(UserError, match=r"^--x R: chose its best epoch on 1 test patients of M"):
        check_seen(held, SeenPatients.of(["p0"], ["p2"]), "--x R", "M", "fix")
    with pytest.raises(UserError, match=r"^--x R: trained on 1 val/test patients of M .*p1, val"):
        check_seen(held, SeenPatients.of(["p1"]), "--x R", "M", "fix")


# ---------------------------------------------------------------- synthesize --filter-with


@pytest.fixture(scope="module")
def generator_c(splits, tmp_path_factory) -> Path:
    """A tiny generator fine-tuned on C's train split (clean for A)."""
    out = tmp_path_factory.mktemp("gen") / "C"
    code, output = invoke("finetune", "--manifest", splits["C"], "--base", "tiny",
                          "--out", out, *FINETUNE)  # fmt: skip
    assert code == 0, output
    return out


def synthesize_args(generator: Path, prompts: Path, out: Path) -> list:
    return ["synthesize", "--model", generator, "--prompts-from", prompts, "--labels",
            "pleural_effusion:2", "--num-inference-steps", "1", "--out", out]  # fmt: skip


def test_filter_with_a_run_that_saw_test_patients_is_refused(
    splits, generator_c, classifier_b, tmp_path
):
    out = tmp_path / "syn"
    code, output = invoke(*synthesize_args(generator_c, splits["A"], out),
                          "--filter-with", classifier_b)  # fmt: skip
    n = len(splits["leaked"])
    assert_refused(code, output, f"--filter-with {classifier_b}: trained on {n} val/test "
                   f"patients of {splits['A']}")  # fmt: skip
    assert not out.exists()


def test_filter_with_carries_the_oracles_patients(splits, generator_c, classifier_b, tmp_path):
    """B's classifier is clean for C's prompts; the filtered set is not clean for A."""
    out = tmp_path / "syn"
    code, output = invoke(*synthesize_args(generator_c, splits["C"], out),
                          "--filter-with", classifier_b, "--min-prob", "0")  # fmt: skip
    assert code == 0, output
    synthetic = read_manifest(out / "manifest.parquet")
    oracle = json.loads(synthetic.metadata[PROVENANCE_KEY])["filter"]
    assert oracle["run"] == str(classifier_b)
    assert oracle["patients"] == _run_patients(classifier_b)["patients"]
    train = ["train-classifier", "--synthetic", out / "manifest.parquet", "--mix", "0.5",
             *CLASSIFIER]  # fmt: skip
    code, output = invoke(*train, "--real", splits["C"], "--out", tmp_path / "C")
    assert code == 0, output
    assert set(oracle["patients"]) <= set(_run_patients(tmp_path / "C")["patients"])
    code, output = invoke(*train, "--real", splits["A"], "--out", tmp_path / "A")
    assert_refused(code, output, f"its oracle filter (--filter-with {classifier_b}): trained on")


def test_synthesize_with_a_generator_that_saw_test_patients_is_refused(
    splits, generator_b, generator_c, tmp_path
):
    """B's generator trained on A's val/test patients: prompting it from A is refused before
    anything is written; C's generator (clean for A) synthesizes."""
    out = tmp_path / "syn"
    code, output = invoke(*synthesize_args(generator_b, splits["A"], out))
    n = len(splits["leaked"])
    assert_refused(code, output, f"--model {generator_b}: trained on {n} val/test patients "
                   f"of {splits['A']}")  # fmt: skip
    assert not out.exists()
    code, output = invoke(*synthesize_args(generator_c, splits["A"], out))
    assert code == 0, output
