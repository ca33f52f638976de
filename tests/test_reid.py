"""Patient re-identification audit: the verification model, its threshold, the audit's
tables on a memorizing and an honest synthetic set, `evaluate-generator --privacy` and the
dataset card's Privacy section."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from augmentor.card import NO_REID_AUDIT, synthesis_provenance
from augmentor.eval_config import GeneratorEvalConfig
from augmentor.eval_folder import PRIVACY_IMAGES, PRIVACY_TABLE
from augmentor.features import image_hashes
from augmentor.privacy import SYN_NEAREST, SYN_PROMPT, TRAIN_OWN, VAL_OTHER, audit_privacy
from augmentor.reid import (
    ReidSettings,
    fit_reid,
    heldout_pairs,
    load_or_fit_reid,
    patient_scores,
    verification_threshold,
)
from manifests.errors import UserError
from manifests.export import dataset_card
from manifests.files import file_sha256
from manifests.images import load_image, save_png
from manifests.io import Manifest, read_manifest, write_manifest
from manifests.phantom import write_phantom_dataset
from tests.helpers import image_folder, write_split_phantom

STEPS = 200  # verification-model steps in these tests (seconds on one CPU thread)


def _synthetic(root: Path, real: Manifest, sources: list[Path], patients: list[str]) -> Path:
    """A synthetic manifest of the images `sources` (copied into `root/images`), each
    prompted by a report of `patients[k]`; half under each prompt policy."""
    rows = []
    for k, (source, patient) in enumerate(zip(sources, patients, strict=True)):
        target = root / "images" / f"{k:04d}.png"
        shutil.copyfile(source, target)
        label = ("Support Devices", "Cardiomegaly")[k % 2]
        row = {c: None for c in real.rows.columns}
        row.update({lab: np.nan for lab in real.labels})
        row.update(
            image_path=f"images/{k:04d}.png",
            source="synthetic",
            dataset="synthetic",
            patient_id=f"synthetic-{k}",
            study_id=f"synthetic-{k}",
            split="train",
            age=np.nan,
            report=f"{label}.",
            prompt=f"{label}, case {k}.",
            seed=k,
            guidance_scale=4.0,
            num_inference_steps=2,
            scheduler="pndm",
            target_label=label,
            generator="test",
            image_sha256=file_sha256(target),
            prompt_group=k,
            prompt_source="report",
            prompt_policy=("clean", "raw")[(k // 2) % 2],
            prompt_study_id=f"{patient}-s0",
            prompt_patient_id=patient,
        )
        row[label] = 1.0
        rows.append(row)
    manifest = Manifest(rows=pd.DataFrame(rows), labels=real.labels, root=root)
    return write_manifest(manifest, root / "synthetic.parquet")


@pytest.fixture(scope="module")
def phantom_manifest(tmp_path_factory) -> Path:
    """96 phantom images (64 px) of 32 patients, three studies each, split by patient:
    enough val patients for a threshold, enough train patients for pairs."""
    return write_split_phantom(tmp_path_factory.mktemp("reid-phantom"), n=96, seed=0, patients=32)


@pytest.fixture(scope="module")
def real(phantom_manifest) -> Manifest:
    return read_manifest(phantom_manifest)


@pytest.fixture(scope="module")
def memorizing(tmp_path_factory, real) -> Path:
    """A generator that redraws its prompting patient: every synthetic image is one of that
    patient's real train images, byte for byte or under light noise."""
    root = image_folder(tmp_path_factory, "memorizing")
    train = np.flatnonzero(real.rows["split"].to_numpy() == "train")
    paths = real.image_paths()
    path = _synthetic(
        root, real, [paths[i] for i in train], real.rows["patient_id"].iloc[train].tolist()
    )
    rng = np.random.default_rng(0)
    for k in range(1, len(train), 2):  # every other copy lightly noised
        target = root / "images" / f"{k:04d}.png"
        img = load_image(target).astype(np.float64) + rng.normal(0, 2, (64, 64))
        save_png(np.clip(img, 0, 255).astype(np.uint8), target)
    manifest = read_manifest(path)
    manifest.rows["image_sha256"] = [file_sha256(p) for p in manifest.image_paths()]
    return write_manifest(manifest, path, overwrite=True)


@pytest.fixture(scope="module")
def honest(tmp_path_factory, real) -> Path:
    """A generator that draws other people: phantoms of patients nobody else draws
    (`first_patient` past every other pool), each prompted by a train patient's report."""
    pool = tmp_path_factory.mktemp("unseen")
    unseen = read_manifest(
        write_phantom_dataset(pool, n=30, size=64, seed=0, patients=10, first_patient=5000)
    )
    root = image_folder(tmp_path_factory, "honest")
    train_patients = sorted(set(real.rows.loc[real.rows["split"] == "train", "patient_id"]))
    prompted = [train_patients[k % len(train_patients)] for k in range(len(unseen))]
    return _synthetic(root, real, unseen.image_paths(), prompted)


def _audit(synthetic: Path, real_path: Path, out: Path, cache: Path, **kw):
    cfg = GeneratorEvalConfig(
        synthetic=synthetic, real=real_path, out=out, reid_steps=STEPS, device="cpu", **kw
    )
    syn, real = read_manifest(synthetic), read_manifest(real_path)
    out.mkdir(parents=True, exist_ok=True)
    return audit_privacy(syn, real, image_hashes(syn), image_hashes(real), cache, cfg)


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    """One cache for this module's audits: one verification model, trained once."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def audits(tmp_path_factory, memorizing, honest, phantom_manifest, cache):
    out = tmp_path_factory.mktemp("audits")
    return {
        name: _audit(synthetic, phantom_manifest, out / name, cache)
        for name, synthetic in (("memorizing", memorizing), ("honest", honest))
    }


def _row(table: pd.DataFrame, comparison: str, group: str = "all") -> pd.Series:
    return table[(table["comparison"] == comparison) & (table["group"] == group)].iloc[0]


# ---------------------------------------------------------------- threshold and scores


def test_threshold_allows_at_most_the_false_match_rate():
    different = np.linspace(0, 1, 201)  # 201 distinct scores
    for rate in (0.01, 0.05, 0.2):
        t = verification_threshold(different, rate)
        assert (different > t).mean() <= rate
        assert (different >= t).mean() > rate  # the lowest such threshold
    assert verification_threshold(different[:10], 0.01) == different[9]  # few pairs: their max
    with pytest.raises(UserError, match="--false-match-rate"):
        verification_threshold(different, 0.0)
    with pytest.raises(UserError, match="2 patients"):
        verification_threshold(np.zeros(0), 0.01)


def test_patient_scores_take_the_best_image_and_skip_the_own_study():
    ref = np.eye(3)
    query = np.array([[1.0, 0, 0], [0, 0.6, 0.8]])
    scores = patient_scores(query, ["a", "b"], ref, np.array(["a", "b", "b"]))
    np.testing.assert_allclose(scores, [1.0, 0.8])
    same = patient_scores(
        ref, ["a", "b", "b"], ref, np.array(["a", "b", "b"]), ["s1", "s2", "s3"],
        np.array(["s1", "s2", "s3"]),
    )  # fmt: skip
    assert np.isnan(same[0]) and same[1] == 0.0  # a has one study; b's two are orthogonal
    assert np.isnan(patient_scores(query, [None, "z"], ref, np.array(["a", "b", "b"]))).all()


def test_verification_model_is_deterministic_by_seed(real):
    rows = real.rows[real.rows["split"] == "train"]
    paths = [real.root / p for p in rows["image_path"]]
    args = (paths, rows["patient_id"].to_numpy(), rows["study_id"].to_numpy())
    first, losses = fit_reid(*args, ReidSettings(steps=5))
    again, _ = fit_reid(*args, ReidSettings(steps=5))
    other, _ = fit_reid(*args, ReidSettings(steps=5, seed=1))
    for name, value in first.state_dict().items():
        assert torch.equal(value, again.state_dict()[name]), name
    assert not torch.equal(first.net[0].weight, other.net[0].weight)
    assert len(losses) == 5 and all(np.isfinite(losses))
    one_study = rows.drop_duplicates("patient_id")
    with pytest.raises(UserError, match="two or more studies"):
        fit_reid(
            [real.root / p for p in one_study["image_path"]],
            one_study["patient_id"].to_numpy(), one_study["study_id"].to_numpy(),
            ReidSettings(steps=1),
        )  # fmt: skip


def test_audit_threshold_comes_from_val_pairs_at_the_requested_rate(
    audits, real, memorizing, phantom_manifest, cache, tmp_path
):
    audit = audits["memorizing"]
    summary = audit.summary
    # Recompute from the embeddings the audit cached: val images only, other patients.
    rows = real.rows
    val = np.flatnonzero(rows["split"].to_numpy() == "val")
    hashes = image_hashes(real)
    train = np.flatnonzero(rows["split"].to_numpy() == "train")
    embedder, record = load_or_fit_reid(
        [real.image_paths()[i] for i in train], [hashes[i] for i in train],
        rows["patient_id"].to_numpy()[train], rows["study_id"].to_numpy()[train],
        ReidSettings(steps=STEPS), cache,
    )  # fmt: skip
    assert record["key"] == summary["model"]["key"]  # reused, not retrained
    emb = embedder([load_image(real.image_paths()[i]) for i in val])["reid"]
    same, different = heldout_pairs(
        emb, rows["patient_id"].to_numpy()[val], rows["study_id"].to_numpy()[val]
    )
    assert summary["threshold_pairs"]["different_patient"] == len(different) > 0
    assert summary["threshold"] == pytest.approx(verification_threshold(different, 0.01), abs=1e-6)
    assert summary["threshold"] == pytest.approx(different.max(), abs=1e-6)  # n < 100 pairs
    # A looser rate gives a lower threshold that lets through about that share of pairs.
    loose = _audit(memorizing, phantom_manifest, tmp_path, cache, false_match_rate=0.25)
    assert loose.summary["threshold"] < summary["threshold"]
    assert loose.summary["val_false_match_rate"] <= 0.25
    assert loose.summary["val_false_match_rate"] > 0.1


# ---------------------------------------------------------------- the audit


def test_memorizing_generator_is_flagged_far_above_baseline(audits):
    table = audits["memorizing"].table
    syn, base = _row(table, SYN_PROMPT), _row(table, VAL_OTHER)
    n = len(audits["memorizing"].images)  # one per real train image
    assert n >= 30 and syn["n"] == n and syn["clusters"] == n
    assert syn["share_above"] >= 0.9, table
    assert syn["share_above"] - base["share_above"] >= 0.6
    assert syn["share_low"] > base["share_high"]  # the intervals do not meet
    assert syn["max_score"] == pytest.approx(1.0, abs=1e-5)  # a byte copy scores 1
    assert _row(table, SYN_NEAREST)["share_above"] >= 0.9
    # per prompted label and per prompt policy
    for group in ("target_label=Cardiomegaly", "target_label=Support Devices",
                  "prompt_policy=clean", "prompt_policy=raw"):  # fmt: skip
        assert _row(table, SYN_PROMPT, group)["share_above"] >= 0.8
    images = audits["memorizing"].images
    assert images["prompt_patient_match"].mean() == syn["share_above"]
    assert (images["nearest_patient_id"] == images["prompt_patient_id"]).mean() >= 0.9


def test_honest_generator_passes_near_the_baseline(audits):
    table = audits["honest"].table
    syn, base = _row(table, SYN_PROMPT), _row(table, VAL_OTHER)
    assert syn["n"] == 30
    assert syn["share_above"] <= 0.2, table
    assert abs(syn["share_above"] - base["share_above"]) <= 0.2
    assert syn["max_score"] < 0.9999  # no image is a copy
    # same model (shared cache), same threshold, same baseline
    assert audits["honest"].summary["threshold"] == audits["memorizing"].summary["threshold"]
    assert base["share_above"] == _row(audits["memorizing"].table, VAL_OTHER)["share_above"]
    # the positive control: train images find their own patient's other studies
    assert _row(table, TRAIN_OWN)["mean_score"] > base["mean_score"]


def test_template_and_unnamed_prompts_are_not_audited(honest, phantom_manifest, cache, tmp_path):
    manifest = read_manifest(honest)
    manifest.rows.loc[:4, "prompt_source"] = "template"
    manifest.rows.loc[5:9, "prompt_patient_id"] = None
    path = write_manifest(manifest, honest.parent / "partial.parquet", overwrite=True)
    audit = _audit(path, phantom_manifest, tmp_path, cache)
    assert audit.summary["n_audited"] == 20
    assert audit.summary["not_audited"]["template prompt"] == 5
    assert audit.summary["not_audited"]["no prompting patient recorded"] == 5
    assert _row(audit.table, SYN_PROMPT)["n"] == 20
    assert _row(audit.table, SYN_NEAREST)["n"] == 30  # the nearest search covers every image


# ---------------------------------------------------------------- CLI and card


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory, memorizing, phantom_manifest):
    """`cxraug evaluate-generator --privacy` on the memorizing set."""
    import timm
    import torch
    from safetensors.torch import save_model

    from cli import app

    run = tmp_path_factory.mktemp("features")
    torch.manual_seed(0)
    labels = list(read_manifest(phantom_manifest).labels)
    save_model(timm.create_model("test_resnet", num_classes=len(labels), in_chans=1),
               str(run / "model.safetensors"))  # fmt: skip
    config = {"backbone": "test_resnet", "labels": labels, "image_size": 64, "mean": 0.5,
              "std": 0.25}  # fmt: skip
    (run / "config.json").write_text(json.dumps(config))
    out = memorizing.parent / "eval"
    args = ["evaluate-generator", "--synthetic", str(memorizing), "--real", str(phantom_manifest),
            "--features", str(run), "--out", str(out), "--privacy", "--max-pairs", "2"]  # fmt: skip
    return out, CliRunner().invoke(app, args)


def test_cli_privacy_prints_the_table_beside_its_baseline(evaluated, memorizing):
    out, result = evaluated
    assert result.exit_code == 0, result.output
    assert "re-identification: threshold" in result.output
    for comparison in (SYN_PROMPT, VAL_OTHER, SYN_NEAREST, TRAIN_OWN):
        assert comparison in result.output
    doc = json.loads((out / "generator_eval.json").read_text())
    privacy = doc["privacy"]
    assert privacy["synthetic"]["share_above"] >= 0.9
    assert privacy["baseline"]["comparison"] == VAL_OTHER
    assert privacy["false_match_rate"] == 0.01 and privacy["prompt_policies"] == ["clean", "raw"]
    table = pd.read_csv(out / PRIVACY_TABLE)
    assert len(table) == len(privacy["rows"]) and SYN_PROMPT in set(table["comparison"])
    assert len(pd.read_csv(out / PRIVACY_IMAGES)) == len(read_manifest(memorizing))
    assert (out / "feature_cache" / "reid").is_dir()  # the model, saved for a rerun
    # the report's generator section (cxraug report, cxraug study) carries the audit
    from augmentor.eval_folder import generator_section

    section = generator_section(out)
    for fragment in (section["md"], section["html"]):
        assert "Re-identification audit" in fragment and SYN_PROMPT in fragment
        assert VAL_OTHER in fragment


def test_bad_false_match_rate_is_one_line(memorizing, phantom_manifest, cache, tmp_path):
    with pytest.raises(UserError, match="--false-match-rate: 1.5"):
        _audit(memorizing, phantom_manifest, tmp_path, cache, false_match_rate=1.5)


def test_evaluate_generator_help_lists_privacy():
    from cli import app

    result = CliRunner().invoke(app, ["evaluate-generator", "--help"])
    assert "--privacy" in result.output and "--false-match-rate" in result.output


def test_card_has_privacy_section(evaluated, memorizing, honest):
    out, result = evaluated
    assert result.exit_code == 0, result.output
    manifest = read_manifest(memorizing)
    provenance = synthesis_provenance(memorizing, out)
    card = dataset_card(manifest, {"train": len(manifest)}, provenance)
    section = card.split("## Privacy", 1)[1].split("## Licence", 1)[0]
    assert "Prompt policy: `raw`" in section  # no provenance record: reports as written
    assert "synthetic vs prompting patient" in section and "baseline" in section
    share = json.loads((out / "generator_eval.json").read_text())["privacy"]["synthetic"]
    assert f"{share['share_above']:.3f}" in section
    assert "not a guarantee" in section and "credentialed" in section
    # without an audit the card says so
    bare = synthesis_provenance(honest)
    card = dataset_card(read_manifest(honest), {"train": 30}, bare)
    assert NO_REID_AUDIT in card and "not a guarantee" in card
