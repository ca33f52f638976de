"""What makes the generator's fidelity numbers hold up: the oracle calibrated on images it
did not train on, intervals that count prompts and patients, FID named and compared at
equal n, KID's standard error, per-label FID only with enough images."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from augmentor.eval_config import GeneratorEvalConfig
from augmentor.generator_metrics import (
    OracleHoldout,
    extractor_title,
    fidelity_table,
    oracle_holdout,
    prompt_fidelity_table,
)
from augmentor.generator_report import render_section
from augmentor.laterality import fit_side_detector
from augmentor.metrics import (
    clustered_rate_interval,
    design_effect,
    kid_from_features,
    rate_interval,
    youden_threshold,
)
from manifests.io import Manifest
from manifests.provenance import SeenPatients

LABELS = ("Pneumothorax", "No Finding")

# ---------------------------------------------------------------- the oracle's held-out images


def _real(n_per_split: int = 20, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    """Real rows of train, val and test (two images per patient) and oracle probabilities
    that separate train perfectly at 0.9 but val only at 0.3: thresholds from train and val
    differ."""
    rng = np.random.default_rng(seed)
    rows, probs = [], []
    for split in ("train", "val", "test"):
        for i in range(n_per_split):
            positive = i % 2 == 0
            patient = f"{split}{i // 2}"
            if split == "train":
                p = 0.95 if positive else 0.85
            else:
                p = 0.45 if positive else 0.2 + 0.05 * rng.random()
            rows.append(
                {"split": split, "patient_id": patient, "Pneumothorax": float(positive),
                 "No Finding": float(not positive)}
            )  # fmt: skip
            probs.append([p, 1 - p])
    return pd.DataFrame(rows), np.array(probs)


def _synthetic(
    n_prompts: int, per_prompt: int, hits: list[bool]
) -> tuple[pd.DataFrame, np.ndarray]:
    """Synthetic rows prompted for Pneumothorax, `per_prompt` images per prompt text, the
    oracle positive where `hits` says (one entry per image)."""
    prompts = [f"Pneumothorax, case {k}." for k in range(n_prompts) for _ in range(per_prompt)]
    rows = pd.DataFrame(
        {"target_label": "Pneumothorax", "prompt": prompts, "Pneumothorax": 1.0,
         "No Finding": 0.0}
    )  # fmt: skip
    p = np.where(np.array(hits), 0.99, 0.01)
    return rows, np.stack([p, 1 - p], axis=1)


def test_thresholds_come_from_the_oracles_validation_patients_not_its_train_images():
    real_rows, real_probs = _real()
    seen = SeenPatients.of(
        real_rows.loc[real_rows["split"] == "train", "patient_id"],
        real_rows.loc[real_rows["split"] == "val", "patient_id"],
    )
    holdout = oracle_holdout(real_rows, seen)
    assert holdout.calibrate.tolist() == (real_rows["split"] == "val").tolist()
    assert "validation patients" in holdout.source
    syn_rows, syn_probs = _synthetic(4, 2, [True] * 8)
    table = prompt_fidelity_table(
        syn_probs, syn_rows, real_probs, real_rows, LABELS, holdout=holdout, n_boot=50
    )
    threshold = table.set_index("finding").loc["Pneumothorax", "threshold"]
    val = (real_rows["split"] == "val").to_numpy()
    train = (real_rows["split"] == "train").to_numpy()
    y = real_rows["Pneumothorax"].to_numpy()
    assert threshold == youden_threshold(y[val], real_probs[val, 0])
    assert threshold != youden_threshold(y[train], real_probs[train, 0])
    assert threshold < 0.5  # the train images' threshold (0.95) would miss every real test one
    assert table.set_index("finding").loc["Pneumothorax", "real_positive_rate"] == 1.0


def test_holdout_leaves_out_patients_the_oracle_saw_and_says_so():
    real_rows, _ = _real()
    # The oracle trained on one val patient and validated on one test patient.
    seen = SeenPatients.of(["train0", "val0"], ["val0", "val1", "test0"])
    holdout = oracle_holdout(real_rows, seen)
    patients = real_rows["patient_id"]
    assert set(patients[holdout.calibrate]) == {"val1", "test0"}  # val0: trained on
    assert "test0" not in set(patients[holdout.reference])
    assert set(real_rows["split"][holdout.reference]) == {"test"}
    assert any("left out of its reference rates" in n for n in holdout.notes)
    # None of its validation patients in this manifest: val rows it did not train on.
    other = oracle_holdout(real_rows, SeenPatients.of(["val0"], ["elsewhere"]))
    assert set(patients[other.calibrate]) == set(patients[real_rows["split"] == "val"]) - {"val0"}
    assert other.notes and "none of the oracle run's validation patients" in other.notes[0]
    # No record at all: the val split, and a note that nothing could be checked.
    unchecked = oracle_holdout(real_rows, None)
    assert unchecked.calibrate.tolist() == (real_rows["split"] == "val").tolist()
    assert "unchecked" in unchecked.source and unchecked.notes


def test_side_detector_is_fit_on_the_calibration_images_not_train(tmp_path):
    """Train images carry the opposite side convention from val and test: a detector fit on
    train would score 0 on test; fit on the calibration (val) images it scores 1."""
    rows, left_probs, right_probs = [], [], []
    for split in ("train", "val", "test"):
        for i in range(8):
            side = ("left", "right")[i % 2]
            signal = 1.0 if side == "left" else 0.0
            if split == "train":
                signal = 1.0 - signal
            rows.append(
                {"split": split, "patient_id": f"{split}{i}", "Pneumothorax": 1.0,
                 "No Finding": 0.0, "report": f"Small {side} pneumothorax."}
            )  # fmt: skip
            left_probs.append([0.2 + 0.6 * signal, 0.1])
            right_probs.append([0.8 - 0.6 * signal, 0.1])
    real = Manifest(rows=pd.DataFrame(rows), labels=LABELS, root=tmp_path)
    halves = {"probs_image_left": np.array(left_probs), "probs_image_right": np.array(right_probs)}
    holdout = OracleHoldout.from_splits(real.rows)
    detector = fit_side_detector(real, halves, "Pneumothorax", LABELS, holdout=holdout)
    assert detector.n_fit == 8 and set(real.rows["split"].iloc[detector.held]) == {"test"}
    truth = detector.sides[detector.held] == "left"
    assert (detector.predict_left(halves, detector.held) == truth).all()


# ---------------------------------------------------------------- intervals


def test_reference_rates_carry_intervals_that_contain_them():
    real_rows, real_probs = _real(40, seed=1)
    real_probs[real_rows["split"].to_numpy() == "test"] = np.random.default_rng(2).random(
        (40, 2)
    )  # a noisy oracle on test, so the rates are not 0 or 1
    syn_rows, syn_probs = _synthetic(5, 4, [k % 3 != 0 for k in range(20)])
    table = prompt_fidelity_table(syn_probs, syn_rows, real_probs, real_rows, LABELS, n_boot=200)
    for _, row in table.iterrows():
        for name in ("real_positive_rate", "real_negative_rate", "matched_negative_rate"):
            if np.isfinite(row[name]):
                assert row[f"{name}_low"] <= row[name] <= row[f"{name}_high"], (name, row)
    ptx = table.set_index("finding").loc["Pneumothorax"]
    assert ptx.n_real_pos == 20 and ptx.n_real_pos_patients == 20  # one positive each


def test_prompt_clustered_interval_is_wider_than_naive_when_prompts_repeat():
    # Five prompts of eight images each, each prompt all hit or all missed.
    hits = np.repeat([True, True, True, False, False], 8)
    clusters = np.repeat(np.arange(5), 8)
    naive = rate_interval(int(hits.sum()), len(hits))
    clustered = clustered_rate_interval(hits, clusters)
    assert design_effect(hits, clusters) > 4
    assert clustered[0] < naive[0] and clustered[1] > naive[1]
    # One image per prompt: Wilson's interval itself.
    assert clustered_rate_interval(hits, np.arange(40)) == pytest.approx(naive)
    # In the table: the same images and hits, prompts repeated or not.
    repeated_rows, probs = _synthetic(5, 8, hits.tolist())
    unique_rows = repeated_rows.assign(prompt=[f"Pneumothorax {k}." for k in range(40)])
    real_rows, real_probs = _real()
    repeated = prompt_fidelity_table(probs, repeated_rows, real_probs, real_rows, LABELS, n_boot=50)
    unique = prompt_fidelity_table(probs, unique_rows, real_probs, real_rows, LABELS, n_boot=50)
    r, u = repeated.iloc[0], unique.iloc[0]
    assert (r.n_prompts, u.n_prompts) == (5, 40) and r.hit_rate == u.hit_rate
    assert r.hit_rate_high - r.hit_rate_low > u.hit_rate_high - u.hit_rate_low
    assert r.hit_minus_real_low < u.hit_minus_real_low  # the bootstrap resamples prompts too


def test_one_sided_bounds_of_synthetic_minus_real():
    real_rows, real_probs = _real()
    # The generator draws the finding in a third of its prompts; real positives: all.
    hits = [k % 3 == 0 for k in range(60)]
    syn_rows, syn_probs = _synthetic(60, 1, hits)
    table = prompt_fidelity_table(syn_probs, syn_rows, real_probs, real_rows, LABELS, n_boot=300)
    ptx = table.set_index("finding").loc["Pneumothorax"]
    assert ptx.hit_minus_real == pytest.approx(ptx.hit_rate - ptx.real_positive_rate)
    assert ptx.hit_minus_real_low < ptx.hit_minus_real < 0 and ptx.hit_minus_real_low > -1
    # Drawn far below the real rate: even the one-sided bound stays below zero.
    assert ptx.hit_minus_real + 0.4 < 0 and ptx.hit_minus_real_low < 0
    normal = table.set_index("finding").loc["No Finding"]  # every synthetic image unprompted
    assert normal.false_minus_matched == pytest.approx(
        normal.false_finding_rate - normal.matched_negative_rate
    )
    assert normal.false_minus_matched_high >= normal.false_minus_matched
    assert set(table.columns) >= {
        "hit_minus_real_low", "false_minus_matched_high", "n_prompts", "n_unprompted_prompts",
        "real_positive_rate_low", "matched_negative_rate_high",
    }  # fmt: skip


# ---------------------------------------------------------------- FID and KID


def test_extractor_titles_name_what_the_features_are():
    assert extractor_title("run:/runs/oracle", 512, "run:/runs/oracle") == "oracle features, 512-d"
    assert extractor_title("run:/runs/other", 512, "run:/runs/oracle").startswith(
        "classifier-run features"
    )
    assert extractor_title("timm:inception_v3", 2048) == "Inception, 2048-d"
    assert extractor_title("timm:resnet50", 2048) == "timm resnet50, 2048-d"
    assert extractor_title("xrv:/w.safetensors", 1024) == "torchxrayvision DenseNet-121, 1024-d"
    assert "Inception" not in extractor_title("run:/runs/oracle", 512, "run:/runs/oracle")


def _features(n_syn: int, n_train: int, n_test: int, labelled: int = 0, dim: int = 8):
    rng = np.random.default_rng(0)
    real_rows = pd.DataFrame(
        {"split": ["train"] * n_train + ["test"] * n_test,
         "Pneumothorax": [1.0] * n_train + [0.0] * n_test}
    )  # fmt: skip
    targets = pd.Series(["Pneumothorax"] * labelled + [None] * (n_syn - labelled))
    syn = rng.normal(0.3, 1.0, (n_syn, dim))
    real = rng.normal(0.0, 1.0, (n_train + n_test, dim))
    return syn, targets, real, real_rows


@pytest.mark.parametrize("n_syn, n_test, n_equal", [(100, 30, 30), (20, 30, 20)])
def test_fid_rows_compare_at_equal_n_and_name_their_extractor(n_syn, n_test, n_equal):
    syn, targets, real, real_rows = _features(n_syn, 60, n_test)
    table, baseline = fidelity_table(
        syn, targets, real, real_rows, LABELS, kid_subsets=5, extractor="oracle features, 8-d"
    )
    first, last = table.iloc[0], table.iloc[-1]
    assert last["subset"] == "real test (baseline)" and baseline == last["fid"]
    assert first["n_compared"] == last["n_compared"] == n_equal
    assert first["n_reference"] == last["n_reference"] == 60
    assert (table["extractor"] == "oracle features, 8-d").all()
    assert table.equals(
        fidelity_table(
            syn, targets, real, real_rows, LABELS, kid_subsets=5, extractor="oracle features, 8-d"
        )[0]
    )  # the subsample is seeded


def test_per_label_fid_below_the_minimum_is_too_few_images_and_the_report_says_so():
    syn, targets, real, real_rows = _features(80, 60, 30, labelled=20, dim=40)
    table, _ = fidelity_table(syn, targets, real, real_rows, LABELS, min_fid_images=50,
                              kid_subsets=5, extractor="oracle features, 40-d")  # fmt: skip
    label = table.set_index("subset").loc["Pneumothorax"]
    assert np.isnan(label["fid"]) and label["fid_note"] == "too few images (< 50)"
    assert np.isfinite(label["kid_mean"])  # KID is unbiased at small n: still given
    assert "n < 40 dims" in table.iloc[0]["fid_note"]  # the FID row says n < dim
    loose, _ = fidelity_table(syn, targets, real, real_rows, LABELS, min_fid_images=10,
                              kid_subsets=5)  # fmt: skip
    assert np.isfinite(loose.set_index("subset").loc["Pneumothorax", "fid"])
    assert GeneratorEvalConfig.__dataclass_fields__["min_fid_images"].default == 50
    doc = {
        "feature_extractor": {"name": "run:/oracle"}, "n_synthetic": 80,
        "n_real": {"train": 60, "val": 0, "test": 30}, "oracle": None,
        "fidelity": {
            "fid_label": "FID (oracle features, 40-d)", "extractor": "oracle features, 40-d",
            "feature_dim": 40, "fid": 1.0, "kid": 0.0, "kid_se": 0.0, "kid_subsets": 5,
            "kid_subset_size": 1000, "min_fid_images": 50,
            "rows": table.replace({np.nan: None}).to_dict("records"),
        },
        "diversity": {"metric": "MS-SSIM", "image_size": 64, "scales": 3, "rows": []},
        "memorization": {
            "n_flagged": 0, "n_synthetic": 80, "n_exact_copies": 0, "pixel_threshold": 0.97,
            "feature_threshold": 0.98, "pixel_correlation_max": 0.5, "feature_cosine_max": 0.5,
            "figure": "memorization.png", "flagged": [],
        },
    }  # fmt: skip
    md = render_section(doc, None, None)["md"]
    assert "| FID (oracle features, 40-d) |" in md.replace("FID note", "")
    assert "too few images" in md and "at least 50 images" in md
    assert "n compared" in md and "n real train" in md and "KID SE x1000" in md
    assert "40 feature dimensions" in md


def test_kid_standard_error_comes_from_resampling_both_sets():
    rng = np.random.default_rng(0)
    varied = rng.normal(size=(40, 6))
    constant = np.ones((40, 6))  # resampling it changes nothing
    # Both sets fit in one subset: every old 'subset' was the two whole sets (sd 0).
    for a, b in ((varied, constant), (constant, varied)):
        mean, se = kid_from_features(a, b, subsets=50, subset_size=1000, seed=0)
        assert se > 0, "the set that varies must be redrawn"
    mean, se = kid_from_features(constant, constant, subsets=20, seed=0)
    assert mean == pytest.approx(0.0, abs=1e-9) and se == pytest.approx(0.0, abs=1e-9)
    # The SE tracks the spread of KID over fresh samples of both distributions.
    fresh = [
        kid_from_features(rng.normal(size=(60, 6)), rng.normal(0.5, 1, (60, 6)), subsets=1)[0]
        for _ in range(60)
    ]
    _, se = kid_from_features(rng.normal(size=(60, 6)), rng.normal(0.5, 1, (60, 6)), subsets=200)
    assert 0.5 < se / np.std(fresh) < 2.0


def test_side_detector_judges_no_image_without_calling_the_model():
    """A label with no held-out real case of one side (small studies) gives an empty
    judgement, not a crash in the fitted model."""
    from augmentor.laterality import SideDetector

    class Refuses:
        def predict(self, x):
            raise AssertionError("predict called on no images")

    detector = SideDetector("Pneumothorax", 0, Refuses(), np.array([]), np.array([], int), 4)
    out = detector.predict_left({}, np.array([], dtype=int))
    assert out.dtype == bool and out.shape == (0,)
