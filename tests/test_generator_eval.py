"""Generator evaluation: FID, MS-SSIM, nearest neighbours, cache, audit, probe, filter, CLI."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from augmentor.eval_folder import GENERATOR_EVAL_SCHEMA, generator_section
from augmentor.features import FeatureCache, PixelEmbedder, embed_images, mirror_halves
from augmentor.generator_metrics import (
    FidelityTargets,
    diversity_table,
    memorization_table,
    prompt_fidelity_table,
    same_prompt_pairs,
)
from augmentor.laterality import true_side
from augmentor.metrics import (
    fid_from_features,
    kid_from_features,
    ms_ssim,
    ms_ssim_scales,
    nearest_neighbours,
    pair_indices,
    polynomial_mmd,
    rate_interval,
    whole_group_pairs,
    youden_threshold,
)
from augmentor.oracle_filter import (
    OracleFilterConfig,
    apply_oracle_filter,
    filter_by_oracle,
    oracle_filter_config,
    rejected_by_oracle,
    score_by_oracle,
)
from augmentor.report_text import is_negated, named_lobe, stated_side
from classifier.run import write_seen_patients
from manifests.errors import UserError
from manifests.files import file_sha256
from manifests.images import load_image, save_png
from manifests.io import Manifest, read_manifest, write_manifest
from manifests.provenance import SeenPatients, train_patients
from tests.helpers import image_folder

# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, phantom_manifest) -> Path:
    """A classifier run directory as `cxraug train-classifier` writes it (random weights)."""
    import timm
    from safetensors.torch import save_model

    labels = list(read_manifest(phantom_manifest).labels)
    out = tmp_path_factory.mktemp("run")
    torch.manual_seed(0)
    model = timm.create_model("test_resnet", num_classes=len(labels), in_chans=1)
    save_model(model, str(out / "model.safetensors"))
    config = {
        "backbone": "test_resnet",
        "labels": labels,
        "image_size": 64,
        "mean": 0.5,
        "std": 0.25,
    }
    (out / "config.json").write_text(json.dumps(config))
    real = read_manifest(phantom_manifest)  # trained on its train split, chose on its val split
    val = real.rows.loc[real.rows["split"] == "val", "patient_id"]
    write_seen_patients(out, SeenPatients.of(train_patients(real), val))
    return out


@pytest.fixture(scope="module")
def synthetic_manifest(tmp_path_factory, phantom_manifest) -> Path:
    """16 'synthetic' rows: noisy, shifted phantom train images plus one byte-exact copy."""
    real = read_manifest(phantom_manifest)
    root = image_folder(tmp_path_factory, "synthetic")
    train = np.flatnonzero(real.rows["split"].to_numpy() == "train")
    paths = real.image_paths()
    rng = np.random.default_rng(0)
    rows = []
    for k in range(16):
        source = paths[train[k % len(train)]]
        target = root / "images" / f"{k:04d}.png"
        if k == 5:
            shutil.copyfile(source, target)  # a memorized training image, byte for byte
        else:
            img = load_image(source).astype(np.float64)
            img = np.roll(img, int(rng.integers(3, 9)), axis=1) + rng.normal(0, 35, img.shape)
            save_png(np.clip(img, 0, 255).astype(np.uint8), target)
        row = real.rows.iloc[train[k % len(train)]].to_dict()
        label = ("Pleural Effusion", "Pneumothorax")[k % 2]
        side = ("left", "right")[(k // 2) % 2]
        row.update(
            image_path=f"images/{k:04d}.png",
            source="synthetic",
            split="train",
            prompt=f"Small {side} {label.lower()}.",
            seed=k,
            guidance_scale=4.0,
            num_inference_steps=2,
            scheduler="pndm",
            target_label=label,
            generator="test",
            image_sha256=file_sha256(target),
        )
        rows.append(row)
    manifest = Manifest(rows=pd.DataFrame(rows), labels=real.labels, root=root)
    return write_manifest(manifest, root / "synthetic.parquet")


# ---------------------------------------------------------------- metrics maths


def test_fid_of_a_set_with_itself_is_zero_and_grows_with_noise():
    rng = np.random.default_rng(0)
    features = rng.normal(size=(500, 12))
    assert fid_from_features(features, features) < 1e-6
    fids = [
        fid_from_features(features, features + rng.normal(scale=s, size=features.shape))
        for s in (0.05, 0.2, 0.5, 1.0, 2.0)
    ]
    assert all(a < b for a, b in zip(fids, fids[1:], strict=False)), fids
    assert fids[0] < 0.05


def test_frechet_distance_matches_the_closed_form_and_the_general_square_root():
    import scipy.linalg

    from augmentor.metrics import frechet_distance

    a, b = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 0.0])
    mu1, mu2 = np.zeros(3), np.array([1.0, 0.0, 2.0])
    expected = 5.0 + ((np.sqrt(a) - np.sqrt(b)) ** 2).sum()  # commuting (diagonal) case
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected)
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(50, 6)), rng.normal(size=(50, 6)) @ rng.normal(size=(6, 6))
    s1, s2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    general = np.trace(s1) + np.trace(s2) - 2 * np.trace(scipy.linalg.sqrtm(s1 @ s2).real)
    assert frechet_distance(np.zeros(6), s1, np.zeros(6), s2) == pytest.approx(general)


def test_fid_with_singular_covariances_stays_finite():
    rng = np.random.default_rng(1)
    few = rng.normal(size=(10, 40))  # fewer images than dimensions: singular covariance
    assert fid_from_features(few, few) < 1e-4
    assert np.isfinite(fid_from_features(few, rng.normal(size=(12, 40))))


def test_kid_matches_a_hand_computed_case_and_is_unbiased():
    # k(a, b) = (a.b / dim + 1)^3 with dim 1: k_xx off-diagonal (0*1 + 1)^3 = 1, k_yy
    # (1*2 + 1)^3 = 27, k_xy 1, 1, 8, 27 (mean 9.25): MMD^2 = 1 + 27 - 2 * 9.25 = 9.5.
    x, y = np.array([[0.0], [1.0]]), np.array([[1.0], [2.0]])
    assert polynomial_mmd(x, y) == pytest.approx(9.5)
    mean, se = kid_from_features(x, y, subsets=5)  # both sets fit: KID of the whole sets
    assert mean == pytest.approx(9.5) and se > 0  # the bootstrap redraws both sets
    # Two dimensions, gamma 1/2: k_xx (0 + 1)^3 = 1; k_yy (2 / 2 + 1)^3 = 8;
    # k_xy: 1, 1, (1 / 2 + 1)^3 = 3.375, (2 / 2 + 1)^3 = 8 (mean 13.375 / 4).
    x2, y2 = np.array([[0.0, 0.0], [1.0, 0.0]]), np.array([[1.0, 0.0], [2.0, 2.0]])
    assert polynomial_mmd(x2, y2) == pytest.approx(1 + 8 - 2 * 13.375 / 4)
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(300, 8)), rng.normal(size=(300, 8))
    same, same_se = kid_from_features(a, b, subsets=20, subset_size=100, seed=1)
    shifted, _ = kid_from_features(a, b + 0.5, subsets=20, subset_size=100, seed=1)
    assert abs(same) < 3 * same_se + 0.01 and shifted > 10 * abs(same)
    assert kid_from_features(a, b, subsets=3, subset_size=50, seed=2) == kid_from_features(
        a, b, subsets=3, subset_size=50, seed=2
    )
    assert np.isnan(kid_from_features(a[:1], b)[0])


def test_kid_from_whole_kernels_equals_kid_per_subset(monkeypatch):
    import augmentor.metrics

    rng = np.random.default_rng(4)
    a, b = rng.normal(size=(60, 5)), rng.normal(0.3, 1.0, size=(80, 5))
    blocks = kid_from_features(a, b, subsets=7, subset_size=40, seed=3)
    monkeypatch.setattr(augmentor.metrics, "_KID_GRAM_LIMIT", 0)
    per_subset = kid_from_features(a, b, subsets=7, subset_size=40, seed=3)
    np.testing.assert_allclose(blocks, per_subset, rtol=1e-10)


def test_prompt_fidelity_hit_false_finding_side_and_targets():
    labels = ("Cardiomegaly", "Pneumothorax", "Lung Lesion", "No Finding")
    nan = np.nan
    # Real: val has one class (threshold 0.5), test rows with known truth.
    real_rows = pd.DataFrame(
        {
            "split": ["val"] * 2 + ["test"] * 6,
            "Cardiomegaly": [0, 0, 1, 1, 0, 0, 0, 0],
            "Pneumothorax": [0, 0, 1, 0, 1, 0, 0, 0],
            "Lung Lesion": [nan] * 8,
            "No Finding": [0, 0, 0, 0, 0, 0, 1, 1],
        },
        dtype=object,
    ).astype({k: float for k in labels})
    real_probs = np.array(
        [
            [0.1, 0.1, 0.1, 0.1],
            [0.1, 0.1, 0.1, 0.1],
            [0.9, 0.7, 0.1, 0.1],  # cardiomegaly + pneumothorax
            [0.8, 0.1, 0.1, 0.1],  # cardiomegaly
            [0.1, 0.3, 0.1, 0.1],  # pneumothorax, missed
            [0.6, 0.2, 0.1, 0.1],  # nothing; cardiomegaly false positive
            [0.2, 0.2, 0.1, 0.9],  # normal
            [0.1, 0.1, 0.1, 0.4],  # normal, missed
        ]
    )
    # real pos/neg rates: Cardiomegaly 1.0 / 0.25, Pneumothorax 0.5 / 0.0, No Finding 0.5 / 0.0
    synthetic = pd.DataFrame(
        {
            "target_label": ["Cardiomegaly"] * 3 + ["Pneumothorax"] * 3 + ["No Finding"] * 2,
            "prompt": ["Cardiomegaly.", "Cardiomegaly.", "Cardiomegaly. Pneumothorax.",
                       "Small left pneumothorax.", "Large right pneumothorax.", "Pneumothorax.",
                       "Normal.", "Normal."],
            "Cardiomegaly": [1, 1, 1, 0, nan, -1, 0, 0],
            "Pneumothorax": [0, nan, 1, 1, 1, 1, 0, 0],
            "Lung Lesion": [nan] * 8,
            "No Finding": [0, 0, 0, 0, 0, 0, 1, 1],
        }
    )  # fmt: skip
    syn_probs = np.array(
        [
            [0.9, 0.1, 0.9, 0.1],
            [0.8, 0.6, 0.9, 0.1],  # a pneumothorax the prompt does not mention
            [0.3, 0.9, 0.9, 0.1],  # cardiomegaly missed
            [0.1, 0.9, 0.9, 0.1],
            [0.7, 0.8, 0.9, 0.1],  # cardiomegaly the prompt does not mention
            [0.9, 0.2, 0.9, 0.1],  # pneumothorax missed (hedged cardiomegaly: not counted)
            [0.1, 0.1, 0.9, 0.8],
            [0.2, 0.1, 0.9, 0.3],  # 'No Finding' missed
        ]
    )
    laterality = pd.DataFrame(
        [{"label": "Pneumothorax", "synthetic_side_hit_rate": 1.0, "n_synthetic_sided": 2,
          "real_heldout_side_hit_rate": 0.9, "n_real_heldout_sided": 10}]
    )  # fmt: skip
    table = prompt_fidelity_table(syn_probs, synthetic, real_probs, real_rows, labels, laterality)
    # Lung Lesion: never prompted and no real negatives, so no row; No Finding comes last.
    assert table["finding"].tolist() == ["Cardiomegaly", "Pneumothorax", "No Finding"]
    rows = table.set_index("finding")
    card, ptx, normal = rows.loc["Cardiomegaly"], rows.loc["Pneumothorax"], rows.loc["No Finding"]
    assert (card.n_prompted, card.n_unprompted) == (3, 4)
    assert card.hit_rate == pytest.approx(2 / 3) and card.real_positive_rate == 1.0
    assert card.false_finding_rate == 0.25 and card.real_negative_rate == 0.25
    # Matched: two unprompted images state a pneumothorax (the real negative with one: 0 of
    # 1 read as cardiomegaly), two state neither other finding (real: 1 of 3), so 1/6.
    assert card.matched_negative_rate == pytest.approx(1 / 6)
    assert [card.hit_ok, card.false_finding_ok, card.side_ok] == [False, True, None]
    assert (ptx.n_prompted, ptx.n_unprompted, ptx.n_sided) == (3, 4, 2)
    assert ptx.hit_rate == pytest.approx(2 / 3) and ptx.real_positive_rate == 0.5
    assert ptx.false_finding_rate == 0.25 and ptx.real_negative_rate == 0.0
    assert ptx.side_hit_rate == 1.0 and ptx.real_side_hit_rate == 0.9
    # Each rate carries its 95% interval, on its own denominator (sides: the 2 judged):
    # Wilson's where every image has its own prompt, wider where prompts repeat (the two
    # 'Normal.' images among Cardiomegaly's unprompted four).
    assert (ptx.hit_rate_low, ptx.hit_rate_high) == pytest.approx(rate_interval(2, 3))
    assert (ptx.n_prompts, card.n_unprompted_prompts) == (3, 3)
    wilson = rate_interval(1, 4)
    assert card.false_finding_rate_low < wilson[0] and card.false_finding_rate_high > wilson[1]
    assert (ptx.side_hit_rate_low, ptx.side_hit_rate_high) == pytest.approx(rate_interval(2, 2))
    assert np.isnan(card.side_hit_rate_low) and ptx.side_hit_rate_high == pytest.approx(1.0)
    assert [ptx.hit_ok, ptx.false_finding_ok, ptx.side_ok] == [True, False, True]
    assert (normal.n_prompted, normal.n_unprompted) == (2, 6)
    assert normal.hit_rate == 0.5 and normal.false_finding_rate == 0.0
    assert table["meets_targets"].tolist() == [False, False, True]
    # Looser targets pass Cardiomegaly's hit (2/3 >= 0.6 x 1.0) and Pneumothorax's false
    # findings (0.25 <= 0.0 + 0.3); without a fitted side detector the side is not met.
    loose = FidelityTargets(hit_vs_real_positive=0.6, false_finding_margin=0.3)
    table = prompt_fidelity_table(syn_probs, synthetic, real_probs, real_rows, labels, None, loose)
    assert table["meets_targets"].tolist() == [True, False, True]
    assert table.set_index("finding").loc["Pneumothorax", "side_ok"] is False


def test_false_finding_reference_is_matched_to_the_prompt_mix():
    """A generator that redraws real images exactly meets the false-finding target.

    The oracle reads effusion into half of the real images showing cardiomegaly and into no
    normal one. Real test negatives for effusion: 10 cardiomegaly, 30 normal (rate 0.125).
    The 'generator' returns those very images, each cardiomegaly one four times: its
    false-finding rate is 20 / 70, above 0.125 + 0.1 although every image is a real one;
    the reference matched to its prompt mix is the same 20 / 70.
    """
    labels = ("Cardiomegaly", "Pleural Effusion", "No Finding")
    card = [1.0] * 10 + [0.0] * 30
    real_rows = pd.DataFrame(
        {
            "split": ["val"] * 2 + ["test"] * 40,
            "Cardiomegaly": [1.0, 0.0] + card,
            "Pleural Effusion": [1.0, 0.0] + [0.0] * 40,
            "No Finding": [0.0, 1.0] + [1.0 - c for c in card],
        }
    )
    effusion_read = [0.9] * 5 + [0.1] * 35  # half the cardiomegaly images, no normal one
    real_probs = np.array(
        [[0.9, 0.9, 0.1], [0.1, 0.1, 0.9]]
        + [[c * 0.8 + 0.1, e, 0.9 - c * 0.8] for c, e in zip(card, effusion_read, strict=True)]
    )
    copies = [4] * 10 + [1] * 30
    syn_probs = np.repeat(real_probs[2:], copies, axis=0)
    syn_card = np.repeat(card, copies)
    synthetic = pd.DataFrame(
        {
            "target_label": np.where(syn_card == 1, "Cardiomegaly", "No Finding"),
            "prompt": np.where(syn_card == 1, "Cardiomegaly.", "Normal."),
            "Cardiomegaly": syn_card,
            "Pleural Effusion": 0.0,
            "No Finding": 1.0 - syn_card,
        }
    )
    table = prompt_fidelity_table(syn_probs, synthetic, real_probs, real_rows, labels)
    effusion = table.set_index("finding").loc["Pleural Effusion"]
    assert effusion.n_unprompted == 70 and effusion.real_negative_rate == 0.125
    assert effusion.false_finding_rate == pytest.approx(20 / 70)
    assert effusion.matched_negative_rate == pytest.approx(20 / 70)
    assert effusion.false_finding_ok
    # A generator that draws effusion into every cardiomegaly image it is asked for misses.
    syn_probs[syn_card == 1, 1] = 0.9
    table = prompt_fidelity_table(syn_probs, synthetic, real_probs, real_rows, labels)
    assert not table.set_index("finding").loc["Pleural Effusion", "false_finding_ok"]


def test_ms_ssim_is_one_for_identical_images_and_falls_with_noise(phantom_manifest):
    images = np.stack([load_image(p) for p in read_manifest(phantom_manifest).image_paths()[:4]])
    assert images.shape[1:] == (64, 64)
    np.testing.assert_allclose(ms_ssim(images, images), 1.0, atol=1e-6)
    rng = np.random.default_rng(0)
    means = []
    for sigma in (5, 20, 50, 100):
        noisy = np.clip(images + rng.normal(0, sigma, images.shape), 0, 255)
        means.append(float(ms_ssim(images, noisy).mean()))
    assert all(a > b for a, b in zip(means, means[1:], strict=False)), means
    assert ms_ssim_scales(64, 64) == 3 and ms_ssim_scales(256, 256) == 5
    np.testing.assert_allclose(ms_ssim(images[:, :8, :8], images[:, :8, :8]), 1.0, atol=1e-6)


def test_blocked_nearest_neighbours_match_brute_force():
    rng = np.random.default_rng(2)
    query, reference = rng.normal(size=(70, 16)), rng.normal(size=(130, 16))
    sims, idx = nearest_neighbours(query, reference, k=3, block=16)
    qn = query / np.linalg.norm(query, axis=1, keepdims=True)
    rn = reference / np.linalg.norm(reference, axis=1, keepdims=True)
    full = qn @ rn.T
    np.testing.assert_array_equal(idx, np.argsort(-full, axis=1)[:, :3])
    np.testing.assert_allclose(sims, np.sort(full, axis=1)[:, ::-1][:, :3], atol=1e-5)


def test_pairs_youden_and_sides():
    first, second = pair_indices(np.array([0, 0, 0, 1, 2, 2]), max_pairs_per_group=2, seed=0)
    assert len(first) == 3 and all(a != b for a, b in zip(first, second, strict=True))
    assert youden_threshold(np.array([0, 0, 1, 1]), np.array([0.1, 0.2, 0.8, 0.9])) == 0.8
    assert youden_threshold(np.array([1, 1]), np.array([0.1, 0.9])) is None
    assert stated_side("Small left apical pneumothorax.", "Pneumothorax") == "left"
    assert stated_side("No pneumothorax. Right pleural effusion.", "Pneumothorax") is None
    assert stated_side("Bilateral pleural effusions.", "Pleural Effusion") == "both"
    assert named_lobe("Right middle lobe consolidation. Left effusion.") == "right middle lobe"
    assert named_lobe("Lingula opacity.") == "lingula" and named_lobe(None) is None
    assert is_negated("  Without effusion.") and not is_negated("Effusion, no change.")
    row = pd.Series({"phantom_findings": json.dumps({"Pneumothorax": {"side": "right"}})})
    assert true_side(row, "Pneumothorax") == "right"
    image = np.arange(12, dtype=np.uint8).reshape(3, 4)
    left, right = mirror_halves(image)
    np.testing.assert_array_equal(left[:, 2:], image[:, :2][:, ::-1])
    np.testing.assert_array_equal(right[:, :2], image[:, 2:][:, ::-1])


def test_whole_group_pairs_gives_all_six_pairs_per_group_of_four():
    n = 5
    groups = np.repeat(np.arange(n), 4)[np.random.default_rng(0).permutation(4 * n)]
    first, second, counted = whole_group_pairs(groups)
    assert counted == n and len(first) == 6 * n
    assert (groups[first] == groups[second]).all() and (first != second).all()
    pairs = {tuple(sorted(p)) for p in zip(first.tolist(), second.tolist(), strict=True)}
    assert len(pairs) == 6 * n  # every pair once
    assert np.unique(groups[first], return_counts=True)[1].tolist() == [6] * n
    # Over the cap, whole groups are drawn (seeded): 13 pairs allow two groups of 6.
    first, second, counted = whole_group_pairs(groups, max_pairs=13, seed=1)
    assert counted == 2 and len(first) == 12
    assert sorted(np.unique(groups[first], return_counts=True)[1].tolist()) == [6, 6]
    again = whole_group_pairs(groups, max_pairs=13, seed=1)
    np.testing.assert_array_equal(first, again[0])
    # Singletons give nothing; groups of 2 and 3 give 1 and 3 pairs.
    assert whole_group_pairs(np.arange(4))[2] == 0
    assert len(whole_group_pairs(np.array([0, 0, 1, 1, 1, 2]))[0]) == 4


def test_same_prompt_pairs_follow_prompt_groups_else_prompt_text():
    text = ["a", "a", "a", "a", "b", "b", "b", "b"]
    grouped = pd.DataFrame({"prompt": text, "prompt_group": [0, 0, 1, 1, 2, 2, 3, 3]})
    first, second, groups = same_prompt_pairs(grouped, max_pairs=20, cap=400)
    assert groups == 4 and len(first) == 4  # one pair per group of 2, never across groups
    assert (
        grouped["prompt_group"].to_numpy()[first] == grouped["prompt_group"].to_numpy()[second]
    ).all()
    single = pd.DataFrame({"prompt": text, "prompt_group": range(8)})  # one image per draw
    first, second, groups = same_prompt_pairs(single, max_pairs=20, cap=400)
    assert groups == 2 and len(first) == 12  # by prompt text: 6 pairs for each of 2 prompts


def test_diversity_table_reports_prompt_groups_and_pairs(phantom_manifest, synthetic_manifest):
    synthetic = read_manifest(synthetic_manifest)
    grouped = synthetic.with_rows(synthetic.rows.assign(prompt_group=np.arange(16) // 4))
    table = diversity_table(grouped, read_manifest(phantom_manifest), size=64, max_pairs=20)
    same = table.iloc[0]
    assert same["comparison"] == "synthetic, same prompt"
    assert (same["groups"], same["pairs"]) == (4, 24)  # 4 groups of 4 images: 6 pairs each
    assert 0 < same["ms_ssim_mean"] <= 1 and "groups" in table.columns


# ---------------------------------------------------------------- cache and audit


class _Counting:
    key = "counting"

    def __init__(self):
        self.seen = 0

    def __call__(self, images):
        self.seen += len(images)
        return {"mean": np.array([[float(np.mean(im))] for im in images])}


def test_feature_cache_embeds_each_image_once(tmp_path, phantom_manifest):
    manifest = read_manifest(phantom_manifest)
    paths = manifest.image_paths()[:6]
    hashes = [file_sha256(p) for p in paths]
    paths, hashes = paths + paths[:2], hashes + hashes[:2]  # duplicates are embedded once
    counting = _Counting()
    first = embed_images(paths, hashes, [counting, PixelEmbedder(8)], tmp_path, batch_size=4)
    assert counting.seen == 6
    again = embed_images(paths, hashes, [_Counting(), PixelEmbedder(8)], tmp_path)
    np.testing.assert_array_equal(first[0]["mean"], again[0]["mean"])
    expected = [np.mean(load_image(p)) for p in paths]
    np.testing.assert_allclose(first[0]["mean"][:, 0], expected)
    assert first[1]["pixels"].shape == (8, 64)
    assert len(FeatureCache(tmp_path, "counting").index) == 6


def test_audit_flags_an_exact_copy_among_synthetic_images():
    rng = np.random.default_rng(3)
    train_f, train_p = rng.normal(size=(50, 32)), rng.normal(size=(50, 64))
    train_p /= np.linalg.norm(train_p, axis=1, keepdims=True)
    syn_f, syn_p = rng.normal(size=(20, 32)), rng.normal(size=(20, 64))
    syn_p /= np.linalg.norm(syn_p, axis=1, keepdims=True)
    syn_f[7], syn_p[7] = train_f[11], train_p[11]
    table = memorization_table(
        syn_f, syn_p, [f"s{i}" for i in range(20)], train_f, train_p,
        [f"t{i}" for i in range(50)], feature_threshold=0.98, pixel_threshold=0.95,
    )  # fmt: skip
    assert table["flagged"].tolist() == [i == 7 for i in range(20)]
    assert table.loc[7, "nn_pixel_index"] == 11 and table.loc[7, "pixel_correlation"] > 0.999


# ---------------------------------------------------------------- end to end and CLI


def test_evaluate_generator_cli_writes_report_and_drops_the_copy(
    tmp_path, phantom_manifest, run_dir, synthetic_manifest
):
    from cli import app

    out = tmp_path / "eval"
    filtered = synthetic_manifest.parent / "kept.parquet"
    args = ["evaluate-generator", "--synthetic", str(synthetic_manifest), "--real",
            str(phantom_manifest), "--features", str(run_dir), "--out", str(out),
            "--drop-memorized", "--filtered-out", str(filtered), "--batch-size", "16"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "FID" in result.output and "MS-SSIM" in result.output
    doc = json.loads((out / "generator_eval.json").read_text())
    assert doc["schema"] == GENERATOR_EVAL_SCHEMA
    assert doc["n_synthetic"] == 16 and doc["fidelity"]["fid"] >= 0
    assert doc["fidelity"]["real_baseline_fid"] is not None
    assert {r["label"] for r in doc["alignment"]["rows"]} == {"Pleural Effusion", "Pneumothorax"}
    assert "KID" in result.output and "prompt fidelity" in result.output
    assert doc["fidelity"]["kid"] is not None and doc["fidelity"]["kid_se"] >= 0
    # FID is named by its features (the oracle run's here), with its n, at equal n.
    fid = doc["fidelity"]
    assert fid["extractor"] == f"oracle features, {doc['feature_extractor']['dim']}-d"
    assert fid["feature_dim"] == doc["feature_extractor"]["dim"] and fid["min_fid_images"] == 50
    shown = (out / "generator_eval.md").read_text()
    assert f"FID ({fid['extractor']})" in shown and "Inception" not in shown + result.output
    assert fid["rows"][0]["n_compared"] == fid["rows"][-1]["n_compared"]
    # The oracle's thresholds come from its validation patients (the run records them).
    assert "validation patients" in doc["prompt_fidelity"]["threshold_source"]
    fidelity = doc["prompt_fidelity"]
    assert fidelity["targets"] == {
        "hit_vs_real_positive": 0.8, "false_finding_margin": 0.1, "side_hit_rate": 0.85
    }  # fmt: skip
    prompted = {r["finding"]: r["n_prompted"] for r in fidelity["rows"]}
    assert prompted["Pleural Effusion"] == prompted["Pneumothorax"] == 8
    assert all(isinstance(r["meets_targets"], bool) for r in fidelity["rows"])
    memo = doc["memorization"]
    assert memo["n_exact_copies"] == 1
    assert "images/0005.png" in {Path(r["image_path"]).relative_to(synthetic_manifest.parent).as_posix() for r in memo["flagged"]}  # fmt: skip
    table = pd.read_parquet(out / "memorization.parquet")
    assert len(table) == 16 and table["flagged"].iloc[5]
    kept = read_manifest(filtered)
    assert len(kept) == 16 - memo["n_flagged"]
    assert "images/0005.png" not in set(kept.rows["image_path"])
    assert (out / "memorization.png").stat().st_size > 1000
    section = generator_section(out)
    assert "## Generator evaluation" in section["md"] and "<table>" in section["html"]
    assert "### Prompt fidelity" in section["md"] and "meets targets" in section["html"]
    assert "meets_targets" not in section["html"] and "NaN" not in section["md"]
    assert (out / "generator_eval.md").read_text() == section["md"]
    # A second run hits the feature cache and refuses to overwrite without --overwrite.
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 2 and "--overwrite" in again.output


def test_sample_grid_with_no_real_image_of_a_prompted_finding(phantom_manifest, synthetic_manifest):
    from augmentor.generator_report import sample_rows

    real = read_manifest(phantom_manifest)
    none_real = real.with_rows(real.rows.assign(Pneumothorax=0.0))
    grid = sample_rows(none_real, read_manifest(synthetic_manifest))
    pneumothorax = [row for row in grid if row[0].startswith("Pneumothorax")]
    assert pneumothorax and all(not r and len(s) == 4 for _, r, s in pneumothorax)


def test_filter_by_oracle_keeps_agreeing_rows_and_records_scores(synthetic_manifest):
    manifest = read_manifest(synthetic_manifest)

    def scorer(m: Manifest) -> pd.DataFrame:
        probs = np.linspace(0.0, 1.0, len(m))
        return pd.DataFrame({"Pneumothorax": probs, "Pleural Effusion": probs})

    scored = score_by_oracle(manifest, scorer)
    kept = filter_by_oracle(scored, scorer, min_prob=0.5)
    assert (kept.rows["oracle_prob"] >= 0.5).all()
    rejected = rejected_by_oracle(scored, 0.5)
    assert len(kept) + len(rejected) == len(manifest)
    with pytest.raises(UserError, match="--min-prob"):
        filter_by_oracle(manifest, scorer, 1.5)


def test_oracle_filter_config_defaults_and_flags(run_dir):
    assert oracle_filter_config(None, None) is None
    assert oracle_filter_config(run_dir, None).min_prob == OracleFilterConfig(run_dir).min_prob
    assert oracle_filter_config(run_dir, 0.7).min_prob == 0.7
    with pytest.raises(UserError, match="only used with --filter-with"):
        oracle_filter_config(None, 0.7)
    with pytest.raises(UserError, match="--min-prob"):
        oracle_filter_config(run_dir, 1.5)


@pytest.fixture(scope="module")
def text_encoders(tmp_path_factory) -> tuple[Path, Path]:
    """Two tiny text encoders (different seeds) saved as pipeline-style folders."""
    from augmentor.base import build_tiny_pipeline

    out = []
    for seed in (0, 1):
        folder = tmp_path_factory.mktemp(f"text{seed}")
        pipe = build_tiny_pipeline(seed)
        pipe.text_encoder.save_pretrained(folder / "text_encoder")
        pipe.tokenizer.save_pretrained(folder / "tokenizer")
        out.append(folder)
    return out[0], out[1]


def test_probe_text_encoder_runs_on_the_tiny_model(tmp_path, phantom_manifest, text_encoders):
    from cli import app

    base, finetuned = text_encoders
    args = ["probe-text-encoder", "--base", str(base), "--finetuned", str(finetuned),
            "--manifest", str(phantom_manifest), "--out", str(tmp_path)]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    doc = json.loads((tmp_path / "text_encoder_probe.json").read_text())
    rows = {r["label"]: r for r in doc["rows"]}
    assert "Pleural Effusion" in rows
    for row in rows.values():
        assert 0.0 <= row["base_auroc"] <= 1.0 and 0.0 <= row["finetuned_auroc"] <= 1.0
        assert row["delta"] == pytest.approx(row["finetuned_auroc"] - row["base_auroc"])
    same = CliRunner().invoke(app, [*args[:3], "--finetuned", str(base), *args[5:7]])
    assert same.exit_code == 0 and "identical" in same.output, same.output


@pytest.mark.parametrize(
    "case, message",
    [
        ("missing_run", "not a classifier run directory (not found)"),
        ("real_as_synthetic", "no synthetic rows"),
        ("label_mismatch", "label set differs"),
        ("missing_finetuned", "--finetuned"),
    ],
)
def test_cli_bad_inputs_exit_2_with_one_line(
    tmp_path, case, message, phantom_manifest, run_dir, synthetic_manifest
):
    from cli import app

    common = ["--out", str(tmp_path / "out")]
    if case == "missing_run":
        args = ["evaluate-generator", "--synthetic", str(synthetic_manifest), "--real",
                str(phantom_manifest), "--features", str(tmp_path / "nope"), *common]  # fmt: skip
    elif case == "real_as_synthetic":
        args = ["evaluate-generator", "--synthetic", str(phantom_manifest), "--real",
                str(phantom_manifest), "--features", str(run_dir), *common]  # fmt: skip
    elif case == "label_mismatch":
        real = read_manifest(phantom_manifest)
        other = real.with_rows(real.rows.drop(columns=["Fracture"]))
        other.labels = tuple(x for x in real.labels if x != "Fracture")
        path = write_manifest(
            other, phantom_manifest.parent / "fewer_labels.parquet", overwrite=True
        )
        args = ["evaluate-generator", "--synthetic", str(synthetic_manifest), "--real",
                str(path), "--features", str(run_dir), *common]  # fmt: skip
    else:
        args = ["probe-text-encoder", "--base", "tiny", "--finetuned", str(tmp_path / "nope"),
                "--manifest", str(phantom_manifest)]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], result.output


def test_apply_oracle_filter_rewrites_the_manifest_with_scores(
    tmp_path, run_dir, synthetic_manifest
):
    folder = tmp_path / "synth"
    shutil.copytree(synthetic_manifest.parent, folder)
    path = folder / synthetic_manifest.name
    n = len(read_manifest(path))
    # min_prob 0 keeps all and scores all
    first = apply_oracle_filter(path, OracleFilterConfig(run_dir, 0.0, batch_size=8))
    assert len(read_manifest(path)) == n and first.rejected.empty
    threshold = float(pd.read_parquet(first.scores)["oracle_prob"].median())
    summary = apply_oracle_filter(path, OracleFilterConfig(run_dir, threshold, batch_size=8))
    scores = pd.read_parquet(summary.scores)
    assert len(scores) == n and scores["oracle_prob"].between(0, 1).all()
    kept = read_manifest(path)
    assert (kept.rows["oracle_prob"] >= threshold).all()
    assert len(kept) + len(summary.rejected) == n and 0 < len(kept) < n
    assert int(summary.counts["kept"].sum()) == len(kept)
    with pytest.raises(UserError, match="--filter-with"):
        apply_oracle_filter(path, OracleFilterConfig(tmp_path / "no-run", threshold))


def test_timm_extractor_loads_local_weights_and_never_downloads(tmp_path):
    import timm
    from safetensors.torch import save_model

    from augmentor.features import load_feature_extractor

    torch.manual_seed(0)
    source = timm.create_model("test_resnet")
    save_model(source, str(tmp_path / "weights.safetensors"))
    extractor = load_feature_extractor(
        timm_name="test_resnet", weights=tmp_path / "weights.safetensors", image_size=32
    )
    loaded = extractor.model.state_dict()
    for name, value in source.state_dict().items():
        if not name.startswith("fc."):
            torch.testing.assert_close(loaded[name], value)
    out = extractor([np.full((40, 50), 90, dtype=np.uint8)])
    assert out["features"].shape == (1, extractor.feature_dim) and "probs" not in out
    with pytest.raises(UserError, match="--weights"):
        load_feature_extractor(timm_name="test_resnet", weights=tmp_path / "missing.pth")
    with pytest.raises(UserError, match="exactly one"):
        load_feature_extractor()


def test_synthesize_filter_with_records_oracle_scores(
    tmp_path, phantom_manifest, tiny_generator_dir, run_dir
):
    from cli import app

    out = tmp_path / "synth"
    args = ["synthesize", "--model", str(tiny_generator_dir), "--labels",
            "pleural_effusion:2,pneumothorax:2", "--prompts-from", str(phantom_manifest),
            "--out", str(out), "--num-inference-steps", "2"]  # fmt: skip
    bad = CliRunner().invoke(app, [*args, "--filter-with", str(tmp_path / "no-run")])
    assert bad.exit_code == 2 and "--filter-with" in bad.output and not out.exists()
    bad = CliRunner().invoke(app, [*args, "--min-prob", "0.5"])
    assert bad.exit_code == 2 and "--min-prob" in bad.output
    result = CliRunner().invoke(app, [*args, "--filter-with", str(run_dir), "--min-prob", "0"])
    assert result.exit_code == 0, result.output
    kept = read_manifest(out / "manifest.parquet")
    assert len(kept) == 4 and kept.rows["oracle_prob"].between(0, 1).all()
    assert len(pd.read_parquet(out / "oracle_scores.parquet")) == 4


# ---------------------------------------------------------------- torchxrayvision features


@pytest.fixture(scope="module")
def xrv_weights(tmp_path_factory) -> Path:
    """torchxrayvision's DenseNet-121 with random weights, saved as safetensors."""
    xrv = pytest.importorskip("torchxrayvision")
    from safetensors.torch import save_file

    def no_download(*args, **kwargs):
        raise AssertionError("torchxrayvision tried to fetch weights")

    patch = pytest.MonkeyPatch()
    patch.setattr(xrv.models, "get_weights", no_download)
    patch.setattr(xrv.utils, "download", no_download)
    try:
        torch.manual_seed(0)
        model = xrv.models.DenseNet(weights=None)  # the architecture only: must not download
    finally:
        patch.undo()
    path = tmp_path_factory.mktemp("xrv") / "densenet121.safetensors"
    save_file(model.state_dict(), str(path))
    return path


def test_xrv_extractor_gives_1024_deterministic_features(xrv_weights, phantom_manifest):
    from augmentor.features import load_feature_extractor
    from augmentor.xrv_features import XRV_FEATURE_DIM

    images = [load_image(p) for p in read_manifest(phantom_manifest).image_paths()[:3]]
    images.append(np.full((40, 56), 200, dtype=np.uint8))  # not square: centre-cropped first
    extractor = load_feature_extractor(xrv_weights=xrv_weights, device="cpu")
    assert extractor.labels == () and extractor.name == f"xrv:{xrv_weights}"
    x = extractor.preprocess(images)
    assert x.shape == (4, 1, 224, 224) and -1024 <= float(x.min()) < float(x.max()) <= 1024
    first = extractor(images)["features"]
    assert first.shape == (4, XRV_FEATURE_DIM) == (4, 1024) and np.isfinite(first).all()
    np.testing.assert_array_equal(first, extractor(images)["features"])
    again = load_feature_extractor(xrv_weights=xrv_weights, device="cpu")
    assert again.key == extractor.key
    np.testing.assert_array_equal(first, again(images)["features"])
    np.testing.assert_array_equal(first[1:3], extractor(images[1:3])["features"])


def test_xrv_extractor_refuses_missing_corrupt_and_foreign_files(tmp_path, xrv_weights):
    from augmentor.features import load_feature_extractor
    from augmentor.xrv_features import load_xrv_extractor

    missing = tmp_path / "missing.safetensors"
    with pytest.raises(UserError, match="not found") as info:
        load_xrv_extractor(missing)
    assert str(info.value).startswith(f"--features-xrv: {missing}")
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(xrv_weights.read_bytes()[:1000])
    with pytest.raises(UserError, match=f"--features-xrv: {corrupt}: corrupt"):
        load_xrv_extractor(corrupt)
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match=f"--features-xrv: {garbage} is not a torch weights"):
        load_xrv_extractor(garbage)
    pickled = tmp_path / "model.pt"  # a whole pickled module, as xrv's release files are
    torch.save(torch.nn.Linear(2, 2), pickled)
    with pytest.raises(UserError, match="refused: it is a pickle"):
        load_xrv_extractor(pickled)
    other = tmp_path / "other.pth"  # a state dict of another network
    torch.save({"features.conv0.weight": torch.zeros(8, 1, 3, 3)}, other)
    with pytest.raises(UserError, match="does not fit torchxrayvision's DenseNet-121"):
        load_xrv_extractor(other)
    with pytest.raises(UserError, match="exactly one"):
        load_feature_extractor(timm_name="test_resnet", xrv_weights=xrv_weights)


def test_cli_features_xrv_missing_file_is_one_line(tmp_path, phantom_manifest, synthetic_manifest):
    from cli import app

    missing = tmp_path / "xrv.safetensors"
    args = ["evaluate-generator", "--synthetic", str(synthetic_manifest), "--real",
            str(phantom_manifest), "--features-xrv", str(missing),
            "--out", str(tmp_path / "out")]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and f"--features-xrv: {missing} not found" in lines[0], result.output


@pytest.mark.slow
def test_evaluate_generator_with_xrv_features(
    tmp_path, xrv_weights, phantom_manifest, synthetic_manifest
):
    from cli import app

    out = tmp_path / "eval"
    args = ["evaluate-generator", "--synthetic", str(synthetic_manifest), "--real",
            str(phantom_manifest), "--features-xrv", str(xrv_weights), "--out", str(out),
            "--max-real", "4", "--batch-size", "8"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    doc = json.loads((out / "generator_eval.json").read_text())
    assert doc["feature_extractor"]["dim"] == 1024
    assert doc["feature_extractor"]["name"] == f"xrv:{xrv_weights}"
    assert doc["fidelity"]["fid"] is not None and doc["oracle"] is None


def test_xrv_extractor_without_torchxrayvision_names_the_extra(monkeypatch, xrv_weights):
    import sys

    from augmentor.xrv_features import load_xrv_extractor

    monkeypatch.setitem(sys.modules, "torchxrayvision", None)  # import fails as if absent
    with pytest.raises(UserError, match=r'--features-xrv needs torchxrayvision.*\.\[xrv\]"'):
        load_xrv_extractor(xrv_weights)


def test_rate_interval_is_wilsons_and_covers_at_its_level():
    """The interval is Wilson's score interval, and its exact coverage (summed over the
    binomial distribution, no simulation) stays near 95% at the sizes and rates of a
    fidelity table: on average over rates at least 0.94, nowhere under 0.90."""
    from scipy.stats import binom, norm

    z = norm.ppf(0.975)
    for k, n in [(66, 80), (0, 40), (40, 40), (3, 7)]:
        p = k / n
        centre = (p + z**2 / (2 * n)) / (1 + z**2 / n)
        half = z / (1 + z**2 / n) * math.sqrt(p * (1 - p) / n + z**2 / (4 * n**2))
        assert rate_interval(k, n) == pytest.approx((centre - half, centre + half))
    assert all(math.isnan(x) for x in rate_interval(0, 0))
    for n in (40, 80, 200):
        bounds = np.array([rate_interval(k, n) for k in range(n + 1)])
        coverage = []
        for p in np.linspace(0.02, 0.98, 49):
            covered = (bounds[:, 0] <= p) & (p <= bounds[:, 1])
            coverage.append(binom.pmf(np.arange(n + 1), n, p)[covered].sum())
        assert np.mean(coverage) >= 0.94 and min(coverage) >= 0.90, (n, min(coverage))


def test_fidelity_display_shows_each_rate_with_its_interval():
    """Terminal and report show 'low-high' beside each rate; an older document without the
    bounds shows 'n/a' instead of failing."""
    from augmentor.generator_report import with_interval_text

    row = {"hit_rate": 0.825, "hit_rate_low": 0.7274, "hit_rate_high": 0.8928}
    shown = with_interval_text([row])[0]
    assert shown["hit_rate_ci"] == "0.73–0.89"
    assert shown["side_hit_rate_ci"] == shown["false_finding_rate_ci"] == "n/a"


def test_training_and_evaluation_read_report_text_through_one_module():
    """Balanced fine-tuning (training) reads sides and lobes as the evaluation does, from
    `augmentor.report_text`, without importing the evaluation's metrics."""
    import ast

    root = Path(__file__).resolve().parents[1] / "augmentor"
    for name, uses in (("balance", {"named_lobe", "stated_side"}),
                       ("generator_metrics", {"LATERAL_LABELS", "stated_side"})):  # fmt: skip
        tree = ast.parse((root / f"{name}.py").read_text())
        imports = {
            (node.module, a.name)
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom)
            for a in node.names
        }
        assert {("augmentor.report_text", u) for u in uses} <= imports, name
        assert not any(m == "augmentor.generator_metrics" for m, _ in imports), name
