"""Label-balanced synthesis: prompt plans, batching, shards, resume, CLI errors, accelerate."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from PIL import Image
from typer.testing import CliRunner

from augmentor.prompts import balanced_prompts, parse_label_counts, row_seed, template_notes
from augmentor.synthesize import (
    generate_images,
    generator_digest,
    set_scheduler,
    synthesize,
    to_grayscale_uint8,
)
from augmentor.synthetic_set import committed_rows, shard_paths
from cli import app
from manifests.errors import UserError
from manifests.files import file_sha256
from manifests.io import Manifest, read_manifest, write_manifest
from manifests.schema import CHEXPERT_LABELS, NIH_LABELS, validate_frame
from tests.helpers import free_port, synthesis_config

runner = CliRunner()
BIN = Path(sys.executable).parent

# (report, positive labels); the effusion report also mentions a pneumothorax.
REPORTS = [
    ("Small right apical pneumothorax.", ("Pneumothorax",)),
    ("Left pneumothorax with a small left pleural effusion.", ("Pneumothorax", "Pleural Effusion")),
    ("Moderate bilateral pleural effusions.", ("Pleural Effusion",)),
    ("No acute cardiopulmonary process.", ("No Finding",)),
    ("Cardiomegaly without edema.", ("Cardiomegaly",)),
]


def prompts_manifest(root: Path, n: int = 20, train: int = 15, reports: bool = True) -> Path:
    """A report manifest: rows cycle through REPORTS; the first `train` rows are train."""
    rows = []
    for i in range(n):
        text, positives = REPORTS[i % len(REPORTS)]
        row = {
            "image_path": f"images/{i}.png",
            "source": "real",
            "dataset": "test",
            "patient_id": f"p{i}",
            "study_id": f"s{i}",
            "split": "train" if i < train else "test",
            "view": "PA",
            "sex": None,
            "age": np.nan,
            "report": text if reports else None,
        }
        row.update({label: 1.0 if label in positives else np.nan for label in CHEXPERT_LABELS})
        if "Cardiomegaly" in positives:
            row["Edema"] = 0.0
        rows.append(row)
    root.mkdir(parents=True, exist_ok=True)
    manifest = Manifest(rows=pd.DataFrame(rows), labels=CHEXPERT_LABELS, root=root)
    return write_manifest(manifest, root / "prompts.parquet", overwrite=True)


@pytest.fixture(scope="module")
def prompts(tmp_path_factory) -> Path:
    return prompts_manifest(tmp_path_factory.mktemp("prompts"))


def one_line_error(result, *fragments: str) -> None:
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


# ------------------------------------------------------------------------------------ plan


def test_parse_label_counts_spellings_and_errors():
    spec = "pneumothorax:5, Pleural Effusion:3,pleural-other:1"
    assert parse_label_counts(spec, CHEXPERT_LABELS) == {
        "Pneumothorax": 5,
        "Pleural Effusion": 3,
        "Pleural Other": 1,
    }
    for bad, message in [
        ("pneumothorax", "is not LABEL:COUNT"),
        ("pneumothorax:abc", "is not LABEL:COUNT"),
        (":5", "is not LABEL:COUNT"),
        ("pneumothorax:5,", "is not LABEL:COUNT"),
        ("pneumothorax:0", "must be a positive integer"),
        ("pneumothorax:-3", "must be a positive integer"),
        ("pneumothorax:1,PNEUMOTHORAX:2", "more than once"),
        ("pneumonitis:4", "unknown label 'pneumonitis'; valid: No Finding"),
    ]:
        with pytest.raises(UserError, match=message) as info:
            parse_label_counts(bad, CHEXPERT_LABELS)
        assert str(info.value).startswith("--labels")


def test_plan_counts_labels_from_reports_and_cycling(prompts):
    m = read_manifest(prompts)
    plan = balanced_prompts(m, {"pneumothorax": 7, "pleural_effusion": 2}, negatives=3, seed=0)
    assert plan["row"].tolist() == list(range(12))
    assert plan["target_label"].value_counts().to_dict() == {
        "Pneumothorax": 7,
        "Pleural Effusion": 2,
        "No Finding": 3,
    }
    train = m.rows[m.rows["split"] == "train"].set_index("study_id")
    for _, row in plan.iterrows():
        source = train.loc[row["prompt_study_id"]]  # a train study, never val/test
        assert row["prompt"] == source["report"] and row["prompt_source"] == "report"
        assert source[row["target_label"]] == 1.0
        # The row carries all labels of its report (an effusion that also says pneumothorax).
        for label in CHEXPERT_LABELS:
            assert np.array_equal(row[label], source[label], equal_nan=True), label
    assert (
        plan.loc[plan["prompt"].str.startswith("Left pneumothorax"), "Pleural Effusion"] == 1
    ).all()

    # 6 train studies report a pneumothorax: every one is used before any repeats.
    pneumo = plan[plan["target_label"] == "Pneumothorax"]["prompt_study_id"].tolist()
    pool = set(train.index[train["Pneumothorax"] == 1])
    assert len(pool) == 6 and set(pneumo[:6]) == pool and pneumo[6] in pool

    again = balanced_prompts(m, {"Pneumothorax": 7, "Pleural Effusion": 2}, negatives=3, seed=0)
    pd.testing.assert_frame_equal(plan, again)
    other = balanced_prompts(m, {"Pneumothorax": 7, "Pleural Effusion": 2}, negatives=3, seed=1)
    assert other["prompt_study_id"].tolist() != plan["prompt_study_id"].tolist()
    assert len(set(plan["seed"])) == len(plan)
    # A row's seed depends on (seed, row) only, not on the plan's size.
    assert plan["seed"].iloc[0] == row_seed(0, 0)
    small = balanced_prompts(m, {"Pneumothorax": 3}, seed=0)
    assert small["seed"].tolist() == plan["seed"].iloc[:3].tolist()


def test_plan_images_per_prompt_repeats_each_drawn_prompt(prompts):
    m = read_manifest(prompts)
    targets = {"pneumothorax": 7, "pleural_effusion": 2}
    one = balanced_prompts(m, targets, negatives=3, seed=0)
    four = balanced_prompts(m, targets, negatives=3, seed=0, images_per_prompt=4)
    # Counts stay exact; only the number of distinct prompts drawn changes.
    assert four["target_label"].tolist() == one["target_label"].tolist()
    assert four["seed"].tolist() == one["seed"].tolist()  # each row keeps its own seed
    assert one["prompt_group"].tolist() == list(range(12))  # K = 1: one row per draw
    sizes = four.groupby("prompt_group", sort=True).size().tolist()
    assert sizes == [4, 3, 2, 3]  # Pneumothorax 7 = 4 + 3, Pleural Effusion 2, No Finding 3
    for _, group in four.groupby("prompt_group"):
        assert group["row"].diff().dropna().eq(1).all()  # consecutive rows
        assert group["prompt"].nunique() == group["prompt_study_id"].nunique() == 1
        assert group["target_label"].nunique() == 1 and group["seed"].is_unique
    # The draws are K = 1's first ones: the same seeded stream per label.
    for label, n_draws in (("Pneumothorax", 2), ("Pleural Effusion", 1), ("No Finding", 1)):
        drawn = four[four["target_label"] == label].drop_duplicates("prompt_group")
        first = one[one["target_label"] == label]["prompt_study_id"].tolist()[:n_draws]
        assert drawn["prompt_study_id"].tolist() == first
    with pytest.raises(UserError, match="--images-per-prompt: 0; it must be 1 or more"):
        balanced_prompts(m, targets, images_per_prompt=0)


def test_plan_template_fallback_and_bad_manifests(tmp_path, prompts):
    m = read_manifest(prompts)
    plan = balanced_prompts(m, {"Edema": 2, "Pneumothorax": 1}, seed=0)
    edema = plan[plan["target_label"] == "Edema"]
    assert (edema["prompt"] == "Edema.").all() and (edema["prompt_source"] == "template").all()
    assert (edema["Edema"] == 1).all() and edema["Pneumothorax"].isna().all()
    assert template_notes(plan) == [
        "no positive train report for 'Edema'; 2 image(s) use the template prompt 'Edema.'"
    ]

    # A label set without 'No Finding': negatives are rows with no positive/uncertain label.
    rows = m.rows.rename(columns={"Pleural Effusion": "Effusion"})
    nih_rows = rows.assign(**{c: np.nan for c in NIH_LABELS if c not in rows.columns})
    nih = Manifest(rows=nih_rows, labels=NIH_LABELS, root=m.root)
    negatives = balanced_prompts(nih, {}, negatives=4, seed=0)
    assert (negatives["prompt"] == "No acute cardiopulmonary process.").all()
    assert negatives["prompt_source"].eq("report").all()

    no_train = read_manifest(prompts_manifest(tmp_path / "a", train=0))
    with pytest.raises(UserError, match="no rows in split 'train'"):
        balanced_prompts(no_train, {"Pneumothorax": 1})
    no_text = read_manifest(prompts_manifest(tmp_path / "b", reports=False))
    with pytest.raises(UserError, match="no train row has report text"):
        balanced_prompts(no_text, {"Pneumothorax": 1})


# ------------------------------------------------------------------------------- generation


def test_grayscale_and_scheduler_names(tiny_generator_dir):
    rgb = np.zeros((2, 4, 4, 3), dtype=np.float32)
    rgb[..., 0] = 1.0  # pure red -> luma 0.299
    gray = to_grayscale_uint8(rgb)
    assert gray.shape == (2, 4, 4) and gray.dtype == np.uint8 and gray[0, 0, 0] == 76
    assert to_grayscale_uint8(np.ones((1, 4, 4, 1)))[0, 0, 0] == 255

    from augmentor.base import load_pipeline

    pipe = load_pipeline(tiny_generator_dir)
    assert pipe.scheduler.config.get("clip_sample") is False  # tiny's config says so, as SD's
    assert set_scheduler(pipe, "DPM++") == "dpm++"
    assert type(pipe.scheduler).__name__ == "DPMSolverMultistepScheduler"
    with pytest.raises(UserError, match="--scheduler: unknown 'plms'; valid: pndm, ddim"):
        set_scheduler(pipe, "plms")
    # Latents are not clipped to [-1, 1]: not from tiny's config, nor from a config that
    # does not say (DDIM's and DDPM's own default clips, which wrecked every DDIM image).
    for name in ("ddim", "ddpm"):
        set_scheduler(pipe, name)
        assert pipe.scheduler.config.clip_sample is False
    from diffusers import PNDMScheduler

    pipe.scheduler = PNDMScheduler(skip_prk_steps=True)
    assert "clip_sample" not in pipe.scheduler.config
    set_scheduler(pipe, "ddim")
    assert pipe.scheduler.config.clip_sample is False


@pytest.mark.parametrize("scheduler", ["pndm", "euler-a"])
def test_row_image_does_not_depend_on_batch_mates(tiny_generator_dir, scheduler):
    from augmentor.base import load_pipeline

    pipe = load_pipeline(tiny_generator_dir)
    set_scheduler(pipe, scheduler)  # euler-a also draws sampler noise per step
    pipe.set_progress_bar_config(disable=True)
    prompts = [r for r, _ in REPORTS[:4]]
    seeds = [11, 22, 33, 44]
    batched = generate_images(pipe, prompts, seeds, 3, 4.0)
    assert batched.shape == (4, 64, 64) and batched.dtype == np.uint8
    for i in (0, 3):
        alone = generate_images(pipe, [prompts[i]], [seeds[i]], 3, 4.0)[0]
        assert np.abs(alone.astype(int) - batched[i].astype(int)).max() <= 1
    assert np.abs(batched[0].astype(int) - batched[1].astype(int)).max() > 5


def test_cli_small_balanced_synthesis(tmp_path, tiny_generator_dir, prompts):
    out = tmp_path / "synth"
    args = ["synthesize", "--model", str(tiny_generator_dir), "--prompts-from", str(prompts)]
    args += ["--labels", "pneumothorax:3,pleural_effusion:2", "--negatives", "1", "--out", str(out)]
    args += ["--num-inference-steps", "2", "--batch-size", "4", "--seed", "5"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "Pneumothorax: 3" in result.output and "generated 6" in result.output

    m = read_manifest(out / "manifest.parquet")  # validates against manifest v1
    counts = m.rows["target_label"].value_counts().to_dict()
    assert counts == {"Pneumothorax": 3, "Pleural Effusion": 2, "No Finding": 1}
    assert (m.rows["Pneumothorax"][m.rows["target_label"] == "Pneumothorax"] == 1).all()
    assert m.rows["plan_row"].tolist() == list(range(6))
    assert set(m.rows["source"]) == {"synthetic"} and set(m.rows["split"]) == {"train"}
    assert (m.rows["report"] == m.rows["prompt"]).all()
    assert (m.rows["num_inference_steps"] == 2).all() and (m.rows["scheduler"] == "pndm").all()
    assert (m.rows["guidance_scale"] == 4.0).all()
    digest = generator_digest(tiny_generator_dir)
    assert m.metadata["cxraug.generator_digest"] == digest and (m.rows["generator"] == digest).all()
    for path, sha in zip(m.image_paths(), m.rows["image_sha256"], strict=True):
        with Image.open(path) as img:
            assert img.mode == "L" and img.size == (64, 64)
        assert file_sha256(path) == sha
    assert sorted(p.name for p in (out / "images").iterdir()) == [f"{i:06d}.png" for i in range(6)]
    saved = json.loads((out / "synthesis.json").read_text())
    assert saved["config"]["seed"] == 5 and saved["identity"]["generator_digest"] == digest


def test_interrupt_then_resume_completes_without_duplicates(tmp_path, tiny_generator_dir, prompts):
    out = tmp_path / "synth"
    cfg = synthesis_config(
        tiny_generator_dir, prompts, out, labels="pneumothorax:5,pleural_effusion:3"
    )

    def stop_after_two_batches(committed: int) -> None:
        if committed >= 4:
            raise KeyboardInterrupt  # what Ctrl-C looks like to the loop

    with pytest.raises(KeyboardInterrupt):
        synthesize(cfg, on_batch=stop_after_two_batches)
    assert not (out / "manifest.parquet").exists()
    assert committed_rows(out) == {0, 1, 2, 3}
    for shard in shard_paths(out):  # the partial state is a valid set of shards
        validate_frame(pq.read_table(shard).to_pandas(), CHEXPERT_LABELS, str(shard))

    with pytest.raises(UserError, match="pass --resume to continue it"):
        synthesize(
            synthesis_config(
                tiny_generator_dir, prompts, out, labels="pneumothorax:5,pleural_effusion:3"
            )
        )
    changed = synthesis_config(
        tiny_generator_dir,
        prompts,
        out,
        labels="pneumothorax:5,pleural_effusion:3",
        resume=True,
        seed=9,
    )
    with pytest.raises(UserError, match="seed=0, now 9"):
        synthesize(changed)

    resumed = synthesis_config(
        tiny_generator_dir,
        prompts,
        out,
        labels="pneumothorax:5,pleural_effusion:3",
        resume=True,
        batch_size=3,
    )
    result = synthesize(resumed)
    assert (result.skipped, result.generated) == (4, 4)
    m = read_manifest(result.manifest)
    assert m.rows["plan_row"].tolist() == list(range(8))
    assert m.rows["target_label"].value_counts().to_dict() == {
        "Pneumothorax": 5,
        "Pleural Effusion": 3,
    }
    assert len(list((out / "images").glob("*.png"))) == 8
    assert synthesize(resumed).generated == 0  # resuming a finished run is a no-op


def test_images_per_prompt_synthesis_resumes_and_keeps_its_k(tmp_path, tiny_generator_dir, prompts):
    out = tmp_path / "synth"
    labels = "pneumothorax:4,pleural_effusion:2"
    cfg = synthesis_config(tiny_generator_dir, prompts, out, labels=labels, images_per_prompt=2)

    def stop_after_first_batch(committed: int) -> None:
        if committed >= 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        synthesize(cfg, on_batch=stop_after_first_batch)
    assert committed_rows(out) == {0, 1}
    with pytest.raises(UserError, match="images_per_prompt=2, now 3"):
        synthesize(
            synthesis_config(
                tiny_generator_dir, prompts, out, labels=labels, images_per_prompt=3, resume=True
            )
        )
    resumed = synthesis_config(
        tiny_generator_dir, prompts, out, labels=labels, images_per_prompt=2, resume=True
    )
    result = synthesize(resumed)
    assert (result.skipped, result.generated) == (2, 4)
    rows = read_manifest(result.manifest).rows
    assert rows["plan_row"].tolist() == list(range(6))
    assert rows["target_label"].value_counts().to_dict() == {
        "Pneumothorax": 4,
        "Pleural Effusion": 2,
    }
    assert rows["prompt_group"].tolist() == [0, 0, 1, 1, 2, 2]
    for _, group in rows.groupby("prompt_group"):  # one prompt, K images, K seeds
        assert group["prompt"].nunique() == 1 and group["seed"].nunique() == 2
        assert group["image_sha256"].nunique() == 2
    assert json.loads((out / "synthesis.json").read_text())["identity"]["images_per_prompt"] == 2
    bad = runner.invoke(
        app,
        ["synthesize", "--model", str(tiny_generator_dir), "--prompts-from", str(prompts),
         "--labels", labels, "--out", str(tmp_path / "o"), "--images-per-prompt", "0"],
    )  # fmt: skip
    one_line_error(bad, "--images-per-prompt: 0; it must be 1 or more")


def test_sigkill_leaves_valid_shards_and_resume_finishes(tmp_path, tiny_generator_dir, prompts):
    out = tmp_path / "synth"
    args = [str(BIN / "cxraug"), "synthesize", "--model", str(tiny_generator_dir)]
    args += ["--prompts-from", str(prompts), "--labels", "pneumothorax:60", "--out", str(out)]
    args += ["--num-inference-steps", "2", "--batch-size", "2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        deadline = time.monotonic() + 120
        while len(shard_paths(out)) < 2 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    done = committed_rows(out)
    assert 0 < len(done) < 60 and not (out / "manifest.parquet").exists()
    for shard in shard_paths(out):
        validate_frame(pq.read_table(shard).to_pandas(), CHEXPERT_LABELS, str(shard))

    args = args[1:-4] + ["--num-inference-steps", "2", "--batch-size", "8", "--resume"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    m = read_manifest(out / "manifest.parquet")
    assert (
        m.rows["plan_row"].tolist() == list(range(60)) and not m.rows["plan_row"].duplicated().any()
    )
    assert not list((out / "images").glob(".*.tmp"))


# ------------------------------------------------------------------------------- bad input


@pytest.fixture
def broken_model(tmp_path) -> Path:
    """A pipeline folder without its autoencoder."""
    model = tmp_path / "broken"
    for component in ("unet", "text_encoder", "tokenizer", "scheduler"):
        (model / component).mkdir(parents=True)
    (model / "model_index.json").write_text("{}")
    return model


@pytest.mark.parametrize(
    ("labels", "fragments"),
    [
        ("pneumonitis:4", ["--labels: unknown label 'pneumonitis'", "valid: No Finding"]),
        ("pneumothorax:0", ["--labels", "must be a positive integer"]),
        ("pneumothorax:-2", ["--labels", "must be a positive integer"]),
        ("pneumothorax", ["--labels", "is not LABEL:COUNT"]),
        ("pneumothorax:abc", ["--labels", "is not LABEL:COUNT"]),
        (":5", ["--labels", "is not LABEL:COUNT"]),
    ],
)
def test_cli_bad_labels(tmp_path, tiny_generator_dir, prompts, labels, fragments):
    args = ["synthesize", "--model", str(tiny_generator_dir), "--prompts-from", str(prompts)]
    result = runner.invoke(app, [*args, "--labels", labels, "--out", str(tmp_path / "o")])
    one_line_error(result, *fragments)
    assert not (tmp_path / "o").exists()


def test_cli_bad_model_prompts_and_existing_output(
    tmp_path, tiny_generator_dir, prompts, broken_model
):
    def run(model: Path, prompts_path: Path, out: Path, *extra: str):
        args = ["synthesize", "--model", str(model), "--prompts-from", str(prompts_path)]
        return runner.invoke(app, [*args, "--labels", "pneumothorax:1", "--out", str(out), *extra])

    one_line_error(run(broken_model, prompts, tmp_path / "o"), "missing component", "vae")
    one_line_error(run(tmp_path / "nowhere", prompts, tmp_path / "o"), "model directory not found")
    no_train = prompts_manifest(tmp_path / "p", train=0)
    one_line_error(run(tiny_generator_dir, no_train, tmp_path / "o"), "no rows in split 'train'")
    no_text = prompts_manifest(tmp_path / "q", reports=False)
    one_line_error(run(tiny_generator_dir, no_text, tmp_path / "o"), "no train row has report text")
    one_line_error(run(tiny_generator_dir, tmp_path / "none.parquet", tmp_path / "o"), "not found")
    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "keep.txt").write_text("mine")
    one_line_error(
        run(tiny_generator_dir, prompts, existing), "already exists", "not a synthetic set"
    )
    one_line_error(run(tiny_generator_dir, prompts, existing, "--resume"), "no synthesis.json")
    one_line_error(
        run(tiny_generator_dir, prompts, existing, "--resume", "--overwrite"), "exclude each other"
    )
    one_line_error(run(tiny_generator_dir, prompts, existing, "--scheduler", "plms"), "--scheduler")
    assert not (tmp_path / "o").exists() and (existing / "keep.txt").read_text() == "mine"


def test_generator_digest_tracks_content(tmp_path):
    model = tmp_path / "m"
    (model / "unet").mkdir(parents=True)
    (model / "unet" / "w.safetensors").write_bytes(b"a" * 100)
    (model / "cxraug.json").write_text("{}")
    first = generator_digest(model)
    assert first == generator_digest(model) and len(first) == 16
    (model / "unet" / "w.safetensors").write_bytes(b"b" * 100)  # same size, new weights
    assert generator_digest(model) != first


# ------------------------------------------------------------------------------------ scale


def test_accelerate_two_cpu_processes(tmp_path, tiny_generator_dir, prompts):
    out = tmp_path / "synth"
    # `accelerate launch --cpu` starts a single process; several CPU processes come from the
    # torchrun launcher (`--multi_gpu`) with ACCELERATE_USE_CPU=1.
    args = [str(BIN / "accelerate"), "launch", "--multi_gpu", "--num_processes", "2"]
    args += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    args += ["--main_process_port", str(free_port())]  # its own, beside other tests' launches
    args += [str(BIN / "cxraug"), "synthesize", "--model", str(tiny_generator_dir)]
    args += ["--prompts-from", str(prompts), "--labels", "pneumothorax:5,pleural_effusion:4"]
    args += [
        "--negatives",
        "2",
        "--images-per-prompt",
        "2",
        "--out",
        str(out),
        "--num-inference-steps",
        "2",
        "--batch-size",
        "2",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "1"}
    env["HF_HOME"] = str(tmp_path / "hf")  # no user accelerate config
    done = subprocess.run(args, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("wrote ") == 1  # only the main process reports
    m = read_manifest(out / "manifest.parquet")
    assert m.rows["target_label"].value_counts().to_dict() == {
        "Pneumothorax": 5,
        "Pleural Effusion": 4,
        "No Finding": 2,
    }
    assert m.rows["plan_row"].tolist() == list(range(11))
    # Two images per drawn prompt, split across the ranks row by row: 5 = 2 + 2 + 1, 4, 2.
    assert m.rows.groupby("prompt_group").size().tolist() == [2, 2, 1, 2, 2, 2]
    assert m.rows.groupby("prompt_group")["prompt"].nunique().eq(1).all()
    ranks = {p.name.split("-")[1] for p in shard_paths(out)}
    assert ranks == {"0", "1"}
    shutil.rmtree(out)


# ------------------------------------------------------------------------------------ --fast


def test_fast_sampler_is_cheaper_than_roentgens_default():
    from augmentor.config import (
        DEFAULT_GUIDANCE_SCALE,
        DEFAULT_SCHEDULER,
        DEFAULT_STEPS,
        FAST_SAMPLER,
        SCHEDULERS,
    )

    assert (DEFAULT_SCHEDULER, DEFAULT_STEPS, DEFAULT_GUIDANCE_SCALE) == ("pndm", 75, 4.0)
    scheduler, steps, guidance = FAST_SAMPLER
    assert scheduler in SCHEDULERS and 1 <= steps < DEFAULT_STEPS and guidance >= 0


def test_cli_fast_applies_the_fast_sampler(tmp_path, tiny_generator_dir, prompts, monkeypatch):
    import cli

    monkeypatch.setattr(cli, "FAST_SAMPLER", ("ddim", 2, 3.0))  # the real one takes 10 steps
    out = tmp_path / "synth"
    args = ["synthesize", "--model", str(tiny_generator_dir), "--prompts-from", str(prompts)]
    args += ["--labels", "pneumothorax:2", "--out", str(out), "--batch-size", "2", "--fast"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    rows = read_manifest(out / "manifest.parquet").rows
    assert (rows["scheduler"] == "ddim").all() and (rows["num_inference_steps"] == 2).all()
    assert (rows["guidance_scale"] == 3.0).all()
    config = json.loads((out / "synthesis.json").read_text())["config"]
    sampler = [config[k] for k in ("scheduler", "num_inference_steps", "guidance_scale")]
    assert sampler == ["ddim", 2, 3.0]


@pytest.mark.parametrize(
    "extra", [["--scheduler", "pndm"], ["--num-inference-steps", "75"], ["--guidance-scale", "4"]]
)
def test_cli_fast_with_a_sampler_flag_is_one_line_error(
    tmp_path, tiny_generator_dir, prompts, extra
):
    """Even a value equal to the default: the user said two things."""
    args = ["synthesize", "--model", str(tiny_generator_dir), "--prompts-from", str(prompts)]
    args += ["--labels", "pneumothorax:1", "--out", str(tmp_path / "o"), "--fast", *extra]
    one_line_error(runner.invoke(app, args), "--fast and " + extra[0], "exclude each other")
    assert not (tmp_path / "o").exists()
