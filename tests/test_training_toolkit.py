"""The training toolkit both trainers share (`classifier.training`) and the latent-cache fill.

Checkpointer: save, resume bit-identically, keep the newest K, the best model. The
accelerator rule: fp16 on a CPU is one UserError line. The posterior cache: a fill killed
part-way and resumed, or shared by processes, writes the bytes of one uninterrupted fill.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from augmentor.base import build_tiny_pipeline
from augmentor.latents import POSTERIOR_KEY, cache_latents, posterior_cache_dir, vae_digest
from classifier.training import accelerator as acc_module
from classifier.training.accelerator import build_accelerator, resolve_mixed_precision
from classifier.training.checkpointer import Checkpointer
from classifier.training.records import jsonable
from manifests import runfolder
from manifests.errors import UserError
from manifests.io import read_manifest

ROOT = Path(__file__).resolve().parents[1]

# ------------------------------------------------------------------ accelerator


def test_fp16_on_cpu_is_refused_in_one_line(monkeypatch):
    monkeypatch.delenv("ACCELERATE_MIXED_PRECISION", raising=False)
    monkeypatch.setattr(acc_module, "cpu_only", lambda: True)
    with pytest.raises(UserError, match="--mixed-precision fp16 needs a GPU") as err:
        build_accelerator("fp16", seed=0)
    assert "\n" not in str(err.value)
    # Set by `accelerate launch` rather than the flag: the message names where it came from.
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "fp16")
    with pytest.raises(UserError, match="ACCELERATE_MIXED_PRECISION=fp16 needs a GPU"):
        build_accelerator(None, seed=0)
    with pytest.raises(UserError, match="needs a GPU"):
        build_accelerator("auto", seed=0)


def test_mixed_precision_rule(monkeypatch):
    monkeypatch.delenv("ACCELERATE_MIXED_PRECISION", raising=False)
    assert resolve_mixed_precision(None, cpu=True) == "no"
    assert resolve_mixed_precision("auto", cpu=True) == "no"
    assert resolve_mixed_precision("bf16", cpu=True) == "bf16"
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "bf16")
    assert resolve_mixed_precision("auto", cpu=True) is None  # accelerate reads its own setting
    assert resolve_mixed_precision(None, cpu=True) is None
    assert resolve_mixed_precision("no", cpu=True) == "no"  # the flag wins


def test_build_accelerator_seeds_the_global_generators(monkeypatch):
    monkeypatch.delenv("ACCELERATE_MIXED_PRECISION", raising=False)
    build_accelerator(None, seed=7)
    first = torch.rand(3)
    accelerator = build_accelerator("no", seed=7)
    assert torch.equal(torch.rand(3), first)
    assert accelerator.device.type == "cpu" or torch.cuda.is_available()


# ------------------------------------------------------------------ checkpointer


class _Toy:
    """A linear model, AdamW, a step schedule and a noise generator: one trainer's state."""

    def __init__(self, seed: int = 0) -> None:
        torch.manual_seed(seed)
        self.model = torch.nn.Linear(4, 2)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=0.1)
        self.scheduler = torch.optim.lr_scheduler.StepLR(self.optimizer, step_size=2, gamma=0.5)
        self.noise = torch.Generator().manual_seed(seed + 1)

    def step(self) -> None:
        x = torch.randn(8, 4, generator=self.noise) + torch.rand(1)  # global RNG too
        loss = self.model(x).pow(2).mean()
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad()
        self.scheduler.step()

    def checkpointer(self, out: Path, accelerator, **kw) -> Checkpointer:
        return Checkpointer(
            out,
            accelerator,
            {"model": self.model},
            optimizer=self.optimizer,
            scheduler=self.scheduler,
            generators={"noise": self.noise},
            **kw,
        )


def test_checkpointer_resumes_bit_identically_and_keeps_k(tmp_path):
    accelerator = build_accelerator("no", seed=0)
    straight = _Toy()
    for _ in range(5):
        straight.step()

    out = tmp_path / "run"
    first = _Toy()
    saver = first.checkpointer(out, accelerator, keep=2)
    assert saver.resume() is None  # nothing saved yet
    for step in range(1, 4):
        first.step()
        saved = saver.save(step, {"step": step})
    assert saved == runfolder.checkpoint_dir(out, 3)
    names = sorted(p.name for p in (out / runfolder.CHECKPOINTS_DIR).iterdir())
    assert names == ["checkpoint-2", "checkpoint-3"]  # keep=2: the oldest went; no scratch
    files = {p.suffix for p in saved.iterdir()}
    assert files <= {".json", ".safetensors"}  # no pickles

    torch.manual_seed(123)  # a new process: other global state, other weights
    again = _Toy(seed=99)
    latest, trainer = again.checkpointer(out, accelerator, keep=2).resume()
    assert latest.name == "checkpoint-3" and trainer == {"step": 3}
    for _ in range(2):
        again.step()
    for name, value in straight.model.state_dict().items():
        assert torch.equal(value, again.model.state_dict()[name]), name
    assert again.scheduler.state_dict() == straight.scheduler.state_dict()


def test_checkpointer_keeps_the_best_model_across_a_resume(tmp_path):
    accelerator = build_accelerator("no", seed=0)
    out = tmp_path / "run"
    written: list[int] = []
    toy = _Toy()
    saver = toy.checkpointer(
        out, accelerator, keep=1, save_best=lambda: written.append(1), unit="epoch"
    )
    assert saver.update_best(0.5, 0) and written == [1]
    assert not saver.update_best(0.5 + 1e-9, 1)  # within min_delta: not better
    assert not saver.update_best(float("nan"), 2)
    saver.save(3, {"epoch": 3})
    record = json.loads((runfolder.checkpoint_dir(out, 3) / "trainer_state.json").read_text())
    assert record == {"epoch": 3, "best_score": 0.5, "best_epoch": 0}

    resumed = _Toy().checkpointer(out, accelerator, save_best=lambda: None, unit="epoch")
    _, trainer = resumed.resume()
    assert trainer == {"epoch": 3}  # the best score and epoch belong to the checkpointer
    assert (resumed.best_score, resumed.best_step) == (0.5, 0)
    assert resumed.update_best(0.7, 4) and resumed.best_step == 4


def test_no_trainer_spells_the_checkpoint_protocol():
    """Checkpoint names and the scratch protocol belong to the checkpointer and runfolder."""
    for module in ("augmentor/finetune.py", "classifier/train.py"):
        source = (ROOT / module).read_text()
        for spelled in ("tmp-checkpoint", "checkpoint_scratch", "commit_checkpoint"):
            assert spelled not in source, (module, spelled)
        assert "Checkpointer(" in source and "build_accelerator(" in source, module


def test_jsonable():
    value = {"a": Path("x/y"), "b": (1, (2, Path("z"))), "c": [{"d": (3,)}], "e": None}
    assert jsonable(value) == {"a": "x/y", "b": [1, [2, "z"]], "c": [{"d": [3]}], "e": None}
    json.dumps(jsonable(value))


# ------------------------------------------------------------------ latent cache fill


def _entries(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.glob("*.safetensors"))}


@pytest.fixture(scope="module")
def encoder_and_images(phantom_manifest):
    vae = build_tiny_pipeline().vae.eval()
    paths = read_manifest(phantom_manifest).image_paths()[:10]
    return vae, paths


class _BatchSensitive(torch.nn.Module):
    """The tiny autoencoder, its output nudged by the other images in the batch.

    A real encoder's floats move with its batch (kernels chosen by batch size, reduction
    order); this makes that dependence large and platform-independent.
    """

    def __init__(self, vae) -> None:
        super().__init__()
        self.vae = vae
        self.config = vae.config

    def encode(self, pixels: torch.Tensor) -> SimpleNamespace:
        params = self.vae.encode(pixels).latent_dist.parameters + 1e-3 * pixels.mean()
        return SimpleNamespace(latent_dist=SimpleNamespace(parameters=params))


@pytest.mark.parametrize("encoder", ["tiny", "batch_sensitive"])
@pytest.mark.parametrize("missing", [(5,), (1, 5, 6, 9)])
def test_a_resumed_cache_fill_writes_the_bytes_of_one_fill(
    encoder_and_images, tmp_path, encoder, missing
):
    """A fill killed part-way (some entries of some chunks written) and filled again gives
    the same bytes and tensors as one uninterrupted fill: chunks are fixed by row."""
    vae, paths = encoder_and_images
    vae = vae if encoder == "tiny" else _BatchSensitive(vae)
    whole = cache_latents(vae, paths, 64, 1, cache_dir=tmp_path / "whole", batch_size=4)
    expected = _entries(posterior_cache_dir(tmp_path / "whole", vae_digest(vae), 64))
    assert len(expected) == len(paths)

    killed = tmp_path / "killed"
    cache_latents(vae, paths, 64, 1, cache_dir=killed, batch_size=4)
    folder = posterior_cache_dir(killed, vae_digest(vae), 64)
    for row in missing:  # what the kill had not written yet
        (folder / f"{_sha(paths[row])}.safetensors").unlink()
    assert len(_entries(folder)) == len(paths) - len(missing)
    resumed = cache_latents(vae, paths, 64, 1, cache_dir=killed, batch_size=4)
    assert _entries(folder) == expected
    assert torch.equal(resumed, whole)


def test_a_shared_cache_fill_writes_the_bytes_of_one_fill(encoder_and_images, tmp_path):
    """Two processes' shares (chunk k to rank k % 2), then the read-back, equal one fill."""
    vae, paths = encoder_and_images
    whole = cache_latents(vae, paths, 64, 1, cache_dir=tmp_path / "whole", batch_size=4)
    expected = _entries(posterior_cache_dir(tmp_path / "whole", vae_digest(vae), 64))
    shared = tmp_path / "shared"
    for rank in (1, 0):
        assert cache_latents(vae, paths, 64, 1, shared, batch_size=4, share=(rank, 2)) is None
    folder = posterior_cache_dir(shared, vae_digest(vae), 64)
    assert _entries(folder) == expected
    assert torch.equal(cache_latents(vae, paths, 64, 1, shared, batch_size=4), whole)
    # No disk cache: the same chunks, the same tensors.
    assert torch.equal(cache_latents(vae, paths, 64, 1, batch_size=4), whole)


def test_rows_with_the_same_image_share_one_entry(encoder_and_images, tmp_path):
    vae, paths = encoder_and_images
    rows = [paths[0], paths[1], paths[2], paths[0]]  # row 3 repeats row 0's image
    posteriors = cache_latents(vae, rows, 64, 1, cache_dir=tmp_path, batch_size=2)
    assert torch.equal(posteriors[3], posteriors[0])
    folder = posterior_cache_dir(tmp_path, vae_digest(vae), 64)
    assert len(_entries(folder)) == 3
    from safetensors.torch import load_file

    assert torch.equal(
        load_file(folder / f"{_sha(paths[0])}.safetensors")[POSTERIOR_KEY], posteriors[0]
    )


def _sha(path: Path) -> str:
    from manifests.files import file_sha256

    return file_sha256(path)
