"""Behaviour no other test calls: `--real-size` subsets, early stopping and the best epoch,
the larger synthetic-only arms, gradient accumulation across a resume, CLIP's 77 tokens."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from cli import app
from manifests.errors import UserError
from manifests.io import Manifest, read_manifest, write_manifest
from manifests.mixing import mix_manifests, subset_real_train
from tests.helpers import set_synthesis_columns

runner = CliRunner()

# ------------------------------------------------------------------------------ --real-size

# Each train patient has one finding at most, so a patient's finding is its stratum.
STRATA = {"Pneumothorax": 40, "Cardiomegaly": 80, "Pleural Effusion": 120, None: 160}
LABELS = ("Pneumothorax", "Cardiomegaly", "Pleural Effusion")


def stratified_manifest(root: Path, n_eval_patients: int = 20) -> Manifest:
    """400 train patients in the `STRATA` (1 to 3 images each) and real val/test patients."""
    rng = np.random.default_rng(5)
    findings = [f for f, n in STRATA.items() for _ in range(n)]
    findings += [None] * (2 * n_eval_patients)
    splits = ["train"] * (len(findings) - 2 * n_eval_patients)
    splits += ["val", "test"] * n_eval_patients
    rows = []
    for p, (finding, split) in enumerate(zip(findings, splits, strict=True)):
        for k in range(int(rng.integers(1, 4))):
            row = {"image_path": f"images/{p:04d}-{k}.png", "source": "real"}
            row |= {"patient_id": f"p{p:04d}", "split": split}
            row |= {label: float(label == finding) for label in LABELS}
            rows.append(row)
    return Manifest(rows=pd.DataFrame(rows), labels=LABELS, root=root)


def train_patients(m: Manifest) -> set[str]:
    return set(m.rows.loc[m.rows["split"] == "train", "patient_id"])


def test_real_size_subsets_are_nested_whole_patients_and_stratified_by_label(tmp_path):
    real = stratified_manifest(tmp_path)
    rows = real.rows
    is_train = rows["split"] == "train"
    n_train, n_patients = int(is_train.sum()), rows.loc[is_train, "patient_id"].nunique()
    images_of = rows[is_train].groupby("patient_id").size()
    finding_of = rows[is_train].groupby("patient_id")[list(LABELS)].max()
    for seed in (0, 1):
        subsets = [subset_real_train(real, size, seed) for size in (25, 0.1, 150, 0.5, 500)]
        kept = [train_patients(s) for s in subsets]
        for smaller, larger in zip(kept, kept[1:], strict=False):
            assert smaller < larger  # nested, strictly growing
        for size, subset, patients in zip((25, 0.1, 150, 0.5, 500), subsets, kept, strict=True):
            target = size if size >= 1 else round(size * n_train)
            sub = subset.rows
            # val and test untouched; train: whole patients, just enough to reach the size
            pd.testing.assert_frame_equal(
                sub[sub["split"] != "train"].reset_index(drop=True),
                rows[~is_train].reset_index(drop=True),
            )
            n_images = int((sub["split"] == "train").sum())
            assert n_images == int(images_of[sorted(patients)].sum())
            assert target <= n_images < target + images_of.max()
            # Every finding keeps its share of the patients (within one or two patients; a
            # random draw of patients is off by several at these sizes).
            share = len(patients) / n_patients
            for label, n_label in STRATA.items():
                if label is None:
                    continue
                n_kept = int(finding_of.loc[sorted(patients), label].sum())
                assert abs(n_kept - n_label * share) <= 2, (seed, size, label, n_kept)
    assert train_patients(subset_real_train(real, 150, 0)) != train_patients(
        subset_real_train(real, 150, 1)
    )
    with pytest.raises(UserError, match=f"--real-size: {n_train + 1} images asked for"):
        subset_real_train(real, n_train + 1)


def _train(*args: str):
    result = runner.invoke(app, ["train-classifier", *args])
    assert result.exit_code == 0, result.output
    return result


def test_train_classifier_real_size_trains_on_the_nested_subset(phantom_manifest, tmp_path):
    real = read_manifest(phantom_manifest)
    common = ["--real", str(phantom_manifest), "--backbone", "test_resnet"]
    common += ["--image-size", "32", "--epochs", "1", "--labels", "support_devices"]
    for size, name in (("10", "n10"), ("0.5", "half")):
        out = tmp_path / name
        _train(*common, "--real-size", size, "--out", str(out))
        config = json.loads((out / "config.json").read_text())
        expected = subset_real_train(real, float(size), seed=0).rows
        assert config["real_size"] == float(size)
        assert config["n_real_train"] == int((expected["split"] == "train").sum())
        metrics = json.loads((out / "metrics.json").read_text())
        assert metrics["history"][0]["train_images"] == config["n_real_train"]
        # Scored on the whole real test split, whatever the training subset.
        assert metrics["n_test_images"] == int((real.rows["split"] == "test").sum())


# ------------------------------------------------------------------------------ early stopping


def scripted_validation(monkeypatch, scores, losses=None) -> list[dict]:
    """Make the classifier's validation return `scores` (val macro AUROC) epoch by epoch;
    returns the list that receives each epoch's weights as validation saw them."""
    import classifier.train as train

    seen: list[dict] = []

    def validate(model, *args, **kwargs):
        epoch = len(seen)
        seen.append({k: v.detach().clone() for k, v in model.state_dict().items()})
        loss = losses[epoch] if losses else 1.0
        return {"val_loss": loss, "val_macro_auroc": scores[epoch]}

    monkeypatch.setattr(train, "validate", validate)
    return seen


def assert_saved_weights_are(out: Path, expected: dict) -> None:
    saved = load_file(str(out / "model.safetensors"))
    assert set(saved) <= set(expected)
    for key, value in saved.items():
        torch.testing.assert_close(value, expected[key], rtol=0, atol=0, msg=key)


def test_early_stopping_at_the_cli_default_patience_keeps_the_best_epoch(
    phantom_manifest, tmp_path, monkeypatch
):
    """No --patience: three epochs without a gain stop the run (a tie is no gain); the saved
    model is the best epoch's, not the last one's."""
    from classifier.config import TrainConfig

    # Epoch:    0     1     2     3     4 (= best, a tie)  5 never runs
    scores = [0.60, 0.70, 0.65, 0.69, 0.70, 0.95, 0.96, 0.97]
    seen = scripted_validation(monkeypatch, scores)
    out = tmp_path / "r"
    result = _train(
        "--real", str(phantom_manifest), "--out", str(out), "--backbone", "test_resnet",
        "--image-size", "32", "--epochs", "8", "--labels", "support_devices", "--lr", "0.01",
    )  # fmt: skip
    assert TrainConfig.patience == 3
    assert "early stop: no val improvement for 3 epochs" in " ".join(result.output.split())
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["epochs_run"] == 5 and len(metrics["history"]) == 5 and len(seen) == 5
    assert metrics["best_epoch"] == 1 and metrics["best_val_score"] == pytest.approx(0.70)
    assert [h["monitor"] for h in metrics["history"]] == ["val_macro_auroc"] * 5
    assert_saved_weights_are(out, seen[1])
    assert any(not torch.equal(seen[1][k], seen[4][k]) for k in seen[1])  # it did train on


def test_patience_zero_runs_every_epoch_and_falls_back_to_val_loss(
    phantom_manifest, tmp_path, monkeypatch
):
    """--patience 0 never stops; without a val AUROC (one class) the lowest val loss wins."""
    nan = float("nan")
    seen = scripted_validation(monkeypatch, [nan] * 4, losses=[1.0, 0.8, 0.9, 0.85])
    out = tmp_path / "r"
    _train(
        "--real", str(phantom_manifest), "--out", str(out), "--backbone", "test_resnet",
        "--image-size", "32", "--epochs", "4", "--labels", "support_devices", "--lr", "0.01",
        "--patience", "0",
    )  # fmt: skip
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["epochs_run"] == 4 and len(seen) == 4
    assert metrics["best_epoch"] == 1 and metrics["best_val_score"] == pytest.approx(-0.8)
    assert {h["monitor"] for h in metrics["history"]} == {"-val_loss"}
    assert_saved_weights_are(out, seen[1])


# ------------------------------------------------------------------------------ larger synthetic


def synthetic_pool(root: Path, n: int) -> Manifest:
    """`n` synthetic train rows, one finding each in turn."""
    rows = pd.DataFrame(
        {
            "image_path": [f"syn/{i:05d}.png" for i in range(n)],
            "source": "synthetic",
            "patient_id": [f"syn{i}" for i in range(n)],
            "split": "train",
        }
    )
    for j, label in enumerate(LABELS):
        rows[label] = (np.arange(n) % len(LABELS) == j).astype(float)
    set_synthesis_columns(rows)
    return Manifest(rows=rows, labels=LABELS, root=root)


def test_larger_synthetic_arms_are_k_times_the_whole_real_train_split(tmp_path):
    """`larger_synthetic = [2, 4]`: per seed, `synthetic-x2` and `synthetic-x4` train on
    synthetic images only, 2 and 4 times as many as the whole real train split (not a
    `--real-size` subset), and the draw takes each synthetic image once when enough exist."""
    from study import plan_runs, real_train_counts
    from study.presets import load_study_config

    real = stratified_manifest(tmp_path)
    n_real = int((real.rows["split"] == "train").sum())
    cfg = load_study_config("smoke").classifier
    cfg.seeds, cfg.larger_synthetic, cfg.real_sizes = [0, 1], [2, 4], [50]
    cfg.pretrain_finetune = False
    counts = real_train_counts(cfg, real)
    assert counts[(None, 0)] == counts[(None, 1)] == n_real and counts[(50, 0)] < n_real
    plan = plan_runs(cfg, tmp_path, n_synthetic=4 * n_real, real_counts=counts)
    larger = [r for r in plan if r.arm.name.startswith("synthetic-x")]
    assert [(r.arm.name, r.seed) for r in larger] == [
        ("synthetic-x2", 0),
        ("synthetic-x4", 0),
        ("synthetic-x2", 1),
        ("synthetic-x4", 1),
    ]
    for run in larger:
        k = int(run.arm.name.removeprefix("synthetic-x"))
        assert (run.arm.mix, run.train_size, run.arm.real_size) == (1.0, k * n_real, None)
        assert run.report and run.init_from is None and run.arm.matched_to is None
        assert run.out == tmp_path / "runs" / f"{run.arm.name}-seed{run.seed}"
    # Each seed's larger arms come after its real-size arms.
    for seed in (0, 1):
        arms = [r.arm.name for r in plan if r.seed == seed]
        assert arms.index("synthetic-x2") > arms.index("real-n50")

    pool = synthetic_pool(tmp_path, 4 * n_real)
    for run in larger:
        mixed = mix_manifests(real, pool, run.arm.mix, run.train_size, seed=run.seed).rows
        train = mixed[mixed["split"] == "train"]
        assert (train["source"] == "synthetic").all() and len(train) == run.train_size
        assert train["image_path"].is_unique  # unique images, not repeats
    # Without the real counts no size is known: no larger arm is planned.
    assert not [r for r in plan_runs(cfg, tmp_path, 4 * n_real) if "-x" in r.arm.name]


# ------------------------------------------------------------------------------ accumulation


def test_gradient_accumulation_resumes_to_the_same_weights(phantom_manifest, tmp_path, monkeypatch):
    """3 micro-batches per step, killed after the step-2 checkpoint (inside the first
    epoch: 27 images make 7 micro-batches of 4): `--resume` ends on the weights, losses and
    micro-step count of the uninterrupted run."""
    import augmentor.finetune as ft
    from augmentor.config import FinetuneConfig
    from classifier.training.checkpointer import Checkpointer
    from classifier.training.state import TRAINER_FILE
    from manifests.runfolder import latest_checkpoint

    def cfg(out: Path) -> FinetuneConfig:
        return FinetuneConfig(
            manifest=str(phantom_manifest), base="tiny", out=str(out), batch_size=4,
            max_steps=4, autoencoder_steps=1, checkpointing_steps=2, show_progress=False,
            gradient_accumulation_steps=3,
        )  # fmt: skip

    straight = ft.finetune(cfg(tmp_path / "straight"))
    real_save = Checkpointer.save

    def save_then_die(self, step, trainer):
        real_save(self, step, trainer)
        raise KeyboardInterrupt("killed after the first checkpoint")

    monkeypatch.setattr(Checkpointer, "save", save_then_die)
    killed = tmp_path / "killed"
    with pytest.raises(KeyboardInterrupt):
        ft.finetune(cfg(killed))
    monkeypatch.setattr(Checkpointer, "save", real_save)
    first = json.loads((latest_checkpoint(killed) / TRAINER_FILE).read_text())
    assert (first["global_step"], first["micro_step"]) == (2, 6)
    ft.finetune(replace(cfg(killed), resume=True))

    a, b = (json.loads((p / "cxraug.json").read_text()) for p in (straight, killed))
    assert b["resumed_from"] == [2] and a["global_step"] == b["global_step"] == 4
    assert a["losses"] == b["losses"]
    for run in (straight, killed):
        state = json.loads((latest_checkpoint(run) / TRAINER_FILE).read_text())
        assert (state["global_step"], state["micro_step"]) == (4, 12)
    for component in ("unet", "text_encoder"):
        wa, wb = (
            load_file(str(next((p / component).glob("*.safetensors")))) for p in (straight, killed)
        )
        for key in wa:
            assert torch.equal(wa[key], wb[key]), (component, key)


# ------------------------------------------------------------------------------ 77 tokens

LONG = "Large right pleural effusion with adjacent compressive atelectasis. " * 20


def test_tokenized_prompts_are_cut_at_77_tokens_keeping_the_end_token():
    from augmentor.base import CLIP_CONTEXT_LENGTH, tiny_tokenizer
    from augmentor.train_inputs import tokenize_prompts

    tokenizer = tiny_tokenizer()
    full = tokenizer(LONG).input_ids
    assert len(full) > 3 * CLIP_CONTEXT_LENGTH
    ids, truncated = tokenize_prompts(tokenizer, ["Small left pneumothorax.", LONG])
    assert ids.shape == (2, CLIP_CONTEXT_LENGTH) and truncated == 1
    assert ids[1, :-1].tolist() == full[: CLIP_CONTEXT_LENGTH - 1]
    assert ids[1, -1] == tokenizer.eos_token_id
    assert ids[0, -1] == tokenizer.pad_token_id  # the short one is padded, not cut


def test_text_past_77_tokens_changes_neither_embedding_nor_image(tiny_generator_dir):
    """Probe embeddings and generated images see the first 77 tokens only: words added
    past them change nothing, while a different prompt does."""
    from augmentor.base import load_pipeline
    from augmentor.probe import embed_texts
    from augmentor.synthesize import generate_images

    pipe = load_pipeline(tiny_generator_dir)
    pipe.set_progress_bar_config(disable=True)
    texts = [LONG, LONG + " New small left apical pneumothorax.", "No acute process."]
    for pooling in ("mean", "eos"):
        v = embed_texts(pipe.tokenizer, pipe.text_encoder, texts, pooling=pooling)
        np.testing.assert_array_equal(v[0], v[1])
        assert not np.allclose(v[0], v[2])
    images = generate_images(pipe, texts, [7, 7, 7], 2, 4.0).astype(int)
    assert np.abs(images[0] - images[1]).max() <= 1
    assert np.abs(images[0] - images[2]).max() > 1


def test_finetune_counts_the_reports_it_cut_at_77_tokens(phantom_manifest, tmp_path):
    from augmentor.config import FinetuneConfig
    from augmentor.finetune import finetune

    m = read_manifest(phantom_manifest)
    rows = m.rows.copy()
    train = rows.index[(rows["split"] == "train") & (rows["source"] == "real")]
    rows.loc[train[:2], "report"] = LONG
    long_reports = write_manifest(m.with_rows(rows), tmp_path / "long.parquet")
    out = finetune(
        FinetuneConfig(
            manifest=str(long_reports), base="tiny", out=str(tmp_path / "g"), batch_size=4,
            max_steps=1, autoencoder_steps=1, checkpointing_steps=1, show_progress=False,
        )
    )  # fmt: skip
    record = json.loads((Path(out) / "cxraug.json").read_text())
    assert record["n_prompts_truncated"] == 2
