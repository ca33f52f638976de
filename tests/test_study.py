"""cxraug study: presets and TOML config, the run plan, and the smoke study end to end."""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from cli import app
from manifests.errors import UserError
from study.config import StudyConfig, config_to_toml
from study.planning import plan_runs
from study.presets import PRESETS, load_study_config

runner = CliRunner()


def test_presets_round_trip_through_toml(tmp_path):
    for name in PRESETS:
        cfg = load_study_config(name)
        path = tmp_path / f"{name}.toml"
        path.write_text(config_to_toml(cfg))
        assert asdict(load_study_config(None, path)) == asdict(cfg)
    assert load_study_config().name == "demo"  # the default


def test_paper_preset_synthesizes_enough_for_its_larger_synthetic_arm(tmp_path):
    """The 4x synthetic-only arm must see 4x as many *unique* images, not repeats."""
    from augmentor.label_spec import split_label_counts
    from manifests.io import read_manifest
    from study import stage_data

    cfg = load_study_config("paper")
    rows = read_manifest(stage_data(cfg.data, tmp_path, lambda _t: None)).rows
    n_train = int((rows["split"] == "train").sum())
    counts = split_label_counts(cfg.synthesis.value("labels"))
    n_synthetic = sum(n for _, n in counts) + cfg.synthesis.value("negatives")
    assert n_synthetic >= max(cfg.classifier.larger_synthetic) * n_train
    assert n_train >= max(cfg.classifier.real_sizes)  # the sweep's sizes fit the split


def test_config_file_overrides_preset_and_checks_keys_and_types(tmp_path):
    path = tmp_path / "mine.toml"
    path.write_text("[classifier]\nseeds = [3, 4]\nmixes = [0.25, 0.75]\nlr = 1\n")
    cfg = load_study_config("smoke", path)
    assert cfg.classifier.seeds == [3, 4] and cfg.classifier.mixes == [0.25, 0.75]
    lr = cfg.classifier.value("lr")
    assert lr == 1.0 and isinstance(lr, float)
    assert cfg.classifier.value("backbone") == "test_resnet"  # the rest from the preset
    assert load_study_config(None, path).name == "mine"

    path.write_text("[classifier]\nepochz = 3\n")
    with pytest.raises(UserError, match=r"mine.toml: unknown key 'classifier.epochz'; valid: "):
        load_study_config("smoke", path)
    path.write_text('[classifier]\nepochs = "three"\n')
    with pytest.raises(UserError, match=r"mine.toml: key 'classifier.epochs': 'three' is not an"):
        load_study_config("smoke", path)
    path.write_text("[data]\nmanifest = 5\n")
    with pytest.raises(UserError, match=r"key 'data.manifest': 5 is not str"):
        load_study_config("smoke", path)
    path.write_text("classifier = 3\n")
    with pytest.raises(UserError, match="'classifier' must be a table"):
        load_study_config("smoke", path)
    path.write_text("[classifier\n")
    with pytest.raises(UserError, match="not valid TOML"):
        load_study_config("smoke", path)
    with pytest.raises(UserError, match="unknown preset 'big'; valid: demo, paper, smoke"):
        load_study_config("big")


def test_sections_override_their_command_configs(tmp_path):
    """A section's keys are its command's config fields (the paths excepted), applied over
    that config's defaults; an older study.toml's `[generator.options]` reads the same."""
    from augmentor.config import FinetuneConfig

    path = tmp_path / "mine.toml"
    path.write_text("[generator]\nema = true\n[generator.options]\nnoise_offset = 0.05\n")
    cfg = load_study_config("smoke", path)
    gen = cfg.generator.command_config(manifest="m.parquet", out="g", resume=True)
    assert isinstance(gen, FinetuneConfig) and gen.ema and gen.noise_offset == 0.05
    assert (gen.max_steps, gen.train_text_encoder, gen.lr_scheduler) == (4, True, "constant")
    assert gen.batch_size == 8 and gen.ema_decay == FinetuneConfig.ema_decay
    # Only the differences from the command's defaults are kept.
    assert "seed" not in cfg.generator.with_settings(seed=0).settings
    path.write_text('[classifier]\nout = "elsewhere"\n')
    with pytest.raises(UserError, match="key 'classifier.out' is set by the study itself"):
        load_study_config("smoke", path)
    path.write_text("[synthesis]\nguidance_scale = nan\n")
    with pytest.raises(UserError, match="'synthesis.guidance_scale': nan is not a finite number"):
        load_study_config("smoke", path)


def test_study_help_gives_every_presets_description_and_time():
    from study.presets import PRESETS

    result = runner.invoke(app, ["study", "-h"], env={"COLUMNS": "100"})
    text = " ".join(result.output.replace("│", " ").split())
    for preset in PRESETS.values():
        assert preset.describe() in text, preset.name
    assert "minutes" in text and "not yet timed" not in text


def test_docs_that_list_the_presets_list_them_as_study_presets_does():
    """A page with the presets table (README.md, docs/) shows it as `presets_table` gives it."""
    from pathlib import Path

    from study.presets import presets_table

    root = Path(__file__).resolve().parents[1]
    header = presets_table().splitlines()[0]
    for page in [root / "README.md", *sorted((root / "docs").glob("*.md"))]:
        text = page.read_text()
        if header in text:
            assert presets_table() in text, f"{page.name}: the presets table is out of date"


def test_plan_runs_arms_and_pretrain_sources(tmp_path):
    cfg = load_study_config("smoke").classifier
    cfg.seeds, cfg.mixes = [0, 1], [0.75, 0.25]
    plan = plan_runs(cfg, tmp_path, n_synthetic=40)
    names = [str(r.out.relative_to(tmp_path)) for r in plan]
    assert names[:5] == [
        "runs/real-seed0",
        "runs/synthetic-seed0",
        "runs/mix0.25-seed0",
        "runs/mix0.75-seed0",
        "runs/pretrain-finetune-seed0",
    ]
    assert len(plan) == 10 and all(r.report for r in plan)
    assert plan[4].init_from == tmp_path / "runs" / "synthetic-seed0"
    cfg.pretrain_all_synthetic = True
    plan = plan_runs(cfg, tmp_path, n_synthetic=40)
    pre = [r for r in plan if not r.report]
    assert [r.train_size for r in pre] == [40, 40] and pre[0].out.parent.name == "pretrain"
    assert plan[plan.index(pre[0]) + 1].init_from == pre[0].out


def test_plan_runs_mixed_arms_only_at_the_small_sizes(tmp_path):
    cfg = load_study_config("smoke").classifier
    cfg.seeds, cfg.real_sizes, cfg.synthetic_arm, cfg.pretrain_finetune = [0], [20], False, False
    cfg.full_size_mixes = False
    real_counts = {(None, 0): 60, (20, 0): 20}
    names = [r.out.name for r in plan_runs(cfg, tmp_path, n_synthetic=40, real_counts=real_counts)]
    assert names == [
        "real-seed0",
        "real-n20-seed0",
        "mix0.5-n20-seed0",
        "real-steps-mix0.5-n20-seed0",
    ]
    cfg.full_size_mixes = True
    names = [r.out.name for r in plan_runs(cfg, tmp_path, n_synthetic=40, real_counts=real_counts)]
    assert "mix0.5-seed0" in names and "real-steps-mix0.5-seed0" in names and len(names) == 6


def test_cli_bad_preset_and_config_are_one_line_errors(tmp_path):
    result = runner.invoke(app, ["study", "--out", str(tmp_path / "s"), "--preset", "huge"])
    assert result.exit_code == 2
    assert (
        result.output.strip() == "error: --preset: unknown preset 'huge'; valid: demo, paper, smoke"
    )
    bad = tmp_path / "bad.toml"
    bad.write_text("[report]\nn_boot = 1.5\n")
    result = runner.invoke(app, ["study", "--out", str(tmp_path / "s"), "--config", str(bad)])
    assert result.exit_code == 2
    line = result.output.strip()
    assert len(line.splitlines()) == 1 and "report.n_boot" in line and str(bad) in line
    bad.write_text("[classifier]\nmixes = [1.0]\n")
    result = runner.invoke(app, ["study", "--out", str(tmp_path / "s"), "--config", str(bad)])
    assert result.exit_code == 2 and "0 < m < 1" in result.output
    assert not (tmp_path / "s").exists()  # refused before anything was written


def test_smoke_study_end_to_end_and_resume(tmp_path):
    out = tmp_path / "study"
    start = time.perf_counter()
    result = runner.invoke(
        app, ["study", "--preset", "smoke", "--out", str(out)], env={"COLUMNS": "160"}
    )
    first = time.perf_counter() - start
    assert result.exit_code == 0, result.output
    arms = {"real", "synthetic", "mix0.5", "mix0.5-balanced", "real-steps-mix0.5"}
    arms |= {"pretrain-finetune"}
    for folder in ("data", "generator", "synthetic", "synthetic-balanced", "report"):
        assert (out / folder).is_dir(), folder
    assert (out / "study.toml").is_file()
    assert {p.name for p in (out / "runs").iterdir()} == {f"{a}-seed0" for a in arms}
    csv = pd.read_csv(out / "report" / "report.csv")
    assert set(csv.arm) == arms
    assert set(csv.label) == {"Pleural Effusion", "Pneumothorax", "macro"}
    html = (out / "report" / "report.html").read_text()
    assert all(arm in html for arm in arms) and "Synthetic samples per label" in html
    assert "Generator evaluation" in html and (out / "generator_eval").is_dir()
    assert "report.html" in result.output and "Δ vs real" in result.output
    config = json.loads((out / "runs" / "pretrain-finetune-seed0" / "config.json").read_text())
    assert config["init_from"] == str((out / "runs" / "synthetic-seed0").resolve())

    # The step-matched control saw as many optimizer steps as the mixed arm.
    matched = json.loads((out / "runs" / "real-steps-mix0.5-seed0" / "metrics.json").read_text())
    mixed = json.loads((out / "runs" / "mix0.5-seed0" / "metrics.json").read_text())
    assert matched["matched_to"] == "mix0.5" and matched["n_synthetic_train"] == 0
    assert matched["history"][-1]["num_updates"] == mixed["history"][-1]["num_updates"]
    # report.json: the primary endpoint the preset declared (also in study.toml), and per
    # arm its realised steps and what it saw.
    doc = json.loads((out / "report" / "report.json").read_text())
    primary = "mix0.5 vs real-steps-mix0.5, macro"
    assert doc["primary"]["comparison"] == primary and doc["primary"]["declared"]
    assert f'primary = "{primary}"' in (out / "study.toml").read_text()
    assert "Primary endpoint (declared before the run): mix0.5 vs real-steps-mix0.5" in html
    assert {c["role"] for c in doc["comparisons"]} == {"primary", "secondary"}
    steps = mixed["history"][-1]["num_updates"]
    for arm in ("mix0.5", "real-steps-mix0.5"):
        assert doc["per_arm"][arm]["steps"]["optimizer_steps"] == [steps]
        assert doc["per_arm"][arm]["steps"]["scored_epoch"] == [1]
    real = pd.read_parquet(out / "data" / "manifest.parquet").query("split == 'train'")
    mix = doc["per_arm"]["mix0.5"]["information"]
    assert mix["classifier_real_train_images"] == [len(real)]
    assert mix["generator_real_images"] == [len(real)] and mix["generator_base"] == ["tiny"]
    assert mix["prompt_splits"][0].keys() == {"train"}
    assert doc["per_arm"]["real"]["information"]["generator_used"] == [False]
    assert doc["primary"]["information"].startswith("equal: both saw the same")
    assert "What each arm saw" in html
    # Without --resume an existing study is refused; with it (no preset: the folder's
    # study.toml) every stage is skipped and the table printed.
    refused = runner.invoke(app, ["study", "--out", str(out)])
    assert refused.exit_code == 2 and "pass --resume" in refused.output
    start = time.perf_counter()
    again = runner.invoke(app, ["study", "--out", str(out), "--resume"], env={"COLUMNS": "160"})
    assert again.exit_code == 0, again.output
    balanced = pd.read_parquet(out / "synthetic-balanced" / "manifest.parquet")
    assert balanced.groupby(["target_label", "sex"]).size().to_dict() == {
        (label, sex): 3 for label in ("Pleural Effusion", "Pneumothorax") for sex in "FM"
    }
    assert balanced["report"].str.match(r"\d+-year-old (woman|man)\. ").all()
    for stage in ("data", "finetune", "synthesize", "synthesize-balanced", "report"):
        assert f"skip {stage}" in again.output
    assert again.output.count("skip train") == len(arms)
    assert time.perf_counter() - start < min(10.0, first)
    # Another configuration in the same folder is refused.
    other = tmp_path / "other.toml"
    other.write_text("[classifier]\nepochs = 2\n")
    result = runner.invoke(
        app, ["study", "--preset", "smoke", "--config", str(other), "--out", str(out), "--resume"]
    )
    assert result.exit_code == 2 and "classifier.epochs was 1, now 2" in result.output
    assert isinstance(load_study_config("smoke"), StudyConfig)


def test_real_manifest_config_paths_and_kept_split(tmp_path, phantom_manifest):
    from manifests.io import read_manifest
    from study import stage_data

    folder = tmp_path / "cfg"
    folder.mkdir()
    path = folder / "real.toml"
    path.write_text('[data]\nmanifest = "../data/m.parquet"\n')
    cfg = load_study_config(None, path)
    assert cfg.data.manifest == str((tmp_path / "data" / "m.parquet").resolve())
    assert cfg.name == "real" and cfg.generator.value("base") == "tiny"
    # A manifest that is already split keeps its split; relative image paths still resolve.
    cfg.data.manifest = str(phantom_manifest)
    lines = []
    out = stage_data(cfg.data, tmp_path / "study" / "data", lines.append)
    before, after = read_manifest(phantom_manifest), read_manifest(out)
    assert list(after.rows["split"]) == list(before.rows["split"])
    assert after.image_paths()[0].is_file() and "keeping its" in lines[0]


def test_real_base_defaults_follow_roentgen_and_the_demo_lists_its_deviations():
    from study.config import GeneratorConfig, StudyConfig
    from study.deviations import roentgen_deviations
    from study.presets import demo_preset

    real = StudyConfig(
        generator=GeneratorConfig().with_settings(base="/models/sd15", batch_size=256)
    )
    sampler = real.synthesis.value
    assert real.generator.value("train_text_encoder") and sampler("scheduler") == "pndm"
    assert (sampler("num_inference_steps"), sampler("guidance_scale")) == (75, 4.0)
    assert roentgen_deviations(real) == []
    demo = roentgen_deviations(demo_preset())
    assert demo[0].startswith("base: the miniature `tiny` model")
    assert any(line.startswith("resolution (px): 64 here, 512") for line in demo)
    assert demo[-1].startswith("film grain: measured on the train images")
    no_grain = demo_preset()
    no_grain.synthesis = no_grain.synthesis.with_settings(film_grain=False)
    assert not any("film grain" in line for line in roentgen_deviations(no_grain))


def test_the_presets_page_lists_every_key_as_the_presets_set_it():
    """docs/presets.md shows `presets_keys` as it is: a preset's change shows up there."""
    from study.presets import presets_keys

    page = (Path(__file__).resolve().parents[1] / "docs" / "presets.md").read_text()
    assert presets_keys() in page, "docs/presets.md: rerun study.presets.presets_keys"
    assert "`max_steps` | Optimizer steps in all. | `3000`" in presets_keys()
