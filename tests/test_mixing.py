"""Mix arithmetic: the synthetic fraction, fixed train sizes, repetition, untouched val/test."""

from __future__ import annotations

import json

import numpy as np
import pytest

from manifests.errors import UserError
from manifests.io import Manifest
from manifests.mixing import MIX_METADATA_KEY, draw_rows, mix_manifests, mix_plan_of, plan_mix
from manifests.schema import CHEXPERT_LABELS, NIH_LABELS
from tests.helpers import make_rows, set_synthesis_columns


def real_manifest(tmp_path, n_train=40, n_eval=20) -> Manifest:
    rows = make_rows(n_train + n_eval, patients=(n_train + n_eval) // 2, seed=1)
    rows["split"] = ["train"] * n_train + ["val", "test"] * (n_eval // 2)
    # Patient-disjoint: one patient per image pair, eval patients distinct from train ones.
    rows["patient_id"] = [f"p{i // 2:04d}" for i in range(len(rows))]
    return Manifest(rows=rows, labels=CHEXPERT_LABELS, root=tmp_path / "real")


def synthetic_manifest(tmp_path, n=30, n_real_rows=5, labels=CHEXPERT_LABELS) -> Manifest:
    rows = make_rows(n + n_real_rows, patients=n + n_real_rows, seed=2, labels=labels)
    rows["image_path"] = [f"syn/{i:05d}.png" for i in range(len(rows))]
    rows["source"] = ["synthetic"] * n + ["real"] * n_real_rows
    rows["patient_id"] = [f"syn{i}" for i in range(len(rows))]
    set_synthesis_columns(rows)
    return Manifest(rows=rows, labels=labels, root=tmp_path / "syn")


@pytest.mark.parametrize(
    ("mix", "train_size", "expected"),
    [
        (0.0, None, (100, 0)),
        (0.5, None, (100, 100)),  # 0.5 adds as many synthetic as real
        (0.25, None, (100, 33)),  # 33 / 133 = 0.248
        (0.75, None, (100, 300)),
        (1.0, None, (0, 100)),  # synthetic only, as many as real train
        (0.3, 50, (35, 15)),  # fixed total: round(50 * 0.3) synthetic
        (0.0, 80, (80, 0)),
        (1.0, 80, (0, 80)),
    ],
)
def test_plan_mix_counts(mix, train_size, expected):
    plan = plan_mix(100, 1000, mix, train_size)
    assert (plan.n_real, plan.n_synthetic) == expected
    if 0 < mix < 1 and train_size is None:
        fraction = plan.n_synthetic / (plan.n_real + plan.n_synthetic)
        assert fraction == pytest.approx(mix, abs=0.5 / (plan.n_real + plan.n_synthetic))


def test_plan_mix_repetition_and_errors():
    plan = plan_mix(100, 40, 0.5, None)
    assert plan.synthetic_repeated and not plan.real_repeated
    assert "synthetic drawn with repetition from 40" in plan.describe()
    assert plan_mix(100, 1000, 0.5, 400).real_repeated  # 200 real asked, 100 exist
    for bad in (-0.1, 1.5, "x"):
        with pytest.raises(UserError, match="--mix"):
            plan_mix(100, 10, bad)
    with pytest.raises(UserError, match="needs synthetic images"):
        plan_mix(100, 0, 0.5)
    with pytest.raises(UserError, match="--train-size"):
        plan_mix(100, 10, 0.5, 0)


def test_draw_rows_is_balanced_when_repeating():
    rng = np.random.default_rng(0)
    drawn = draw_rows(7, 23, rng)  # 3 full passes + 2 more
    counts = np.bincount(drawn, minlength=7)
    assert counts.sum() == 23 and set(counts) <= {3, 4} and (counts == 4).sum() == 2
    once = draw_rows(10, 6, rng)
    assert len(set(once)) == 6  # without replacement when enough exist


def test_mix_manifests_keeps_eval_rows_and_draws_from_pools(tmp_path):
    real = real_manifest(tmp_path)
    syn = synthetic_manifest(tmp_path)
    mixed = mix_manifests(real, syn, 0.25, seed=3)
    rows = mixed.rows
    train = rows[rows["split"] == "train"]
    assert (train["source"] == "real").sum() == 40
    assert (train["source"] == "synthetic").sum() == 13  # round(40 * 0.25 / 0.75)
    # Real val/test rows are the same rows, unchanged (paths made absolute).
    evaluation = rows[rows["split"] != "train"]
    expected = real.rows[real.rows["split"] != "train"]
    assert (evaluation["source"] == "real").all()
    assert evaluation["patient_id"].tolist() == expected["patient_id"].tolist()
    assert np.array_equal(
        evaluation[list(CHEXPERT_LABELS)].to_numpy(),
        expected[list(CHEXPERT_LABELS)].to_numpy(),
        equal_nan=True,
    )
    assert evaluation["image_path"].iloc[0] == str(
        tmp_path / "real" / expected["image_path"].iloc[0]
    )
    # Synthetic rows come only from source == synthetic (never the real rows of that file).
    assert set(train.loc[train["source"] == "synthetic", "patient_id"]) <= {
        f"syn{i}" for i in range(30)
    }
    info = json.loads(mixed.metadata[MIX_METADATA_KEY])
    assert info["n_synthetic"] == 13 and info["seed"] == 3
    assert mix_plan_of(mixed).n_real == 40
    # Deterministic in the seed; another seed draws other synthetic rows.
    again = mix_manifests(real, syn, 0.25, seed=3).rows
    assert again["image_path"].tolist() == rows["image_path"].tolist()
    other = mix_manifests(real, syn, 0.25, seed=4).rows
    assert other["image_path"].tolist() != rows["image_path"].tolist()


def test_mix_manifests_fixed_size_and_synthetic_only(tmp_path):
    real, syn = real_manifest(tmp_path), synthetic_manifest(tmp_path)
    fixed = mix_manifests(real, syn, 0.5, train_size=20, seed=0).rows
    train = fixed[fixed["split"] == "train"]
    assert train["source"].value_counts().to_dict() == {"real": 10, "synthetic": 10}
    only = mix_manifests(real, syn, 1.0, seed=0).rows
    train = only[only["split"] == "train"]
    # 40 synthetic asked, 30 exist: each used once, 10 twice; still only synthetic in train.
    assert (train["source"] == "synthetic").all() and len(train) == 40
    assert train["image_path"].value_counts().max() == 2
    assert (only["split"] != "train").sum() == 20
    zero = mix_manifests(real, None, 0.0).rows
    assert len(zero) == len(real.rows)


def test_mix_manifests_refuses_bad_input(tmp_path):
    real, syn = real_manifest(tmp_path), synthetic_manifest(tmp_path)
    with pytest.raises(UserError, match=r"--mix 0.5 needs synthetic images; pass --synthetic"):
        mix_manifests(real, None, 0.5)
    with pytest.raises(UserError, match=r"--mix: 1.2 is outside \[0, 1\]"):
        mix_manifests(real, syn, 1.2)
    polluted = real.with_rows(real.rows.assign(source=["synthetic"] + ["real"] * 59))
    with pytest.raises(UserError, match="--real: row 0 is 'synthetic'"):
        mix_manifests(polluted, syn, 0.5)
    nih = synthetic_manifest(tmp_path, labels=NIH_LABELS)
    with pytest.raises(UserError, match="--synthetic: label set"):
        mix_manifests(real, nih, 0.5)
    no_syn = synthetic_manifest(tmp_path, n=0, n_real_rows=3)
    with pytest.raises(UserError, match="needs synthetic images"):
        mix_manifests(real, no_syn, 0.5)


def test_oversampling_control_reaches_the_mixed_arms_label_balance(tmp_path):
    from manifests.mixing import oversample_weights, positive_rates

    real = real_manifest(tmp_path, n_train=60)
    labels = ["Pneumothorax", "Pleural Effusion"]
    for j, label in enumerate(labels):  # 6 and 12 positives of 60: shares 0.1 and 0.2
        real.rows[label] = 0.0
        real.rows.loc[real.rows.index[: 6 * (j + 1)], label] = 1.0
    train = real.rows[real.rows["split"] == "train"]
    assert positive_rates(train, labels) == pytest.approx({labels[0]: 0.1, labels[1]: 0.2})
    target = {labels[0]: 0.3, labels[1]: 0.35}
    weights = oversample_weights(
        train[labels].to_numpy() == 1, np.array([target[x] for x in labels])
    )
    assert weights.sum() == pytest.approx(1.0) and (weights > 0).all()
    mixed = mix_manifests(real, None, 0.0, train_size=120, seed=3, oversample_to=target)
    drawn = mixed.rows[mixed.rows["split"] == "train"]
    assert len(drawn) == 120  # as many as the mixed arm: as many optimizer steps
    shares = positive_rates(drawn, labels)
    assert shares[labels[0]] == pytest.approx(0.3, abs=0.02)
    assert shares[labels[1]] == pytest.approx(0.35, abs=0.02)
    plain = mix_manifests(real, None, 0.0, train_size=120, seed=3)
    assert positive_rates(plain.rows[plain.rows["split"] == "train"], labels)[labels[0]] == 0.1
    assert json.loads(mixed.metadata[MIX_METADATA_KEY])["oversample_to"] == target
    with pytest.raises(UserError, match="only for a real-only run"):
        mix_manifests(real, None, 0.0, seed=3, oversample_to=target)


@pytest.mark.parametrize(
    ("text", "words"),
    [("Pneumothorax:1.5", "0 < SHARE < 1"), ("Nope:0.3", "is not a label"), ("", "give LABEL")],
)
def test_oversample_to_refuses_bad_shares(text, words):
    from manifests.mixing import parse_positive_rates

    with pytest.raises(UserError, match=words):
        parse_positive_rates(text, ["Pneumothorax"])
