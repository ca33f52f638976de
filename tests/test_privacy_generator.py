"""The re-identification audit on real generators, not stand-in copies.

`tiny` fine-tuned on two studies of one train patient (300 steps) learns to redraw them;
prompted with that patient's reports, its images are linked to the patient far above the
baseline. The same recipe on a patient outside the real set, prompted with the same
reports, stays within the baseline. `benchmarks/privacy_memorization.py` builds both
(`run_experiment`) and prints the table; docs/privacy.md ("How the audit is tested") has
the numbers. About a minute and a half on one CPU thread; it runs in the default suite,
because the audit's one claim, that it flags a generator that redraws its patients, rests
on it.
"""

from __future__ import annotations

import pytest

from augmentor.generator import training_patients
from augmentor.privacy import SYN_PROMPT, VAL_OTHER
from benchmarks.privacy_memorization import GeneratorResult, Recipe, run_experiment


@pytest.fixture(scope="module")
def experiment(tmp_path_factory) -> tuple[str, dict[str, GeneratorResult]]:
    """The memorized patient and both generators' results (one verification model)."""
    patient, results = run_experiment(tmp_path_factory.mktemp("memorization"), Recipe())
    return patient, {r.name: r for r in results}


def _row(result: GeneratorResult, comparison: str):
    table = result.audit.table
    return table[(table["comparison"] == comparison) & (table["group"] == "all")].iloc[0]


def test_generators_saw_what_they_should(experiment):
    patient, results = experiment
    assert training_patients(results["memorizing"].model) == [patient]
    assert patient not in training_patients(results["control"].model)
    for result in results.values():  # every image prompted by the memorized patient's reports
        images = result.audit.images
        assert len(images) == Recipe.images
        assert (images["prompt_patient_id"] == patient).all()
        assert images["prompt_patient_score"].notna().all()
    # one verification model, one threshold, one baseline for both
    memorizing, control = results["memorizing"].audit, results["control"].audit
    assert memorizing.summary["model"]["key"] == control.summary["model"]["key"]
    assert memorizing.summary["threshold"] == control.summary["threshold"]


def test_memorizing_generator_redraws_its_patient(experiment):
    """The pixel search agrees that it copies: every image's nearest train image is one of
    the patient's, closer than the control's images come to any train image. (Not flagged
    at the search's 0.97 threshold: the copies are soft; docs/privacy.md.)"""
    patient, results = experiment
    mine, other = results["memorizing"].pixels, results["control"].pixels
    assert (mine["nn_pixel_patient"] == patient).all(), mine
    assert not (other["nn_pixel_patient"] == patient).any(), other
    assert mine["pixel_correlation"].median() >= 0.7
    assert mine["pixel_correlation"].median() > other["pixel_correlation"].median()


def test_audit_flags_the_memorizing_generator(experiment):
    _, results = experiment
    result = results["memorizing"]
    syn, base = _row(result, SYN_PROMPT), _row(result, VAL_OTHER)
    assert syn["share_above"] >= 0.5, result.audit.table
    assert syn["share_low"] > base["share_high"]  # the intervals do not meet
    matched = result.audit.images["prompt_patient_match"]
    assert matched.mean() == syn["share_above"]


def test_audit_passes_the_generator_that_never_saw_the_patient(experiment):
    _, results = experiment
    result = results["control"]
    syn, base = _row(result, SYN_PROMPT), _row(result, VAL_OTHER)
    assert syn["share_above"] <= base["share_high"], result.audit.table
    memorizing = _row(results["memorizing"], SYN_PROMPT)
    assert syn["share_high"] < memorizing["share_above"]
    assert not result.pixels["flagged"].any()
