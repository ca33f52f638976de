"""Inputs that used to escape as tracebacks or half-written outputs, each refused in one line
(or handled) where a user meets it: a degenerate report baseline, a corrupt Parquet page, a
broken generator folder, a full disk, a symlinked output folder, duplicate rows, JPEG
orientation and 16-bit PNG depth."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from benchmarks.reliability import (
    BROKEN_GENERATORS,
    broken_generator,
    corrupt_page,
    duplicated_rows,
)
from cli import app
from tests.test_report import fake_run

runner = CliRunner()


def one_error_line(result, *fragments: str) -> str:
    """Assert exit 2 with exactly one `error:` line holding every fragment; return it."""
    assert "Traceback" not in result.output, result.output
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


# ------------------------------------------------------------------------------ report


def _two_image_runs(tmp_path):
    """Runs on a two-image test split: `real` ranks it backwards (AUROC 0), `mix0.5` right."""
    truth = np.array([[1.0], [0.0]])
    real = fake_run(tmp_path, "real", 0, 1 - truth, n_images=2, truth=truth)
    mix = fake_run(tmp_path, "mix0.5", 0, truth, n_images=2, truth=truth)
    return real, mix


def test_report_with_a_zero_auroc_baseline_writes_na_relative_change(tmp_path):
    runs = _two_image_runs(tmp_path / "runs")
    out = tmp_path / "rep"
    args = ["report", *map(str, runs), "--out", str(out), "--n-boot", "20"]
    args += ["--min-positive-patients", "1"]  # a two-image test split
    result = runner.invoke(app, args, env={"COLUMNS": "200"})
    assert result.exit_code == 0, (result.output, result.exception)
    doc = json.loads((out / "report.json").read_text())
    mix = [r for r in doc["rows"] if r["arm"] == "mix0.5" and r["label"] == "macro"][0]
    assert mix["delta"] == pytest.approx(1.0)
    assert mix["relative_pct"] is None or np.isnan(mix["relative_pct"])
    assert "n/a" in (out / "report.md").read_text()


def test_report_baseline_naming_no_run_is_refused_with_the_arms(tmp_path):
    runs = _two_image_runs(tmp_path / "runs")
    out = tmp_path / "rep"
    args = ["report", *map(str, runs), "--out", str(out), "--baseline", "nosuch"]
    one_error_line(runner.invoke(app, args), "--baseline nosuch", "real", "mix0.5")
    assert not out.exists()


# ------------------------------------------------------------------------------ parquet


@pytest.mark.parametrize("command", ["summary", "split", "evaluate-generator", "train-classifier"])
def test_corrupt_parquet_page_is_one_line_naming_the_file(phantom_manifest, tmp_path, command):
    bad = corrupt_page(phantom_manifest, tmp_path / "data" / "manifest.parquet")
    out = tmp_path / "out"
    args = {
        "summary": ["manifest", "summary", str(bad)],
        "split": ["manifest", "split", str(bad), "--out", str(out)],
        "evaluate-generator": ["evaluate-generator", "--synthetic", str(phantom_manifest)]
        + ["--real", str(bad), "--out", str(out)],
        "train-classifier": ["train-classifier", "--real", str(bad), "--out", str(out)]
        + ["--backbone", "test_resnet", "--image-size", "32", "--epochs", "1"],
    }[command]
    one_error_line(runner.invoke(app, args), str(bad), "corrupt")
    assert not out.exists()


def test_manifest_pages_carry_checksums_so_damage_is_never_read_as_values(
    phantom_manifest, tmp_path
):
    """Flipping bytes anywhere in the data either leaves the rows as they were or is refused:
    never other values (without page CRCs some flips decode to different rows)."""
    from manifests.errors import UserError
    from manifests.io import read_manifest, write_manifest

    path = write_manifest(read_manifest(phantom_manifest), tmp_path / "m.parquet")
    expected = read_manifest(path).rows
    data = path.read_bytes()
    footer = int.from_bytes(data[-8:-4], "little") + 8
    damaged = tmp_path / "damaged.parquet"
    for offset in range(4, len(data) - footer - 64, 61):
        flipped = bytearray(data)
        for i in range(offset, offset + 64):
            flipped[i] ^= 0xFF
        damaged.write_bytes(bytes(flipped))
        try:
            rows = read_manifest(damaged).rows
        except UserError:
            continue
        assert rows.equals(expected), offset


# ------------------------------------------------------------------------------ generator


@pytest.mark.parametrize("how", list(BROKEN_GENERATORS))
def test_synthesize_refuses_a_broken_generator_before_writing(
    tiny_generator_dir, phantom_manifest, tmp_path, how
):
    broken = broken_generator(tiny_generator_dir, how, tmp_path / "generator")
    out = tmp_path / "synthetic"
    args = ["synthesize", "--prompts-from", str(phantom_manifest), "--out", str(out)]
    args += ["--labels", "pneumothorax:2", "--num-inference-steps", "2"]
    one_error_line(runner.invoke(app, [*args, "--model", str(broken)]), str(broken))
    assert not out.exists()
    again = runner.invoke(app, [*args, "--model", str(tiny_generator_dir)])  # a plain rerun
    assert again.exit_code == 0, again.output
    assert len(list((out / "images").glob("*.png"))) == 2


@pytest.mark.parametrize("how", ["index-foreign-module", "parts-from-different-models"])
def test_finetune_refuses_the_same_broken_bases(
    tiny_generator_dir, phantom_manifest, tmp_path, how
):
    broken = broken_generator(tiny_generator_dir, how, tmp_path / "generator")
    out = tmp_path / "ft"
    args = ["finetune", "--manifest", str(phantom_manifest), "--base", str(broken)]
    one_error_line(runner.invoke(app, [*args, "--out", str(out), "--max-steps", "1"]), str(broken))
    assert not out.exists()


# ------------------------------------------------------------------------------ disk full


def _fills_up(monkeypatch, owner, name: str, after: int, error: Exception) -> None:
    """`owner.name` works `after` times, then raises `error` (a disk that filled up)."""
    real, calls = getattr(owner, name), []

    def write(*args, **kwargs):
        calls.append(1)
        if len(calls) > after:
            raise error
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, write)


def _enospc() -> OSError:
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def _safetensors_full() -> Exception:
    from safetensors import SafetensorError

    return SafetensorError(
        "Error while serializing: I/O error: No space left on device (os error 28)"
    )


def _disk_full_cases(tiny_generator_dir, phantom_manifest):
    import augmentor.synthesize
    import classifier.training.state

    synth = ["synthesize", "--model", str(tiny_generator_dir), "--prompts-from"]
    synth += [str(phantom_manifest), "--labels", "pneumothorax:4", "--num-inference-steps", "2"]
    synth += ["--batch-size", "2"]
    train = ["train-classifier", "--real", str(phantom_manifest), "--backbone", "test_resnet"]
    train += ["--image-size", "32", "--epochs", "2", "--labels", "support_devices"]
    tune = ["finetune", "--manifest", str(phantom_manifest), "--base", "tiny", "--max-steps"]
    tune += ["2", "--autoencoder-steps", "1", "--batch-size", "4", "--checkpointing-steps", "1"]
    return {
        "synthesize-png": (synth, augmentor.synthesize, "save_png", 2, _enospc),
        "train-classifier-checkpoint": (train, classifier.training.state, "save_file", 1, _enospc),
        "finetune-checkpoint": (tune, classifier.training.state, "save_file", 1, _safetensors_full),
    }


@pytest.mark.parametrize(
    "case", ["synthesize-png", "train-classifier-checkpoint", "finetune-checkpoint"]
)
def test_disk_full_is_one_line_naming_the_folder_and_resume_finishes(
    tiny_generator_dir, phantom_manifest, tmp_path, monkeypatch, case
):
    args, owner, name, after, error = _disk_full_cases(tiny_generator_dir, phantom_manifest)[case]
    out = tmp_path / "out"
    with monkeypatch.context() as patch:
        _fills_up(patch, owner, name, after, error())
        full = runner.invoke(app, [*args, "--out", str(out)])
    # Progress lines may come first (the disk filled mid-run); the failure is one last line.
    assert "Traceback" not in full.output and full.exit_code == 2, full.output
    lines = [line for line in full.output.splitlines() if line.strip()]
    assert [line for line in lines if line.startswith("error: ")] == lines[-1:], full.output
    for fragment in (str(out), "no space left", "--resume"):
        assert fragment in lines[-1], lines[-1]
    resumed = runner.invoke(app, [*args, "--out", str(out), "--resume"])
    assert resumed.exit_code == 0, resumed.output


# ------------------------------------------------------------------------------ symlinked --out


def _symlink_cases(env: dict[str, Path]) -> dict[str, list[str]]:
    """Each command that writes a folder, with OUT standing for its output folder."""
    phantom, generator, run = env["phantom"], env["generator"], env["run"]
    train = ["--backbone", "test_resnet", "--image-size", "32", "--epochs", "1"]
    return {
        "finetune": ["finetune", "--manifest", str(phantom), "--base", "tiny", "--out", "OUT"]
        + ["--max-steps", "1", "--overwrite"],
        "synthesize": ["synthesize", "--model", str(generator), "--prompts-from", str(phantom)]
        + ["--labels", "pneumothorax:2", "--out", "OUT", "--overwrite"],
        "train-classifier": ["train-classifier", "--real", str(phantom), "--out", "OUT", *train]
        + ["--overwrite"],
        "study": ["study", "--preset", "smoke", "--out", "OUT", "--overwrite"],
        "demo-data": ["demo-data", "OUT", "--n", "3", "--size", "32", "--overwrite"],
        "report": ["report", str(run), "--out", "OUT", "--n-boot", "10", "--overwrite"],
        "evaluate-generator": ["evaluate-generator", "--synthetic", str(phantom)]
        + ["--real", str(phantom), "--out", "OUT", "--overwrite"],
        "manifest-export": ["manifest", "export", str(phantom), "--to", "OUT", "--overwrite"],
    }


@pytest.fixture(scope="module")
def run_env(phantom_manifest, tiny_generator_dir, tmp_path_factory) -> dict[str, Path]:
    run = tmp_path_factory.mktemp("runs") / "real"
    args = ["train-classifier", "--real", str(phantom_manifest), "--out", str(run)]
    args += ["--backbone", "test_resnet", "--image-size", "32", "--epochs", "1"]
    result = runner.invoke(app, [*args, "--labels", "support_devices"])
    assert result.exit_code == 0, result.output
    return {"phantom": phantom_manifest, "generator": tiny_generator_dir, "run": run}


@pytest.mark.parametrize(
    "command",
    [
        "finetune",
        "synthesize",
        "train-classifier",
        "study",
        "demo-data",
        "report",
        "evaluate-generator",
        "manifest-export",
    ],
)
def test_symlinked_out_is_refused_and_its_target_kept(run_env, tmp_path, command):
    """The link points at a finished run of the same command (what --overwrite would empty)."""
    target = tmp_path / "precious"
    shutil.copytree(run_env["run"], target)
    (target / "keep.txt").write_text("mine")
    link = tmp_path / "link"
    link.symlink_to(target, target_is_directory=True)
    before = sorted(p.name for p in target.iterdir())
    args = [str(link) if a == "OUT" else a for a in _symlink_cases(run_env)[command]]
    one_error_line(runner.invoke(app, args), str(link), "symbolic link")
    assert sorted(p.name for p in target.iterdir()) == before
    assert link.is_symlink()


# ------------------------------------------------------------------------------ smaller


@pytest.fixture(scope="module")
def duplicated_manifest(phantom_manifest, tmp_path_factory) -> Path:
    """The phantom manifest with its first row repeated (refused before any image is read)."""
    return duplicated_rows(phantom_manifest, tmp_path_factory.mktemp("dup") / "m.parquet")


@pytest.mark.parametrize("command", ["summary", "split", "finetune"])
def test_duplicate_image_rows_are_refused_naming_the_row(duplicated_manifest, tmp_path, command):
    out = tmp_path / "out"
    bad = str(duplicated_manifest)
    args = {
        "summary": ["manifest", "summary", bad],
        "split": ["manifest", "split", bad, "--out", str(out)],
        "finetune": ["finetune", "--manifest", bad, "--base", "tiny", "--out", str(out)]
        + ["--max-steps", "1", "--autoencoder-steps", "1"],
    }[command]
    one_error_line(runner.invoke(app, args), bad, "image_path", "listed twice", "row 0")
    assert not out.exists()


def test_jpeg_exif_orientation_is_applied(tmp_path):
    from PIL import Image

    from manifests.images import load_image

    stored = np.zeros((24, 48), dtype=np.uint8)  # wide as stored: bright left half
    stored[:, :24] = 255
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    path = tmp_path / "phone.jpg"
    Image.fromarray(stored, mode="L").save(path, quality=100, exif=exif)
    upright = load_image(path)
    assert upright.shape == (48, 24)  # tall, as a viewer shows it
    expected = np.rot90(stored, k=-1)  # bright half now on top
    assert np.abs(upright.astype(int) - expected.astype(int)).mean() < 4


def test_sixteen_bit_pngs_use_the_full_depth_the_same_for_every_image(tmp_path):
    from PIL import Image

    from manifests.images import load_image

    dark = np.full((8, 8), 1000, dtype=np.uint16)
    dark[0, 0] = 4000  # a 12-bit image's range
    bright = np.full((8, 8), 1000, dtype=np.uint16)
    bright[0, 0] = 65535
    for name, array in (("dark", dark), ("bright", bright)):
        Image.fromarray(array).save(tmp_path / f"{name}.png")
    dark8, bright8 = load_image(tmp_path / "dark.png"), load_image(tmp_path / "bright.png")
    assert dark8[1, 1] == bright8[1, 1] == round(1000 * 255 / 65535)  # same value, same grey
    assert dark8[0, 0] == round(4000 * 255 / 65535) and bright8[0, 0] == 255


def test_finetune_refusals_print_no_header_first(phantom_dir, tmp_path):
    """A live lock and a missing image: the error is the only line (no 'finetune: ...')."""
    import socket

    from manifests.runfolder import LOCK_FILE

    args = ["finetune", "--manifest", str(phantom_dir / "manifest.parquet"), "--base", "tiny"]
    args += ["--max-steps", "1", "--autoencoder-steps", "1"]
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        locked = tmp_path / "locked"
        locked.mkdir()
        (locked / LOCK_FILE).write_text(
            json.dumps({"pid": holder.pid, "host": socket.gethostname()})
        )
        result = runner.invoke(app, [*args, "--out", str(locked)])
        one_error_line(result, f"process {holder.pid}")
    finally:
        holder.kill()
        holder.wait()

    data = tmp_path / "data"
    shutil.copytree(phantom_dir, data)
    from manifests.io import read_manifest

    manifest = read_manifest(data / "manifest.parquet")
    train = manifest.rows["split"] == "train"
    manifest.image_paths()[int(np.flatnonzero(train)[0])].unlink()
    args[2] = str(data / "manifest.parquet")
    result = runner.invoke(app, [*args, "--out", str(tmp_path / "out")])
    one_error_line(result, "image not found")
    assert not (tmp_path / "out").exists()
