"""Arm names: printed from an arm's facts, parsed back, and read from a run's recorded config."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import pytest

from classifier.arms import CONTROL, MIX, OTHER, PRETRAIN, REAL, SYNTHETIC, Arm
from classifier.config import TrainConfig, default_arm
from study.planning import plan_runs
from study.presets import load_study_config


def _recorded(cfg: TrainConfig) -> dict:
    """config.json as train-classifier writes it: the TrainConfig's fields and the arm."""
    config = json.loads(json.dumps(asdict(cfg), default=str))
    config["arm"] = cfg.arm or default_arm(cfg.mix, cfg.init_from)
    return config


def _planned(tmp_path: Path):
    cfg = load_study_config("smoke").classifier
    cfg.seeds, cfg.mixes, cfg.real_sizes = [0], [0.25, 0.5], [20, 0.5]
    cfg.larger_synthetic, cfg.pretrain_all_synthetic = [2.0, 4.0], True
    counts = {(None, 0): 60, (20, 0): 20, (0.5, 0): 30}
    return cfg, plan_runs(cfg, tmp_path, n_synthetic=240, real_counts=counts)


def test_every_planned_arm_prints_parses_and_is_read_back_from_its_config(tmp_path):
    from study import train_config

    cfg, plan = _planned(tmp_path)
    names = [run.arm.name for run in plan]
    assert names == [
        "real", "synthetic", "mix0.25", "real-steps-mix0.25", "mix0.5", "real-steps-mix0.5",
        "real-n20", "mix0.25-n20", "real-steps-mix0.25-n20", "mix0.5-n20",
        "real-steps-mix0.5-n20", "real-f0.5", "mix0.25-f0.5", "real-steps-mix0.25-f0.5",
        "mix0.5-f0.5", "real-steps-mix0.5-f0.5", "synthetic-x2", "synthetic-x4",
        "synthetic-pretrain", "pretrain-finetune",
    ]  # fmt: skip
    for run in plan:
        assert run.out.name == f"{run.arm.name}-seed0"
        assert Arm.parse(run.arm.name) == run.arm  # print -> parse -> the same facts
        config = _recorded(train_config(cfg, tmp_path / "real.parquet", tmp_path / "s", run))
        assert Arm.from_config(config) == run.arm, run.arm.name
    controls = [run for run in plan if run.arm.kind == CONTROL]
    assert [r.arm.matched_to for r in controls[-2:]] == ["mix0.25-f0.5", "mix0.5-f0.5"]
    assert {r.arm.real_size for r in controls} == {None, 20, 0.5}
    assert [r.train_size for r in controls[:2]] == [80, 120]  # 60 real + round(60 m / (1 - m))


@pytest.mark.parametrize(
    ("name", "kind", "facts"),
    [
        ("real", REAL, {"mix": 0.0}),
        ("synthetic", SYNTHETIC, {"mix": 1.0}),
        ("synthetic-x2.5", SYNTHETIC, {"mix": 1.0, "synthetic_scale": 2.5}),
        ("mix0.25-n80", MIX, {"mix": 0.25, "real_size": 80.0}),
        ("real-steps-mix0.5-f0.1", CONTROL, {"real_size": 0.1, "matched_to": "mix0.5-f0.1"}),
        ("pretrain-finetune-mix0.5", "pretrain-finetune", {"mix": 0.5, "init_from_run": True}),
        ("synthetic-pretrain", PRETRAIN, {"mix": 1.0, "pretrain": True}),
        ("zzz-n40", OTHER, {"mix": None, "real_size": 40.0, "given_name": "zzz-n40"}),
        ("mix1", SYNTHETIC, {"mix": 1.0, "given_name": "mix1"}),  # mix 1 prints 'synthetic'
    ],
)
def test_parse_states_the_facts_and_keeps_the_name(name, kind, facts):
    arm = Arm.parse(name)
    assert arm.name == name and arm.kind == kind
    assert arm == Arm(**{"mix": 0.0, **facts})


def test_default_arm_names_are_unchanged():
    assert default_arm(0.0, None) == "real" and default_arm(1.0, None) == "synthetic"
    assert default_arm(0.25, None) == "mix0.25"
    assert default_arm(0.0, Path("run")) == "pretrain-finetune"
    assert default_arm(0.5, Path("run")) == "pretrain-finetune-mix0.5"


def test_recorded_fields_decide_what_a_given_name_does_not_say():
    """A run named with --arm keeps its name; its recorded facts place and pair it."""
    config = {"arm": "densenet-small", "mix": 0.5, "real_size": 80.0, "init_from": None}
    arm = Arm.from_config(config)
    assert (arm.name, arm.kind, arm.real_size, arm.family) == ("densenet-small", MIX, 80, arm.name)
    assert arm.sort_key() > Arm(real_size=80).sort_key() > Arm(mix=0.5).sort_key()
    # A run recorded before the real_size / matched_to fields: its name says them.
    old = Arm.from_config({"arm": "real-steps-mix0.5-n40", "mix": 0.0})
    assert (old.kind, old.matched_to, old.real_size) == (CONTROL, "mix0.5-n40", 40.0)
    # A control trained by hand: matched_to recorded, the default name kept.
    hand = Arm.from_config({"arm": "real", "mix": 0.0, "matched_to": "mix0.5"})
    assert hand.kind == CONTROL and hand.name == "real"


def test_family_size_and_control():
    arm = Arm(mix=0.5, real_size=80)
    assert (arm.name, arm.family, arm.size_tag) == ("mix0.5-n80", "mix0.5", "-n80")
    assert arm.control().name == "real-steps-mix0.5-n80"
    assert arm.control().family == "real-steps-mix0.5"
    assert Arm().at_size(0.25).name == "real-f0.25"
    assert Arm.parse("zzz-n40").at_size(80).name == "zzz-n80"


def test_oversample_control_names_parses_and_sorts_after_the_plain_control():
    mixed = Arm(mix=0.5, real_size=80)
    over = mixed.control(oversample=True)
    assert over.name == "real-oversample-mix0.5-n80"
    assert Arm.parse(over.name) == over
    config = {"arm": over.name, "mix": 0.0, "matched_to": mixed.name, "oversample": True}
    assert Arm.from_config(config).oversample
    order = sorted([over, mixed, mixed.control()], key=Arm.sort_key)
    assert [a.name for a in order] == ["real-steps-mix0.5-n80", over.name, "mix0.5-n80"]


def test_balanced_twin_prints_parses_sorts_and_shares_its_twins_controls(tmp_path):
    from classifier.runset import matched_controls

    balanced = Arm(mix=0.5, real_size=80, balanced=True)
    assert balanced.name == "mix0.5-balanced-n80" and balanced.family == "mix0.5-balanced"
    assert Arm.parse(balanced.name) == balanced
    assert Arm.from_config({"arm": balanced.name, "mix": 0.5, "real_size": 80.0}) == balanced
    assert balanced.twin() == Arm(mix=0.5, real_size=80)
    assert balanced.control().name == "real-steps-mix0.5-n80"  # the same steps as its twin
    assert Arm.parse("mix1-balanced").kind == OTHER  # only a mixed arm has a balanced twin
    order = sorted([balanced, balanced.twin(), balanced.control()], key=Arm.sort_key)
    assert [a.name for a in order] == ["real-steps-mix0.5-n80", "mix0.5-n80", balanced.name]

    class _Run:
        def __init__(self, arm: Arm) -> None:
            self.arm, self.config = arm.name, {"arm": arm.name, "matched_to": arm.matched_to}

    runs = [_Run(a) for a in (balanced.twin(), balanced, balanced.control())]
    assert matched_controls(runs) == {
        "mix0.5-n80": "real-steps-mix0.5-n80",
        "mix0.5-balanced-n80": "real-steps-mix0.5-n80",
    }


def test_balanced_twins_are_planned_only_where_whole_split_generators_serve(tmp_path):
    from study.generators import GeneratorUnit

    cfg = load_study_config("smoke").classifier
    cfg.seeds, cfg.mixes, cfg.real_sizes, cfg.full_size_mixes = [0], [0.5], [20, 40], False
    cfg.pretrain_finetune = cfg.synthetic_arm = False
    counts = {(None, 0): 60, (20, 0): 20, (40, 0): 40}
    units = [GeneratorUnit(), GeneratorUnit(real_size=40.0, seed=0)]
    plan = plan_runs(cfg, tmp_path, 100, counts, units, balanced=True)
    names = [run.arm.name for run in plan]
    assert "mix0.5-balanced-n20" in names and "mix0.5-balanced-n40" not in names
    assert "real-steps-mix0.5-balanced-n20" not in names  # it shares its twin's control
    twin = next(r for r in plan if r.arm.name == "mix0.5-balanced-n20")
    assert twin.generator == GeneratorUnit() and twin.out.name == "mix0.5-balanced-n20-seed0"
    assert len(plan_runs(cfg, tmp_path, 100, counts, units)) == len(plan) - 1
