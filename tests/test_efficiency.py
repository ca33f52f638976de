"""Data efficiency: curves per arm family and the real-image worth of synthetic data."""

from __future__ import annotations

import math

import pandas as pd

from classifier.arms import Arm
from classifier.efficiency import synthetic_worth, worth_text
from classifier.report import baseline_for


def _table(real: list[float], mixed: list[float], sizes=(40, 80, 160)) -> pd.DataFrame:
    rows = []
    for family, values in (("real", real), ("mix0.5", mixed)):
        for n, v in zip(sizes, values, strict=True):
            rows.append({"family": family, "arm": f"{family}-n{n}", "n_real": float(n),
                         "label": "macro", "auroc_mean": v, "auroc_lo": v - 0.02,
                         "auroc_hi": v + 0.02})  # fmt: skip
    return pd.DataFrame(rows)


def test_worth_interpolates_the_real_curve():
    worth = synthetic_worth(_table([0.70, 0.80, 0.90], [0.75, 0.82, 0.91]))
    (w,) = worth
    assert w["n_real"] == 40 and math.isclose(w["real_equivalent"], 60.0)
    assert math.isclose(w["real_equivalent_lo"], 52.0) and math.isclose(
        w["real_equivalent_hi"], 68.0
    )
    assert "about 60 real images [52, 68]" in worth_text(w)


def test_worth_none_and_beyond_range():
    (none,) = synthetic_worth(_table([0.80, 0.85, 0.90], [0.78, 0.84, 0.9]))
    assert none["real_equivalent"] == 40 and "worth no extra real images" in worth_text(none)
    (beyond,) = synthetic_worth(_table([0.70, 0.75, 0.80], [0.95, 0.95, 0.95]))
    assert math.isinf(beyond["real_equivalent"]) and "> 160" in worth_text(beyond)


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
    assert math.isclose(worth["real_equivalent"], 80 + (0.87 - 0.68) / (0.95 - 0.68) * 240)
    assert worth["control_auroc"] == 0.86
    assert math.isclose(worth["control_equivalent"], 80 + (0.86 - 0.68) / (0.95 - 0.68) * 240)
    assert "step-matched control" in worth_text(worth) and "about 240 real images" in worth_text(
        worth
    )
    assert efficiency_figure(table)  # a single-size family is drawn as a point with its CI
    # Without a swept real arm there is nothing to compare a single size with.
    report.arms = ["real", "mix0.5-n80"]
    assert efficiency_table(report).empty
