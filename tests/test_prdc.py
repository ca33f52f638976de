"""Precision/recall/density/coverage, FID moments merged across shards, RadDINO features."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from augmentor.features import load_feature_extractor
from augmentor.generator_metrics import extractor_title, fidelity_table
from augmentor.metrics import (
    feature_moments,
    feature_stats,
    fid_from_features,
    fid_from_moments,
    merge_moments,
    moments_stats,
)
from augmentor.prdc import knn_radii, prdc
from augmentor.raddino import RADDINO_FILES, load_raddino_extractor
from manifests.errors import UserError
from manifests.files import file_sha256
from manifests.images import load_image, save_png
from manifests.io import Manifest, read_manifest, write_manifest
from tests.helpers import image_folder, set_synthesis_columns

# ---------------------------------------------------------------- PRDC


def test_prdc_of_a_hand_computed_example():
    # 1-d, k = 1. Real 0, 1, 3: balls of radius 1, 1, 2. Fake 0.5, 10, 5.5: radius 5, 4.5, 4.5.
    real = np.array([[0.0], [1.0], [3.0]])
    fake = np.array([[0.5], [10.0], [5.5]])
    assert np.allclose(knn_radii(real, 1), [1, 1, 2])
    assert np.allclose(knn_radii(fake, 1), [5, 4.5, 4.5])
    got = prdc(real, fake, k=1)
    assert got.precision == pytest.approx(1 / 3)  # only 0.5 lies in a real ball
    assert got.density == pytest.approx(2 / 3)  # 0.5 lies in two real balls: 2 / (1 x 3)
    assert got.recall == pytest.approx(1.0)  # 0.5's wide ball holds every real point
    assert got.coverage == pytest.approx(2 / 3)  # 3's nearest fake (2.5) is outside its ball


def test_prdc_balls_are_strict_as_in_the_reference_package():
    real = np.array([[0.0], [1.0], [2.0]])  # radii 1, 1, 1 at k = 1
    on_edge = prdc(real, np.array([[3.0], [4.0], [5.0]]), k=1)
    assert on_edge.precision == 0.0 and on_edge.coverage == 0.0  # d = radius is outside


def test_identical_distributions_score_near_one():
    rng = np.random.default_rng(0)
    real, fake = rng.normal(size=(600, 2)), rng.normal(size=(600, 2))
    got = prdc(real, fake)
    assert got.precision > 0.9 and got.recall > 0.9
    assert 0.9 < got.coverage <= 1.0  # 1 - 2^-5 = 0.97 expected at k = 5
    assert 0.85 < got.density < 1.15
    same = prdc(real, real)
    assert same.precision == same.recall == same.coverage == 1.0


def test_disjoint_distributions_score_near_zero():
    rng = np.random.default_rng(1)
    got = prdc(rng.normal(size=(300, 4)), rng.normal(30.0, 1.0, size=(300, 4)))
    assert got.as_dict() == {"precision": 0.0, "recall": 0.0, "density": 0.0, "coverage": 0.0}


def test_mode_dropping_lowers_recall_and_coverage_not_precision():
    rng = np.random.default_rng(2)
    centres = np.array([[0.0, 0.0], [20.0, 0.0], [0.0, 20.0], [20.0, 20.0]])

    def mixture(n: int, modes: list[int]) -> np.ndarray:
        return centres[rng.choice(modes, n)] + rng.normal(size=(n, 2))

    real = mixture(600, [0, 1, 2, 3])
    full, dropped = prdc(real, mixture(600, [0, 1, 2, 3])), prdc(real, mixture(600, [0, 1]))
    assert full.recall > 0.9 and full.coverage > 0.9
    assert dropped.recall < 0.6 and dropped.coverage < 0.6  # half the modes: about half
    assert dropped.precision > 0.9 and abs(dropped.precision - full.precision) < 0.05


def test_blocked_prdc_equals_all_at_once():
    rng = np.random.default_rng(3)
    real, fake = rng.normal(size=(70, 6)), rng.normal(0.2, 1.0, size=(45, 6))
    whole = prdc(real, fake, block=4096)
    assert prdc(real, fake, block=7) == whole  # blocks of 7 rows: 10 x 7 blocks
    np.testing.assert_allclose(knn_radii(real, block=7), knn_radii(real, block=4096), rtol=1e-12)
    assert prdc(real, fake, real_radii=knn_radii(real)) == whole
    assert prdc(torch.from_numpy(real).float(), fake.astype(np.float32)).precision == pytest.approx(
        whole.precision, abs=0.03
    )


def test_prdc_refuses_too_few_rows_and_mismatched_features():
    rng = np.random.default_rng(4)
    with pytest.raises(ValueError, match="more than 5 rows"):
        prdc(rng.normal(size=(5, 2)), rng.normal(size=(20, 2)))
    with pytest.raises(ValueError, match="k = 0"):
        knn_radii(rng.normal(size=(20, 2)), k=0)
    with pytest.raises(ValueError, match="dimensions differ"):
        prdc(rng.normal(size=(20, 2)), rng.normal(size=(20, 3)))


def _fidelity_inputs(n_syn=120, n_train=100, n_test=60, labelled=20, dim=4):
    rng = np.random.default_rng(5)
    real_rows = pd.DataFrame(
        {"split": ["train"] * n_train + ["test"] * n_test,
         "Pneumothorax": [1.0] * n_train + [0.0] * n_test}
    )  # fmt: skip
    targets = pd.Series(["Pneumothorax"] * labelled + [None] * (n_syn - labelled))
    syn = rng.normal(0.5, 1.0, (n_syn, dim))
    real = rng.normal(0.0, 1.0, (n_train + n_test, dim))
    return syn, targets, real, real_rows


def test_fidelity_table_has_prdc_beside_fid_and_too_few_images_per_label():
    syn, targets, real, real_rows = _fidelity_inputs()
    table, _ = fidelity_table(syn, targets, real, real_rows, ("Pneumothorax",), min_fid_images=50,
                              kid_subsets=5)  # fmt: skip
    rows = table.set_index("subset")
    first, base = rows.loc["all"], rows.loc["real test (baseline)"]
    for row in (first, base):
        assert all(0.0 <= row[c] <= 1.0 for c in ("precision", "recall", "coverage"))
        assert row["density"] >= 0 and row["prdc_note"] == "" and row["prdc_k"] == 5
    # The 'all' row compares the seeded subsample (60 of 120) with all real train rows.
    train = real[real_rows["split"].to_numpy() == "train"]
    assert first["n_compared"] == 60
    label = rows.loc["Pneumothorax"]  # 20 prompted images < 50
    assert np.isnan(label["precision"]) and label["prdc_note"] == "too few images (< 50)"
    loose, _ = fidelity_table(syn, targets, real, real_rows, ("Pneumothorax",), min_fid_images=10,
                              kid_subsets=5)  # fmt: skip
    expected = prdc(train, syn[:20]).as_dict()
    got = loose.set_index("subset").loc["Pneumothorax"]
    assert {c: got[c] for c in expected} == pytest.approx(expected)
    # A real baseline from one distribution scores higher than the shifted synthetic set.
    assert base["coverage"] > first["coverage"] and base["density"] > first["density"]


# ---------------------------------------------------------------- FID from merged shards


def test_merged_moments_equal_the_whole_set_and_so_does_fid():
    rng = np.random.default_rng(6)
    mix = rng.normal(size=(16, 16))
    a = rng.normal(3.0, 2.0, size=(257, 16)) @ mix
    b = rng.normal(3.2, 2.0, size=(190, 16)) @ mix
    cuts = [0, 1, 40, 41, 200, 257]  # shards of unequal sizes, one of a single row
    shards = [feature_moments(a[s:e]) for s, e in zip(cuts[:-1], cuts[1:], strict=True)]
    merged = merge_moments(shards)
    assert merged.n == len(a)
    mean, cov = moments_stats(merged)
    whole_mean, whole_cov = feature_stats(a)
    np.testing.assert_allclose(mean, whole_mean, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(cov, whole_cov, rtol=1e-9, atol=1e-9)
    assert merge_moments(shards[::-1]).n == merged.n  # order does not matter
    np.testing.assert_allclose(moments_stats(merge_moments(shards[::-1]))[1], cov, rtol=1e-12)
    whole_fid = fid_from_features(a, b)
    b_merged = merge_moments([feature_moments(b[:100]), feature_moments(b[100:])])
    assert fid_from_moments(merged, b_merged) == pytest.approx(whole_fid, rel=1e-9)
    # An average of per-shard FIDs is not the FID: each shard's small n biases it upwards.
    per_shard = np.mean([fid_from_features(a[s : s + 64], b[s : s + 64]) for s in (0, 64)])
    assert per_shard > whole_fid * 1.5


def test_merging_refuses_nothing_and_mixed_dimensions():
    with pytest.raises(ValueError, match="no shards"):
        merge_moments([])
    with pytest.raises(ValueError, match="different feature dimensions"):
        merge_moments([feature_moments(np.ones((3, 2))), feature_moments(np.ones((3, 4)))])
    with pytest.raises(ValueError, match="at least 2"):
        moments_stats(feature_moments(np.ones((1, 2))))


# ---------------------------------------------------------------- RadDINO


@pytest.fixture(scope="module")
def raddino_dir(tmp_path_factory) -> Path:
    """A random-weight DINOv2 folder laid out as microsoft/rad-dino is (tiny sizes)."""
    from transformers import BitImageProcessor, Dinov2Config, Dinov2Model

    torch.manual_seed(0)
    config = Dinov2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                          intermediate_size=64, image_size=28, patch_size=14)  # fmt: skip
    out = tmp_path_factory.mktemp("raddino") / "rad-dino"
    Dinov2Model(config).save_pretrained(out, safe_serialization=True)
    BitImageProcessor(
        size={"shortest_edge": 28}, crop_size={"height": 28, "width": 28}, resample=3,
        image_mean=[0.5307] * 3, image_std=[0.2583] * 3,
    ).save_pretrained(out)  # fmt: skip
    return out


def test_raddino_gives_cls_features_and_fid_prdc_run_on_them(raddino_dir):
    extractor = load_feature_extractor(raddino_dir=raddino_dir, device="cpu")
    assert extractor.name == f"raddino:{raddino_dir}" and extractor.key.startswith("raddino-")
    assert extractor.feature_dim == 32 and extractor.labels == ()
    rng = np.random.default_rng(7)
    images = [rng.integers(0, 256, (40, 36), dtype=np.uint8) for _ in range(24)]
    x = extractor.preprocess(images[:2])
    assert x.shape == (2, 3, 28, 28) and torch.equal(x[:, 0], x[:, 1])  # gray, 3 channels
    features = extractor(images)["features"]
    assert features.shape == (24, 32) and np.isfinite(features).all()
    assert np.array_equal(extractor(images[:3])["features"], features[:3])  # deterministic
    # The features are the CLS token of the last hidden state (after the final layer norm).
    with torch.inference_mode():
        hidden = extractor.model(pixel_values=extractor.preprocess(images[:3])).last_hidden_state
    np.testing.assert_allclose(features[:3], hidden[:, 0].numpy(), rtol=1e-5, atol=1e-6)
    assert fid_from_features(features[:12], features[12:]) >= 0
    scores = prdc(features[:12], features[12:])
    assert 0 <= scores.precision <= 1 and 0 <= scores.coverage <= 1
    assert extractor_title(extractor.name, 32) == "RadDINO, 32-d"
    again = load_raddino_extractor(raddino_dir, "cpu")
    assert again.key == extractor.key  # the cache key is the weights and the processor


def test_raddino_missing_folder_or_files_is_one_line_naming_them(tmp_path, raddino_dir):
    with pytest.raises(UserError) as missing:
        load_raddino_extractor(tmp_path / "nowhere")
    text = str(missing.value)
    assert "\n" not in text and str(tmp_path / "nowhere") in text
    assert all(name in text for name in RADDINO_FILES) and "nothing is downloaded" in text
    partial = tmp_path / "partial"
    shutil.copytree(raddino_dir, partial)
    (partial / "model.safetensors").unlink()
    with pytest.raises(UserError, match="missing model.safetensors"):
        load_raddino_extractor(partial)
    with pytest.raises(UserError, match="exactly one"):
        load_feature_extractor(run_dir=tmp_path, raddino_dir=raddino_dir)


def _synthetic_manifest(tmp_path_factory, phantom_manifest: Path) -> Path:
    """12 noisy copies of phantom train images as a synthetic manifest."""
    real = read_manifest(phantom_manifest)
    root = image_folder(tmp_path_factory, "raddino-synthetic")
    train = np.flatnonzero(real.rows["split"].to_numpy() == "train")[:12]
    paths = real.image_paths()
    rng = np.random.default_rng(8)
    rows = real.rows.iloc[train].reset_index(drop=True)
    set_synthesis_columns(rows, target_label="Lung Opacity")  # 8 real train positives
    for k, i in enumerate(train):
        img = load_image(paths[i]).astype(np.float64)
        img += rng.normal(0, 30, img.shape)
        save_png(np.clip(img, 0, 255).astype(np.uint8), root / "images" / f"{k:04d}.png")
    rows["image_path"] = [f"images/{k:04d}.png" for k in range(len(rows))]
    rows["image_sha256"] = [file_sha256(root / p) for p in rows["image_path"]]
    rows["prompt"] = [f"Opacity {k}." for k in range(len(rows))]
    rows["source"], rows["split"] = "synthetic", "train"
    manifest = Manifest(rows=rows, labels=real.labels, root=root)
    return write_manifest(manifest, root / "manifest.parquet")


def test_evaluate_generator_with_raddino_features(tmp_path_factory, phantom_manifest):
    from cli import app

    raddino = tmp_path_factory.mktemp("rd") / "rad-dino"
    synthetic = _synthetic_manifest(tmp_path_factory, phantom_manifest)
    missing = ["evaluate-generator", "--synthetic", str(synthetic), "--real", str(phantom_manifest),
               "--features-raddino", str(raddino), "--out", str(raddino.parent / "x")]  # fmt: skip
    result = CliRunner().invoke(app, missing)
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert f"--features-raddino {raddino}: not a folder" in lines[0]

    from transformers import BitImageProcessor, Dinov2Config, Dinov2Model

    torch.manual_seed(0)
    config = Dinov2Config(hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                          intermediate_size=32, image_size=28, patch_size=14)  # fmt: skip
    Dinov2Model(config).save_pretrained(raddino, safe_serialization=True)
    BitImageProcessor(size={"shortest_edge": 28},
                      crop_size={"height": 28, "width": 28}).save_pretrained(raddino)  # fmt: skip
    out = raddino.parent / "eval"
    args = ["evaluate-generator", "--synthetic", str(synthetic), "--real", str(phantom_manifest),
            "--features-raddino", str(raddino), "--out", str(out), "--batch-size", "8",
            "--min-fid-images", "6"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    doc = json.loads((out / "generator_eval.json").read_text())
    assert doc["feature_extractor"]["dim"] == 16 and doc["oracle"] is None
    assert doc["fidelity"]["fid_label"] == "FID (RadDINO, 16-d)"
    rows = {r["subset"]: r for r in doc["fidelity"]["rows"]}
    assert rows["all"]["precision"] is not None and 0 <= rows["all"]["coverage"] <= 1
    assert rows["Lung Opacity"]["recall"] is not None  # 12 and 8 images >= --min-fid-images 6
