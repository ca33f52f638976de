"""The embedded phantom dataset: determinism, manifest, reports, labels, looks, learnability,
demographics."""

from __future__ import annotations

import json
import re
from dataclasses import replace

import numpy as np
import pytest
from typer.testing import CliRunner

from augmentor.base import tiny_tokenizer
from augmentor.prompt_policy import apply_policy_many
from cli import app
from manifests.demographics import age_groups, demographic_phrase
from manifests.errors import UserError
from manifests.images import load_image
from manifests.io import read_manifest
from manifests.phantom import (
    AGE_BETA,
    AGE_RANGE,
    FEMALE_SHARE,
    HEADER_SHARE,
    IMAGE_HALF,
    MODELLED_LABELS,
    PHANTOM_DESIGN,
    PREVALENCE,
    draw_phantom,
    finding_probability,
    phantom_studies,
    sample_patient,
    study_labels,
    study_report,
    write_phantom_dataset,
)
from manifests.phantom.reports import HEADER_MAX_WORDS
from manifests.schema import CHEXPERT_LABELS

runner = CliRunner()
HEDGES = ("possible", "possibly", "not excluded", "cannot be excluded", "may ", "questionable")
KEYWORD = {
    "Cardiomegaly": "cardiomegaly",
    "Pleural Effusion": "effusion",
    "Pneumothorax": "pneumothorax",
    "Consolidation": "consolidation",
}


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """30 images at 64 px over the default 10 patients."""
    out = tmp_path_factory.mktemp("phantom")
    return read_manifest(write_phantom_dataset(out, n=30, size=64, seed=3))


@pytest.fixture(scope="module")
def reports():
    """Many studies with their reports and labels (no drawing: fast)."""
    studies = phantom_studies(900, seed=5)
    out = []
    for i, study in enumerate(studies):
        impression, findings = study_report(study, np.random.default_rng(i))
        out.append((study, impression, findings, study_labels(study)))
    return out


def _sentences(text: str) -> list[str]:
    return [s.strip().lower() for s in re.split(r"(?<=\.)\s+", text) if s.strip()]


def test_manifest_is_valid_with_images_reports_and_notes(small):
    rows = small.rows
    assert len(rows) == 30 and small.labels == CHEXPERT_LABELS
    assert set(rows["source"]) == {"real"} and set(rows["dataset"]) == {"phantom"}
    assert set(rows["split"]) == {"train"}
    assert set(rows["view"]) <= {"PA", "AP"} and set(rows["sex"]) <= {"M", "F"}
    assert rows["age"].between(18, 100).all()
    assert rows["report"].str.len().min() > 10
    assert rows["report_findings"].str.contains("view of the chest").all()
    paths = small.image_paths()
    assert all(str(p).endswith(".png") and p.parent.name == "images" for p in paths)
    image = load_image(paths[0])
    assert image.shape == (64, 64) and image.dtype == np.uint8
    notes = json.loads(small.metadata["cxraug.notes"])
    assert any("never clinical data" in note for note in notes)
    for text, labels in zip(
        rows["phantom_findings"], rows[list(MODELLED_LABELS)].to_numpy(), strict=True
    ):
        findings = json.loads(text)
        assert ("Pneumothorax" in findings) == (labels[MODELLED_LABELS.index("Pneumothorax")] != 0)
    # ground truth for generator evaluation: the cardiothoracic ratio of every image
    enlarged = rows["Cardiomegaly"] != 0
    assert (rows.loc[enlarged, "phantom_ctr"] > 0.5).all()
    assert (rows.loc[~enlarged, "phantom_ctr"] < 0.5).all()


def test_several_studies_per_patient(small):
    rows = small.rows
    per_patient = rows.groupby("patient_id")["study_id"].nunique()
    assert len(per_patient) == 10 and (per_patient == 3).all()
    assert rows["patient_id"].str.fullmatch(r"phantom-p\d{5}").all()
    assert (rows["study_id"].str.rsplit("-s", n=1).str[0] == rows["patient_id"]).all()
    assert rows["study_id"].is_unique and rows["image_path"].is_unique
    # A patient's anatomy is stable; demographics too (age grows a little).
    studies = phantom_studies(30, seed=3)
    for a, b in zip(studies[:-1], studies[1:], strict=True):
        if a.patient.patient_id == b.patient.patient_id:
            assert a.patient == b.patient and b.age >= a.age


def test_same_seed_same_bytes_other_seed_differs(tmp_path, small):
    again = read_manifest(write_phantom_dataset(tmp_path / "a", n=30, size=64, seed=3))
    assert list(again.rows["image_sha256"]) == list(small.rows["image_sha256"])
    assert list(again.rows["report"]) == list(small.rows["report"])
    assert again.image_paths()[7].read_bytes() == small.image_paths()[7].read_bytes()
    other = read_manifest(write_phantom_dataset(tmp_path / "b", n=30, size=64, seed=4))
    assert not set(other.rows["image_sha256"]) & set(small.rows["image_sha256"])


def test_labels_follow_the_documented_policy(reports):
    for study, _, _, labels in reports:
        for label in CHEXPERT_LABELS:
            if label in MODELLED_LABELS:
                assert labels[label] in (1.0, 0.0, -1.0)
            else:
                assert np.isnan(labels[label])  # never drawn, never mentioned
        if labels["Consolidation"] != 0:
            assert labels["Lung Opacity"] == 1
        sick = any(labels[k] != 0 for k in KEYWORD)
        assert labels["No Finding"] == (0 if sick else 1)
        for finding in KEYWORD:
            if finding in study.findings:
                hedged = study.findings[finding]["uncertain"]
                assert labels[finding] == (-1 if hedged else 1)


def test_prevalence_is_learnable_but_not_dominant(reports):
    values = {label: np.array([r[3][label] for r in reports]) for label in MODELLED_LABELS}
    for label in ("Cardiomegaly", "Pleural Effusion", "Pneumothorax", "Consolidation"):
        drawn = np.mean(values[label] != 0)
        assert 0.12 <= drawn <= 0.35, (label, drawn)
        assert 0.01 <= np.mean(values[label] == -1) <= 0.1, label
    assert 0.15 <= np.mean(values["Support Devices"] == 1) <= 0.3
    assert 0.25 <= np.mean(values["No Finding"] == 1) <= 0.55
    views = [r[0].view for r in reports]
    assert 0.1 <= views.count("AP") / len(views) <= 0.35


def test_reports_state_findings_with_side_and_severity(reports):
    for study, impression, findings_text, _ in reports:
        sentences = _sentences(impression)
        assert _sentences(findings_text)[0].endswith("view of the chest.")
        for finding, keyword in KEYWORD.items():
            info = study.findings.get(finding)
            said = [
                s for s in sentences if keyword in s and not s.startswith(("no ", "there is no"))
            ]
            if info is None:
                continue
            assert len(said) == 1, (finding, impression)
            sentence = said[0]
            side = info.get("side")
            if finding == "Consolidation":
                assert info["lobe"] in sentence
            elif side is not None:
                assert ("bilateral" if side == "both" else side) in sentence
                other = {"left": "right", "right": "left"}.get(side)
                assert other is None or other not in sentence
            if finding != "Consolidation":
                assert info["severity"] in sentence, (info, sentence)
            hedged = any(h in sentence for h in HEDGES) or "borderline" in sentence
            assert hedged == info["uncertain"], sentence
        if "Support Devices" in study.findings:
            assert re.search(r"tube|catheter|line|pacemaker", impression.lower())
        # Side words only ever name a finding's side.
        allowed = {
            "bilateral" if i.get("side") == "both" else i.get("side")
            for i in study.findings.values()
        }
        words = set(re.findall(r"\b(left|right|bilateral)\b", impression.lower()))
        assert words <= allowed, (impression, study.findings)


def test_reports_say_explicit_negatives(reports):
    for study, impression, _, _ in reports:
        text = impression.lower()
        negated = [s for s in _sentences(text) if s.startswith(("no ", "there is no"))]
        for finding, keyword in (
            ("Pneumothorax", "pneumothorax"),
            ("Pleural Effusion", "effusion"),
            ("Consolidation", "consolidation"),
        ):
            if finding not in study.findings:
                assert any(keyword in s for s in negated), (finding, impression)
        if "Cardiomegaly" not in study.findings:
            assert re.search(r"normal|no cardiomegaly", text), impression
    phrasings = {impression for _, impression, _, _ in reports}
    assert len(phrasings) > 200  # varied phrasing, not one template
    # impressions are prompts: they fit CLIP's 77 tokens, a demographic header included
    tokenizer = tiny_tokenizer()
    longest = max(len(tokenizer(impression).input_ids) for impression in phrasings)
    assert longest <= tokenizer.model_max_length, longest


def _region_mean(image: np.ndarray, x0: float, x1: float, y0: float, y1: float) -> float:
    """Mean over a box given in [-1, 1] image coordinates."""
    size = image.shape[0]

    def idx(v):
        return int((v + 1) / 2 * size)

    return float(image[idx(y0) : idx(y1), idx(x0) : idx(x1)].mean())


def test_image_looks_like_a_chest_radiograph():
    studies = [s for s in phantom_studies(60, seed=2) if not s.findings][:8]
    for study in studies:
        image = draw_phantom(study, 128).astype(np.float64)
        lungs = (
            _region_mean(image, -0.6, -0.3, -0.4, 0.0) + _region_mean(image, 0.3, 0.6, -0.4, 0.0)
        ) / 2
        mediastinum = _region_mean(image, -0.06, 0.06, -0.1, 0.3)
        abdomen = _region_mean(image, -0.4, 0.4, 0.8, 0.95)
        corners = _region_mean(image, -1, -0.95, 0.6, 1.0)
        assert lungs + 60 < mediastinum and lungs + 60 < abdomen, (lungs, mediastinum, abdomen)
        assert corners < 40  # air outside the body is dark
        assert 70 < image.mean() < 170
        assert image.std() > 40


@pytest.mark.parametrize("finding", ["Pleural Effusion", "Pneumothorax", "Consolidation"])
def test_findings_are_drawn_on_the_named_side(finding):
    """The patient's right is the image's left: the drawn change lies in that half."""
    studies = [s for s in phantom_studies(600, seed=8) if finding in s.findings]
    checked = 0
    for study in studies:
        info = study.findings[finding]
        if info["side"] == "both" or info["uncertain"]:
            continue
        plain = replace(study, noise=0.0, findings={})
        ill = replace(study, noise=0.0, findings={finding: info})
        diff = np.abs(draw_phantom(ill, 96).astype(float) - draw_phantom(plain, 96).astype(float))
        left, right = diff[:, :48].sum(), diff[:, 48:].sum()
        named, other = (left, right) if IMAGE_HALF[info["side"]] == "left" else (right, left)
        assert named > 3 * other, (study.study_id, info, named, other)
        checked += 1
        if checked == 6:
            break
    assert checked == 6


def test_cardiomegaly_widens_the_heart():
    study = next(s for s in phantom_studies(100, seed=1) if not s.findings)
    normal = draw_phantom(replace(study, noise=0.0), 128).astype(float)
    big = replace(study, noise=0.0, findings={"Cardiomegaly": {"ctr": 0.62, "uncertain": False}})
    enlarged = draw_phantom(big, 128).astype(float)
    row = slice(int(128 * 0.55), int(128 * 0.65))  # a band through the heart
    assert enlarged[row].mean() > normal[row].mean() + 5


def test_bad_inputs_name_the_flag(tmp_path):
    with pytest.raises(UserError, match="--n"):
        write_phantom_dataset(tmp_path / "x", n=0)
    with pytest.raises(UserError, match="--size"):
        write_phantom_dataset(tmp_path / "x", n=3, size=16)
    with pytest.raises(UserError, match="--patients"):
        write_phantom_dataset(tmp_path / "x", n=3, size=32, patients=5)
    path = write_phantom_dataset(tmp_path / "ok", n=3, size=32)
    with pytest.raises(UserError, match="--overwrite") as err:
        write_phantom_dataset(tmp_path / "ok", n=3, size=32)
    assert str(path) in str(err.value)
    assert write_phantom_dataset(tmp_path / "ok", n=4, size=32, overwrite=True) == path
    assert len(read_manifest(path)) == 4


def test_cli_demo_data(tmp_path):
    out = tmp_path / "demo"
    args = ["demo-data", str(out), "--n", "6", "--size", "32", "--patients", "2", "--seed", "1"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    manifest = read_manifest(out / "manifest.parquet")
    assert len(manifest) == 6 and manifest.rows["patient_id"].nunique() == 2
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        f"error: {out / 'manifest.parquet'}: already exists; pass --overwrite to replace it"
    ]
    result = runner.invoke(app, ["demo-data", str(out), "--n", "0"])
    assert result.exit_code == 2 and result.output.count("\n") == 1 and "--n" in result.output


def _learnability(n: int, size: int, seed: int, labels: tuple[str, ...]) -> dict[str, float]:
    """Held-out-patient AUROC of logistic regression on 32x32 downsampled pixels."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    studies = phantom_studies(n, seed=seed)
    images = np.stack([draw_phantom(s, size) for s in studies]).astype(np.float32) / 255
    f = size // 32
    x = images.reshape(n, 32, f, 32, f).mean(axis=(2, 4)).reshape(n, -1)
    test = np.array([s.patient.index % 3 == 0 for s in studies])  # held-out patients
    x = (x - x[~test].mean(0)) / (x[~test].std(0) + 1e-3)
    out = {}
    for label in labels:
        y = np.array([study_labels(s)[label] for s in studies])
        train, held = ~test & (y != -1), test & (y != -1)
        model = LogisticRegression(C=0.1, max_iter=3000).fit(x[train], y[train] == 1)
        out[label] = roc_auc_score(y[held] == 1, model.decision_function(x[held]))
    return out


def test_findings_are_learnable_by_a_linear_model():
    labels = ("Cardiomegaly", "Pleural Effusion", "Pneumothorax", "Support Devices")
    aurocs = _learnability(300, 64, seed=11, labels=labels)
    assert all(v > 0.85 for v in aurocs.values()), aurocs


@pytest.mark.slow
def test_all_modelled_findings_are_learnable_from_more_images():
    labels = ("Cardiomegaly", "Pleural Effusion", "Pneumothorax", "Support Devices")
    labels += ("Consolidation", "Lung Opacity", "No Finding")
    aurocs = _learnability(1500, 64, seed=12, labels=labels)
    assert all(v > 0.9 for v in aurocs.values()), aurocs


# ---------------------------------------------------------------------- demographics


def _patient_box(image: np.ndarray, study, x0: float, x1: float, y0: float, y1: float):
    """The pixels of a box given in the patient's body coordinates (before shift and zoom)."""
    size = image.shape[0]
    p = study.patient

    def idx(v, scale, shift):
        return int(round((v * scale * study.zoom + shift + 1) / 2 * size))

    rows = slice(idx(y0, p.body_height, study.shift_y), idx(y1, p.body_height, study.shift_y))
    cols = slice(idx(x0, p.body_width, study.shift_x), idx(x1, p.body_width, study.shift_x))
    return image[rows, cols]


def _as_man(patient):
    """The same anatomy without what sex changes in the drawing (breast shadows)."""
    return replace(patient, sex="M", breast=0.0, breast_drop=0.0, breast_asymmetry=0.0)


def test_women_are_brighter_in_the_lower_zones_than_the_same_anatomy_as_a_man():
    studies = [s for s in phantom_studies(300, seed=6) if s.patient.sex == "F" and not s.findings]
    studies = studies[:8]
    assert len(studies) == 8
    lower, upper = [], []
    for study in studies:
        woman = draw_phantom(replace(study, noise=0.0), 128).astype(float)
        man = draw_phantom(replace(study, noise=0.0, patient=_as_man(study.patient)), 128)
        diff = woman - man.astype(float)
        for x0 in (-0.75, 0.3):  # both lower zones, lateral to the heart
            lower.append(_patient_box(diff, study, x0, x0 + 0.45, 0.05, 0.35).mean())
        upper.append(_patient_box(diff, study, -0.6, 0.6, -0.7, -0.4).mean())
    assert min(lower) > 8 and np.mean(lower) > 15, lower  # in every woman, on both sides
    assert max(np.abs(upper)) < 1, upper  # the upper zones are untouched


def test_older_patients_have_larger_hearts_unfolded_aortas_and_fainter_ribs():
    patients = [sample_patient(0, i) for i in range(1500)]
    ages = np.array([p.age for p in patients])
    ctr = np.array([p.ctr for p in patients])
    young, old = ages < 40, ages >= 65
    healthy = ctr < 0.5
    assert ctr[old].mean() > ctr[young].mean() + 0.03  # more cardiomegaly and the age term
    assert ctr[old & healthy].mean() > ctr[young & healthy].mean() + 0.015
    assert ctr[healthy].max() < 0.5  # a healthy heart never crosses 0.5 with age
    bone = np.array([p.bone_density for p in patients])
    assert bone[old].mean() < bone[young].mean() - 0.15
    assert np.array([p.aorta for p in patients])[young].max() == 0
    assert np.array([p.cartilage for p in patients])[old].min() > 0.3
    # The drawing: the same chest with young and old bones, aorta and cartilage.
    study = next(s for s in phantom_studies(60, seed=2) if not s.findings and s.view == "PA")
    p = study.patient
    young_p = replace(p, age=25.0, bone_density=1.0, cartilage=0.0, aorta=0.0)
    old_p = replace(p, age=80.0, bone_density=0.65, cartilage=0.8, aorta=0.9)
    images = [
        draw_phantom(replace(study, noise=0.0, patient=q), 128).astype(float)
        for q in (young_p, old_p)
    ]
    # ribs are horizontal stripes: vertical differences in the lateral lungs
    contrast = [
        np.mean(
            [
                np.abs(
                    np.diff(_patient_box(image, study, x0, x0 + 0.3, -0.45, 0.05), axis=0)
                ).mean()
                for x0 in (-0.65, 0.35)
            ]
        )
        for image in images
    ]
    assert contrast[1] < 0.85 * contrast[0], contrast
    # the unfolded knob reaches further into the left upper lung (image right)
    knob = [_patient_box(image, study, 0.19, 0.22, -0.36, -0.3).mean() for image in images]
    assert knob[1] > knob[0] + 20, knob


def test_default_draw_has_few_women_and_prevalences_differ_by_subgroup():
    studies = phantom_studies(2000, seed=0)
    patients = {s.patient.index: s.patient for s in studies}.values()
    assert len(patients) == 666
    assert sum(p.sex == "F" for p in patients) == 206  # FEMALE_SHARE = 0.3
    ages = np.array([p.age for p in patients])
    assert AGE_RANGE[0] <= ages.min() and ages.max() <= AGE_RANGE[1]
    assert 55 < ages.mean() < 64 and 0.08 < np.mean(ages < 40) < 0.2
    # Each finding's probability averages to PREVALENCE over the default demographics.
    rng = np.random.default_rng(0)
    sexes = np.where(rng.random(40000) < FEMALE_SHARE, "F", "M")
    draws = AGE_RANGE[0] + (AGE_RANGE[1] - AGE_RANGE[0]) * rng.beta(*AGE_BETA, size=40000)
    for finding, prevalence in PREVALENCE.items():
        mean = np.mean(
            [finding_probability(finding, s, a) for s, a in zip(sexes, draws, strict=True)]
        )
        assert abs(mean - prevalence) < 0.006, (finding, mean)
    # And in a large draw, per subgroup, as designed.
    studies = phantom_studies(9000, seed=1)
    sex = np.array([s.patient.sex for s in studies])
    group = age_groups([s.age for s in studies])
    drawn = {k: np.array([k in s.findings for s in studies]) for k in PREVALENCE}
    for finding, prevalence in PREVALENCE.items():
        assert abs(drawn[finding].mean() - prevalence) < 0.03, finding
    old, young = group == "65+", group == "<40"
    assert drawn["Cardiomegaly"][old].mean() > 3 * drawn["Cardiomegaly"][young].mean()
    assert drawn["Pleural Effusion"][old].mean() > 2 * drawn["Pleural Effusion"][young].mean()
    ptx = drawn["Pneumothorax"]
    assert ptx[young & (sex == "M")].mean() > 0.3  # commonest in young men
    assert ptx[sex == "M"].mean() > 2 * ptx[sex == "F"].mean()
    assert ptx[young].mean() > 2 * ptx[old].mean()


HEADER = re.compile(r"^(\d+)-year-old (woman|man)\. ")


def test_a_stated_share_of_impressions_starts_with_the_patients_age_and_sex(reports, small):
    with_header = [study for study, impression, _, _ in reports if HEADER.match(impression)]
    assert abs(len(with_header) / len(reports) - HEADER_SHARE) < 0.05
    for study, impression, findings_text, _ in reports:
        has = bool(HEADER.match(impression))
        assert has <= study.header  # only on studies marked for it, and on every one of them
        assert has or not study.header or len(impression.split()) > HEADER_MAX_WORDS  # but long
        assert not HEADER.search(findings_text) and "year-old" not in findings_text
        if has:
            assert impression.startswith(demographic_phrase(study.patient.sex, study.age) + " ")
    # In the manifest, the header agrees with the row's own sex and age.
    rows = small.rows
    matches = rows["report"].str.extract(HEADER.pattern)
    has = matches[0].notna()
    assert 5 <= has.sum() <= 25
    assert (matches.loc[has, 0].astype(int) == rows.loc[has, "age"].astype(int)).all()
    words = rows.loc[has, "sex"].map({"F": "woman", "M": "man"})
    assert (matches.loc[has, 1] == words).all()
    # The clean prompt policy keeps it (ages under 90 are not identifiers).
    cleaned, _ = apply_policy_many(rows["report"].tolist(), "clean")
    assert cleaned == rows["report"].tolist()


def test_demographics_are_deterministic_and_recorded(tmp_path, small):
    assert json.loads(small.metadata["cxraug.phantom"])["design"] == PHANTOM_DESIGN
    first, again = phantom_studies(60, seed=9), phantom_studies(60, seed=9)
    assert first == again and [s.header for s in first] == [s.header for s in again]
    assert sample_patient(9, 4) == sample_patient(9, 4) != sample_patient(10, 4)
    old_woman = next(s for s in first if s.patient.sex == "F" and s.patient.age > 60)
    assert old_woman.patient.breast > 0 and old_woman.patient.cartilage > 0
    assert draw_phantom(old_woman, 64).tobytes() == draw_phantom(old_woman, 64).tobytes()
    # A patient's demographic anatomy is the same in every one of its studies.
    by_patient: dict[str, set] = {}
    for s in first:
        p = s.patient
        key = (p.sex, p.age, p.ctr, p.breast, p.bone_density, p.cartilage, p.aorta)
        by_patient.setdefault(p.patient_id, set()).add(key)
    assert all(len(keys) == 1 for keys in by_patient.values())
