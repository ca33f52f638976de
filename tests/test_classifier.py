"""Classifier: targets, cache, augmentation, bootstrap, training to AUROC > 0.9, runs, CLI."""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import timm
import torch
from safetensors.torch import load_file
from scipy.stats import norm
from sklearn.metrics import roc_auc_score
from typer.testing import CliRunner

from classifier.config import TrainConfig
from classifier.data import (
    AugmentConfig,
    CachedImages,
    augment_batch,
    decode_images,
    label_targets,
    resolve_labels,
    to_model_input,
)
from classifier.evaluate import compute_metrics, evaluate_run
from classifier.models import build_model
from classifier.run import load_model
from classifier.stats import (
    bootstrap_auroc,
    paired_bootstrap_delta,
    patient_resample_weights,
    weighted_auroc,
)
from classifier.train import train_classifier
from cli import app
from manifests.errors import UserError
from manifests.images import save_png
from manifests.io import read_manifest, write_manifest
from tests.helpers import free_port, image_folder, set_synthesis_columns, write_split_phantom

runner = CliRunner()
LABELS = ("Support Devices", "Pleural Effusion")


# ------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def larger_phantom(tmp_path_factory) -> Path:
    """480 phantom images (64 px, 160 patients), split 0.6/0.2/0.2: enough for AUROC > 0.9."""
    out = tmp_path_factory.mktemp("phantom480")
    return write_split_phantom(out, n=480, seed=2, patients=160)


@pytest.fixture(scope="module")
def synthetic_from_phantom(phantom_manifest, tmp_path_factory) -> Path:
    """The fixture's train images re-labelled as synthetic rows (a stand-in generator output)."""
    real = read_manifest(phantom_manifest)
    out = image_folder(tmp_path_factory, "syn")
    rows = real.rows[real.rows["split"] == "train"].copy()
    new_paths = []
    for i, src in enumerate(real.image_paths()):
        if real.rows["split"].iloc[i] != "train":
            continue
        target = out / "images" / f"syn-{i:04d}.png"
        shutil.copy(src, target)
        new_paths.append(f"images/{target.name}")
    rows["image_path"] = new_paths
    rows["source"] = "synthetic"
    rows["patient_id"] = [f"synthetic-{i}" for i in range(len(rows))]
    set_synthesis_columns(
        rows,
        prompt="phantom",
        seed=0,
        num_inference_steps=2,
        target_label="Support Devices",
        generator="copy",
    )
    return write_manifest(replace(real, rows=rows, root=out), out / "synthetic.parquet")


def tiny_config(real: Path, out: Path, **kw) -> TrainConfig:
    """A seconds-long run: test_resnet at 32 px."""
    base = dict(
        real=real,
        out=out,
        backbone="test_resnet",
        labels=LABELS,
        image_size=32,
        epochs=2,
        batch_size=8,
        lr=3e-3,
        n_boot=50,
        patience=0,
    )
    base.update(kw)
    return TrainConfig(**base)


# ------------------------------------------------------------------------------ data


def test_label_targets_uncertain_policies():
    raw = np.array([[1, 0, -1, np.nan]], dtype=np.float32)
    t, m = label_targets(raw, "ignore")
    assert t.tolist() == [[1, 0, 0, 0]] and m.tolist() == [[1, 1, 0, 0]]
    t, m = label_targets(raw, "zeros")
    assert t.tolist() == [[1, 0, 0, 0]] and m.tolist() == [[1, 1, 1, 0]]
    t, m = label_targets(raw, "ones")
    assert t.tolist() == [[1, 0, 1, 0]] and m.tolist() == [[1, 1, 1, 0]]
    with pytest.raises(UserError, match="--uncertain: 'maybe' is not valid; valid: ignore"):
        label_targets(raw, "maybe")


def test_resolve_labels_default_and_explicit(phantom_manifest):
    m = read_manifest(phantom_manifest)
    # Any spelling; result in the manifest's label order.
    assert resolve_labels(m, ["pleural_effusion", "SUPPORT DEVICES"]) == (
        "Pleural Effusion",
        "Support Devices",
    )
    chosen = resolve_labels(m, None, min_count=2)
    assert "No Finding" in chosen and "Fracture" not in chosen  # never drawn: all NaN
    with pytest.raises(UserError, match="--labels: unknown label 'Pneumonitis'; valid: No Finding"):
        resolve_labels(m, ["Pneumonitis"])
    with pytest.raises(UserError, match="no label has 1000\\+ positives"):
        resolve_labels(m, None, min_count=1000)


def test_augment_batch_is_deterministic_and_identity_when_off():
    images = torch.randint(0, 256, (4, 1, 32, 32), dtype=torch.uint8)
    cfg = AugmentConfig()
    a = augment_batch(images, cfg, torch.Generator().manual_seed(1))
    b = augment_batch(images, cfg, torch.Generator().manual_seed(1))
    c = augment_batch(images, cfg, torch.Generator().manual_seed(2))
    assert a.shape == (4, 1, 32, 32) and a.dtype == torch.float32
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert float(a.min()) >= 0.0 and float(a.max()) <= 1.0
    off = AugmentConfig(rotate_deg=0, scale=(1, 1), translate=0, brightness=0, contrast=0)
    same = augment_batch(images, off, torch.Generator().manual_seed(1))
    assert torch.allclose(same, images.float() / 255.0, atol=1e-5)
    # No flip by default: an image bright on its left stays bright on its left.
    left = torch.zeros(8, 1, 32, 32, dtype=torch.uint8)
    left[..., :10] = 255
    out = augment_batch(left, cfg, torch.Generator().manual_seed(0))
    assert (out[..., :16].mean(dim=(1, 2, 3)) > out[..., 16:].mean(dim=(1, 2, 3))).all()


def test_decode_images_skip_error_and_disk_cache(tmp_path):
    paths = []
    for i in range(3):
        paths.append(tmp_path / f"{i}.png")
        save_png(np.full((40, 30), 50 * i, dtype=np.uint8), paths[-1])
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    cache = decode_images([*paths, bad], 16, on_bad_image="skip", num_threads=2)
    assert cache.images.shape == (3, 1, 16, 16) and cache.keep.tolist() == [0, 1, 2]
    assert cache.bad == [str(bad)] and int(cache.images[2].mean()) == 100
    with pytest.raises(UserError, match=r"bad.png: corrupt or unreadable image"):
        decode_images([*paths, bad], 16, on_bad_image="error")
    first = decode_images(paths, 16, cache_dir=tmp_path / "cache")
    assert isinstance(first.images, np.memmap)
    second = decode_images(paths, 16, cache_dir=tmp_path / "cache")  # reused, same content
    assert np.array_equal(np.asarray(first.images), np.asarray(second.images))
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 1
    # The dataset fetches batches through positions into one shared array.
    data = CachedImages(first.images, np.zeros((4, 1)), np.ones((4, 1)), positions=[2, 0, 2, 1])
    batch = data.__getitems__([0, 3])
    assert batch["image"].shape == (2, 1, 16, 16) and int(batch["image"][0].float().mean()) == 100


# ------------------------------------------------------------------------------ bootstrap


def test_weighted_auroc_matches_sklearn_on_resamples():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300)
    s = np.round(rng.normal(y, 1.0), 1)  # rounded: many ties
    groups = rng.integers(0, 60, 300)
    weights, codes = patient_resample_weights(groups, 5, seed=0)
    fast = weighted_auroc(y, s, weights[:, codes])
    for b in range(5):
        idx = np.repeat(np.arange(300), weights[b, codes])
        assert fast[b] == pytest.approx(roc_auc_score(y[idx], s[idx]), abs=1e-12)
    assert math.isnan(weighted_auroc(np.zeros(5), np.arange(5.0), np.ones((1, 5)))[0])


def _clustered_scores(n_patients: int, per_patient: int, seed: int):
    """Binormal scores with known population AUROC Phi(1/sqrt(2)); a patient's images share
    the patient's label and most of its score (strongly correlated within patient)."""
    rng = np.random.default_rng(seed)
    y_patient = rng.integers(0, 2, n_patients)
    latent = rng.normal(y_patient * 1.0, 1.0)
    y = np.repeat(y_patient, per_patient)
    scores = np.repeat(latent, per_patient) + rng.normal(0, 0.05, n_patients * per_patient)
    groups = np.repeat(np.arange(n_patients), per_patient)
    return y, scores, groups


def test_bootstrap_ci_covers_known_auroc_and_resamples_patients():
    truth = float(norm.cdf(1 / np.sqrt(2)))  # 0.760
    y, s, g = _clustered_scores(300, 4, seed=2)
    auroc, lo, hi = bootstrap_auroc(y, s, g, n_boot=1000, seed=0)
    assert lo < truth < hi and lo < auroc < hi
    assert auroc == pytest.approx(roc_auc_score(y, s))
    assert bootstrap_auroc(y, s, g, n_boot=1000, seed=0) == (auroc, lo, hi)  # deterministic
    # Treating each image as independent ignores the within-patient correlation: too narrow.
    _, lo_img, hi_img = bootstrap_auroc(y, s, np.arange(len(y)), n_boot=1000, seed=0)
    assert (hi - lo) > 1.5 * (hi_img - lo_img)
    # Coverage over independent datasets is near 95% (40 draws; 34 or more cover).
    covered = sum(
        lo_k < truth < hi_k
        for k in range(40)
        for _, lo_k, hi_k in [bootstrap_auroc(*_clustered_scores(200, 2, 100 + k), n_boot=300)]
    )
    assert covered >= 34


def test_paired_bootstrap_delta():
    y, s, g = _clustered_scores(200, 2, seed=1)
    delta, lo, hi = paired_bootstrap_delta(y, s, s, g, n_boot=200)
    assert (delta, lo, hi) == (0.0, 0.0, 0.0)
    rng = np.random.default_rng(5)
    worse = s + rng.normal(0, 1.5, len(s))
    delta, lo, hi = paired_bootstrap_delta(y, worse, s, g, n_boot=500)  # b = s is better
    assert delta == pytest.approx(roc_auc_score(y, s) - roc_auc_score(y, worse))
    assert 0 < lo < delta < hi
    # Macro over a label matrix with a -1/NaN entry left out per label.
    y2 = np.stack([y, 1 - y], axis=1).astype(float)
    y2[0, 1] = np.nan
    d2, _, _ = paired_bootstrap_delta(y2, np.stack([worse, -worse], 1), np.stack([s, -s], 1), g)
    assert d2 > 0


def test_compute_metrics_nan_for_one_class_label():
    y, s, g = _clustered_scores(50, 2, seed=2)
    truth = np.stack([y, np.zeros_like(y), np.where(y == 1, -1, 0)], axis=1).astype(float)
    probs = np.stack([s, s, s], axis=1)
    metrics = compute_metrics(truth, probs, ["A", "B", "C"], g, n_boot=100, seed=0)
    assert metrics["auroc"]["A"] == pytest.approx(roc_auc_score(y, s))
    assert metrics["auroc"]["B"] is None and metrics["auroc"]["C"] is None
    assert "one class only (0 positive, 100 negative" in metrics["nan_reasons"]["B"]
    assert metrics["macro_auroc"] == metrics["auroc"]["A"] and metrics["macro_labels"] == ["A"]
    assert metrics["ci"]["B"] is None and len(metrics["macro_ci"]) == 2
    assert metrics["n_test_images"] == 100 and metrics["n_test_patients"] == 50
    json.dumps(metrics, allow_nan=False)  # strict JSON: NaN written as null


# ------------------------------------------------------------------------------ training


def test_training_reaches_auroc_above_09_and_run_dir(larger_phantom, tmp_path):
    labels = ("Support Devices", "Pleural Effusion", "Pneumothorax")
    cfg = tiny_config(
        larger_phantom,
        tmp_path / "run",
        labels=labels,
        image_size=64,
        epochs=12,
        batch_size=16,
        n_boot=200,
    )
    out = train_classifier(cfg)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["macro_auroc"] > 0.9, metrics["auroc"]
    lo, hi = metrics["macro_ci"]
    assert lo <= metrics["macro_auroc"] <= hi
    assert metrics["arm"] == "real" and metrics["mix"] == 0.0 and len(metrics["history"]) == 12
    config = json.loads((out / "config.json").read_text())
    for key in ("backbone", "labels", "image_size", "mean", "std", "uncertain", "mix", "seed"):
        assert key in config
    assert config["labels"] == [
        "Pneumothorax",
        "Pleural Effusion",
        "Support Devices",
    ]  # manifest order
    assert config["n_real_train"] > 0 and config["n_synthetic_train"] == 0
    assert len(config["real_digest"]) == 16
    preds = pd.read_parquet(out / "predictions.parquet")
    assert list(preds.columns[:3]) == ["image_path", "patient_id", "study_id"]
    assert "true.Pneumothorax" in preds and "prob.Pneumothorax" in preds
    assert len(preds) == metrics["n_test_images"]
    # load_model gives the best model back: it reproduces the saved probabilities.
    model, config = load_model(out)
    images = np.stack(
        [
            np.asarray(__import__("PIL.Image").Image.open(p).convert("L"))
            for p in preds["image_path"][:8]
        ]
    )
    with torch.no_grad():
        x = to_model_input(images, config["mean"], config["std"])
        probs = torch.sigmoid(model(x)).numpy()
        pooled = model.forward_head(model.forward_features(x), pre_logits=True)
    assert np.allclose(
        probs, preds[[f"prob.{c}" for c in config["labels"]]].to_numpy()[:8], atol=1e-4
    )
    assert pooled.shape[0] == 8 and pooled.ndim == 2
    # evaluate_run standalone reproduces the metrics into another folder.
    again = evaluate_run(out, larger_phantom, out_dir=tmp_path / "eval", n_boot=200)
    assert again["macro_auroc"] == pytest.approx(metrics["macro_auroc"])
    assert (tmp_path / "eval" / "predictions.parquet").is_file()


def test_resume_continues_to_the_same_weights(phantom_manifest, tmp_path, monkeypatch):
    import classifier.train as train_mod

    full = train_classifier(tiny_config(phantom_manifest, tmp_path / "full", epochs=3))
    calls = {"n": 0}
    original = train_mod.validate

    def crash_on_third(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt  # the run is killed during epoch 2
        return original(*args, **kwargs)

    monkeypatch.setattr(train_mod, "validate", crash_on_third)
    cfg = tiny_config(phantom_manifest, tmp_path / "cut", epochs=3)
    with pytest.raises(KeyboardInterrupt):
        train_classifier(cfg)
    monkeypatch.setattr(train_mod, "validate", original)
    assert not (tmp_path / "cut" / "metrics.json").exists()
    assert [p.name for p in (tmp_path / "cut" / "checkpoints").iterdir()] == ["checkpoint-2"]
    with pytest.raises(UserError, match="pass --resume to continue it"):
        train_classifier(cfg)
    with pytest.raises(UserError, match="lr=0.003, now 0.1"):
        train_classifier(replace(cfg, resume=True, lr=0.1))
    train_classifier(replace(cfg, resume=True))
    history = json.loads((tmp_path / "cut" / "metrics.json").read_text())["history"]
    assert [h["epoch"] for h in history] == [0, 1, 2]
    # Resumed from epoch 2's state, the run ends where the uninterrupted one did.
    final_full = load_file(full / "checkpoints" / "checkpoint-3" / "model.safetensors")
    final_cut = load_file(tmp_path / "cut" / "checkpoints" / "checkpoint-3" / "model.safetensors")
    for key in final_full:
        assert torch.allclose(final_full[key], final_cut[key], atol=1e-5), key
    # A finished run resumes as a no-op.
    before = (tmp_path / "cut" / "metrics.json").stat().st_mtime_ns
    train_classifier(replace(cfg, resume=True))
    assert (tmp_path / "cut" / "metrics.json").stat().st_mtime_ns == before


def test_synthetic_pretrain_then_finetune(phantom_manifest, synthetic_from_phantom, tmp_path):
    pre = train_classifier(
        tiny_config(
            phantom_manifest,
            tmp_path / "pre",
            synthetic=synthetic_from_phantom,
            mix=1.0,
            allow_foreign_synthetic=True,  # a hand-made set: no provenance records
        )
    )
    pre_config = json.loads((pre / "config.json").read_text())
    assert pre_config["arm"] == "synthetic" and pre_config["n_real_train"] == 0
    assert pre_config["n_synthetic_train"] > 0 and len(pre_config["synthetic_digest"]) == 16
    # Fine-tune with a vanishing learning rate: the weights stay the pretrained ones.
    fine = train_classifier(
        tiny_config(
            phantom_manifest,
            tmp_path / "fine",
            init_from=pre,
            lr=1e-12,
            epochs=1,
            allow_foreign_synthetic=True,  # its source trained on the hand-made set
        )
    )
    config = json.loads((fine / "config.json").read_text())
    assert config["arm"] == "pretrain-finetune" and config["init_from"] == str(pre)
    a, b = load_file(pre / "model.safetensors"), load_file(fine / "model.safetensors")
    conv = next(k for k in a if k.endswith("weight") and a[k].ndim == 4)
    assert torch.allclose(a[conv], b[conv], atol=1e-6)
    fresh = build_model("test_resnet", len(LABELS)).state_dict()
    assert not torch.allclose(fresh[conv], b[conv])
    # A mixed arm: 0.5 adds as many synthetic as real train images.
    mixed = train_classifier(
        tiny_config(
            phantom_manifest,
            tmp_path / "mixed",
            synthetic=synthetic_from_phantom,
            mix=0.5,
            allow_foreign_synthetic=True,
            epochs=1,
        )
    )
    mixed_config = json.loads((mixed / "config.json").read_text())
    assert mixed_config["arm"] == "mix0.5"
    assert mixed_config["n_synthetic_train"] == mixed_config["n_real_train"]


def test_pretrained_local_weights_adapt_to_one_channel(tmp_path):
    from safetensors.torch import save_file

    rgb = timm.create_model("test_resnet", pretrained=False)  # 3 channels, 1000 classes
    state = {k: v.contiguous() for k, v in rgb.state_dict().items()}
    save_file(state, tmp_path / "w.safetensors")
    torch.save({"state_dict": state}, tmp_path / "w.pth")
    for name in ("w.safetensors", "w.pth"):
        model = build_model("test_resnet", 2, pretrained=tmp_path / name)
        first = rgb.pretrained_cfg["first_conv"] + ".weight"
        assert torch.allclose(model.state_dict()[first], state[first].sum(dim=1, keepdim=True))
        assert model.get_classifier().out_features == 2
    with pytest.raises(UserError, match="--pretrained: .*missing.pth not found"):
        build_model("test_resnet", 2, pretrained=tmp_path / "missing.pth")
    with pytest.raises(UserError, match="--pretrained: .* does not fit backbone 'resnet18'"):
        build_model("resnet18", 2, pretrained=tmp_path / "w.safetensors")
    with pytest.raises(UserError, match="--backbone: 'resnet_nope' is not a timm model"):
        build_model("resnet_nope", 2)


def test_skip_bad_images_counts_them(phantom_manifest, tmp_path):
    m = read_manifest(phantom_manifest)
    folder = tmp_path / "data"
    shutil.copytree(phantom_manifest.parent / "images", folder / "images")
    path = write_manifest(replace(m, root=folder), folder / "manifest.parquet")
    broken = folder / m.rows["image_path"][m.rows["split"] == "train"].iloc[0]
    broken.write_bytes(b"\x89PNG truncated")
    out = train_classifier(tiny_config(path, tmp_path / "run", epochs=1, on_bad_image="skip"))
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["bad_images"] == {"train": 1, "val": 0, "test": 0}
    with pytest.raises(UserError, match=f"{broken.name}: corrupt or unreadable image"):
        train_classifier(tiny_config(path, tmp_path / "run2", epochs=1))


# ------------------------------------------------------------------------------ CLI


def _cli(*args: str):
    return runner.invoke(app, ["train-classifier", *args])


def test_cli_trains_and_refuses_bad_input(phantom_manifest, synthetic_from_phantom, tmp_path):
    base = ["--real", str(phantom_manifest), "--backbone", "test_resnet", "--image-size", "32"]
    ok = _cli(*base, "--out", str(tmp_path / "ok"), "--epochs", "1", "--labels", "support_devices")
    assert ok.exit_code == 0, ok.output
    assert (
        "test macro AUROC" in " ".join(ok.output.split())
        and (tmp_path / "ok" / "metrics.json").is_file()
    )

    cases = [
        (["--mix", "1.5"], "--mix: 1.5 is outside [0, 1]"),
        (["--mix", "-0.1"], "--mix: -0.1 is outside [0, 1]"),
        (["--mix", "0.5"], "--mix 0.5 needs synthetic images; pass --synthetic"),
        (["--labels", "pneumonitis"], "--labels: unknown label 'pneumonitis'; valid: No Finding"),
        (["--uncertain", "maybe"], "--uncertain: 'maybe' is not valid; valid: ignore, zeros, ones"),
        (["--on-bad-image", "retry"], "--on-bad-image: 'retry' is not valid"),
        (["--backbone", "resnet_nope"], "--backbone: 'resnet_nope' is not a timm model"),
        (
            ["--init-from", str(tmp_path)],
            "--init-from " + str(tmp_path) + ": not a classifier run directory",
        ),
        (["--overwrite", "--resume"], "--resume and --overwrite exclude each other"),
    ]
    for extra, message in cases:
        result = _cli(*base, "--out", str(tmp_path / "bad"), "--labels", "Support Devices", *extra)
        assert result.exit_code == 2, (extra, result.output)
        assert message in result.output, (extra, result.output)
        assert len(result.output.strip().splitlines()) == 1
        assert not (tmp_path / "bad").exists()
    # An existing run directory is refused unless --overwrite / --resume.
    again = _cli(
        *base, "--out", str(tmp_path / "ok"), "--epochs", "1", "--labels", "support_devices"
    )
    assert again.exit_code == 2 and "pass --resume" in again.output
    resumed = _cli(
        *base,
        "--out",
        str(tmp_path / "ok"),
        "--epochs",
        "1",
        "--labels",
        "support_devices",
        "--resume",
    )
    assert resumed.exit_code == 0 and "already finished" in " ".join(resumed.output.split())
    # A patient in train and test (leakage) is refused with the patient named.
    m = read_manifest(phantom_manifest)
    rows = m.rows.copy()
    test_patient = rows.loc[rows["split"] == "test", "patient_id"].iloc[0]
    rows.loc[rows.index[rows["split"] == "train"][0], "patient_id"] = test_patient
    leaky = write_manifest(m.with_rows(rows), tmp_path / "leaky.parquet")
    result = _cli(
        "--real", str(leaky), "--out", str(tmp_path / "leak"), "--labels", "Support Devices"
    )
    assert (
        result.exit_code == 2
        and f"patient {test_patient!r} is in splits test, train" in result.output
    )


def test_runs_under_accelerate_launch_with_two_processes(phantom_manifest, tmp_path):
    """DDP on two CPU processes: the same command, sharded batches, gathered validation."""
    import os
    import subprocess
    import sys

    out = tmp_path / "ddp"
    bin_dir = Path(sys.executable).parent
    cmd = [
        str(bin_dir / "accelerate"),
        "launch",
        "--multi_gpu",  # torchrun: two real processes; `--cpu` would start only one
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--main_process_port",  # its own, beside other tests' launches
        str(free_port()),
        str(bin_dir / "cxraug"),
        "train-classifier",
        "--real",
        str(phantom_manifest),
        "--out",
        str(out),
        "--backbone",
        "test_resnet",
        "--image-size",
        "32",
        "--epochs",
        "1",
        "--batch-size",
        "4",
        "--labels",
        "support devices",
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1", ACCELERATE_USE_CPU="1")
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    metrics = json.loads((out / "metrics.json").read_text())
    n_train = json.loads((out / "config.json").read_text())["n_real_train"]
    assert metrics["history"][0]["processes"] == 2
    # The processes share one pass over the training set (not a full pass each).
    assert abs(metrics["history"][0]["train_images"] - n_train) < 8
    assert metrics["n_test_images"] == len(pd.read_parquet(out / "predictions.parquet"))
