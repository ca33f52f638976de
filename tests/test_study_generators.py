"""The study's generators: replicates, per-size generators, the oracle's own patients and
the oversampling control, planned and run (study.generators, study.planning)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from manifests.errors import UserError
from study import oracle_split
from study.config import DataConfig, check_config
from study.generators import (
    GeneratorUnit,
    plan_generators,
    scaled_labels,
    synthesis_settings,
    synthetic_needed,
    units_for,
)
from study.planning import ORACLE_ARM, plan_runs
from study.presets import smoke_preset


def _cfg(**generator):
    cfg = smoke_preset()
    c = replace(cfg.classifier, seeds=[0, 1], real_sizes=[20])
    g = replace(cfg.generator, **generator)
    return replace(cfg, classifier=c, generator=g)


def test_replicates_train_every_synthetic_arm_on_each_generator(tmp_path):
    cfg = _cfg(replicates=3)
    units = plan_generators(cfg.generator, cfg.classifier)
    assert [u.key for u in units] == ["", "full-g1", "full-g2"]
    counts = {(s, k): 21 if s else 63 for s in (None, 20) for k in (0, 1)}
    runs = plan_runs(cfg.classifier, tmp_path, 12, counts, units)
    names = [r.out.name for r in runs]
    for seed in (0, 1):
        for r in range(3):  # the mixed, synthetic and pretrain-finetune arms, per generator
            for arm in ("mix0.5", "mix0.5-n20", "synthetic", "pretrain-finetune"):
                assert f"{arm}-g{r}-seed{seed}" in names
        assert f"real-seed{seed}" in names and f"real-steps-mix0.5-n20-seed{seed}" in names
    assert not any("real-g" in n or "real-steps-mix0.5-n20-g" in n for n in names)
    by_name = {r.out.name: r for r in runs}
    assert by_name["mix0.5-n20-g2-seed1"].generator == GeneratorUnit(replicate=2)
    assert by_name["real-seed1"].generator is None
    start = by_name["pretrain-finetune-g1-seed0"]
    assert start.init_from.name == "synthetic-g1-seed0" and start.generator.replicate == 1


def test_per_size_generators_feed_their_size_only(tmp_path):
    cfg = _cfg(data="per_size")
    check_config(cfg)
    units = plan_generators(cfg.generator, cfg.classifier)
    assert [u.key for u in units] == ["", "n20-seed0", "n20-seed1"]
    assert units_for(units, 20.0, 1) == [GeneratorUnit(real_size=20.0, seed=1)]
    assert units_for(units, None, 1) == [GeneratorUnit()]
    counts = {(s, k): 21 if s else 63 for s in (None, 20) for k in (0, 1)}
    runs = {r.out.name: r for r in plan_runs(cfg.classifier, tmp_path, 12, counts, units)}
    assert runs["mix0.5-n20-seed1"].generator.key == "n20-seed1"  # no -g: one generator
    assert runs["mix0.5-seed1"].generator.key == ""
    # a per-size set is scaled to what the mixed arm at its size draws (21 of 12 + ...)
    assert synthetic_needed(cfg.classifier, 21) == 21
    changes = synthesis_settings(cfg.synthesis, units[2], 21)
    assert changes["labels"] == "pleural_effusion:6,pneumothorax:6"  # 12 <= 21: unchanged
    assert scaled_labels("a:550,b:550", 200, 50) == ("a:22,b:22", 8)


@pytest.mark.parametrize(
    ("generator", "classifier", "words"),
    [
        ({"data": "per_size"}, {"real_sizes": []}, "needs classifier.real_sizes"),
        ({"data": "everything"}, {}, "valid: full, per_size"),
        ({"replicates": 0}, {}, "give 1 or more"),
        ({"data": "per_size", "per_size": [30.0]}, {"real_sizes": [20]}, "not one of"),
    ],
)
def test_generator_options_refused_with_the_key(generator, classifier, words):
    cfg = smoke_preset()
    cfg = replace(
        cfg,
        generator=replace(cfg.generator, **generator),
        classifier=replace(cfg.classifier, **classifier),
    )
    with pytest.raises(UserError, match=words):
        check_config(cfg)


def test_oversampling_control_follows_its_mixed_runs(tmp_path):
    cfg = _cfg(replicates=2)
    cls = replace(cfg.classifier, oversample_controls=True)
    units = plan_generators(cfg.generator, cls)
    counts = {(s, k): 21 if s else 63 for s in (None, 20) for k in (0, 1)}
    runs = plan_runs(cls, tmp_path, 12, counts, units)
    order = [r.out.name for r in runs]
    control = next(r for r in runs if r.out.name == "real-oversample-mix0.5-n20-seed0")
    assert [p.name for p in control.balance_from] == ["mix0.5-n20-g0-seed0", "mix0.5-n20-g1-seed0"]
    assert control.train_size == 42 and control.arm.oversample
    assert all(order.index(p.name) < order.index(control.out.name) for p in control.balance_from)


def test_oracle_trains_first_on_its_own_manifest(tmp_path):
    cfg = _cfg()
    oracle = tmp_path / "oracle.parquet"
    runs = plan_runs(cfg.classifier, tmp_path, 12, {}, None, oracle)
    assert runs[0].arm == ORACLE_ARM and runs[0].real == oracle and not runs[0].report
    assert runs[0].out.name == "oracle-seed0"


def test_oracle_split_reserves_patients_nobody_else_sees(tmp_path, phantom_manifest):
    from manifests.io import read_manifest
    from manifests.splits import split_by_patient

    split = split_by_patient(read_manifest(phantom_manifest), (0.6, 0.2, 0.2), seed=0)
    rows = split.rows
    # a real manifest: a share of its train patients moves to the oracle
    study, oracle = oracle_split(DataConfig(manifest="x", oracle_fraction=0.25), split, tmp_path)
    train = set(study.rows.loc[study.rows["split"] == "train", "patient_id"])
    own = set(oracle.rows.loc[oracle.rows["split"] == "train", "patient_id"])
    before = set(rows.loc[rows["split"] == "train", "patient_id"])
    assert own and not own & train and own | train == before
    assert len(own) == round(0.25 * len(before))
    for part in ("val", "test"):  # the oracle keeps the study's held-out splits
        assert set(oracle.rows.loc[oracle.rows["split"] == part, "image_path"]) == set(
            study.rows.loc[study.rows["split"] == part, "image_path"]
        )
    # phantoms: extra patients drawn past every other pool
    cfg = DataConfig(phantom_size=32, oracle_images=12)
    study, oracle = oracle_split(cfg, split, tmp_path)
    assert len(study.rows) == len(rows)
    own = oracle.rows.loc[oracle.rows["split"] == "train", "patient_id"].astype(str)
    assert len(own) == 12 and not set(own) & set(rows["patient_id"].astype(str))
    assert np.all([p.is_file() for p in oracle.image_paths()])


def test_study_with_per_size_generators_an_oracle_and_both_controls(tmp_path):
    """A smoke study fits a generator per seed on the 20-image subset, trains the oracle on
    patients of its own and both controls; the report says the mixed arm at 20 saw the
    same real images as its controls, and the positives-matched control matched its balance."""
    import json

    from classifier.run import read_config
    from manifests.io import read_manifest
    from manifests.provenance import synthetic_seen
    from study import run_study

    cfg = smoke_preset()
    cfg = replace(
        cfg,
        data=replace(cfg.data, oracle_images=24),
        generator=replace(cfg.generator, data="per_size", per_size_max_steps=2),
        classifier=replace(
            cfg.classifier,
            real_sizes=[20],
            oversample_controls=True,
            synthetic_arm=False,
            pretrain_finetune=False,
            full_size_mixes=False,
        ),
        report=cfg.report.with_settings(primary="mix0.5-n20 vs real-steps-mix0.5-n20, macro"),
    )
    out = tmp_path / "study"
    result = run_study(cfg, out, log=lambda _: None)
    runs = out / "runs"
    assert sorted(p.name for p in runs.iterdir()) == [
        "mix0.5-n20-seed0",
        "oracle-seed0",
        "real-n20-seed0",
        "real-oversample-mix0.5-n20-seed0",
        "real-seed0",
        "real-steps-mix0.5-n20-seed0",
    ]
    mixed = read_config(runs / "mix0.5-n20-seed0")
    subset = read_manifest(out / "data" / "subsets" / "n20-seed0.parquet").rows
    classifier_patients = set(subset.loc[subset["split"] == "train", "patient_id"].astype(str))
    generator = synthetic_seen(read_manifest(mixed["synthetic"]))
    assert set(generator.trained) <= classifier_patients  # n real studies in all
    oracle = read_manifest(out / "data" / "oracle.parquet").rows
    oracle_train = set(oracle.loc[oracle["split"] == "train", "patient_id"].astype(str))
    real = read_manifest(out / "data" / "manifest.parquet").rows
    assert not oracle_train & set(real["patient_id"].astype(str))
    over = read_config(runs / "real-oversample-mix0.5-n20-seed0")
    for label, share in mixed["train_positive_share"].items():
        assert over["train_positive_share"][label] == pytest.approx(share, abs=0.06)
    assert over["n_real_train"] == mixed["n_real_train"] + mixed["n_synthetic_train"]
    report = json.loads((out / "report" / "report.json").read_text())
    info = report["per_arm"]["mix0.5-n20"]["information"]
    control = report["per_arm"]["real-steps-mix0.5-n20"]["information"]
    assert info["real_images_seen"] == control["real_images_seen"]
    assert "real-oversample-mix0.5-n20" in result.report.arms


def test_study_with_generator_replicates_reports_generators_as_units(tmp_path):
    import json

    from study import run_study

    cfg = smoke_preset()
    cfg = replace(
        cfg,
        generator=replace(cfg.generator, replicates=2),
        classifier=replace(cfg.classifier, synthetic_arm=False, pretrain_finetune=False),
    )
    out = tmp_path / "study"
    run_study(cfg, out, log=lambda _: None)
    names = sorted(p.name for p in (out / "runs").iterdir())
    assert names == [
        "mix0.5-balanced-g0-seed0", "mix0.5-balanced-g1-seed0", "mix0.5-g0-seed0",
        "mix0.5-g1-seed0", "real-seed0", "real-steps-mix0.5-seed0",
    ]  # fmt: skip
    assert (out / "generators" / "full-g1" / "generator").is_dir()
    assert (out / "generators" / "full-g1" / "synthetic-balanced" / "manifest.parquet").is_file()
    digests = {
        json.loads((out / "runs" / n / "config.json").read_text())["synthetic_digest"]
        for n in names[:2]
    }
    assert len(digests) == 2  # two generators, two synthetic sets
    report = json.loads((out / "report" / "report.json").read_text())
    assert report["per_arm"]["mix0.5"]["generators"] == 2
    assert report["per_arm"]["real"]["generators"] == 0
