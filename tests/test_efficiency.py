"""Data efficiency: curves per arm family and the real-image worth of synthetic data."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from classifier.arms import Arm
from classifier.efficiency import full_gain_share, share_text, synthetic_worth, worth_text
from classifier.report import baseline_for


def _table(real: list[float], mixed: list[float], sizes=(40, 80, 160), controls=()) -> pd.DataFrame:
    rows = []
    families = [("real", real), ("mix0.5", mixed), *controls]
    for family, values in families:
        for n, v in zip(sizes, values, strict=False):
            rows.append({"family": family, "arm": f"{family}-n{n}", "n_real": float(n),
                         "label": "macro", "auroc_mean": v, "auroc_lo": v - 0.02,
                         "auroc_hi": v + 0.02})  # fmt: skip
    return pd.DataFrame(rows)


def _draws(table: pd.DataFrame, sd: float, n_boot: int = 400, seed: int = 0) -> dict:
    """Per arm, resampled AUROCs scattered around its mean (independent across arms)."""
    rng = np.random.default_rng(seed)
    return {
        r.arm: r.auroc_mean + sd * rng.normal(size=n_boot) for r in table.itertuples(index=False)
    }


def test_worth_interpolates_the_real_curve_in_log_n():
    (w,) = synthetic_worth(_table([0.70, 0.80, 0.90], [0.75, 0.82, 0.91]))
    # 0.75 is halfway from 0.70 (n 40) to 0.80 (n 80) in AUROC: halfway in log n, 40 x 2^0.5
    # (linear in n would say 60).
    assert w["n_real"] == 40 and math.isclose(w["real_equivalent"], 40 * 2**0.5)
    assert math.isnan(w["real_equivalent_lo"]) and w["real_equivalent_n_resamples"] == 0
    text = worth_text(w)
    assert "about 57 real images" in text and "linearly in log n" in text
    assert "no interval" in text  # no resamples given: says so rather than invent one


def test_worth_intervals_come_from_the_resamples_for_the_arm_and_both_controls():
    controls = (("real-steps-mix0.5", [0.72]), ("real-oversample-mix0.5", [0.73]))
    table = _table([0.70, 0.80, 0.90], [0.75, 0.82, 0.91], controls=controls)
    (w,) = synthetic_worth(table, _draws(table, 0.01))
    for prefix in ("real_equivalent", "control_equivalent", "oversample_equivalent"):
        lo, point, hi = w[f"{prefix}_lo"], w[prefix], w[f"{prefix}_hi"]
        assert 40 <= lo < point < hi < 160, prefix
        assert w[f"{prefix}_n_resamples"] == 400 and w[f"{prefix}_n_beyond"] == 0
    assert w["control_arm"] == "real-steps-mix0.5-n40"
    assert math.isclose(w["oversample_equivalent"], 40 * 2**0.3)
    # The real curve's own noise widens the interval: with a noiseless real curve it is
    # narrower.
    quiet = _draws(table, 0.01)
    for arm in ("real-n40", "real-n80", "real-n160"):
        quiet[arm] = np.full(400, float(table.set_index("arm").loc[arm, "auroc_mean"]))
    (q,) = synthetic_worth(table, quiet)
    assert q["real_equivalent_hi"] - q["real_equivalent_lo"] < (
        w["real_equivalent_hi"] - w["real_equivalent_lo"]
    )
    text = worth_text(w)
    assert "step-matched control" in text and "positives-matched control" in text


def test_worth_none_and_beyond_the_largest_size():
    (none,) = synthetic_worth(_table([0.80, 0.85, 0.90], [0.78, 0.84, 0.9]))
    assert none["real_equivalent"] == 40 and "worth no extra real images" in worth_text(none)
    table = _table([0.70, 0.75, 0.80], [0.95, 0.95, 0.95])
    (beyond,) = synthetic_worth(table, _draws(table, 0.01))
    assert math.isinf(beyond["real_equivalent"]) and math.isinf(beyond["real_equivalent_lo"])
    assert beyond["real_equivalent_n_beyond"] == 400
    text = worth_text(beyond)
    assert "beyond the largest size (160)" in text and "in 400 of 400 resamples" in text
    assert "> 160" not in text and "inf" not in text
    # Near the top of the curve some resamples cross within it and some beyond.
    table = _table([0.70, 0.75, 0.80], [0.795, 0.8, 0.8])
    (edge,) = synthetic_worth(table, _draws(table, 0.01))
    assert 0 < edge["real_equivalent_n_beyond"] < 400
    assert math.isinf(edge["real_equivalent_hi"]) and math.isfinite(edge["real_equivalent_lo"])
    assert "beyond the largest size in" in worth_text(edge)


def test_worth_with_two_sizes_says_the_curve_between_them_is_assumed():
    (w,) = synthetic_worth(_table([0.70, 0.80], [0.75, 0.82], sizes=(40, 160)))
    assert math.isclose(w["real_equivalent"], 80.0)  # halfway in log n between 40 and 160
    assert "Only two real sizes were measured" in worth_text(w)
    (three,) = synthetic_worth(_table([0.70, 0.80, 0.9], [0.75, 0.82, 0.9]))
    assert "Only two" not in worth_text(three)


def _share_report(transfer: bool, draws: bool = True):
    from types import SimpleNamespace

    arms = ["real", "real-n80", "mix0.5-n80"]
    values = {"real": 0.95, "real-n80": 0.68, "mix0.5-n80": 0.87}
    rng = np.random.default_rng(0)
    info = {"generator_real_images": [320 if transfer else 80] * 2,
            "classifier_real_train_images": [80, 80]}  # fmt: skip
    return SimpleNamespace(
        arms=arms,
        labels=("A",),
        arm_info={a: Arm.parse(a) for a in arms},
        table=pd.DataFrame(
            [{"arm": a, "label": "macro", "auroc_mean": v} for a, v in values.items()]
        ),
        # columns (A, macro)
        draws={
            a: np.column_stack([np.full(300, v), v + 0.01 * rng.normal(size=300)])
            for a, v in values.items()
        }
        if draws
        else {},  # fmt: skip
        per_arm={"mix0.5-n80": {"information": info}},
    )


def test_share_of_the_full_data_gain_with_its_interval_and_transfer_framing():
    (share,) = full_gain_share(_share_report(transfer=True))
    assert share["arm"] == "mix0.5-n80" and share["real_arm"] == "real-n80"
    assert math.isclose(share["share"], (0.87 - 0.68) / (0.95 - 0.68))
    assert share["share_lo"] < share["share"] < share["share_hi"]
    assert share["n_resamples"] == 300 and share["transfer"]
    text = share_text(share)
    assert "recovers 70% of the macro AUROC gain" in text
    assert "fine-tuned on 320 real images" in text and "trained on 80" in text
    (plain,) = full_gain_share(_share_report(transfer=False, draws=False))
    assert not plain["transfer"] and "fine-tuned" not in share_text(plain)
    assert math.isnan(plain["share_lo"]) and "no interval" in share_text(plain)


def test_sized_arms_compare_with_the_real_arm_of_their_size_and_sort_by_size():
    arms = ["real", "mix0.5", "real-n40", "mix0.5-n40", "real-steps-mix0.5-n40"]
    assert Arm.parse("mix0.5-n40").size_tag == "-n40" and Arm.parse("synthetic-x2").size_tag == ""
    assert baseline_for(Arm(mix=0.5, real_size=40), "real", arms) == "real-n40"
    assert baseline_for(Arm(mix=0.5), "real", arms) == "real"
    assert sorted(reversed(arms), key=lambda a: Arm.parse(a).sort_key()) == [
        "real",
        "mix0.5",
        "real-n40",
        "real-steps-mix0.5-n40",
        "mix0.5-n40",
    ]


def test_a_mixed_arm_at_the_small_size_only_is_a_point_on_the_real_curve():
    from types import SimpleNamespace

    from classifier.efficiency import efficiency_figure, efficiency_table

    arms = ["real", "real-n80", "mix0.5-n80", "real-steps-mix0.5-n80"]
    values = {"real": 0.95, "real-n80": 0.68, "mix0.5-n80": 0.87, "real-steps-mix0.5-n80": 0.86}
    report = SimpleNamespace(
        arms=arms,
        arm_info={a: Arm.parse(a) for a in arms},
        runs=pd.DataFrame({"arm": arms, "n_real_train": [320, 80, 80, 160]}),
        table=pd.DataFrame(
            [
                {
                    "arm": a,
                    "label": "macro",
                    "auroc_mean": v,
                    "auroc_lo": v - 0.05,
                    "auroc_hi": v + 0.05,
                }  # fmt: skip
                for a, v in values.items()
            ]
        ),
    )
    table = efficiency_table(report)
    assert set(table["family"]) == {"real", "mix0.5", "real-steps-mix0.5"}
    mixed = table[table["family"] == "mix0.5"]
    assert mixed["n_real"].tolist() == [80.0]  # its distinct real images, not 160
    (worth,) = [w for w in synthetic_worth(table) if w["family"] == "mix0.5"]
    # 80 to 320 real images: interpolated in log n
    assert math.isclose(worth["real_equivalent"], 80 * 4 ** ((0.87 - 0.68) / (0.95 - 0.68)))
    assert worth["control_auroc"] == 0.86
    assert math.isclose(worth["control_equivalent"], 80 * 4 ** ((0.86 - 0.68) / (0.95 - 0.68)))
    assert "step-matched control" in worth_text(worth) and "about 212 real images" in worth_text(
        worth
    )
    assert efficiency_figure(table)  # a single-size family is drawn as a point with its CI
    # Without a swept real arm there is nothing to compare a single size with.
    report.arms = ["real", "mix0.5-n80"]
    assert efficiency_table(report).empty
