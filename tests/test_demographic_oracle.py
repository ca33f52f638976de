"""Demographic oracles (sex and age), demographic fidelity (`evaluate-generator
--demographics`) and the demographic filter (`synthesize --filter-demographics`): the
oracle folder, the table's numbers on constructed predictions, the filter's rule and counts
per cell, provenance, and the flags' one-line errors."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from augmentor.card import synthesis_provenance
from augmentor.config import DemographicFilterConfig
from augmentor.demographic_fidelity import demographic_table, fidelity_figures
from augmentor.demographic_filter import (
    REJECTED,
    UNCHECKED,
    apply_demographic_filter,
    demographic_filter_config,
    demographic_filter_seen,
    judge,
    reject_counts,
)
from augmentor.demographic_oracle import (
    CONFIG_FILE,
    PATIENTS_FILE,
    WEIGHTS_FILE,
    DemographicSettings,
    fit_demographic_oracle,
    load_demographic_oracle,
    load_or_train_oracle,
    predict_demographics,
    save_demographic_oracle,
)
from augmentor.eval_config import GeneratorEvalConfig
from augmentor.eval_folder import DEMOGRAPHIC_ORACLE_DIR, DEMOGRAPHICS_TABLE, generator_section
from augmentor.features import image_hashes
from augmentor.synthetic_set import DEMOGRAPHIC_SCORES_FILE, read_demographic_filter
from classifier.run import write_seen_patients
from manifests import provenance
from manifests.errors import UserError
from manifests.export import dataset_card
from manifests.files import file_sha256, write_json
from manifests.io import Manifest, read_manifest, write_manifest
from manifests.provenance import PROVENANCE_KEY, SeenPatients, train_patients

TINY = DemographicSettings(backbone="test_resnet", steps=3, batch_size=8)


@pytest.fixture(scope="module")
def real(phantom_manifest) -> Manifest:
    return read_manifest(phantom_manifest)


@pytest.fixture(scope="module")
def oracle_dir(tmp_path_factory, real) -> Path:
    """Oracles trained 3 steps on the phantom's train split, saved."""
    oracle = fit_demographic_oracle(real, TINY)
    return save_demographic_oracle(oracle, tmp_path_factory.mktemp("oracle") / "oracle")


def _leaky_copy(oracle_dir: Path, real: Manifest, out: Path) -> Path:
    """The oracle folder, its record claiming one test patient among its training ones."""
    shutil.copytree(oracle_dir, out)
    test = real.rows.loc[real.rows["split"] == "test", "patient_id"].iloc[0]
    write_json(out / PATIENTS_FILE, SeenPatients.of([*train_patients(real), test]).to_dict())
    return out


# ---------------------------------------------------------------- the oracles


def test_oracle_saves_loads_and_predicts_the_same(oracle_dir, real, tmp_path):
    for name in (CONFIG_FILE, WEIGHTS_FILE, PATIENTS_FILE):
        assert (oracle_dir / name).is_file(), name
    config = json.loads((oracle_dir / CONFIG_FILE).read_text())
    train = real.rows[real.rows["split"] == "train"]
    assert config["n_train_images"] == len(train)
    assert config["n_sex"] == {s: int((train["sex"] == s).sum()) for s in ("F", "M")}
    assert config["age_mean"] == pytest.approx(train["age"].mean())
    record = json.loads((oracle_dir / PATIENTS_FILE).read_text())
    assert record["patients"] == train_patients(real) and record["val_patients"] == []

    loaded = load_demographic_oracle(oracle_dir)
    again = fit_demographic_oracle(real, TINY)  # deterministic in its seed (CPU)
    assert loaded.digest == again.digest
    paths, hashes = real.image_paths()[:6], image_hashes(real)[:6]
    pred = predict_demographics(loaded, paths, hashes, tmp_path / "a")
    fresh = predict_demographics(again, paths, hashes, tmp_path / "b")
    assert list(pred.columns) == ["pred_female_prob", "pred_sex", "pred_age"] and len(pred) == 6
    np.testing.assert_allclose(pred["pred_female_prob"], fresh["pred_female_prob"], rtol=1e-5)
    np.testing.assert_allclose(pred["pred_age"], fresh["pred_age"], rtol=1e-5)
    assert pred["pred_female_prob"].between(0, 1).all()
    assert set(pred["pred_sex"]) <= {"F", "M"}
    assert ((pred["pred_female_prob"] >= 0.5) == (pred["pred_sex"] == "F")).all()


def test_oracle_is_reused_when_settings_and_images_match(oracle_dir, real, tmp_path, monkeypatch):
    folder = tmp_path / "oracle"
    shutil.copytree(oracle_dir, folder)
    import augmentor.demographic_oracle as module

    def no_training(*args, **kwargs):
        raise AssertionError("trained again")

    monkeypatch.setattr(module, "fit_demographic_oracle", no_training)
    assert load_or_train_oracle(real, folder, TINY).digest == load_demographic_oracle(folder).digest
    with pytest.raises(AssertionError, match="trained again"):  # other settings: retrain
        load_or_train_oracle(real, folder, DemographicSettings(backbone="test_resnet", steps=4))


@pytest.mark.parametrize(
    ("column", "message"),
    [("sex", "lacks known sex F (0 images), sex M (0 images)"), ("age", "lacks known age (0")],
)
def test_training_refuses_a_train_split_without_sex_or_age(real, column, message):
    rows = real.rows.copy()
    rows[column] = None if column == "sex" else np.nan
    with pytest.raises(UserError, match=rf"--real X: .*{re.escape(message)}"):
        fit_demographic_oracle(real.with_rows(rows), TINY, where="--real X")


# ---------------------------------------------------------------- fidelity table


def test_fidelity_figures_count_known_rows_only():
    figures = fidelity_figures(
        true_sex=np.array(["F", "F", "M", None], dtype=object),
        true_age=np.array([30.0, 70.0, np.nan, 50.0]),
        pred_sex=np.array(["F", "M", "M", "F"], dtype=object),
        pred_age=np.array([40.0, 64.0, 20.0, 50.0]),
        clusters=np.array(["a", "b", "c", "d"], dtype=object),
        n_boot=200,
        seed=0,
    )
    assert figures["n"] == 4 and figures["n_sex"] == 3 and figures["n_age"] == 3
    assert figures["sex_match"] == pytest.approx(2 / 3)
    assert figures["age_mae"] == pytest.approx((10 + 6 + 0) / 3)
    assert figures["age_bias"] == pytest.approx((10 - 6 + 0) / 3)
    assert figures["sex_match_low"] < 2 / 3 < figures["sex_match_high"]
    assert 0 <= figures["age_mae_low"] <= figures["age_mae"] <= figures["age_mae_high"] <= 10


def test_fidelity_table_has_exact_shares_per_prompted_subgroup():
    # 8 synthetic images of 4 prompting patients: prompted sex F/M, ages 30 and 70.
    synthetic = pd.DataFrame(
        {
            "sex": ["F", "F", "F", "F", "M", "M", "M", None],
            "age": [30.0, 30.0, 70.0, 70.0, 30.0, 70.0, 70.0, np.nan],
            "prompt_patient_id": ["a", "a", "b", "b", "c", "d", "d", None],
            "prompt_group": [0, 0, 1, 1, 2, 3, 3, 4],
        }
    )
    syn_pred = pd.DataFrame(
        {
            "pred_sex": ["F", "M", "F", "F", "M", "F", "M", "F"],
            "pred_age": [32.0, 50.0, 60.0, 70.0, 30.0, 71.0, 73.0, 40.0],
        }
    )
    real = pd.DataFrame(
        {"sex": ["F", "M", "M"], "age": [35.0, 68.0, 80.0], "patient_id": ["x", "y", "y"]}
    )
    real_pred = pd.DataFrame({"pred_sex": ["F", "F", "M"], "pred_age": [35.0, 60.0, 80.0]})
    table = demographic_table(synthetic, syn_pred, real, real_pred, (40, 65), 200, 0).set_index(
        "subgroup"
    )
    # every subgroup with a row on either side; '40-64' has none
    assert list(table.index) == [
        "all", "sex=F", "sex=M", "age_group=<40", "age_group=65+", "sex=F & age_group=<40",
        "sex=F & age_group=65+", "sex=M & age_group=<40", "sex=M & age_group=65+",
    ]  # fmt: skip
    all_ = table.loc["all"]
    assert all_["n"] == 8 and all_["n_sex"] == 7 and all_["n_age"] == 7
    assert all_["sex_match"] == pytest.approx(5 / 7)  # rows 0, 2, 3, 4, 6
    assert all_["age_mae"] == pytest.approx((2 + 20 + 10 + 0 + 0 + 1 + 3) / 7)
    assert all_["clusters"] == 5  # four prompting patients and one unnamed prompt
    women = table.loc["sex=F"]
    assert women["n"] == 4 and women["sex_match"] == pytest.approx(3 / 4)
    assert women["age_mae"] == pytest.approx((2 + 20 + 10 + 0) / 4)
    assert table.loc["sex=M", "sex_match"] == pytest.approx(2 / 3)
    assert table.loc["age_group=65+", "n"] == 4
    assert table.loc["age_group=65+", "age_bias"] == pytest.approx((-10 + 0 + 1 + 3) / 4)
    assert table.loc["sex=M & age_group=<40", "sex_match"] == 1.0
    # the real test baseline, against each patient's own sex and age
    assert all_["real_n"] == 3 and all_["real_sex_match"] == pytest.approx(2 / 3)
    assert all_["real_age_mae"] == pytest.approx(8 / 3) and all_["real_clusters"] == 2
    assert table.loc["sex=F & age_group=<40", "real_sex_match"] == 1.0
    assert table.loc["sex=M", "real_age_mae"] == pytest.approx(4.0)
    assert table.loc["sex=F & age_group=65+", "real_n"] == 0
    assert np.isnan(table.loc["sex=F & age_group=65+", "real_sex_match"])


# ---------------------------------------------------------------- filter rule and counts


def test_filter_rule_and_counts_per_cell():
    rows = pd.DataFrame(
        {
            "target_label": ["A", "A", "A", "A", "B", "B", "B"],
            "sex": ["F", "F", "M", None, "F", "M", None],
            "age": [30.0, 30.0, 70.0, np.nan, 70.0, np.nan, 50.0],
        }
    )
    pred = pd.DataFrame(
        {
            "pred_female_prob": [0.9, 0.9, 0.9, 0.2, 0.8, 0.1, 0.5],
            "pred_sex": ["F", "F", "F", "M", "F", "M", "F"],
            "pred_age": [46.0, 46.1, 70.0, 20.0, 54.0, 99.0, 80.0],
        }
    )
    judged = judge(rows, pred, age_tolerance=16)
    # 0: both pass (16.0 is within); 1: age off by 16.1; 2: sex wrong; 3: nothing stated;
    # 4: both pass; 5: sex only, passes; 6: age only, off by 30
    assert judged["demographic_verdict"].tolist() == [
        "kept", REJECTED, REJECTED, UNCHECKED, "kept", "kept", REJECTED,
    ]  # fmt: skip
    assert judged["sex_ok"].tolist() == [True, True, False, None, True, True, None]
    assert judged["age_ok"].tolist() == [True, False, True, None, True, None, False]
    counts = reject_counts(rows, judged, (40, 65)).set_index("cell")
    assert list(counts.index) == [
        "target_label=A & sex=F & age_group=<40", "target_label=A & sex=M & age_group=65+",
        "target_label=A & sex=unknown & age_group=unknown",
        "target_label=B & sex=F & age_group=65+", "target_label=B & sex=M & age_group=unknown",
        "target_label=B & sex=unknown & age_group=40-64",
    ]  # fmt: skip
    young_women = counts.loc["target_label=A & sex=F & age_group=<40"]
    assert (young_women["n"], young_women["n_checked"], young_women["n_rejected"]) == (2, 2, 1)
    assert young_women["n_rejected_age"] == 1 and young_women["n_rejected_sex"] == 0
    assert young_women["reject_rate"] == 0.5
    assert counts.loc["target_label=A & sex=M & age_group=65+", "n_rejected_sex"] == 1
    unknown = counts.loc["target_label=A & sex=unknown & age_group=unknown"]
    assert unknown["n_unchecked"] == 1 and unknown["n_checked"] == 0
    assert np.isnan(unknown["reject_rate"])
    assert counts.loc["target_label=B & sex=unknown & age_group=40-64", "reject_rate"] == 1.0
    assert counts["n"].sum() == 7 and counts["n_rejected"].sum() == 3


# ---------------------------------------------------------------- the filter stage


def _synthetic_set(root: Path, real: Manifest, n: int = 8) -> Path:
    """`n` 'synthetic' rows (copies of phantom train images, half of women) prompted by
    their train patients, with a provenance record, in `root`."""
    (root / "images").mkdir(parents=True)
    train = real.rows["split"].to_numpy() == "train"
    women, men = (np.flatnonzero(train & (real.rows["sex"] == s).to_numpy()) for s in "FM")
    women = women[: n // 2]  # as many as the split has, up to half
    train = np.concatenate([women, men[: n - len(women)]])
    rows = []
    for k, i in enumerate(train):
        target = root / "images" / f"{k:04d}.png"
        shutil.copyfile(real.image_paths()[i], target)
        source = real.rows.iloc[i]
        row = source.to_dict()
        row.update(
            image_path=f"images/{k:04d}.png", source="synthetic", split="train",
            patient_id=f"synthetic-{k}", study_id=f"synthetic-{k}", prompt=f"case {k}",
            seed=k, guidance_scale=4.0, num_inference_steps=2, scheduler="pndm",
            target_label=("Pleural Effusion", "Pneumothorax")[k % 2], generator="test",
            image_sha256=file_sha256(target), prompt_group=k,
            prompt_study_id=source["study_id"], prompt_patient_id=source["patient_id"],
        )  # fmt: skip
        rows.append(row)
    record = provenance.synthetic_record("gen", [], real)
    manifest = Manifest(
        rows=pd.DataFrame(rows), labels=real.labels, root=root,
        metadata={PROVENANCE_KEY: json.dumps(record)},
    )  # fmt: skip
    return write_manifest(manifest, root / "manifest.parquet")


def test_filter_keeps_by_the_rule_and_records_counts_and_patients(
    oracle_dir, real, phantom_manifest, tmp_path
):
    path = _synthetic_set(tmp_path / "set", real)
    synthetic = read_manifest(path)
    oracle = load_demographic_oracle(oracle_dir)
    pred = predict_demographics(oracle, synthetic.image_paths(), image_hashes(synthetic), tmp_path)
    # State what the oracle sees, then make rows 4-5 the other sex, row 6 30 years older,
    # and row 7 state nothing.
    rows = synthetic.rows.copy()
    rows["sex"] = pred["pred_sex"].to_numpy()
    rows["age"] = pred["pred_age"].round(1).to_numpy()
    rows.loc[[4, 5], "sex"] = rows.loc[[4, 5], "sex"].map({"F": "M", "M": "F"})
    rows.loc[6, "age"] += 30.0
    rows.loc[7, ["sex", "age"]] = [None, np.nan]
    write_manifest(synthetic.with_rows(rows), path, overwrite=True)

    summary = apply_demographic_filter(path, DemographicFilterConfig(oracle_dir), phantom_manifest)
    assert (summary.n_kept, summary.n_rejected, summary.n_unchecked) == (4, 3, 1)
    kept = read_manifest(path)
    assert sorted(kept.rows["image_path"]) == [f"images/{k:04d}.png" for k in (0, 1, 2, 3, 7)]
    scores = pd.read_parquet(path.parent / DEMOGRAPHIC_SCORES_FILE)
    assert len(scores) == 8 and scores["demographic_verdict"].tolist()[4:] == [
        REJECTED, REJECTED, REJECTED, UNCHECKED,
    ]  # fmt: skip
    record = read_demographic_filter(kept)
    assert record["age_tolerance"] == 16.0 and record["n_rejected"] == 3
    assert record["n_checked"] == 7 and record["n_unchecked"] == 1
    assert sum(c["n_rejected"] for c in record["cells"]) == 3
    assert {c["cell"] for c in record["cells"]} == set(summary.counts["cell"])
    # the oracles' patients are the set's now, and consumers check them
    oracle_record = json.loads(kept.metadata[PROVENANCE_KEY])["demographic_filter"]
    assert oracle_record["run"] == str(oracle_dir)
    assert oracle_record["patients"] == train_patients(real)
    assert set(train_patients(real)) <= set(provenance.synthetic_seen(kept).trained)
    assert provenance.check_synthetic(real, kept) == provenance.CHECKED
    # the dataset card shows the rule and the reject rate per cell
    card = dataset_card(kept, {"train": len(kept)}, synthesis_provenance(path))
    assert "Demographic filter" in card and "within 16 years" in card
    assert "3 of 7 checked images were rejected; 1 state no sex or age" in card


def test_oracles_that_saw_test_patients_are_refused(oracle_dir, real, phantom_manifest, tmp_path):
    leaky = _leaky_copy(oracle_dir, real, tmp_path / "leaky")
    with pytest.raises(UserError, match=r"--filter-demographics .*: trained on 1 val/test"):
        demographic_filter_seen(leaky, phantom_manifest)
    # a set whose record carries such oracles is refused by its consumers
    path = _synthetic_set(tmp_path / "set", real)
    synthetic = read_manifest(path)
    seen = demographic_filter_seen(leaky, None)  # read only
    marked = provenance.with_filter(synthetic, str(leaky), seen, key="demographic_filter")
    with pytest.raises(UserError, match=r"its demographic filter \(--filter-demographics"):
        provenance.check_synthetic(real, marked)


def test_filter_config_flags():
    assert demographic_filter_config(None, None) is None
    with pytest.raises(UserError, match="--age-tolerance: only used with --filter-demographics"):
        demographic_filter_config(None, 5.0)


# ---------------------------------------------------------------- the commands


def _one_line(result, message: str) -> None:
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], result.output


def test_synthesize_filter_demographics(
    tmp_path, phantom_manifest, tiny_generator_dir, oracle_dir, monkeypatch
):
    import augmentor.demographic_filter as demographic_filter
    from cli import app

    predict = demographic_filter.predict_demographics

    def agreeing_on_even_rows(oracle, paths, hashes, cache, *args):
        """The oracles' predictions, with every even row's sex made the prompt's: a
        3-step oracle on noise images may call every image one sex."""
        out = predict(oracle, paths, hashes, cache, *args)
        stated = read_manifest(out_path).rows
        even = np.arange(len(out)) % 2 == 0
        out.loc[even, "pred_sex"] = stated.loc[even, "sex"].to_numpy()
        out.loc[even, "pred_age"] = stated.loc[even, "age"].to_numpy()
        return out

    monkeypatch.setattr(demographic_filter, "predict_demographics", agreeing_on_even_rows)

    out = tmp_path / "synth"
    out_path = out / "manifest.parquet"
    args = ["synthesize", "--model", str(tiny_generator_dir), "--labels",
            "pleural_effusion:2,pneumothorax:2", "--prompts-from", str(phantom_manifest),
            "--out", str(out), "--num-inference-steps", "2"]  # fmt: skip
    runner = CliRunner()
    _one_line(runner.invoke(app, [*args, "--age-tolerance", "5"]), "--age-tolerance: only used")
    _one_line(
        runner.invoke(app, [*args, "--filter-demographics", str(tmp_path / "nope")]),
        "not a demographic oracle folder",
    )
    bad = [*args, "--filter-demographics", str(oracle_dir), "--age-tolerance", "-1"]
    _one_line(runner.invoke(app, bad), "--age-tolerance: -1")
    leaky = _leaky_copy(oracle_dir, read_manifest(phantom_manifest), tmp_path / "leaky")
    _one_line(runner.invoke(app, [*args, "--filter-demographics", str(leaky)]), "trained on 1")
    assert not out.exists()
    result = runner.invoke(app, [*args, "--filter-demographics", str(oracle_dir)])
    assert result.exit_code == 0, result.output
    assert "demographic filter" in result.output
    kept = read_manifest(out / "manifest.parquet")
    scores = pd.read_parquet(out / DEMOGRAPHIC_SCORES_FILE)
    assert (
        len(scores) == 4
        and len(kept) == len(scores) - (scores["demographic_verdict"] == REJECTED).sum()
    )
    record = read_demographic_filter(kept)
    assert record["n"] == 4 and record["n"] == record["n_checked"] + record["n_unchecked"]
    assert json.loads(kept.metadata[PROVENANCE_KEY])["demographic_filter"]["run"] == str(oracle_dir)


def _features_run(folder: Path, real: Manifest) -> Path:
    """A classifier run with random weights (features and oracle for evaluate-generator)."""
    import timm
    from safetensors.torch import save_model

    torch.manual_seed(0)
    labels = list(real.labels)
    model = timm.create_model("test_resnet", num_classes=len(labels), in_chans=1)
    save_model(model, str(folder / "model.safetensors"))
    config = {"backbone": "test_resnet", "labels": labels, "image_size": 64, "mean": 0.5,
              "std": 0.25}  # fmt: skip
    (folder / "config.json").write_text(json.dumps(config))
    val = real.rows.loc[real.rows["split"] == "val", "patient_id"]
    write_seen_patients(folder, SeenPatients.of(train_patients(real), val))
    return folder


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory, real, phantom_manifest):
    """`evaluate_generator` with `demographics`, training tiny oracles in OUT."""
    from augmentor.evaluate import evaluate_generator

    root = tmp_path_factory.mktemp("eval")
    synthetic = _synthetic_set(root / "set", real)
    run = _features_run(tmp_path_factory.mktemp("features"), real)
    cfg = GeneratorEvalConfig(
        synthetic=synthetic, real=phantom_manifest, out=root / "out", features=run,
        max_pairs=2, demographics=True, demographic_steps=2, device="cpu",
    )  # fmt: skip
    return cfg, evaluate_generator(cfg), run


def test_evaluate_generator_demographics_writes_table_json_and_section(evaluated, real):
    cfg, result, _ = evaluated
    out = Path(cfg.out)
    assert (out / DEMOGRAPHIC_ORACLE_DIR / CONFIG_FILE).is_file()
    table = pd.read_csv(out / DEMOGRAPHICS_TABLE)
    doc = json.loads((out / "generator_eval.json").read_text())["demographics"]
    assert len(table) == len(doc["rows"]) and table["subgroup"].iloc[0] == "all"
    assert doc["n_synthetic"] == 8 and doc["n_sex_stated"] == 8 and doc["n_age_stated"] == 8
    assert doc["all"]["real_n"] == int((real.rows["split"] == "test").sum())
    assert doc["age_groups"] == ["<40", "40-64", "65+"]
    assert doc["oracle"]["n_train_images"] == int((real.rows["split"] == "train").sum())
    assert result.tables["demographics"]["n"].iloc[0] == 8
    section = generator_section(out)
    for fragment in (section["md"], section["html"]):
        assert "Demographic fidelity" in fragment and "sex=F" in fragment


def test_cli_demographics_with_a_saved_oracle_and_bad_flags(evaluated, real, tmp_path):
    from cli import app

    cfg, _, run = evaluated
    oracle = Path(cfg.out) / DEMOGRAPHIC_ORACLE_DIR
    base = ["evaluate-generator", "--synthetic", str(cfg.synthetic), "--real", str(cfg.real),
            "--features", str(run), "--max-pairs", "2"]  # fmt: skip
    runner = CliRunner()
    _one_line(
        runner.invoke(
            app, [*base, "--out", str(tmp_path / "a"), "--demographic-oracle", str(oracle)]
        ),  # fmt: skip
        "--demographic-oracle: only used with --demographics",
    )
    _one_line(
        runner.invoke(
            app, [*base, "--out", str(tmp_path / "b"), "--demographics", "--age-groups", "65,40"]
        ),  # fmt: skip
        "--age-groups: '65,40'",
    )
    leaky = _leaky_copy(oracle, real, tmp_path / "leaky")
    _one_line(
        runner.invoke(
            app,
            [
                *base,
                "--out",
                str(tmp_path / "c"),
                "--demographics",
                "--demographic-oracle",
                str(leaky),
            ],
        ),  # fmt: skip
        f"--demographic-oracle {leaky}: trained on 1 val/test",
    )
    out = tmp_path / "d"
    result = runner.invoke(app, [*base, "--out", str(out), "--demographics", "--age-groups",
                                 "50", "--demographic-oracle", str(oracle)])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "demographic fidelity" in result.output and DEMOGRAPHICS_TABLE in result.output
    assert not (out / DEMOGRAPHIC_ORACLE_DIR).exists()  # the saved oracles were used
    doc = json.loads((out / "generator_eval.json").read_text())["demographics"]
    assert doc["age_groups"] == ["<50", "50+"] and doc["oracle"]["folder"] == str(oracle)
