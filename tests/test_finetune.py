"""Fine-tuning on the tiny base and phantom data: a few steps each, seconds per test."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

import augmentor.finetune as ft
from augmentor import generator
from augmentor.base import build_tiny_pipeline, check_pipeline_dir
from augmentor.config import FinetuneConfig
from augmentor.finetune import finetune
from augmentor.latents import (
    cache_latents,
    encode_posterior,
    load_pixels,
    preprocess_image,
    sample_latents,
)
from augmentor.train_inputs import load_train_data
from classifier.training.checkpointer import Checkpointer
from classifier.training.state import load_tree
from cli import app
from manifests.errors import UserError
from manifests.io import manifest_digest, read_manifest, write_manifest
from manifests.provenance import patients_digest
from manifests.runfolder import checkpoint_step, latest_checkpoint, list_checkpoints
from tests.helpers import free_port

CXRAUG = Path(sys.executable).parent / "cxraug"
ACCELERATE = Path(sys.executable).parent / "accelerate"


def _cfg(manifest: Path, out: Path, **kw) -> FinetuneConfig:
    base = dict(
        manifest=str(manifest),
        base="tiny",
        out=str(out),
        batch_size=4,
        max_steps=2,
        autoencoder_steps=2,
        checkpointing_steps=2,
        show_progress=False,
    )
    base.update(kw)
    return FinetuneConfig(**base)


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    files = sorted(folder.glob("*.safetensors"))
    assert files, f"no safetensors in {folder}"
    out: dict[str, torch.Tensor] = {}
    for f in files:
        out.update(load_file(f))
    return out


def _changed(a: dict, b: dict) -> set[str]:
    assert set(a) == set(b)
    return {k for k in a if not torch.equal(a[k], b[k])}


@pytest.fixture(scope="module")
def base_tiny():
    return build_tiny_pipeline()


@pytest.fixture(scope="module")
def finished_run(phantom_manifest, tmp_path_factory) -> Path:
    """3 steps with EMA, validation images every 2 steps, checkpoints every 2 keeping 1."""
    out = tmp_path_factory.mktemp("ft") / "gen"
    cfg = _cfg(
        phantom_manifest,
        out,
        max_steps=3,
        ema=True,
        ema_decay=0.5,
        checkpoints_total_limit=1,
        validation_prompts=("Large right pleural effusion.", "No acute cardiopulmonary process."),
        validation_steps=2,
        validation_inference_steps=2,
    )
    assert finetune(cfg) == out
    return out


# ------------------------------------------------------------------ save and load


def test_finetune_writes_a_pipeline_plain_diffusers_loads(finished_run, phantom_manifest):
    from diffusers import StableDiffusionPipeline

    out = finished_run
    check_pipeline_dir(out)
    for component in ("unet", "vae", "text_encoder"):
        files = os.listdir(out / component)
        assert any(f.endswith(".safetensors") for f in files)
        assert not any(f.endswith(".bin") for f in files), files
    record = json.loads((out / "cxraug.json").read_text())
    assert record["global_step"] == 3
    assert record["manifest_digest"] == manifest_digest(phantom_manifest)
    assert record["config"]["max_steps"] == 3 and record["base"] == "tiny"
    assert record["resolution"] == 64 and record["image_channels"] == 1
    rows = read_manifest(phantom_manifest).rows
    assert record["n_train_images"] == int(
        ((rows["split"] == "train") & (rows["source"] == "real")).sum()
    )
    assert record["autoencoder_fit"] is None  # tiny's pretrained autoencoder, frozen
    assert generator.read_generator_record(out) == record

    # The patients that trained it: exactly the real train patients, none of val or test.
    train = rows[(rows["split"] == "train") & (rows["source"] == "real")]
    patients = generator.training_patients(out)
    assert patients == sorted(set(train["patient_id"]))
    assert not set(patients) & set(rows.loc[rows["split"] != "train", "patient_id"])
    saved = json.loads((out / "training_patients.json").read_text())
    assert saved["digest"] == patients_digest(patients)
    assert record["training_patients_digest"] == saved["digest"]
    assert [s for s, _ in record["losses"]] == [1, 2, 3]

    pipe = StableDiffusionPipeline.from_pretrained(out)
    assert pipe.vae.config.scaling_factor == pytest.approx(record["latent_scaling_factor"])
    image = pipe(
        "Small left pneumothorax.",
        num_inference_steps=2,
        height=64,
        width=64,
        generator=torch.Generator().manual_seed(0),
        output_type="np",
    ).images
    assert image.shape == (1, 64, 64, 1) and np.isfinite(image).all()

    # Validation grids at steps 2 and 3 (the last step), one tile per prompt.
    grids = sorted(p.name for p in (out / "validation").glob("*.png"))
    assert grids == ["step-0000002.png", "step-0000003.png"]
    from PIL import Image

    assert Image.open(out / "validation" / grids[-1]).size == (128, 64)
    # Only the newest checkpoint is kept (limit 1); it is the final step.
    assert [p.name for p in list_checkpoints(out)] == ["checkpoint-3"]
    # A checkpoint holds safetensors and JSON only: nothing a resume would unpickle.
    assert {p.suffix for p in (out / "checkpoints" / "checkpoint-3").iterdir()} == {
        ".safetensors",
        ".json",
    }


def test_ema_weights_are_saved(finished_run):
    """The exported UNet holds the EMA shadow weights, not the raw trained ones."""
    out = finished_run
    saved = _weights(out / "unet")
    raw = load_file(out / "checkpoints" / "checkpoint-3" / "unet.safetensors")
    assert _changed(saved, {k: raw[k] for k in saved})  # EMA differs from the raw weights
    shadow = load_tree(out / "checkpoints" / "checkpoint-3", "ema")["shadow_params"]
    unet = build_tiny_pipeline().unet
    names = [n for n, _ in unet.named_parameters()]
    assert len(shadow) == len(names)
    for name, value in zip(names, shadow, strict=True):
        torch.testing.assert_close(saved[name], value.float())


def test_frozen_text_encoder_is_unchanged(finished_run, base_tiny):
    te = _weights(finished_run / "text_encoder")
    base = base_tiny.text_encoder.state_dict()
    assert not _changed(te, {k: base[k] for k in te})


# ------------------------------------------------------------------ resume


def test_interrupted_run_resumes_to_the_same_weights(phantom_manifest, tmp_path, monkeypatch):
    """Killed after its step-2 checkpoint, `--resume` continues to step 4 exactly.

    A pickle planted in the checkpoint (where accelerate's `load_state` would unpickle it)
    is never run.
    """
    straight = finetune(_cfg(phantom_manifest, tmp_path / "straight", max_steps=4))

    real_save = Checkpointer.save

    def save_then_die(self, step, trainer):
        real_save(self, step, trainer)
        raise KeyboardInterrupt("simulated kill after the first checkpoint")

    monkeypatch.setattr(Checkpointer, "save", save_then_die)
    cfg = _cfg(phantom_manifest, tmp_path / "killed", max_steps=4)
    with pytest.raises(KeyboardInterrupt):
        finetune(cfg)
    monkeypatch.setattr(Checkpointer, "save", real_save)
    killed = Path(cfg.out)
    assert not (killed / "cxraug.json").exists()  # not marked finished
    assert latest_checkpoint(killed).name == "checkpoint-2"

    # Without --resume the folder is refused; changing what trains is refused too.
    with pytest.raises(UserError, match="--resume"):
        finetune(cfg)
    with pytest.raises(UserError, match="learning_rate"):
        finetune(replace(cfg, resume=True, learning_rate=1e-2))

    marker = tmp_path / "pwned"
    _plant_pickles(latest_checkpoint(killed), marker)
    finetune(replace(cfg, resume=True))
    assert not marker.exists()  # the planted pickles were never loaded
    record = json.loads((killed / "cxraug.json").read_text())
    assert record["global_step"] == 4 and record["resumed_from"] == [2]
    assert [s for s, _ in record["losses"]] == [1, 2, 3, 4]
    assert not _changed(_weights(straight / "unet"), _weights(killed / "unet"))

    # A finished run resumed again has nothing to do; a larger --max-steps continues it.
    finetune(replace(cfg, resume=True))
    finetune(replace(cfg, resume=True, max_steps=5))
    record = json.loads((killed / "cxraug.json").read_text())
    assert record["global_step"] == 5 and record["resumed_from"] == [2, 4]


class _Planted:
    """Unpickling this creates a file: what a tampered checkpoint could do."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (Path.touch, (self.path,))


def _plant_pickles(checkpoint: Path, marker: Path) -> None:
    import pickle

    payload = pickle.dumps(_Planted(marker))
    probe = marker.with_name("probe")
    pickle.loads(pickle.dumps(_Planted(probe)))  # the payload does run when unpickled
    assert probe.exists()
    for name in ("custom_checkpoint_0.pkl", "random_states_0.pkl", "optimizer.bin"):
        (checkpoint / name).write_bytes(payload)
    torch.save({"evil": _Planted(marker)}, checkpoint / "scheduler.bin")


def test_killed_during_the_latent_cache_fill_resumes_to_the_same_weights(
    phantom_manifest, tmp_path, monkeypatch
):
    """Killed after 15 cache entries (inside the first chunk of 16), `--resume` writes the
    cache and trains the weights of an uninterrupted run, to the bit."""
    import augmentor.latents as lat

    straight = finetune(_cfg(phantom_manifest, tmp_path / "straight"))

    real_save, written = lat._save_entry, []

    def save_then_die(tensor, path):
        if len(written) == 15:
            raise KeyboardInterrupt("simulated kill during the latent-cache fill")
        real_save(tensor, path)
        written.append(path)

    monkeypatch.setattr(lat, "_save_entry", save_then_die)
    cfg = _cfg(phantom_manifest, tmp_path / "killed")
    with pytest.raises(KeyboardInterrupt):
        finetune(cfg)
    monkeypatch.setattr(lat, "_save_entry", real_save)
    killed = Path(cfg.out)
    assert latest_checkpoint(killed) is None and len(written) == 15

    finetune(replace(cfg, resume=True))

    def entries(out: Path) -> dict[str, bytes]:  # image sha -> cached posterior's bytes
        return {p.name: p.read_bytes() for p in (out / "cache").rglob("*.safetensors")}

    assert len(entries(straight)) > 16 and entries(killed) == entries(straight)
    assert not _changed(_weights(straight / "unet"), _weights(killed / "unet"))


def test_half_written_checkpoint_is_never_latest(tmp_path):
    ckpt = tmp_path / "checkpoints"
    for step in (2, 10):
        (ckpt / f"checkpoint-{step}").mkdir(parents=True)
        (ckpt / f"checkpoint-{step}" / "checkpoint.json").write_text("{}")
    (ckpt / ".tmp-checkpoint-12").mkdir()  # a save killed half-way keeps its scratch name
    (ckpt / "checkpoint-14").mkdir()  # renamed but never marked complete
    (ckpt / "checkpoint-x").mkdir()
    assert latest_checkpoint(tmp_path).name == "checkpoint-10"
    assert latest_checkpoint(tmp_path / "nothing") is None


@pytest.mark.slow
def test_sigkill_then_resume(phantom_manifest, tmp_path):
    """A real process killed with SIGKILL after its first checkpoint resumes and finishes."""
    out = tmp_path / "gen"
    args = [
        str(CXRAUG), "finetune", "--manifest", str(phantom_manifest), "--base", "tiny",
        "--out", str(out), "--batch-size", "4", "--max-steps", "12", "--autoencoder-steps", "2",
        "--checkpointing-steps", "2",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while latest_checkpoint(out) is None and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()[-2000:]
    assert not (out / "cxraug.json").exists()
    first = checkpoint_step(latest_checkpoint(out))
    assert first is not None and first < 12
    done = subprocess.run([*args, "--resume"], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    record = json.loads((out / "cxraug.json").read_text())
    assert record["global_step"] == 12 and record["resumed_from"][0] >= first


# ------------------------------------------------------------------ what trains


def test_lora_trains_adapters_only_and_saves_them(phantom_manifest, tmp_path, base_tiny):
    from diffusers import StableDiffusionPipeline

    out = finetune(_cfg(phantom_manifest, tmp_path / "lora", lora_rank=4))
    saved = _weights(out / "unet")
    base = base_tiny.unet.state_dict()
    changed = _changed(saved, {k: base[k] for k in saved})
    targets = ("to_q.weight", "to_k.weight", "to_v.weight", "to_out.0.weight")
    assert changed and all(k.endswith(targets) for k in changed)  # merged LoRA
    assert not any("lora" in k for k in saved)  # plain diffusers weights
    te = _weights(out / "text_encoder")
    assert not _changed(te, {k: base_tiny.text_encoder.state_dict()[k] for k in te})

    # The adapters alone, loaded into the base with plain diffusers and fused, give the same UNet.
    assert (out / "lora" / "pytorch_lora_weights.safetensors").is_file()
    pipe = build_tiny_pipeline()
    pipe.load_lora_weights(out / "lora")
    pipe.fuse_lora()
    pipe.unload_lora_weights()
    fused = pipe.unet.state_dict()
    for k in saved:
        torch.testing.assert_close(fused[k], saved[k])
    assert StableDiffusionPipeline.from_pretrained(out).unet is not None


def test_train_text_encoder_changes_it(phantom_manifest, tmp_path, base_tiny):
    out = finetune(_cfg(phantom_manifest, tmp_path / "te", train_text_encoder=True))
    te = _weights(out / "text_encoder")
    base = base_tiny.text_encoder.state_dict()
    changed = _changed(te, {k: base[k] for k in te})
    assert any("self_attn" in k for k in changed) and any("mlp" in k for k in changed)
    unet = _weights(out / "unet")
    assert _changed(unet, {k: base_tiny.unet.state_dict()[k] for k in unet})


def test_rgb_v_prediction_base_keeps_autoencoder_frozen(phantom_manifest, tmp_path):
    """A local SD-2-like folder: RGB autoencoder fed grayscale, v_prediction honoured."""
    from diffusers import AutoencoderKL, PNDMScheduler

    pipe = build_tiny_pipeline()
    torch.manual_seed(1)
    rgb = {"in_channels": 3, "out_channels": 3, "block_out_channels": (16, 32, 32)}
    pipe.vae = AutoencoderKL.from_config({**pipe.vae.config, **rgb, "norm_num_groups": 8})
    pipe.scheduler = PNDMScheduler.from_config(
        pipe.scheduler.config, prediction_type="v_prediction"
    )
    base = tmp_path / "sd2-like"
    pipe.save_pretrained(base, safe_serialization=True)

    out = finetune(
        _cfg(phantom_manifest, tmp_path / "gen", base=str(base), snr_gamma=5.0, noise_offset=0.05)
    )
    record = json.loads((out / "cxraug.json").read_text())
    assert record["prediction_type"] == "v_prediction" and record["image_channels"] == 3
    assert record["autoencoder_fit"] is None
    assert not _changed(_weights(base / "vae"), _weights(out / "vae"))
    assert _changed(_weights(base / "unet"), _weights(out / "unet"))


# ------------------------------------------------------------------ pieces


def test_cached_posterior_equals_encoding_on_the_fly(
    phantom_manifest, tmp_path, base_tiny, monkeypatch
):
    import augmentor.latents as lat

    m = read_manifest(phantom_manifest)
    paths = m.image_paths()[:5]
    vae = base_tiny.vae.eval()
    cached = cache_latents(vae, paths, 64, 1, cache_dir=tmp_path, batch_size=2)
    direct = vae.encode(load_pixels(paths, 64, 1)).latent_dist
    torch.testing.assert_close(cached, direct.parameters, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(cached, encode_posterior(vae, load_pixels(paths, 64, 1)))

    def no_encoding(*a, **k):
        raise AssertionError("the disk cache should have answered")

    monkeypatch.setattr(lat, "encode_posterior", no_encoding)
    again = cache_latents(vae, paths, 64, 1, cache_dir=tmp_path, batch_size=2)
    assert torch.equal(again, cached)
    # Another resolution is another cache entry, never a stale hit.
    monkeypatch.undo()
    assert cache_latents(vae, paths[:1], 32, 1, cache_dir=tmp_path).shape[-1] == 8

    # Each step samples the cached posterior: draws differ, their mean is the posterior mean.
    gen = torch.Generator().manual_seed(0)
    draws = torch.stack([sample_latents(cached, 1.0, gen) for _ in range(300)])
    assert not torch.equal(draws[0], draws[1])
    torch.testing.assert_close(draws.mean(0), direct.mean, atol=0.25, rtol=0)


def test_grayscale_feeds_rgb_autoencoder():
    image = (np.arange(80 * 100) % 256).astype(np.uint8).reshape(80, 100)
    x = preprocess_image(image, 64, 3)
    assert x.shape == (3, 64, 64)
    assert torch.equal(x[0], x[1]) and torch.equal(x[1], x[2])
    assert x.min() >= -1 and x.max() <= 1
    flat = preprocess_image(np.full((64, 64), 255, np.uint8), 64, 1)
    assert torch.equal(flat, torch.ones(1, 64, 64))


def test_diffusion_loss_targets_follow_prediction_type():
    from diffusers import DDPMScheduler
    from diffusers.training_utils import compute_snr

    class Zero(torch.nn.Module):
        def forward(self, x, t, h, return_dict=False):
            return (torch.zeros_like(x),)

    latents = torch.randn(3, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    hidden = torch.zeros(3, 77, 8)
    for kind in ("epsilon", "v_prediction"):
        sched = DDPMScheduler(num_train_timesteps=1000, prediction_type=kind)
        gen = torch.Generator().manual_seed(7)
        loss = ft.diffusion_loss(Zero(), sched, latents, hidden, gen)
        gen = torch.Generator().manual_seed(7)
        noise = torch.randn(latents.shape, generator=gen)
        t = torch.randint(0, 1000, (3,), generator=gen)
        target = noise if kind == "epsilon" else sched.get_velocity(latents, noise, t)
        torch.testing.assert_close(loss, target.pow(2).mean())
        # Min-SNR: per-sample loss weighted by min(snr, gamma) / snr (or / (snr + 1)).
        gen = torch.Generator().manual_seed(7)
        weighted = ft.diffusion_loss(Zero(), sched, latents, hidden, gen, snr_gamma=5.0)
        snr = compute_snr(sched, t)
        w = torch.minimum(snr, torch.full_like(snr, 5.0))
        w = w / snr if kind == "epsilon" else w / (snr + 1)
        torch.testing.assert_close(weighted, (target.pow(2).mean(dim=(1, 2, 3)) * w).mean())


def test_epoch_batches_cover_rows_and_split_ranks():
    order = ft.epoch_batches(10, batch=2, world=2, epoch=0, seed=0)
    assert order.shape == (3, 2, 2)
    assert set(order.flatten().tolist()) == set(range(10))
    assert not torch.equal(order, ft.epoch_batches(10, 2, 2, epoch=1, seed=0))
    assert torch.equal(order, ft.epoch_batches(10, 2, 2, epoch=0, seed=0))


def test_balanced_weights_favour_rare_finding_sides_and_lobes():
    """An image weighs 1/sqrt(count) of its rarest finding/side (lobe for a consolidation)
    unit, mean 1; each epoch draws a seeded order of epoch_batches' shape by those weights."""
    from augmentor.balance import balanced_weights, finding_units, weighted_batches

    labels = ("Consolidation", "Pleural Effusion")
    rows = pd.DataFrame(
        {
            "report": ["Normal."] * 8
            + ["Right middle lobe consolidation."]
            + ["Left upper lobe consolidation. Small left pleural effusion."] * 3,
            "Consolidation": [0.0] * 8 + [1.0] * 4,
            "Pleural Effusion": [0.0] * 9 + [1.0] * 3,
        }
    )
    assert finding_units(rows.iloc[0], labels) == ["none"]
    assert finding_units(rows.iloc[9], labels) == [
        "Consolidation:left upper lobe",
        "Pleural Effusion:left",
    ]
    w = balanced_weights(rows, labels)
    assert w.mean() == pytest.approx(1.0)
    assert w[8] / w[0] == pytest.approx((8 / 1) ** 0.5)  # one right middle lobe vs 8 normal
    assert w[9] / w[0] == pytest.approx((8 / 3) ** 0.5)
    order = weighted_batches(w, 4, 1, 0, 0)
    assert order.shape == ft.epoch_batches(12, 4, 1, 0, 0).shape == (3, 1, 4)
    assert torch.equal(order, weighted_batches(w, 4, 1, 0, 0))
    draws = torch.cat([weighted_batches(w, 4, 1, e, 0).flatten() for e in range(2000)])
    share = torch.bincount(draws, minlength=12).double() / len(draws)
    assert share[8] / share[0] == pytest.approx((8 / 1) ** 0.5, rel=0.1)
    with pytest.raises(UserError, match="--balance-labels: Nodule not a label column"):
        balanced_weights(rows, ("Nodule",))


def test_finetune_with_balance_labels_draws_by_weight(phantom_manifest, tmp_path, monkeypatch):
    """--balance-labels: every epoch's order comes from the weights of the train rows (the
    run's config records the labels); without it, the plain shuffle."""
    import augmentor.finetune as finetune_module

    seen = []
    real = finetune_module.weighted_batches

    def spy(weights, *args):
        seen.append(weights)
        return real(weights, *args)

    monkeypatch.setattr(finetune_module, "weighted_batches", spy)
    labels = ("Pneumothorax", "Pleural Effusion")
    out = finetune(_cfg(phantom_manifest, tmp_path / "b", balance_labels=labels))
    rows = load_train_data(phantom_manifest).manifest.rows
    assert seen and all(len(w) == len(rows) for w in seen)
    assert seen[0].max() > seen[0].min()
    assert json.loads((out / "cxraug.json").read_text())["config"]["balance_labels"] == list(labels)
    seen.clear()
    finetune(_cfg(phantom_manifest, tmp_path / "plain"))
    assert not seen


# ------------------------------------------------------------------ bad input (CLI)

runner = CliRunner()


def _cli(*args: str):
    result = runner.invoke(app, ["finetune", *args])
    return result, (result.stderr if hasattr(result, "stderr") else result.output)


def _assert_user_error(result, text: str, message: str) -> None:
    assert result.exit_code == 2, (result.exit_code, result.output)
    lines = [x for x in message.strip().splitlines() if x]
    assert len(lines) == 1 and lines[0].startswith("error: "), message
    assert text in lines[0], lines[0]


@pytest.mark.parametrize(
    ("flags", "text"),
    [
        (["--lora-rank", "0"], "--lora-rank"),
        (["--max-steps", "0"], "--max-steps"),
        (["--batch-size", "-1"], "--batch-size"),
        (["--lr-scheduler", "sawtooth"], "--lr-scheduler"),
        (["--mixed-precision", "fp8"], "--mixed-precision"),
        (["--learning-rate", "0"], "--learning-rate"),
        (["--snr-gamma", "-5"], "--snr-gamma"),
        (["--resume", "--overwrite"], "--resume and --overwrite"),
        (
            ["--balance-labels", "Pneumothorax", "--balance-labels", "Nodule"],
            "--balance-labels: Nodule",
        ),
    ],
)
def test_cli_bad_flags(flags, text, phantom_manifest, tmp_path):
    result, message = _cli(
        "--manifest", str(phantom_manifest), "--base", "tiny", "--out", str(tmp_path / "o"), *flags
    )
    _assert_user_error(result, text, message)
    assert not (tmp_path / "o").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="fp16 is refused on CPU only")
def test_cli_fp16_on_cpu(phantom_manifest, tmp_path):
    result, message = _cli(
        "--manifest", str(phantom_manifest), "--base", "tiny", "--out", str(tmp_path / "o"),
        "--mixed-precision", "fp16",
    )  # fmt: skip
    _assert_user_error(result, "fp16 needs a GPU", message)


def test_cli_base_missing_component(phantom_manifest, tiny_generator_dir, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_generator_dir, broken)
    shutil.rmtree(broken / "unet")
    result, message = _cli(
        "--manifest", str(phantom_manifest), "--base", str(broken), "--out", str(tmp_path / "o")
    )
    _assert_user_error(result, "unet", message)
    corrupt = tmp_path / "corrupt"
    shutil.copytree(tiny_generator_dir, corrupt)
    weights = next((corrupt / "unet").glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:1000])  # a download cut short
    result, message = _cli(
        "--manifest", str(phantom_manifest), "--base", str(corrupt), "--out", str(tmp_path / "o")
    )
    # diffusers' loading bars may precede the error: the error itself is one line.
    message = "\n".join(x for x in message.splitlines() if "Loading " not in x)
    _assert_user_error(result, "corrupt weights file", message)
    assert not (tmp_path / "o").exists()
    result, message = _cli(
        "--manifest", str(phantom_manifest), "--base", "someone/model", "--out", str(tmp_path / "o")
    )
    _assert_user_error(result, "--allow-download", message)


def test_cli_manifest_without_train_rows_or_reports(phantom_manifest, tmp_path):
    m = read_manifest(phantom_manifest)
    cases = {
        "no_train": (m.rows.assign(split="test"), "no real rows with split 'train'"),
        "no_report": (
            m.rows.assign(report=[None] * (len(m) - 3) + ["", "  ", None]),
            "no report text",
        ),
    }
    for name, (rows, expected) in cases.items():
        write_manifest(m.with_rows(rows), tmp_path / f"{name}.parquet")
        out = tmp_path / "o"
        result, message = _cli(
            "--manifest", str(tmp_path / f"{name}.parquet"), "--base", "tiny", "--out", str(out)
        )
        _assert_user_error(result, expected, message)


def test_cli_existing_output_is_refused(phantom_manifest, tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    args = ["--manifest", str(phantom_manifest), "--base", "tiny", "--out", str(out)]
    result, message = _cli(*args)
    _assert_user_error(result, "is not a generator folder", message)
    result, message = _cli(*args, "--overwrite")
    _assert_user_error(result, "refusing to delete", message)
    result, message = _cli(*args, "--resume")
    _assert_user_error(result, "nothing to resume", message)
    assert (out / "notes.txt").read_text() == "mine"


def _bomb_png(path: Path) -> Path:
    """A valid small PNG whose header claims 50000 x 50000 pixels (a decompression bomb)."""
    import struct
    import zlib

    from PIL import Image

    Image.new("L", (4, 4)).save(path)
    data = bytearray(path.read_bytes())
    ihdr = data[12:29]  # b"IHDR" + width, height, depth, colour, compression, filter, interlace
    ihdr[4:12] = struct.pack(">II", 50_000, 50_000)
    data[12:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(ihdr)))
    path.write_bytes(bytes(data))
    return path


def _with_bad_image(manifest: Path, bad: Path, target: Path) -> Path:
    m = read_manifest(manifest)
    rows = m.rows.copy()
    first = int(np.flatnonzero(rows["split"].to_numpy() == "train")[0])
    rows.loc[rows.index[first], "image_path"] = str(bad.absolute())
    write_manifest(m.with_rows(rows), target)
    return target


def test_failed_runs_leave_the_output_as_found(phantom_manifest, phantom_dir, tmp_path):
    """Refused inputs fail in one line, exit 2, and leave --out as found (missing, or empty)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    m = read_manifest(phantom_manifest)
    unsplit = tmp_path / "unsplit.parquet"
    write_manifest(m.with_rows(m.rows.assign(split="train")), unsplit)
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(next(phantom_dir.rglob("*.png")).read_bytes()[:200])
    not_utf8 = tmp_path / "not_utf8.parquet"
    table = pq.read_table(phantom_manifest)
    column = table.schema.get_field_index("report")
    garbled = pa.array([b"\xff\xfe effusion"] * len(table), type=pa.binary()).view(pa.string())
    pq.write_table(table.set_column(column, "report", garbled), not_utf8)
    cases = [
        (phantom_manifest, ["--resolution", "50"], "multiple of 16"),
        (not_utf8, [], "valid UTF-8"),
        (unsplit, [], "cxraug manifest split"),
        (
            _with_bad_image(phantom_manifest, truncated, tmp_path / "t.parquet"),
            [],
            "corrupt or unreadable",
        ),
        (
            _with_bad_image(
                phantom_manifest, _bomb_png(tmp_path / "bomb.png"), tmp_path / "b.parquet"
            ),
            [],
            "decompression bomb",
        ),
    ]
    empty = tmp_path / "empty"
    empty.mkdir()
    for manifest, flags, text in cases:
        for out in (tmp_path / "missing", empty):
            result, message = _cli(
                "--manifest", str(manifest), "--base", "tiny", "--out", str(out),
                "--autoencoder-steps", "1", *flags,
            )  # fmt: skip
            _assert_user_error(result, text, message)
            assert not (tmp_path / "missing").exists()
            assert empty.is_dir() and not any(empty.iterdir())


def test_folder_holding_only_scratch_starts_fresh(phantom_manifest, tmp_path):
    """A run killed during its very first write left only scratch: rerun, it just runs."""
    out = tmp_path / "gen"
    (out / "checkpoints").mkdir(parents=True)
    (out / "checkpoints" / ".config.json.x1y2.tmp").write_text('{"half": ')
    (out / ".tmp-pipeline").mkdir()
    result, message = _cli(
        "--manifest", str(phantom_manifest), "--base", "tiny", "--out", str(out), "--resume",
        "--max-steps", "1", "--autoencoder-steps", "1", "--checkpointing-steps", "1",
        "--batch-size", "4",
    )  # fmt: skip
    assert result.exit_code == 0, message
    assert generator.read_generator_record(out)["global_step"] == 1
    leftovers = [p for p in out.rglob("*") if p.name.startswith(".")]
    assert not leftovers, leftovers


# ------------------------------------------------------------------ scale


def test_two_cpu_processes_under_accelerate_launch(phantom_manifest, tmp_path):
    """`accelerate launch` with 2 CPU processes (gloo DDP): one output, written once."""
    out = tmp_path / "gen"
    cmd = [
        str(ACCELERATE), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no",
        "--main_process_port", str(free_port()),
        str(CXRAUG), "finetune", "--manifest", str(phantom_manifest), "--base", "tiny",
        "--out", str(out), "--max-steps", "2", "--batch-size", "2", "--autoencoder-steps", "1",
        "--checkpointing-steps", "1",
    ]  # fmt: skip
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1"}
    env["HF_HOME"] = str(tmp_path / "hf")  # no user accelerate config
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    record = json.loads((out / "cxraug.json").read_text())
    assert record["num_processes"] == 2 and record["global_step"] == 2
    ckpt = latest_checkpoint(out)
    assert {p.name for p in ckpt.glob("random_states_*.json")} == {
        "random_states_0.json",
        "random_states_1.json",
    }
    assert not list(ckpt.glob("*.pkl")) and not list(ckpt.glob("*.bin"))
    check_pipeline_dir(out)


def test_generator_optimizer_is_fused_adamw_on_cpu_and_steps_like_plain_adamw():
    from augmentor.optim import adamw

    torch.manual_seed(0)
    a = torch.nn.Linear(8, 4)
    b = torch.nn.Linear(8, 4)
    b.load_state_dict(a.state_dict())
    fused, plain = (
        adamw(a.parameters(), 1e-2, 0.01),
        torch.optim.AdamW(b.parameters(), 1e-2, weight_decay=0.01),
    )
    assert fused.defaults["fused"] is True
    x = torch.randn(16, 8)
    for _ in range(3):
        for model, opt in ((a, fused), (b, plain)):
            opt.zero_grad()
            model(x).pow(2).mean().backward()
            opt.step()
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(p, q)
