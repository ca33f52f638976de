"""Prompt hygiene: the clean and raw policies, the plan's cleaned prompts, and how a synthetic
set records its policy (rows, provenance, card, resume)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from augmentor.card import UNRECORDED_HYGIENE, prompt_hygiene, synthesis_provenance
from augmentor.prompt_policy import (
    RULES,
    apply_policy,
    apply_policy_many,
    check_policy,
    clean_report,
    no_counts,
)
from augmentor.prompts import balanced_prompts, removed_by_policy
from augmentor.synthesize import synthesize
from cli import app
from manifests import provenance
from manifests.errors import UserError
from manifests.export import dataset_card
from manifests.io import Manifest, read_manifest, write_manifest
from manifests.phantom import write_phantom_dataset
from manifests.schema import CHEXPERT_LABELS
from tests.helpers import synthesis_config

runner = CliRunner()

DIRTY = (
    "Small left pleural effusion, unchanged since 12/03/2019. Compared to ___, no "
    "pneumothorax. Film obtained at 10:45 AM."
)
DIRTY_CLEAN = (
    "Small left pleural effusion, unchanged. Compared to prior, no pneumothorax. Film obtained."
)


def counts(**nonzero: int) -> dict[str, int]:
    return {**no_counts(), **nonzero}


# ------------------------------------------------------------------------------ policies


def test_clean_removes_marker_date_and_time_with_counts_and_raw_keeps_them():
    text, removed = apply_policy(DIRTY)  # the default policy is clean
    assert text == DIRTY_CLEAN
    assert removed == counts(date=1, time=1, deid_marker=1)
    assert "___" not in text and "2019" not in text and "10:45" not in text
    assert apply_policy(DIRTY, "raw") == (DIRTY, counts())
    assert apply_policy(DIRTY, " Clean ") == (DIRTY_CLEAN, removed)  # spelling-tolerant
    with pytest.raises(UserError, match=r"^--prompt-policy: unknown 'tidy'; valid: clean, raw$"):
        check_policy("tidy")


# Every example of the module docstring, and a few more MIMIC-style reports.
EXAMPLES = [
    (
        "Small left effusion. Findings were discussed with Dr. ___ at 10:45 on ___.",
        "Small left effusion.",
        counts(communication=1),
    ),
    (
        "Large right pneumothorax, discussed with Dr. X.",
        "Large right pneumothorax.",
        counts(communication=1),
    ),
    ("Tube repositioned per Dr. Smith.", "Tube repositioned.", counts(person=1)),
    ("Dr. ___", "", counts(person=1)),
    (
        "ET tube 4 cm above the carina per the ___ hospital report.",
        "ET tube 4 cm above the carina.",
        counts(place=1),
    ),
    ("Unchanged from the study of 2019-03-12.", "Unchanged from the study.", counts(date=1)),
    ("Portable film obtained at 0930.", "Portable film obtained.", counts(time=1)),
    (
        "Compared to ___, the effusion is smaller.",
        "Compared to prior, the effusion is smaller.",
        counts(deid_marker=1),
    ),
    ("Unchanged since ___.", "Unchanged.", counts(deid_marker=1)),
    (
        "New opacity since March 3, 2019 and since the 3rd of March. Seen 9 p.m. and 10:45:30.",
        "New opacity. Seen.",
        counts(date=2, time=2),
    ),
    (
        "IMPRESSION:\n \n 1. Interval increase in right pleural effusion.\n 2. These findings"
        " were\n discussed with ___ by ___ on the telephone on ___ at 2:15 pm, 5 minutes after\n"
        " discovery.",
        "IMPRESSION: 1. Interval increase in right pleural effusion.",
        counts(communication=1),
    ),
    (
        "NOTIFICATION: The findings were discussed by Dr. ___ with Dr. ___ on the telephone.",
        "",
        counts(communication=1),
    ),
    ("Mild pulmonary edema ___ ___.", "Mild pulmonary edema.", counts(deid_marker=2)),
    ("[**2101-3-4**] chest film: no change.", "chest film: no change.", counts(deid_marker=1)),
    (
        "Film from Beth Israel Hospital dated Mar. 3rd shows a 1.5 cm nodule.",
        "Film shows a 1.5 cm nodule.",
        counts(place=1, date=1),
    ),
]


@pytest.mark.parametrize(("report", "prompt", "removed"), EXAMPLES)
def test_clean_rules_examples(report, prompt, removed):
    assert clean_report(report) == (prompt, removed)


@pytest.mark.parametrize(
    "report",
    [
        "PA and lateral views of the chest. MR Imaging is recommended.",
        "May represent atelectasis at T5/6; a 1.5 cm nodule, 10 cc fluid at 1000 cc.",
        "Support devices: endotracheal tube and central line. Borderline heart size; mild "
        "cardiomegaly is not excluded (cardiomegaly).",
        "Questionable small right apical pneumothorax; consider repeat imaging.",
    ],
)
def test_clean_leaves_plain_radiology_text_alone(report):
    assert clean_report(report) == (report, counts())


def test_phantom_reports_are_unchanged_so_the_demo_does_not_move(tmp_path):
    """Phantom reports have no markers, dates or names: `clean` must return them
    byte-identical, so every demo prompt (and image) stays what `raw` gives."""
    path = write_phantom_dataset(tmp_path / "phantom", n=60, size=32, seed=3, patients=20)
    rows = read_manifest(path).rows
    texts = rows["report"].tolist() + rows["report_findings"].tolist()
    cleaned, removed = apply_policy_many(texts, "clean")
    assert len(texts) == 120 and all(t for t in texts)
    for text, prompt, count in zip(texts, cleaned, removed, strict=True):
        assert prompt.encode() == text.encode()
        assert count == counts()

    split = rows.assign(split=np.where(np.arange(len(rows)) < 45, "train", "test"))
    manifest = Manifest(rows=split, labels=CHEXPERT_LABELS, root=path.parent)
    targets = {"Pleural Effusion": 8, "Pneumothorax": 5}
    clean = balanced_prompts(manifest, targets, negatives=4, seed=0)
    raw = balanced_prompts(manifest, targets, negatives=4, seed=0, prompt_policy="raw")
    pd.testing.assert_frame_equal(clean, raw)
    assert removed_by_policy(clean)[0] == counts()


# ------------------------------------------------------------------------------ plan


def report_manifest(root: Path, reports: list[tuple[str, str]]) -> Path:
    """Train rows with these (report, positive label) pairs, and one test row."""
    rows = []
    for i, (text, label) in enumerate([*reports, ("Clear lungs.", "No Finding")]):
        row = {
            "image_path": f"images/{i}.png",
            "source": "real",
            "dataset": "test",
            "patient_id": f"p{i}",
            "study_id": f"s{i}",
            "split": "train" if i < len(reports) else "test",
            "view": "PA",
            "sex": None,
            "age": np.nan,
            "report": text,
        }
        row.update({name: 1.0 if name == label else np.nan for name in CHEXPERT_LABELS})
        rows.append(row)
    root.mkdir(parents=True, exist_ok=True)
    manifest = Manifest(rows=pd.DataFrame(rows), labels=CHEXPERT_LABELS, root=root)
    return write_manifest(manifest, root / "prompts.parquet", overwrite=True)


DIRTY_REPORTS = [
    (DIRTY, "Pleural Effusion"),
    ("Findings discussed with Dr. ___ at 10:45.", "Pleural Effusion"),  # empty once clean
    ("Right pneumothorax. Dr. ___ was paged at 0930 hours.", "Pneumothorax"),
]


def test_plan_prompts_are_clean_and_counted(tmp_path):
    m = read_manifest(report_manifest(tmp_path, DIRTY_REPORTS))
    plan = balanced_prompts(m, {"Pleural Effusion": 3, "Pneumothorax": 2}, seed=0)
    effusion = plan[plan["target_label"] == "Pleural Effusion"]
    assert effusion["prompt"].tolist() == [DIRTY_CLEAN] * 3  # the empty one is never drawn
    assert effusion["prompt_study_id"].tolist() == ["s0"] * 3
    pneumo = plan[plan["target_label"] == "Pneumothorax"]
    assert pneumo["prompt"].tolist() == ["Right pneumothorax."] * 2
    removed, drawn = removed_by_policy(plan)
    assert drawn == 5 and removed == counts(date=3, time=3, deid_marker=3, communication=2)

    four = balanced_prompts(m, {"Pleural Effusion": 4}, seed=0, images_per_prompt=4)
    assert removed_by_policy(four) == (counts(date=1, time=1, deid_marker=1), 1)  # one draw

    raw = balanced_prompts(m, {"Pleural Effusion": 3}, seed=0, prompt_policy="raw")
    assert set(raw["prompt"]) <= {DIRTY, DIRTY_REPORTS[1][0]}
    assert removed_by_policy(raw)[0] == counts()

    only_empty = read_manifest(report_manifest(tmp_path / "e", DIRTY_REPORTS[1:2]))
    with pytest.raises(UserError, match="every train report is empty under --prompt-policy clean"):
        balanced_prompts(only_empty, {"Pleural Effusion": 1}, where="--prompts-from X")


# ------------------------------------------------------------------------------ synthesis


def test_card_names_the_policy_or_says_it_is_not_recorded():
    record = {"prompt_policy": {"policy": "clean", "report_prompts": 4, "removed": counts(date=2)}}
    rows = pd.DataFrame({"source": ["synthetic"]})
    metadata = {provenance.PROVENANCE_KEY: json.dumps(record, sort_keys=True)}  # as written
    recorded = Manifest(rows=rows, metadata=metadata)
    line = prompt_hygiene(recorded)
    assert line.startswith("Prompt hygiene: `clean`: strips de-identification markers")
    assert (
        "removed over 4 drawn report prompt(s): communication 0, person 0, place 0, date 2" in line
    )
    assert prompt_hygiene(Manifest(rows=rows)) == f"Prompt hygiene: {UNRECORDED_HYGIENE}."


def test_synthesis_records_the_policy_per_row_provenance_card_and_refuses_a_change(
    tmp_path, tiny_generator_dir
):
    prompts = report_manifest(tmp_path / "prompts", DIRTY_REPORTS)
    out = tmp_path / "synth"
    labels = "pleural_effusion:2,pneumothorax:1"

    def stop_after_first_batch(committed: int) -> None:
        if committed >= 2:
            raise KeyboardInterrupt

    cfg = synthesis_config(tiny_generator_dir, prompts, out, labels=labels)
    assert cfg.prompt_policy == "clean"  # the default
    with pytest.raises(KeyboardInterrupt):
        synthesize(cfg, on_batch=stop_after_first_batch)

    # Resuming under another policy is refused in one line, by the library and by the CLI.
    raw = synthesis_config(
        tiny_generator_dir, prompts, out, labels=labels, resume=True, prompt_policy="raw"
    )
    with pytest.raises(UserError, match="prompt_policy='clean', now 'raw'") as info:
        synthesize(raw)
    assert "\n" not in str(info.value)
    args = ["synthesize", "--model", str(tiny_generator_dir), "--prompts-from", str(prompts)]
    args += ["--labels", labels, "--out", str(out), "--num-inference-steps", "2", "--resume"]
    result = runner.invoke(app, [*args, "--prompt-policy", "raw"])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "prompt_policy='clean', now 'raw'" in lines[0], result.output
    bad = runner.invoke(app, [*args, "--prompt-policy", "tidy"])
    assert bad.exit_code == 2 and "--prompt-policy: unknown 'tidy'; valid: clean, raw" in bad.output

    done = runner.invoke(app, args)  # the same policy (the default) resumes
    assert done.exit_code == 0, done.output
    assert (
        "prompt policy `clean`" in done.output
        and "removed over 3 drawn report prompt(s)" in done.output
    )
    m = read_manifest(out / "manifest.parquet")
    assert m.rows["prompt_policy"].tolist() == ["clean"] * 3
    assert m.rows["prompt"].tolist() == [DIRTY_CLEAN, DIRTY_CLEAN, "Right pneumothorax."]
    assert not m.rows["report"].str.contains("___|2019|10:45|0930|Dr").any()
    record = provenance.read_record(m)["prompt_policy"]
    assert record == {
        "policy": "clean",
        "report_prompts": 3,
        "removed": counts(communication=1, date=2, time=2, deid_marker=2),
    }
    assert json.loads(m.metadata["cxraug.synthesis"])["prompt_policy"] == "clean"

    card_provenance = synthesis_provenance(out / "manifest.parquet")
    card = dataset_card(m, {"train": 3}, provenance=card_provenance)
    assert "Prompt hygiene: `clean`" in card
    assert "communication 1, person 0, place 0, date 2, time 2, deid_marker 2" in card
    assert set(RULES) == set(record["removed"])

    # A set made before prompt policies prompted with the reports as written: resuming it
    # under the default (clean) is refused too.
    saved = json.loads((out / "synthesis.json").read_text())
    del saved["identity"]["prompt_policy"]
    (out / "synthesis.json").write_text(json.dumps(saved))
    again = synthesis_config(tiny_generator_dir, prompts, out, labels=labels, resume=True)
    with pytest.raises(UserError, match="prompt_policy='raw', now 'clean'"):
        synthesize(again)
