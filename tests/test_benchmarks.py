"""Every script in benchmarks/ still imports: a renamed library function breaks it here.

The scripts run rarely (some take minutes or need a GPU), so an import that moved would
otherwise only show when someone reruns a README figure. This imports each one, as
`python benchmarks/NAME.py` would (their folder first on sys.path), in one subprocess.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from benchmarks import bench_samplers
from benchmarks.bench_samplers import (
    Measured,
    Setting,
    count_unet_evaluations,
    departures,
    kid_window,
    pick_cheapest,
    plan_settings,
    rate_margin,
    speedup,
)

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def run_script(script: str, *args: str) -> subprocess.CompletedProcess:
    """Run `script` in a fresh interpreter with the benchmarks folder as argv[1]; must pass."""
    done = subprocess.run(
        [sys.executable, "-c", script, str(BENCHMARKS), *args],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr[-2000:]
    return done


IMPORT_ALL = """
import importlib, sys, traceback
sys.path.insert(0, sys.argv[1])
failed = []
for name in sys.argv[2:]:
    try:
        importlib.import_module(name)
    except Exception:
        failed.append(name + ": " + traceback.format_exc().strip().splitlines()[-1])
print("\\n".join(failed))
sys.exit(1 if failed else 0)
"""


def test_every_benchmark_script_imports():
    names = sorted(p.stem for p in BENCHMARKS.glob("*.py") if p.stem != "__init__")
    assert "generator_fidelity" in names and "oracle_ceiling" in names
    run_script(IMPORT_ALL, *names)


# ------------------------------------------------------------------------- bench_samplers


def _measured(name: str, unet: float, rates: dict, kid=(0.01, 0.002), ref_seed=None, rate=10.0):
    """A hand-made result: `name` is 'SCHEDULER STEPS GUIDANCE', `rates` key -> (rate, n)."""
    scheduler, steps, guidance = name.split()
    setting = Setting(
        scheduler, int(steps), float(guidance), seed=ref_seed or 0, reference=ref_seed is not None
    )
    return Measured(setting, unet, 40, 40 / rate, dict(rates), kid)


def test_bench_samplers_settings_measure_the_reference_twice():
    settings = bench_samplers.settings_from(bench_samplers.parse_args([]))
    names = [s.name for s in settings]
    assert names[:2] == ["pndm 75 g4 (ref, seed 0)", "pndm 75 g4 (ref, seed 1)"]
    expected = [f"{s} {n} g4" for s in ("dpm++", "unipc", "ddim") for n in (10, 20, 30)]
    expected += ["ddim 20 g1", "ddim 20 g2", "ddim 20 g7"]  # ddim 20 g4 is already there
    assert names[2:] == expected
    assert all(s.seed == 0 and not s.reference for s in settings[2:])
    assert len({s.folder for s in settings}) == len(settings)
    with pytest.raises(ValueError, match="two or more distinct seeds"):
        plan_settings(("pndm", 75, 4.0), [0, 0], ["ddim"], [10], 4.0, ("ddim", 10), [1.0])
    # A candidate equal to the reference is not a candidate.
    same = plan_settings(("ddim", 10, 4.0), [0, 1], ["ddim"], [10, 20], 4.0, ("ddim", 10), [4.0])
    assert [s.name for s in same[2:]] == ["ddim 20 g4"]


def test_bench_samplers_counts_unet_evaluations_per_image(tiny_generator_dir):
    """Guidance > 1 doubles every step (diffusers' do_classifier_free_guidance); PNDM with
    skip_prk_steps repeats its first step; two images per call are counted per image."""
    from augmentor.base import load_pipeline

    pipe = load_pipeline(tiny_generator_dir)
    pipe.set_progress_bar_config(disable=True)
    expected = {
        ("pndm", 3, 4.0): 8,
        ("pndm", 3, 1.0): 4,
        ("ddim", 3, 4.0): 6,
        ("ddim", 3, 1.0): 3,
        ("dpm++", 2, 4.0): 4,
        ("unipc", 2, 2.0): 4,
    }
    counted = {k: count_unet_evaluations(pipe, Setting(*k)) for k in expected}
    assert counted == expected
    assert not pipe.unet._forward_pre_hooks  # the hook is gone afterwards


def test_bench_samplers_pick_rule():
    # Two reference runs that agree: the binomial margin, z SEs of candidate - reference mean.
    assert rate_margin([(0.5, 40), (0.5, 40)], 40, 1.96) == pytest.approx(
        1.96 * np.sqrt(0.25 * (1 / 40 + (2 / 40) / 4))
    )
    # Runs that disagree by more: their gap.
    assert rate_margin([(0.3, 40), (0.7, 40)], 40, 1.96) == pytest.approx(0.4)
    # A reference that never fires still tolerates one hit in 40 (pooled rate off 0), not two.
    assert 1 / 40 < rate_margin([(0.0, 40), (0.0, 40)], 40, 1.96) < 2 / 40
    assert kid_window([(0.010, 0.002), (0.014, 0.001)]) == pytest.approx((0.008, 0.016))

    ref_rates = {"Pneumothorax hit": (0.6, 40), "Pneumothorax false": (0.1, 160)}
    refs = [
        _measured("pndm 75 4", 152, ref_rates, ref_seed=0, rate=2.0),
        _measured(
            "pndm 75 4",
            152,
            {**ref_rates, "Pneumothorax hit": (0.7, 40)},
            (0.012, 0.002),
            ref_seed=1,
            rate=2.2,
        ),
    ]
    margin = rate_margin([(0.6, 40), (0.7, 40)], 40, 1.96)
    same = _measured("ddim 20 4", 40, {**ref_rates, "Pneumothorax hit": (0.65, 40)})
    assert departures(same, refs, 1.96) == []
    off = {**ref_rates, "Pneumothorax hit": (0.65 - margin - 0.01, 40)}
    cheap_but_off = _measured("ddim 10 4", 20, off, rate=16.0)
    assert [d.split()[:2] for d in departures(cheap_but_off, refs, 1.96)] == [
        ["Pneumothorax", "hit"]
    ]
    too_far_kid = _measured(
        "dpm++ 10 4", 20, {**ref_rates, "Pneumothorax hit": (0.65, 40)}, kid=(0.02, 0.001)
    )
    assert [d.split()[0] for d in departures(too_far_kid, refs, 1.96)] == ["KID"]
    unmeasured = _measured("unipc 10 4", 20, {"Pneumothorax false": (0.1, 160)})
    assert "measured in only one" in departures(unmeasured, refs, 1.96)[0]
    slow_twin = _measured("unipc 20 4", 40, {**ref_rates, "Pneumothorax hit": (0.62, 40)}, rate=7)
    dear = _measured("ddim 30 4", 60, ref_rates, rate=5.0)

    results = [*refs, dear, slow_twin, cheap_but_off, too_far_kid, unmeasured, same]
    pick = pick_cheapest(results, 1.96)
    assert pick is same  # the cheapest within the noise; its equal-cost twin is slower
    gain = speedup(pick, results)
    assert gain["unet"] == pytest.approx(152 / 40)
    assert gain["images_per_s"] == pytest.approx(10.0 / 2.1)
    assert pick_cheapest([*refs, cheap_but_off, too_far_kid], 1.96) is None
    assert pick_cheapest(refs, 1.96) is None  # the reference is never its own pick


def test_bench_samplers_tiny_run_end_to_end(tmp_path, capsys):
    """The script's main path on an untrained tiny generator: every row, counted costs, the
    pick consistent with the rule, the JSON written."""
    document = bench_samplers.main(["--tiny", "--out", str(tmp_path)])
    rows = {r["setting"]: r for r in document["rows"]}
    assert len(rows) == 11
    costs = {name: r["unet_per_image"] for name, r in rows.items()}
    assert costs["pndm 3 g4 (ref, seed 0)"] == costs["pndm 3 g4 (ref, seed 1)"] == 8
    assert costs["ddim 2 g1"] == 2 and costs["ddim 2 g7"] == costs["dpm++ 2 g4"] == 4
    assert costs["unipc 1 g4"] == 2
    for row in rows.values():
        assert row["n_images"] == 10 and row["kid_mean"] is not None
        # images/s times the pipeline calls only, inside the synthesize() call's wall time
        assert 0 < row["sampling_s"] < row["synthesis_s"]
        assert row["images_per_s"] == pytest.approx(10 / row["sampling_s"])
        assert {f"{f} hit" for f in bench_samplers.TINY_LABELS} <= set(row["rates"])
    within = [r for r in rows.values() if not r["reference"] and not r["departures"]]
    pick = document["pick"]
    if within:
        chosen = rows[pick["setting"]]
        assert not chosen["reference"] and not chosen["departures"]
        assert chosen["unet_per_image"] == min(r["unet_per_image"] for r in within)
        assert pick["speedup"]["unet"] == pytest.approx(8 / chosen["unet_per_image"])
    else:
        assert pick is None
    saved = json.loads((tmp_path / bench_samplers.RESULTS_FILE).read_text())
    assert saved["rows"] == json.loads(json.dumps(document["rows"]))
    printed = capsys.readouterr().out
    assert "pick: " in printed and "elapsed" in printed and "within ref" in printed


def test_bench_loader_tiny_run_reports_the_loader_wait(tmp_path, capsys):
    """The 20,000-row loader check's path at toy size: renamed patients pass provenance, a
    mixed run trains, and every epoch reports its loader wait as a share of the epoch."""
    from benchmarks import bench_loader

    rows = bench_loader.main(["--tiny", "--work", str(tmp_path / "work")])
    assert [r["epoch"] for r in rows] == [0] and rows[0]["images"] == 64
    assert 0 <= rows[0]["loader_wait_s"] < rows[0]["seconds"]
    assert rows[0]["wait_share"] == pytest.approx(rows[0]["loader_wait_s"] / rows[0]["seconds"])
    printed = capsys.readouterr().out
    assert "32 real + 32 synthetic train rows" in printed and "waited on the loader" in printed
    assert not (tmp_path / "work").exists()


# ------------------------------------------------------------------------- false_findings


def test_false_findings_breakdown_compares_like_with_like():
    from benchmarks.false_findings import breakdown

    labels = ["A", "B"]
    # Synthetic, prompted for B (A not stated): the oracle calls A in 3 of 4 images.
    # One row prompted for A is no false finding; one stating A uncertain (-1) is left out.
    syn = pd.DataFrame(
        {"target_label": ["B"] * 4 + ["A", "B"], "A": [0, np.nan, 0, 0, 1, -1], "B": [1] * 6}
    )
    syn_pos = np.array([1, 1, 1, 0, 1, 1], dtype=bool)
    # Real test: A-negatives with B are called A half the time, those without B never.
    real = pd.DataFrame({"A": [0, 0, 0, 0, 0, 0, 1], "B": [1, 1, 0, 0, 0, 0, 0]})
    real_scores = np.array([0.9, 0.1, 0.1, 0.1, 0.1, 0.1, 0.9])
    table, rates = breakdown("A", labels, syn, syn_pos, real, real_scores, 0.5)
    assert table.loc[1, "size_synthetic"] == 4 and table.loc[1, "mean_synthetic"] == 0.75
    assert table.loc[1, "mean_real"] == 0.5 and table.loc[1, "size_real"] == 2
    assert rates == {"synthetic": 0.75, "matched": 0.5, "raw": pytest.approx(1 / 6)}


# ------------------------------------------------------------------------- oracle_ceiling

FIT_AUTOENCODER = """
import sys
sys.path.insert(0, sys.argv[1])
from pathlib import Path
from diffusers import AutoencoderKL
from manifests.phantom import write_phantom_dataset
from manifests.io import read_manifest
from oracle_ceiling import fitted_autoencoder
work = Path(sys.argv[2])
manifest = read_manifest(write_phantom_dataset(work / "phantom", n=6, size=64, seed=0))
paths = manifest.image_paths()
folder = fitted_autoencoder(work, "s0-n6", 0, paths, [0, 1, 2, 3], 2)
assert fitted_autoencoder(work, "s0-n6", 0, paths, [0, 1, 2, 3], 2) == folder  # cached
vae = AutoencoderKL.from_pretrained(folder)
print(folder.name, vae.config.in_channels, vae.config.scaling_factor != 0.18215)
"""


def test_oracle_ceiling_fits_and_caches_tiny_autoencoder(tmp_path):
    """A fit is cached under the draw and its step count (the second call fits nothing) and
    saves `tiny`'s one-channel autoencoder with its own latent scaling factor."""
    done = run_script(FIT_AUTOENCODER, str(tmp_path))
    assert done.stdout.count("fitted 2 autoencoder steps") == 1
    assert done.stdout.strip().splitlines()[-1] == "autoencoder-s0-n6-2 1 True"


# ------------------------------------------------------------------------- generator_fidelity


def test_generator_fidelity_set_values_parse_to_config_values(monkeypatch):
    """`--set FIELD=VALUE` gives what FinetuneConfig takes: numbers, booleans, none, lists;
    the demo preset's settings (balanced sampling included) are the starting point."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    from generator_fidelity import demo_generator, parse_value_pair

    from augmentor.config import FinetuneConfig

    assert parse_value_pair("learning_rate=1e-3") == ("learning_rate", 0.001)
    assert parse_value_pair("max_steps = 3000") == ("max_steps", 3000)
    assert parse_value_pair("train_text_encoder=false") == ("train_text_encoder", False)
    assert parse_value_pair("balance_labels=none") == ("balance_labels", None)
    assert parse_value_pair("balance_labels=cardiomegaly,consolidation") == (
        "balance_labels",
        ["cardiomegaly", "consolidation"],
    )
    settings = demo_generator()
    assert settings["balance_labels"] and settings["max_steps"] > 0
    FinetuneConfig(manifest="m.parquet", base="tiny", out="g", **settings)  # all config fields


# ------------------------------------------------------------------------- side_misses


def test_side_misses_groups_by_the_location_the_report_names():
    from benchmarks.side_misses import by_location, location

    assert location("Airspace consolidation in the Right Middle Lobe. No effusion.") == (
        "right middle lobe"
    )
    assert location("Patchy opacity in the lingula.") == "lingula"
    assert location("Consolidation.") == location(None) == "(none named)"
    table = by_location(["a", "b", "a", "a"], np.array([True, False, False, True]))
    assert table.to_dict("records") == [
        {"location": "a", "n": 3, "found": 2, "missed": 1},
        {"location": "b", "n": 1, "found": 0, "missed": 1},
    ]
