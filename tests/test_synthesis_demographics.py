"""Demographic prompts and subgroup-balanced synthesis: the template, exact counts per
label x cell, the rows' sex and age, empty cells, resume, the card and the CLI flags."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from augmentor.card import UNRECORDED_DEMOGRAPHICS, demographics_section, synthesis_provenance
from augmentor.config import SynthesisConfig, check_synthesis_config
from augmentor.prompts import (
    balance_cells,
    balanced_prompts,
    cell_counts,
    cell_quota,
    demographic_prompt,
    stated_age,
)
from cli import app
from manifests import provenance
from manifests.demographics import age_group_bounds, age_groups, known_sex
from manifests.errors import UserError
from manifests.export import dataset_card
from manifests.io import Manifest, read_manifest, write_manifest
from manifests.schema import CHEXPERT_LABELS
from tests.helpers import synthesis_config

runner = CliRunner()
SEX_AGE = ("sex", "age_group")
DEFAULT_CELLS = [
    "sex=F & age_group=<40",
    "sex=F & age_group=40-64",
    "sex=F & age_group=65+",
    "sex=M & age_group=<40",
    "sex=M & age_group=40-64",
    "sex=M & age_group=65+",
]


def report_manifest(root: Path, rows: list[tuple[str, str, str | None, float]]) -> Manifest:
    """Train rows (report, positive label, sex, age), one patient each, written to `root`."""
    frame = []
    for i, (report, label, sex, age) in enumerate(rows):
        row = {
            "image_path": f"images/{i}.png",
            "source": "real",
            "dataset": "test",
            "patient_id": f"p{i}",
            "study_id": f"s{i}",
            "split": "train",
            "view": "PA",
            "sex": sex,
            "age": age,
            "report": report,
        }
        row.update({name: np.nan for name in CHEXPERT_LABELS})
        row[label] = 1.0
        frame.append(row)
    manifest = Manifest(rows=pd.DataFrame(frame), labels=CHEXPERT_LABELS, root=root)
    root.mkdir(parents=True, exist_ok=True)
    return read_manifest(write_manifest(manifest, root / "prompts.parquet", overwrite=True))


def source_rows(manifest: Manifest) -> pd.DataFrame:
    return manifest.rows[manifest.rows["split"] == "train"].set_index("study_id")


# ------------------------------------------------------------------------------ template


def test_demographic_prompt_template_replaces_a_header_never_repeats_it():
    report = "Small right pleural effusion."
    assert (
        demographic_prompt("F", 72.6, report) == "72-year-old woman. Small right pleural effusion."
    )
    assert demographic_prompt("M", 40.0, report) == "40-year-old man. Small right pleural effusion."
    assert demographic_prompt(None, 55.0, report) == "55-year-old patient. " + report
    assert demographic_prompt("F", np.nan, report) == "Woman. " + report
    # A header the report has is replaced (any case), never repeated.
    assert demographic_prompt("M", 30.0, "  65-year-old WOMAN.  " + report) == (
        "30-year-old man. " + report
    )
    assert demographic_prompt("F", 72.0, "72-year-old patient. " + report) == (
        "72-year-old woman. " + report
    )
    # Both unknown: no phrase, and the header goes too (the row states no demographics).
    assert demographic_prompt(None, np.nan, "72-year-old woman. " + report) == report
    # Only a header at the start counts.
    inside = "Compared to the 72-year-old woman. prior."
    assert demographic_prompt("M", 50.0, inside) == "50-year-old man. " + inside


def test_cells_quota_and_stated_ages():
    assert balance_cells(()) == [{}]
    cells = balance_cells(SEX_AGE)
    assert [" & ".join(f"{k}={v}" for k, v in c.items()) for c in cells] == DEFAULT_CELLS
    assert balance_cells(("age_group", "sex"), (50,))[:2] == [
        {"age_group": "<50", "sex": "F"},
        {"age_group": "<50", "sex": "M"},
    ]
    assert cell_quota(13, 6) == [3, 2, 2, 2, 2, 2] and cell_quota(2, 6) == [1, 1, 0, 0, 0, 0]
    rng = np.random.default_rng(0)
    bounds = age_group_bounds((40, 65))
    young = [stated_age(bounds["<40"], rng) for _ in range(200)]
    old = [stated_age(bounds["65+"], rng) for _ in range(200)]
    assert min(young) == 18 and max(young) == 39 and all(a == int(a) for a in young)
    assert min(old) == 65 and max(old) == 90
    assert 0 <= stated_age((0.0, 10.0), rng) <= 9  # a group below 18: its own years
    assert 95 <= stated_age((95.0, float("inf")), rng) <= 104  # outside [18, 90]: its own years


# ---------------------------------------------------------------------------------- plans


def test_plan_rows_carry_their_prompt_patients_demographics(phantom_manifest):
    m = read_manifest(phantom_manifest)
    targets = {"Pleural Effusion": 6, "Lung Opacity": 4}
    plain = balanced_prompts(m, targets, negatives=3, seed=1)
    stated = balanced_prompts(m, targets, negatives=3, seed=1, demographic_prompts=True)
    # Off by default; on changes the prompt text only.
    pd.testing.assert_frame_equal(plain.drop(columns="prompt"), stated.drop(columns="prompt"))
    source = source_rows(m)
    assert plain["cell"].isna().all() and (plain["demographics_source"] == "patient").all()
    for off, on in zip(plain.itertuples(), stated.itertuples(), strict=True):
        patient = source.loc[off.prompt_study_id]
        assert off.prompt_sex == known_sex([patient["sex"]])[0]
        assert off.prompt_age == patient["age"]
        assert off.prompt == patient["report"]
        assert on.prompt == demographic_prompt(patient["sex"], patient["age"], patient["report"])
        assert on.prompt.startswith(f"{int(patient['age'])}-year-old ")


def test_balanced_plan_counts_are_exact_per_label_and_cell(phantom_manifest):
    m = read_manifest(phantom_manifest)
    targets = {"Support Devices": 13, "Pleural Effusion": 7, "Edema": 3}
    plan = balanced_prompts(
        m, targets, negatives=8, seed=0, balance_by=SEX_AGE, demographic_prompts=True
    )
    # Per label exact as before, per label x cell n // 6 with the remainder first.
    assert plan["target_label"].value_counts().to_dict() == {**targets, "No Finding": 8}
    counts = cell_counts(plan).set_index(["target_label", "cell"])["images"]
    for label, n in {**targets, "No Finding": 8}.items():
        got = [int(counts.get((label, cell), 0)) for cell in DEFAULT_CELLS]
        assert got == cell_quota(n, 6), label
    pd.testing.assert_frame_equal(
        plan,
        balanced_prompts(
            m, targets, negatives=8, seed=0, balance_by=SEX_AGE, demographic_prompts=True
        ),
    )

    source = source_rows(m)
    source_group = dict(zip(source.index, age_groups(source["age"]), strict=True))
    train = source.assign(age_group=age_groups(source["age"]))
    for row in plan.itertuples():
        sex, group = (part.split("=")[1] for part in row.cell.split(" & "))
        assert row.prompt_sex == sex and age_groups([row.prompt_age])[0] == group
        assert row.prompt.startswith(f"{int(row.prompt_age)}-year-old ")
        label = row.target_label
        pool = train[(train[label] == 1) & (train["sex"] == sex) & (train["age_group"] == group)]
        if row.demographics_source == "patient":  # the cell's own patient
            patient = source.loc[row.prompt_study_id]
            assert (patient["sex"], source_group[row.prompt_study_id]) == (sex, group)
            assert row.prompt_age == patient["age"] and patient[label] == 1
        else:  # no report of the cell's patients: another's report, the cell's demographics
            assert row.demographics_source == "cell" and pool.empty, (label, row.cell)
            assert 18 <= row.prompt_age <= 90
            if row.prompt_source == "report":
                patient = source.loc[row.prompt_study_id]
                assert patient[label] == 1
                if source_group[row.prompt_study_id] == group:
                    assert row.prompt_age == patient["age"]
    # Edema has no report at all: its template, stated for the first three cells.
    edema = plan[plan["target_label"] == "Edema"]
    assert edema["cell"].tolist() == DEFAULT_CELLS[:3]
    assert edema["prompt"].str.endswith("woman. Edema.").all()
    assert (edema["prompt_source"] == "template").all()


def test_balanced_plan_draws_within_cells_per_prompt_group(phantom_manifest):
    m = read_manifest(phantom_manifest)
    plan = balanced_prompts(
        m,
        {"Support Devices": 12},
        seed=0,
        balance_by=SEX_AGE,
        demographic_prompts=True,
        images_per_prompt=2,
    )
    assert plan.groupby("cell", sort=False).size().tolist() == [2] * 6
    for _, group in plan.groupby("prompt_group"):
        assert len(group) == 2 and group["cell"].nunique() == 1
        assert group["prompt"].nunique() == 1 and group["prompt_age"].nunique() == 1


def test_custom_age_groups_and_one_column(tmp_path):
    rows = [
        (f"Pneumothorax {i}.", "Pneumothorax", "F" if i % 2 else "M", 20.0 + 7 * i)
        for i in range(10)
    ]
    rows.append(("Pneumothorax unknown age.", "Pneumothorax", "F", np.nan))
    m = report_manifest(tmp_path / "m", rows)
    plan = balanced_prompts(
        m, {"Pneumothorax": 5}, seed=0, balance_by=("age_group",), age_edges=(50,)
    )
    assert plan["cell"].tolist() == ["age_group=<50"] * 3 + ["age_group=50+"] * 2
    assert (plan["demographics_source"] == "patient").all()
    young = plan["prompt_age"].iloc[:3]
    assert (young < 50).all() and (plan["prompt_age"].iloc[3:] >= 50).all()
    assert "unknown age" not in " ".join(plan["prompt"])  # no age: in no cell
    # Sex alone: the sex of each row is the cell's, ages stay the patients'.
    by_sex = balanced_prompts(m, {"Pneumothorax": 4}, seed=0, balance_by=("sex",))
    assert by_sex["prompt_sex"].tolist() == ["F", "F", "M", "M"]
    assert by_sex["cell"].tolist() == ["sex=F"] * 2 + ["sex=M"] * 2


def test_empty_cell_is_an_error_unless_prompts_state_the_cell(tmp_path):
    rows = [
        ("Left pneumothorax.", "Pneumothorax", "F", 70.0),
        ("Right pneumothorax.", "Pneumothorax", "M", 30.0),
        ("Apical pneumothorax.", "Pneumothorax", None, 50.0),  # unknown sex: in no cell
        ("No acute cardiopulmonary process.", "No Finding", "F", 70.0),
    ]
    m = report_manifest(tmp_path / "m", rows)
    with pytest.raises(UserError) as info:
        balanced_prompts(m, {"Pneumothorax": 12}, balance_by=SEX_AGE)
    message = str(info.value)
    assert "\n" not in message and message.startswith("--balance-by: ")
    assert "'Pneumothorax'" in message and "'sex=F & age_group=<40'" in message
    assert "--demographic-prompts" in message and "fewer cells" in message
    with pytest.raises(UserError, match="negative \\('No Finding'\\).*'sex=F & age_group=<40'"):
        balanced_prompts(m, {}, negatives=6, balance_by=SEX_AGE)
    # A count that leaves the empty cells without images needs no report there.
    one = balanced_prompts(m, {"Pneumothorax": 1}, balance_by=("sex",))
    assert one["prompt"].tolist() == ["Left pneumothorax."]

    plan = balanced_prompts(
        m, {"Pneumothorax": 12}, negatives=6, balance_by=SEX_AGE, demographic_prompts=True
    )
    pneumo = plan[plan["target_label"] == "Pneumothorax"]
    own = pneumo[pneumo["demographics_source"] == "patient"]
    assert own["cell"].unique().tolist() == ["sex=F & age_group=65+", "sex=M & age_group=<40"]
    stated = pneumo[pneumo["demographics_source"] == "cell"]
    assert len(stated) == 8 and stated["prompt_source"].eq("report").all()
    # Drawn from any positive report of the label, the unknown-sex one included.
    assert set(stated["prompt_study_id"]) <= {"s0", "s1", "s2"}
    for row in stated.itertuples():
        sex, group = (part.split("=")[1] for part in row.cell.split(" & "))
        assert row.prompt_sex == sex and age_groups([row.prompt_age])[0] == group
        assert row.prompt.startswith(
            f"{int(row.prompt_age)}-year-old {'woman' if sex == 'F' else 'man'}."
        )
        source_age = {"s0": 70.0, "s1": 30.0, "s2": 50.0}[row.prompt_study_id]
        if age_groups([source_age])[0] == group:
            assert row.prompt_age == source_age
    negatives = plan[plan["target_label"] == "No Finding"]
    assert negatives["prompt"].str.endswith("No acute cardiopulmonary process.").all()
    assert negatives["prompt_sex"].tolist() == ["F", "F", "F", "M", "M", "M"]


def test_bad_balance_settings_are_user_errors(tmp_path):
    m = report_manifest(tmp_path / "m", [("Left pneumothorax.", "Pneumothorax", "F", 70.0)])
    with pytest.raises(UserError, match="--balance-by: 'race'; valid: one or both of sex"):
        balanced_prompts(m, {"Pneumothorax": 1}, balance_by=("race",))
    with pytest.raises(UserError, match="--age-groups"):
        balanced_prompts(m, {"Pneumothorax": 1}, balance_by=("age_group",), age_edges=(65, 40))

    def config(**kw) -> SynthesisConfig:
        return SynthesisConfig(model="G", prompts_from="M", out="O", labels="x:1", **kw)

    cfg = config(balance_by=["age_group", "sex"], age_edges=[30, 60])  # a study's TOML lists
    check_synthesis_config(cfg)
    assert cfg.balance_by == ("age_group", "sex") and cfg.age_edges == (30.0, 60.0)
    for kw, fragment in [
        ({"balance_by": ("sex", "sex")}, "--balance-by"),
        ({"balance_by": ("age_group",), "age_edges": (40, float("nan"))}, "--age-groups"),
        ({"age_edges": (30, 60)}, "--age-groups: only with --balance-by age_group"),
    ]:
        with pytest.raises(UserError, match=fragment):
            check_synthesis_config(config(**kw))


# ------------------------------------------------------------------------------------ CLI


def test_cli_parses_the_flags_and_refuses_bad_values(tmp_path, monkeypatch):
    import augmentor.demographic_filter as demographic_filter

    seen = {}

    def capture(cfg, *filters, **kw):
        seen["cfg"] = cfg
        raise UserError("captured")

    monkeypatch.setattr(demographic_filter, "synthesize_with_filters", capture)
    args = ["synthesize", "--model", "G", "--prompts-from", "M", "--labels", "x:1"]
    args += ["--out", str(tmp_path / "o")]
    result = runner.invoke(
        app,
        [*args, "--balance-by", "sex,age_group", "--age-groups", "30,60", "--demographic-prompts"],
    )
    assert "captured" in result.output, result.output
    cfg = seen.pop("cfg")
    assert cfg.balance_by == SEX_AGE and cfg.age_edges == (30.0, 60.0) and cfg.demographic_prompts
    runner.invoke(app, args)
    cfg = seen.pop("cfg")
    assert (cfg.balance_by, cfg.age_edges, cfg.demographic_prompts) == ((), (40.0, 65.0), False)

    for extra, fragment in [
        (["--balance-by", "race"], "--balance-by: 'race'; valid: one or both of sex, age_group"),
        (["--balance-by", "age_group", "--age-groups", "65,40"], "--age-groups: '65,40'"),
        (["--balance-by", "age_group", "--age-groups", "forty"], "--age-groups: 'forty'"),
        (["--balance-by", "age_group", "--age-groups", "40,inf"], "--age-groups"),
        (["--age-groups", "30,60"], "--age-groups: only with --balance-by age_group"),
    ]:
        result = runner.invoke(app, [*args, *extra])
        assert result.exit_code == 2, (extra, result.output)
        lines = [line for line in result.output.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], lines
    assert not seen and not (tmp_path / "o").exists()


# ---------------------------------------------------------------------------- end to end


def test_balanced_synthesis_rows_card_and_resume(tmp_path, tiny_generator_dir, phantom_manifest):
    out = tmp_path / "synth"
    common = {"labels": "support_devices:7", "balance_by": SEX_AGE, "demographic_prompts": True}

    def stop_after_first_batch(committed: int) -> None:
        if committed >= 2:
            raise KeyboardInterrupt

    from augmentor.synthesize import synthesize

    with pytest.raises(KeyboardInterrupt):
        synthesize(
            synthesis_config(tiny_generator_dir, phantom_manifest, out, **common),
            on_batch=stop_after_first_batch,
        )
    # Another balance, age groups or template on resume: refused in one line.
    for change, fragment in [
        ({"demographic_prompts": False}, "demographic_prompts=True, now False"),
        ({"balance_by": ("sex",)}, "balance_by=['sex', 'age_group'], now ['sex']"),
        ({"age_edges": (50,)}, "age_edges=[40.0, 65.0], now [50.0]"),
    ]:
        cfg = synthesis_config(
            tiny_generator_dir, phantom_manifest, out, resume=True, **{**common, **change}
        )
        with pytest.raises(UserError, match=fragment.replace("[", "\\[")) as info:
            synthesize(cfg)
        assert "\n" not in str(info.value)

    args = [
        "synthesize",
        "--model",
        str(tiny_generator_dir),
        "--prompts-from",
        str(phantom_manifest),
    ]
    args += ["--labels", "support_devices:7", "--out", str(out), "--num-inference-steps", "2"]
    args += ["--balance-by", "sex,age_group", "--demographic-prompts", "--resume"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "images per label x subgroup cell" in result.output
    assert "sex=M & age_group=65+" in result.output and "skipped 2" in result.output

    m = read_manifest(out / "manifest.parquet")
    rows = m.rows
    assert rows["cell"].tolist() == [
        c for c, n in zip(DEFAULT_CELLS, cell_quota(7, 6), strict=True) for _ in range(n)
    ]
    # Each row's sex and age are those its prompt states.
    for row in rows.itertuples():
        word = {"F": "woman", "M": "man"}[row.sex]
        assert row.prompt.startswith(f"{int(row.age)}-year-old {word}. ")
        assert row.cell == f"sex={row.sex} & age_group={age_groups([row.age])[0]}"
    assert rows["demographic_prompt"].all()
    plan = balanced_prompts(
        read_manifest(phantom_manifest),
        {"Support Devices": 7},
        balance_by=SEX_AGE,
        demographic_prompts=True,
    )
    assert rows["prompt"].tolist() == plan["prompt"].tolist()
    assert rows["demographics_source"].tolist() == plan["demographics_source"].tolist()

    record = provenance.read_record(m)["demographics"]
    assert record["demographic_prompts"] and record["balance_by"] == list(SEX_AGE)
    assert record["cells"] == DEFAULT_CELLS and record["age_edges"] == [40.0, 65.0]
    assert [c["images"] for c in record["counts"]] == cell_quota(7, 6)
    identity = json.loads(m.metadata["cxraug.synthesis"])
    assert identity["balance_by"] == list(SEX_AGE) and identity["demographic_prompts"] is True

    card = dataset_card(m, {"train": 7}, provenance=synthesis_provenance(out / "manifest.parquet"))
    assert "Demographic prompts: on" in card
    assert "Subgroup balance over sex x age_group (age-group edges 40, 65)" in card
    assert "| Support Devices | sex=F & age_group=<40 | 2 |" in card
    assert demographics_section(Manifest(rows=rows)) == f"Demographics: {UNRECORDED_DEMOGRAPHICS}."
