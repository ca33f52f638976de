"""Folder owners: what the synthetic set, the generator evaluation and the study folder
write and read, and that nobody else spells their file names."""

from __future__ import annotations

import ast
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from augmentor import eval_folder, synthetic_set
from classifier.arms import Arm
from manifests.errors import UserError
from manifests.io import read_manifest
from study import folder as study_folder

ROOT = Path(__file__).resolve().parents[1]


def _set_manifest(tmp_path: Path) -> Path:
    """A manifest with images at a synthetic set's place (the owner functions read no
    synthetic column)."""
    from manifests.io import write_manifest
    from tests.helpers import make_manifest

    folder = tmp_path / "set"
    return write_manifest(make_manifest(folder, n=6, patients=3, images=True),
                          synthetic_set.manifest_path(folder))  # fmt: skip


def test_synthetic_set_filters_write_beside_the_manifest(tmp_path):
    path = _set_manifest(tmp_path)
    manifest = read_manifest(path)
    scored = manifest.rows.assign(oracle_prob=np.linspace(0, 1, len(manifest)))
    scores = synthetic_set.write_oracle_scores(path, scored)
    assert scores == path.parent / "oracle_scores.parquet"
    assert pd.read_parquet(scores)["oracle_prob"].tolist() == scored["oracle_prob"].tolist()
    assert synthetic_set.feature_cache_dir(path) == path.parent / "feature_cache"
    kept = manifest.with_rows(manifest.rows.iloc[:4])
    assert synthetic_set.write_filtered_manifest(path, kept) == path
    assert len(read_manifest(path)) == 4  # the set's manifest (its finished marker) replaced

    default = synthetic_set.unmemorized_path(path)
    assert default == path.parent / "manifest.unmemorized.parquet"
    assert synthetic_set.unmemorized_path(path, tmp_path / "k.parquet") == tmp_path / "k.parquet"
    synthetic_set.check_unmemorized_path(default, kept, overwrite=False)
    written = synthetic_set.write_unmemorized_manifest(
        kept.with_rows(kept.rows[:2]), default, False
    )
    assert len(read_manifest(written)) == 2
    with pytest.raises(UserError, match="already exists; pass --overwrite"):
        synthetic_set.check_unmemorized_path(default, kept, overwrite=False)
    below = path.parent / "images" / "sub" / "x.parquet"
    with pytest.raises(UserError, match="folder above the images"):
        synthetic_set.check_unmemorized_path(below, kept, overwrite=False)


def _summary(synthetic: Path) -> dict:
    """A small `generator_eval.json` document of the evaluated `synthetic` manifest."""
    return {
        "schema": eval_folder.GENERATOR_EVAL_SCHEMA,
        "config": {"synthetic": str(synthetic)},
        "feature_extractor": {"name": "test"},
        "n_synthetic": 4,
        "n_real": {"train": 8, "val": 2, "test": 2},
        "notes": ["a note"],
        "memorization": {
            "n_synthetic": 4,
            "n_flagged": 1,
            "n_exact_copies": 0,
            "pixel_threshold": 0.97,
            "feature_threshold": 0.98,
            "pixel_correlation_max": 0.9,
            "feature_cosine_max": 0.8,
            "dropped_manifest": None,
            "figure": "memorization.png",
            "flagged": [{"image_path": "images/000001.png"}],
        },  # fmt: skip
        "fidelity": {"rows": []},
        "diversity": {"metric": "MS-SSIM", "image_size": 64, "scales": 3, "rows": []},
    }


def test_eval_folder_writes_reads_and_finds_the_audit_of_a_manifest(tmp_path):
    synthetic = tmp_path / "set" / "manifest.parquet"
    synthetic.parent.mkdir()
    out = tmp_path / "eval"
    out.mkdir()
    doc = _summary(synthetic)
    path = eval_folder.write_summary(out, doc)
    assert path == out / "generator_eval.json" and (out / "generator_eval.md").is_file()
    read, probe = eval_folder.read_generator_eval(out)
    assert read == doc and probe is None
    eval_folder.write_probe(out, {"rows": []}, pd.DataFrame({"label": ["x"]}))
    _, probe = eval_folder.read_generator_eval(path)
    assert (
        probe["schema"] == eval_folder.PROBE_SCHEMA and (out / "text_encoder_probe.csv").is_file()
    )
    assert eval_folder.evaluated_manifest(read) == str(synthetic)
    assert "flagged" not in eval_folder.memorization_audit(read)
    assert eval_folder.audited(out, synthetic) == path
    assert eval_folder.audited(out, tmp_path / "other.parquet") is None
    assert eval_folder.find_beside(synthetic) is None  # the audit lies elsewhere
    lines = eval_folder.summary_lines(read, out)
    assert lines[0].startswith("memorization: 1 of 4 synthetic images flagged (max pixel r 0.900")
    assert lines[1:] == ["note: a note", f"wrote {path}, generator_eval.md, memorization.png"]
    (out / "generator_eval.json").write_text(json.dumps({**doc, "schema": "other/1"}))
    with pytest.raises(UserError, match="expected cxraug.generator_eval/1"):
        eval_folder.read_generator_eval(out)


def test_study_layout_stage_markers_and_its_generator_eval(tmp_path):
    out = tmp_path / "study"
    layout = study_folder.StudyLayout(out)
    assert layout.real_manifest == out / "data" / "manifest.parquet"
    assert layout.synthetic_manifest == out / "synthetic" / "manifest.parquet"
    assert layout.run(Arm(mix=0.5, real_size=80), 2) == out / "runs" / "mix0.5-n80-seed2"
    assert (
        layout.run(Arm(mix=1.0, pretrain=True), 0) == out / "pretrain" / "synthetic-pretrain-seed0"
    )
    lines: list[str] = []
    stages = study_folder.Stages(out, lines.append)
    assert not stages.done("data", layout.real_manifest)
    stages.finish("data", time.perf_counter())
    assert json.loads((out / "stages" / "data.json").read_text())["stage"] == "data"
    assert not stages.done("data", layout.real_manifest)  # its output is missing
    layout.real_manifest.parent.mkdir(parents=True)
    layout.real_manifest.write_bytes(b"")
    assert stages.done("data", layout.real_manifest) and stages.skipped == ["data"]
    assert lines[-1].startswith("skip data (done: ")

    # The study's evaluation of its own synthetic set, once the study folder exists.
    assert study_folder.generator_eval_for(layout.synthetic_manifest) is None
    from study.presets import load_study_config

    study_folder.write_config(out, load_study_config("smoke"))
    layout.generator_eval.mkdir()
    path = eval_folder.write_summary(layout.generator_eval, _summary(layout.synthetic_manifest))
    assert study_folder.study_of(layout.synthetic_manifest) == out.resolve()
    assert study_folder.generator_eval_for(layout.synthetic_manifest) == path
    assert study_folder.generator_eval_for(layout.real_manifest) is None


def _code_strings(path: Path) -> list[str]:
    """A module's string literals, without docstrings and `help=` texts (prose a user reads)."""
    tree = ast.parse(path.read_text())
    prose = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.FunctionDef | ast.ClassDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
    }
    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and node.arg == "help":
            prose.update(id(n) for n in ast.walk(node.value))
    return [
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in prose
    ]


def test_no_module_spells_another_owners_file_names():
    """Each folder's file names, and the arm-name grammar, are literals in their owner only."""
    owned = {
        "oracle_scores.parquet": "augmentor/synthetic_set.py",
        ".unmemorized.parquet": "augmentor/synthetic_set.py",
        "generator_eval.json": "augmentor/eval_folder.py",
        "generator_eval.md": "augmentor/eval_folder.py",
        "memorization.parquet": "augmentor/eval_folder.py",
        "text_encoder_probe.json": "augmentor/eval_folder.py",
        "study.toml": "study/folder.py",
        "real-steps-": "classifier/arms.py",
        "synthetic-x": "classifier/arms.py",
    }
    files = [ROOT / "cli.py"] + [
        p
        for d in ("augmentor", "classifier", "manifests", "study")
        for p in (ROOT / d).rglob("*.py")
    ]
    for path in files:
        where = path.relative_to(ROOT).as_posix()
        for text in _code_strings(path):
            for name, owner in owned.items():
                assert name not in text or where == owner, f"{where} spells {name!r} ({owner}'s)"
