"""Reliability by figures: bad inputs across commands, kill -9 at chosen writes.

Bad inputs: every row of `BAD_INPUTS` runs one command with one hostile input and asserts
exit code 2, exactly one output line starting with "error: " that contains the row's
`says` words (the flag, file or row at fault and why), no traceback, and an output path
left exactly as it was found (absent if it was absent). Rows are cheap to add: a
finetune row is one more `Case` (finetune is converted separately; add its rows here).

Kills: `CXRAUG_FAULT=rename:N` (test-only, see `manifests.files.fault_point`) makes the
command SIGKILL itself at its Nth atomic rename; the rerun with `--resume` must finish and
match an uninterrupted run, with no scratch left.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import subprocess
import sys
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image
from typer.testing import CliRunner

from cli import app
from manifests.io import read_manifest, write_manifest
from tests.fixtures_data import make_chexpert, make_folder, make_mimic, make_nih

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[1]
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0

# ------------------------------------------------------------------------------ planting


def png_bomb(path: Path, side: int = 50_000) -> Path:
    """A small PNG whose header claims `side` x `side` pixels (a decompression bomb)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros((8, 8), dtype=np.uint8), mode="L").save(path)
    data = bytearray(path.read_bytes())
    # IHDR: 8 (signature) + 4 (length) + 4 ("IHDR"), then width, height, 5 bytes, CRC.
    data[16:24] = struct.pack(">II", side, side)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])) & 0xFFFFFFFF)
    path.write_bytes(bytes(data))
    return path


def empty_manifest(src: Path, dst: Path) -> Path:
    """`src` with no rows (schema and metadata kept)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    table = pq.read_table(src)
    pq.write_table(table.slice(0, 0), dst)
    return dst


def with_metadata(src: Path, dst: Path, key: bytes, value: bytes) -> Path:
    """`src` with one key-value metadata entry replaced."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    table = pq.read_table(src)
    meta = dict(table.schema.metadata or {})
    meta[key] = value
    pq.write_table(table.replace_schema_metadata(meta), dst)
    return dst


def non_utf8_reports(src: Path, dst: Path) -> Path:
    """`src` whose `report` column holds bytes that are not UTF-8 (a binary column)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    table = pq.read_table(src)
    i = table.schema.get_field_index("report")
    reports = pa.array([b"Small right pneumothorax \xff\xfe." for _ in range(len(table))])
    table = table.set_column(i, pa.field("report", pa.binary()), reports)
    pq.write_table(table, dst)
    return dst


def bomb_manifest(src: Path, dst_dir: Path) -> Path:
    """A copy of manifest `src` beside its images whose first train image is a PNG bomb."""
    m = read_manifest(src)
    dst_dir.mkdir(parents=True, exist_ok=True)
    rows = m.rows.copy()
    paths = [p.as_posix() for p in m.image_paths()]
    first = int(np.flatnonzero(rows["split"].to_numpy() == "train")[0])
    paths[first] = png_bomb(dst_dir / "bomb.png").as_posix()
    rows["image_path"] = paths
    m = type(m)(rows=rows, labels=m.labels, root=dst_dir, metadata=m.metadata)
    return write_manifest(m, dst_dir / "manifest.parquet")


def corrupt_weights(folder: Path) -> None:
    """Truncate every safetensors file below `folder` to its first 100 bytes."""
    for f in folder.rglob("*.safetensors"):
        f.write_bytes(f.read_bytes()[:100])


def corrupt_copy(src: Path, dst: Path, what: str) -> Path:
    """A copy of folder `src` at `dst` with its `what` file replaced by garbage."""
    shutil.copytree(src, dst, symlinks=True)
    (dst / what).write_text("{ not json")
    return dst


def pickle_file(path: Path, marker: Path) -> Path:
    """A pickle whose loading would create `marker` (it must never be loaded)."""
    import pickle

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps({"state_dict": Evil()}))
    return path


def unwritable_dir(tmp: Path) -> Path:
    d = tmp / "locked"
    d.mkdir()
    d.chmod(0o500)
    return d


def a_file(tmp: Path, name: str = "taken") -> Path:
    f = tmp / name
    f.parent.mkdir(parents=True, exist_ok=True)
    f.write_text("something the user keeps\n")
    return f


# ------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def env(phantom_dir, tiny_generator_dir, tmp_path_factory) -> dict[str, Path]:
    """Inputs shared (read-only) by every row: phantom data, a tiny generator, a run."""
    base = tmp_path_factory.mktemp("reliability")
    phantom = phantom_dir / "manifest.parquet"
    run = base / "run"
    result = runner.invoke(
        app,
        ["train-classifier", "--real", str(phantom), "--out", str(run)]
        + ["--backbone", "test_resnet", "--image-size", "32", "--epochs", "1"]
        + ["--labels", "support_devices", "--patience", "0"],
    )
    assert result.exit_code == 0, result.output
    synthetic = base / "synthetic"
    result = runner.invoke(
        app,
        ["synthesize", "--model", str(tiny_generator_dir), "--prompts-from", str(phantom)]
        + ["--labels", "pneumothorax:2", "--out", str(synthetic)]
        + ["--num-inference-steps", "2", "--batch-size", "2"],
    )
    assert result.exit_code == 0, result.output
    return {
        "phantom": phantom,
        "synthetic": synthetic / "manifest.parquet",
        "generator": tiny_generator_dir,
        "run": run,
        "empty": empty_manifest(phantom, base / "empty" / "manifest.parquet"),
        "badlabels": with_metadata(
            phantom, base / "badmeta" / "manifest.parquet", b"cxraug.labels", b"{not json"
        ),
        "nonutf8": non_utf8_reports(phantom, base / "nonutf8" / "manifest.parquet"),
        "bomb": bomb_manifest(phantom, base / "bomb"),
        "notparquet": a_file(base, "notparquet.parquet"),
    }


def _generator_copy(env, tmp_path_factory, name: str, broken: str | None = None) -> Path:
    """A copy of the tiny generator, with `broken`'s weights file truncated."""
    out = tmp_path_factory.mktemp(name) / "generator"
    shutil.copytree(env["generator"], out)
    if broken:
        corrupt_weights(out / broken)
    return out


@pytest.fixture(scope="module")
def corrupt_generator(env, tmp_path_factory) -> Path:
    """The tiny generator with a truncated UNet weights file."""
    return _generator_copy(env, tmp_path_factory, "corrupt", "unet")


@pytest.fixture(scope="module")
def corrupt_text_generator(env, tmp_path_factory) -> Path:
    """The tiny generator with a truncated text encoder weights file."""
    return _generator_copy(env, tmp_path_factory, "corrupt_text", "text_encoder")


@pytest.fixture(scope="module")
def bin_generator(env, tmp_path_factory) -> Path:
    """The tiny generator with its UNet as a .bin (pickle) file instead of safetensors."""
    out = _generator_copy(env, tmp_path_factory, "binonly")
    for f in (out / "unet").glob("*.safetensors"):
        f.rename(f.with_suffix(".bin"))
    return out


# ------------------------------------------------------------------------------ the table


@dataclass(frozen=True)
class Case:
    """One bad input: `build(env, tmp)` returns (args, output path or None); the error line
    must contain every fragment of `says`, the words that name the flag, file or row at
    fault and why (so a case cannot pass on some other, unrelated exit-2 error). Paths
    under the test's folder are matched relative to it (`--out taken`)."""

    id: str
    build: Callable[[dict, Path], tuple[list[str], Path | None]]
    says: tuple[str, ...]
    needs_chmod: bool = False


def _tc(env, out, *extra):
    args = ["train-classifier", "--real", str(env["phantom"]), "--out", str(out)]
    args += ["--backbone", "test_resnet", "--image-size", "32", "--epochs", "1"]
    return [*args, "--labels", "support_devices", *extra], out


def _syn(env, out, *extra, labels="pneumothorax:2", model=None, prompts=None):
    args = ["synthesize", "--model", str(model or env["generator"])]
    args += ["--prompts-from", str(prompts or env["phantom"]), "--labels", labels]
    return [*args, "--out", str(out), "--num-inference-steps", "2", *extra], out


def _rep(env, runs, out, *extra):
    return ["report", *map(str, runs), "--out", str(out), "--n-boot", "10", *extra], out


def _eval(env, out, *extra, synthetic=None, real=None):
    args = ["evaluate-generator", "--synthetic", str(synthetic or env["synthetic"])]
    args += ["--real", str(real or env["phantom"]), "--out", str(out)]
    if "--features" not in extra:
        args += ["--features", str(env["run"])]
    return [*args, *extra], out


def _probe(env, *extra, finetuned=None, manifest=None, out=None):
    args = ["probe-text-encoder", "--base", "tiny", "--finetuned"]
    args += [str(finetuned or env["generator"]), "--manifest", str(manifest or env["phantom"])]
    if out is not None:
        args += ["--out", str(out)]
    return [*args, *extra], out


def _split(env, src, *extra, out=None):
    args = ["manifest", "split", str(src)]
    if out is not None:
        args += ["--out", str(out)]
    return [*args, *extra], out


def _import_folder(tmp, out=None, *extra, csv=True):
    root, labels = make_folder(tmp)
    out = out or tmp / "out.parquet"
    args = ["manifest", "import", "folder", "--root", str(root), "--out", str(out)]
    if csv:
        args += ["--labels-csv", str(labels)]
    return [*args, *extra], out


def _bomb_folder(tmp):
    root, labels = make_folder(tmp)
    png_bomb(root / "b" / "img3.png")
    out = tmp / "out.parquet"
    args = ["manifest", "import", "folder", "--root", str(root), "--labels-csv", str(labels)]
    return [*args, "--out", str(out), "--check-images"], out


def _chexpert_garbage(tmp):
    root = make_chexpert(tmp)
    (root / "CheXpert-v1.0-small" / "train.csv").write_text("a,b\n1,2\n")
    out = tmp / "o.parquet"
    return ["manifest", "import", "chexpert", "--root", str(root), "--out", str(out)], out


def _folder_not_utf8(tmp):
    args, out = _import_folder(tmp)
    (tmp / "labels.csv").write_bytes(b"path,report\na/img1.png,\xff\xfe bad\n")
    return args, out


def _copy_run(env, tmp, what=None):
    run = tmp / "runs" / "real"
    shutil.copytree(env["run"], run)
    if what:
        (run / what).write_text("{ not json")
    return run


def _study_toml(tmp, text):
    path = tmp / "study.toml"
    path.write_text(text)
    return path


BAD_INPUTS: list[Case] = [
    # -- demo-data
    Case(
        "demo/out-is-file",
        lambda e, t: (["demo-data", str(a_file(t)), "--n", "3"], t / "taken"),
        says=("taken: exists and is not a folder",),
    ),
    Case(
        "demo/parent-is-file",
        lambda e, t: (["demo-data", str(a_file(t) / "d"), "--n", "3"], t / "taken"),
        says=("taken is a file, not a folder",),
    ),
    Case(
        "demo/unwritable-parent",
        lambda e, t: (["demo-data", str(unwritable_dir(t) / "d"), "--n", "3"], t / "locked" / "d"),
        needs_chmod=True,
        says=("cannot write in locked", "permission denied"),
    ),
    Case(
        "demo/n-zero",
        lambda e, t: (["demo-data", str(t / "d"), "--n", "0"], t / "d"),
        says=("--n: 0 images", "positive"),
    ),
    Case(
        "demo/n-negative",
        lambda e, t: (["demo-data", str(t / "d"), "--n", "-4"], t / "d"),
        says=("--n: -4 images", "positive"),
    ),
    Case(
        "demo/n-not-int",
        lambda e, t: (["demo-data", str(t / "d"), "--n", "abc"], t / "d"),
        says=("--n", "valid integer"),
    ),
    Case(
        "demo/size-tiny",
        lambda e, t: (["demo-data", str(t / "d"), "--size", "3"], t / "d"),
        says=("--size: 3 px", "too small"),
    ),
    Case(
        "demo/patients-zero",
        lambda e, t: (["demo-data", str(t / "d"), "--n", "3", "--patients", "0"], t / "d"),
        says=("--patients: 0", "1 to --n"),
    ),
    Case(
        "demo/manifest-exists",
        lambda e, t: (
            ["demo-data", str(a_file(t / "d", "manifest.parquet").parent), "--n", "3"],
            t / "d",
        ),
        says=("manifest.parquet: already exists", "--overwrite"),
    ),
    # -- manifest summary
    Case(
        "summary/zero-rows",
        lambda e, t: (["manifest", "summary", str(e["empty"])], None),
        says=("manifest.parquet: has no rows",),
    ),
    Case(
        "summary/labels-not-json",
        lambda e, t: (["manifest", "summary", str(e["badlabels"])], None),
        says=("cxraug.labels", "not a JSON list"),
    ),
    Case(
        "summary/missing",
        lambda e, t: (["manifest", "summary", str(t / "no.parquet")], None),
        says=("no.parquet: manifest not found",),
    ),
    Case(
        "summary/not-parquet",
        lambda e, t: (["manifest", "summary", str(e["notparquet"])], None),
        says=("notparquet.parquet: not a Parquet manifest",),
    ),
    Case(
        "summary/a-folder",
        lambda e, t: (["manifest", "summary", str(t)], None),
        says=("manifest not found",),
    ),
    Case(
        "summary/non-utf8-report",
        lambda e, t: (["manifest", "summary", str(e["nonutf8"])], None),
        says=("column 'report', row 0", "not UTF-8"),
    ),
    # -- manifest split
    Case(
        "split/out-dir-overwrite",
        lambda e, t: _split(e, e["phantom"], "--overwrite", out=(t / "d").mkdir() or t / "d"),
        says=("d: is a folder", "file path"),
    ),
    Case(
        "split/out-is-dir",
        lambda e, t: _split(e, e["phantom"], out=(t / "d").mkdir() or t / "d"),
        says=("d: is a folder", "file path"),
    ),
    Case(
        "split/fractions-abc",
        lambda e, t: _split(e, e["phantom"], "--fractions", "abc", out=t / "o.parquet"),
        says=("--fractions", "summing to 1", "'abc'"),
    ),
    Case(
        "split/fractions-sum",
        lambda e, t: _split(e, e["phantom"], "--fractions", "0.5,0.5,0.5", out=t / "o.parquet"),
        says=("--fractions", "summing to 1", "'0.5,0.5,0.5'"),
    ),
    Case(
        "split/out-exists",
        lambda e, t: _split(e, e["phantom"], out=a_file(t, "o.parquet")),
        says=("o.parquet: already exists", "--overwrite"),
    ),
    Case(
        "split/out-parent-file",
        lambda e, t: (_split(e, e["phantom"], out=a_file(t) / "o.parquet")[0], t / "taken"),
        says=("o.parquet: taken is a file",),
    ),
    Case(
        "split/out-unwritable",
        lambda e, t: _split(e, e["phantom"], out=unwritable_dir(t) / "o.parquet"),
        needs_chmod=True,
        says=("o.parquet: cannot write in locked", "permission denied"),
    ),
    Case(
        "split/zero-rows",
        lambda e, t: _split(e, e["empty"], out=t / "o.parquet"),
        says=("no real rows",),
    ),
    Case(
        "split/labels-not-json",
        lambda e, t: _split(e, e["badlabels"], out=t / "o.parquet"),
        says=("cxraug.labels", "not a JSON list"),
    ),
    # -- manifest import
    Case(
        "import-folder/root-missing",
        lambda e, t: (
            [
                "manifest",
                "import",
                "folder",
                "--root",
                str(t / "nope"),
                "--out",
                str(t / "o.parquet"),
            ],
            t / "o.parquet",
        ),
        says=("--root nope: not a folder",),
    ),
    Case(
        "import-folder/out-exists",
        lambda e, t: _import_folder(t, a_file(t, "o.parquet")),
        says=("o.parquet: already exists", "--overwrite"),
    ),
    Case(
        "import-folder/out-is-dir",
        lambda e, t: _import_folder(t, (t / "o").mkdir() or t / "o"),
        says=("o: already exists",),
    ),
    Case(
        "import-folder/out-parent-file",
        lambda e, t: (_import_folder(t, a_file(t) / "o.parquet")[0], t / "taken"),
        says=("o.parquet: taken is a file",),
    ),
    Case(
        "import-folder/out-unwritable",
        lambda e, t: _import_folder(t, unwritable_dir(t) / "o.parquet"),
        needs_chmod=True,
        says=("o.parquet: cannot write in locked", "permission denied"),
    ),
    Case(
        "import-folder/png-bomb-check-images",
        lambda e, t: _bomb_folder(t),
        says=("labels.csv line 4", "img3.png", "decompression bomb"),
    ),
    Case(
        "import-folder/labels-csv-missing",
        lambda e, t: (
            _import_folder(t)[0][:-2] + ["--labels-csv", str(t / "none.csv")],
            t / "out.parquet",
        ),
        says=("none.csv: CSV not found",),
    ),
    Case(
        "import-folder/label-set-bogus",
        lambda e, t: _import_folder(t, None, "--label-set", "x"),
        says=("--label-set", "unknown label set 'x'"),
    ),
    Case(
        "import-folder/labels-csv-not-utf8",
        lambda e, t: _folder_not_utf8(t),
        says=("labels.csv", "'utf-8' codec can't decode"),
    ),
    Case(
        "import-chexpert/root-missing",
        lambda e, t: (
            [
                "manifest",
                "import",
                "chexpert",
                "--root",
                str(t / "x"),
                "--out",
                str(t / "o.parquet"),
            ],
            t / "o.parquet",
        ),
        says=("--root x: not a folder",),
    ),
    Case(
        "import-chexpert/train-csv-garbage",
        lambda e, t: _chexpert_garbage(t),
        says=("train.csv: missing column", "'Path'", "found: 'a', 'b'"),
    ),
    Case(
        "import-nih/root-missing",
        lambda e, t: (
            ["manifest", "import", "nih", "--root", str(t / "x"), "--out", str(t / "o.parquet")],
            t / "o.parquet",
        ),
        says=("--root x: not a folder",),
    ),
    Case(
        "import-nih/csv-missing",
        lambda e, t: (
            ["manifest", "import", "nih", "--root", str(make_nih(t)), "--csv", str(t / "no.csv")]
            + ["--out", str(t / "o.parquet")],
            t / "o.parquet",
        ),
        says=("no.csv: CSV not found",),
    ),
    Case(
        "import-mimic/labeler-bogus",
        lambda e, t: (
            ["manifest", "import", "mimic-cxr", "--root", str(make_mimic(t)[0])]
            + ["--labeler", "bogus", "--out", str(t / "o.parquet")],
            t / "o.parquet",
        ),
        says=("--labeler", "unknown labeler 'bogus'"),
    ),
    Case(
        "import-mimic/root-missing",
        lambda e, t: (
            [
                "manifest",
                "import",
                "mimic-cxr",
                "--root",
                str(t / "x"),
                "--out",
                str(t / "o.parquet"),
            ],
            t / "o.parquet",
        ),
        says=("--root x: not a folder",),
    ),
    # -- synthesize
    Case(
        "synth/labels-over-cap",
        lambda e, t: _syn(e, t / "s", labels="pneumothorax:100000000000"),
        says=("--labels", "over the cap"),
    ),
    Case(
        "synth/labels-bad",
        lambda e, t: _syn(e, t / "s", labels="bad"),
        says=("--labels", "'bad' is not LABEL:COUNT"),
    ),
    Case(
        "synth/labels-unknown",
        lambda e, t: _syn(e, t / "s", labels="pneumonitis:4"),
        says=("--labels", "unknown label 'pneumonitis'"),
    ),
    Case(
        "synth/corrupt-unet",
        lambda e, t: _syn(e, t / "s", model=e["corrupt_generator"]),
        says=("diffusion_pytorch_model.safetensors", "corrupt weights"),
    ),
    Case(
        "synth/bin-only-unet",
        lambda e, t: _syn(e, t / "s", model=e["bin_generator"]),
        says=("unet", ".bin (pickle)", "safetensors only"),
    ),
    Case(
        "synth/model-missing",
        lambda e, t: _syn(e, t / "s", model=t / "none"),
        says=("none: model directory not found",),
    ),
    Case(
        "synth/prompts-non-utf8",
        lambda e, t: _syn(e, t / "s", prompts=e["nonutf8"]),
        says=("column 'report', row 0", "not UTF-8"),
    ),
    Case(
        "synth/prompts-zero-rows",
        lambda e, t: _syn(e, t / "s", prompts=e["empty"]),
        says=("--prompts-from", "no val or test rows"),
    ),
    Case(
        "synth/prompts-labels-not-json",
        lambda e, t: _syn(e, t / "s", prompts=e["badlabels"]),
        says=("cxraug.labels", "not a JSON list"),
    ),
    Case(
        "synth/out-is-file",
        lambda e, t: _syn(e, a_file(t)),
        says=("--out taken", "not a folder"),
    ),
    Case(
        "synth/out-parent-file",
        lambda e, t: (_syn(e, a_file(t) / "s")[0], t / "taken"),
        says=("--out taken/s", "taken is a file"),
    ),
    Case(
        "synth/out-unwritable",
        lambda e, t: _syn(e, unwritable_dir(t) / "s"),
        needs_chmod=True,
        says=("--out locked/s", "cannot write in locked", "permission denied"),
    ),
    Case(
        "synth/scheduler-bogus",
        lambda e, t: _syn(e, t / "s", "--scheduler", "bogus"),
        says=("--scheduler", "unknown 'bogus'"),
    ),
    Case(
        "synth/steps-zero",
        lambda e, t: _syn(e, t / "s", "--num-inference-steps", "0"),
        says=("--num-inference-steps: 0", "1 or more"),
    ),
    Case(
        "synth/precision-bogus",
        lambda e, t: _syn(e, t / "s", "--precision", "fp8"),
        says=("--precision", "unknown 'fp8'"),
    ),
    Case(
        "synth/resume-and-overwrite",
        lambda e, t: _syn(e, t / "s", "--resume", "--overwrite"),
        says=("--resume and --overwrite exclude each other",),
    ),
    Case(
        "synth/resume-foreign",
        lambda e, t: _syn(e, a_file(t / "s").parent, "--resume"),
        says=("--out s", "not a synthetic set folder"),
    ),
    # -- train-classifier
    Case(
        "train/mix-abc",
        lambda e, t: _tc(e, t / "r", "--mix", "abc"),
        says=("--mix", "valid number"),
    ),
    Case(
        "train/mix-over-1",
        lambda e, t: _tc(e, t / "r", "--mix", "1.5"),
        says=("--mix: 1.5", "outside [0, 1]"),
    ),
    Case(
        "train/mix-without-synthetic",
        lambda e, t: _tc(e, t / "r", "--mix", "0.5"),
        says=("--mix 0.5", "--synthetic"),
    ),
    Case(
        "train/pretrained-corrupt-safetensors",
        lambda e, t: _tc(e, t / "r", "--pretrained", str(a_file(t, "x.safetensors"))),
        says=("--pretrained", "x.safetensors", "corrupt weights"),
    ),
    Case(
        "train/pretrained-pickle",
        lambda e, t: _tc(e, t / "r", "--pretrained", str(pickle_file(t / "evil.pth", t / "pwned"))),
        says=("--pretrained", "evil.pth", "pickle"),
    ),
    Case(
        "train/png-bomb-error",
        lambda e, t: (
            ["train-classifier", "--real", str(e["bomb"]), "--out", str(t / "r")]
            + ["--backbone", "test_resnet", "--image-size", "32", "--epochs", "1"]
            + ["--labels", "support_devices", "--on-bad-image", "error"],
            t / "r",
        ),
        says=("bomb.png", "decompression bomb"),
    ),
    Case(
        "train/out-is-file",
        lambda e, t: _tc(e, a_file(t)),
        says=("--out taken", "not a folder"),
    ),
    Case(
        "train/out-parent-file",
        lambda e, t: (_tc(e, a_file(t) / "r")[0], t / "taken"),
        says=("--out taken/r", "taken is a file"),
    ),
    Case(
        "train/out-unwritable",
        lambda e, t: _tc(e, unwritable_dir(t) / "r"),
        needs_chmod=True,
        says=("--out locked/r", "cannot write in locked", "permission denied"),
    ),
    Case(
        "train/out-foreign",
        lambda e, t: _tc(e, a_file(t / "r").parent),
        says=("--out r", "not a classifier run folder"),
    ),
    Case(
        "train/real-zero-rows",
        lambda e, t: (
            ["train-classifier", "--real", str(e["empty"]), "--out", str(t / "r")],
            t / "r",
        ),
        says=("--real", "no rows in split 'train'"),
    ),
    Case(
        "train/real-labels-not-json",
        lambda e, t: (
            ["train-classifier", "--real", str(e["badlabels"]), "--out", str(t / "r")],
            t / "r",
        ),
        says=("cxraug.labels", "not a JSON list"),
    ),
    Case(
        "train/backbone-unknown",
        lambda e, t: _tc(e, t / "r", "--backbone", "resnet_bogus"),
        says=("--backbone", "'resnet_bogus' is not a timm model"),
    ),
    Case(
        "train/uncertain-bogus",
        lambda e, t: _tc(e, t / "r", "--uncertain", "maybe"),
        says=("--uncertain", "'maybe' is not valid"),
    ),
    Case(
        "train/on-bad-image-bogus",
        lambda e, t: _tc(e, t / "r", "--on-bad-image", "ignore"),
        says=("--on-bad-image", "'ignore' is not valid"),
    ),
    Case(
        "train/labels-unknown",
        lambda e, t: _tc(e, t / "r", "--labels", "pneumonitis"),
        says=("--labels", "unknown label 'pneumonitis'"),
    ),
    Case(
        "train/epochs-zero",
        lambda e, t: _tc(e, t / "r", "--epochs", "0"),
        says=("--epochs: 0", ">= 1"),
    ),
    Case(
        "train/image-size-zero",
        lambda e, t: _tc(e, t / "r", "--image-size", "0"),
        says=("--image-size: 0", ">= 16"),
    ),
    Case(
        "train/init-from-corrupt-config",
        lambda e, t: _tc(e, t / "r", "--init-from", str(_copy_run(e, t, "config.json"))),
        says=("config.json", "not valid JSON"),
    ),
    Case(
        "train/resume-and-overwrite",
        lambda e, t: _tc(e, t / "r", "--resume", "--overwrite"),
        says=("--resume and --overwrite exclude each other",),
    ),
    # -- report
    Case(
        "report/corrupt-config",
        lambda e, t: _rep(e, [_copy_run(e, t, "config.json")], t / "o"),
        says=("config.json", "not valid JSON"),
    ),
    Case(
        "report/corrupt-metrics",
        lambda e, t: _rep(e, [_copy_run(e, t, "metrics.json")], t / "o"),
        says=("metrics.json", "not valid JSON"),
    ),
    Case(
        "report/out-is-file",
        lambda e, t: _rep(e, [e["run"]], a_file(t)),
        says=("--out taken", "not a folder"),
    ),
    Case(
        "report/out-parent-file",
        lambda e, t: (_rep(e, [e["run"]], a_file(t) / "o")[0], t / "taken"),
        says=("--out taken/o", "taken is a file"),
    ),
    Case(
        "report/out-unwritable",
        lambda e, t: _rep(e, [e["run"]], unwritable_dir(t) / "o"),
        needs_chmod=True,
        says=("--out locked/o", "cannot write in locked", "permission denied"),
    ),
    Case(
        "report/run-missing",
        lambda e, t: _rep(e, [t / "nope"], t / "o"),
        says=("nope: not a classifier run directory", "does not exist"),
    ),
    Case(
        "report/not-a-run",
        lambda e, t: _rep(e, [(t / "x").mkdir() or t / "x"], t / "o"),
        says=("x: not a classifier run directory", "no config.json"),
    ),
    Case(
        "report/n-boot-zero",
        lambda e, t: _rep(e, [e["run"]], t / "o", "--n-boot", "0"),
        says=("--n-boot: 0", "too few"),
    ),
    Case(
        "report/out-holds-report",
        lambda e, t: _rep(e, [e["run"]], a_file(t / "o", "report.json").parent),
        says=("--out", "already holds a report", "--overwrite"),
    ),
    # -- evaluate-generator
    Case(
        "evalgen/synthetic-is-real",
        lambda e, t: _eval(e, t / "o", synthetic=e["phantom"]),
        says=("--synthetic", "no synthetic rows"),
    ),
    Case(
        "evalgen/synthetic-zero-rows",
        lambda e, t: _eval(e, t / "o", synthetic=e["empty"]),
        says=("--synthetic", "no synthetic rows"),
    ),
    Case(
        "evalgen/real-missing",
        lambda e, t: _eval(e, t / "o", real=t / "none.parquet"),
        says=("none.parquet: manifest not found",),
    ),
    Case(
        "evalgen/out-is-file",
        lambda e, t: _eval(e, a_file(t)),
        says=("--out taken", "not a folder"),
    ),
    Case(
        "evalgen/features-corrupt-config",
        lambda e, t: _eval(e, t / "o", "--features", str(_copy_run(e, t, "config.json"))),
        says=("config.json", "not valid JSON"),
    ),
    Case(
        "evalgen/threshold-over-1",
        lambda e, t: _eval(e, t / "o", "--memorization-threshold", "2"),
        says=("--memorization-threshold: 2.0", "outside [-1, 1]"),
    ),
    Case(
        "evalgen/out-parent-file",
        lambda e, t: (_eval(e, a_file(t) / "o")[0], t / "taken"),
        says=("--out taken/o", "taken is a file"),
    ),
    Case(
        "evalgen/features-missing",
        lambda e, t: _eval(e, t / "o", "--features", str(t / "no")),
        says=("--features no", "not a classifier run directory"),
    ),
    Case(
        "evalgen/out-unwritable",
        lambda e, t: _eval(e, unwritable_dir(t) / "o"),
        needs_chmod=True,
        says=("--out locked/o", "cannot write in locked", "permission denied"),
    ),
    # -- probe-text-encoder
    Case(
        "probe/finetuned-corrupt-text-encoder",
        lambda e, t: _probe(e, finetuned=e["corrupt_text_generator"], out=t / "o"),
        says=("--finetuned", "model.safetensors", "corrupt weights"),
    ),
    Case(
        "probe/finetuned-missing",
        lambda e, t: _probe(e, finetuned=t / "none", out=t / "o"),
        says=("--finetuned none", "not 'tiny' nor a local diffusers folder"),
    ),
    Case(
        "probe/manifest-non-utf8",
        lambda e, t: _probe(e, manifest=e["nonutf8"], out=t / "o"),
        says=("column 'report', row 0", "not UTF-8"),
    ),
    Case(
        "probe/pooling-bogus",
        lambda e, t: _probe(e, "--pooling", "max", out=t / "o"),
        says=("--pooling", "'max' is not valid"),
    ),
    Case(
        "probe/out-is-file",
        lambda e, t: _probe(e, out=a_file(t)),
        says=("--out taken", "not a folder"),
    ),
    # -- manifest export
    Case(
        "export/to-is-file",
        lambda e, t: (
            ["manifest", "export", str(e["phantom"]), "--to", str(a_file(t))],
            t / "taken",
        ),
        says=("--to taken", "already exists"),
    ),
    Case(
        "export/format-bogus",
        lambda e, t: (
            ["manifest", "export", str(e["phantom"]), "--to", str(t / "x"), "--format", "zip"],
            t / "x",
        ),
        says=("--format", "'zip' is not valid"),
    ),
    Case(
        "export/zero-rows",
        lambda e, t: (["manifest", "export", str(e["empty"]), "--to", str(t / "x")], t / "x"),
        says=("has no rows", "nothing to export"),
    ),
    Case(
        "export/to-unwritable",
        lambda e, t: (
            ["manifest", "export", str(e["phantom"]), "--to", str(unwritable_dir(t) / "x")],
            t / "locked" / "x",
        ),
        needs_chmod=True,
        says=("--to locked/x", "cannot write in locked", "permission denied"),
    ),
    # -- study
    Case(
        "study/out-is-file",
        lambda e, t: (["study", "--out", str(a_file(t)), "--preset", "smoke"], t / "taken"),
        says=("--out taken", "not a folder"),
    ),
    Case(
        "study/preset-bogus",
        lambda e, t: (["study", "--out", str(t / "s"), "--preset", "x"], t / "s"),
        says=("--preset", "unknown preset 'x'"),
    ),
    Case(
        "study/config-not-toml",
        lambda e, t: (
            ["study", "--out", str(t / "s"), "--config", str(_study_toml(t, "= = ="))],
            t / "s",
        ),
        says=("--config", "study.toml", "not valid TOML"),
    ),
    Case(
        "study/config-unknown-key",
        lambda e, t: (
            ["study", "--out", str(t / "s"), "--preset", "smoke"]
            + ["--config", str(_study_toml(t, "bogus_key = 3\n"))],
            t / "s",
        ),
        says=("study.toml", "unknown key 'bogus_key'"),
    ),
    Case(
        "study/out-unwritable",
        lambda e, t: (
            ["study", "--out", str(unwritable_dir(t) / "s"), "--preset", "smoke"],
            t / "locked" / "s",
        ),
        needs_chmod=True,
        says=("--out locked/s", "cannot write in locked", "permission denied"),
    ),
    Case(
        "study/foreign-folder",
        lambda e, t: (
            ["study", "--out", str(a_file(t / "s").parent), "--preset", "smoke"],
            t / "s",
        ),
        says=("--out s", "not a study folder"),
    ),
]


def snapshot(path: Path | None) -> object:
    """What is at `path`: None if absent, else every entry's name, kind and content hash."""
    if path is None or not os.path.lexists(path):
        return None
    path = Path(path)
    if path.is_file():
        return hashlib.sha256(path.read_bytes()).hexdigest()
    entries = {}
    for p in sorted(path.rglob("*")):
        rel = p.relative_to(path).as_posix()
        entries[rel] = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
    return entries


def chmod_effective(tmp: Path) -> bool:
    d = tmp / "probe"
    d.mkdir()
    d.chmod(0o500)
    try:
        return not os.access(d, os.W_OK)
    finally:
        d.chmod(0o700)


def deny_writes_in(monkeypatch, locked: Path) -> None:
    """`os.access(path, W_OK)` is False inside `locked` (root's view made a user's)."""
    real = os.access

    def access(path, mode, *args, **kwargs):
        inside = Path(path).absolute().is_relative_to(locked.absolute())
        if mode & os.W_OK and inside:
            return False
        return real(path, mode, *args, **kwargs)

    monkeypatch.setattr(os, "access", access)


def restore_permissions(tmp: Path) -> None:
    for p in [tmp, *tmp.rglob("*")]:
        if p.is_dir() and not p.is_symlink():
            p.chmod(0o700)


@pytest.mark.parametrize("case", BAD_INPUTS, ids=[c.id for c in BAD_INPUTS])
def test_bad_input_is_one_line_and_leaves_output_untouched(
    case, env, corrupt_generator, corrupt_text_generator, bin_generator, tmp_path, monkeypatch
):
    if case.needs_chmod and not chmod_effective(tmp_path):
        # As root chmod does not stop writes: make the permission check see the locked
        # folder as unwritable, as it is for every other user (the command must check
        # before it writes anything).
        deny_writes_in(monkeypatch, tmp_path / "locked")
    e = {
        **env,
        "corrupt_generator": corrupt_generator,
        "corrupt_text_generator": corrupt_text_generator,
        "bin_generator": bin_generator,
    }
    args, out = case.build(e, tmp_path)
    before = snapshot(out)
    try:
        result = runner.invoke(app, args)
    finally:
        restore_permissions(tmp_path)
    output = result.output
    assert "Traceback" not in output, output
    assert result.exit_code == 2, (result.exit_code, output, result.exception)
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), output
    said = lines[0].replace(f"{tmp_path}{os.sep}", "")  # paths as the case wrote them
    missing = [words for words in case.says if words not in said]
    assert not missing, f"{lines[0]!r} does not say {missing}"
    assert snapshot(out) == before, f"{out} changed"
    assert not (tmp_path / "pwned").exists(), "a pickle was loaded"


def test_the_table_is_big_enough():
    assert len(BAD_INPUTS) >= 60
    assert len({c.id for c in BAD_INPUTS}) == len(BAD_INPUTS)
    assert all(c.says and all(c.says) for c in BAD_INPUTS), "a case names no cause"


# ------------------------------------------------------------------------------ flags fast


@pytest.mark.parametrize(
    "args",
    [
        ["train-classifier", "--real", "x.parquet", "--out", "o", "--mix", "abc"],
        ["synthesize", "--model", "m", "--prompts-from", "p.parquet", "--out", "o"]
        + ["--labels", "bad"],
    ],
    ids=["train-mix-abc", "synth-labels-bad"],
)
def test_bad_flag_answers_before_heavy_imports(args, tmp_path):
    """A typo answers before torch, diffusers or timm is imported: cli.py and the flag checks
    import none of them (a fresh interpreter reports what `sys.modules` held when the
    command exited)."""
    proc = cli_subprocess(args, tmp_path, report_modules=tmp_path / "modules.json")
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    loaded = json.loads((tmp_path / "modules.json").read_text())
    assert "cli" in loaded  # the report is of the command's own interpreter
    heavy = sorted(m for m in ("torch", "diffusers", "timm", "transformers") if m in loaded)
    assert not heavy, f"imported before answering: {heavy}"


def test_png_bomb_is_skipped_with_on_bad_image_skip(env, tmp_path):
    out = tmp_path / "r"
    result = runner.invoke(
        app,
        ["train-classifier", "--real", str(env["bomb"]), "--out", str(out)]
        + ["--backbone", "test_resnet", "--image-size", "32", "--epochs", "1"]
        + ["--labels", "support_devices", "--on-bad-image", "skip"],
    )
    assert result.exit_code == 0, result.output
    assert json.loads((out / "metrics.json").read_text())["bad_images"]["train"] == 1


# ------------------------------------------------------------------------------ kill -9


# Prepended to the interpreter's code: at exit, write the names in sys.modules as JSON.
REPORT_MODULES = (
    "import atexit, json, os, sys\n"
    "atexit.register(lambda: open(os.environ['MODULES_REPORT'], 'w')"
    ".write(json.dumps(sorted(sys.modules))))\n"
)


def cli_subprocess(
    args,
    cwd: Path,
    fault: str | None = None,
    timeout: float = 300,
    report_modules: Path | None = None,
):
    """`cxraug ARGS` in a fresh interpreter on this checkout; `fault` sets CXRAUG_FAULT;
    `report_modules` gets the names in `sys.modules` (JSON) when the command exits."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    env.pop("CXRAUG_FAULT", None)
    if fault:
        env["CXRAUG_FAULT"] = fault
    code = 'import sys, cli; sys.argv[0] = "cxraug"; cli.app()'
    if report_modules is not None:
        env["MODULES_REPORT"] = str(report_modules)
        code = REPORT_MODULES + code
    return subprocess.run(
        [sys.executable, "-c", code, *map(str, args)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def count_renames(monkeypatch, args) -> int:
    """Run `args` in-process and count its atomic renames (fault points)."""
    from manifests import files

    monkeypatch.setenv("CXRAUG_FAULT", "rename:0")  # count, never fire
    files._fault_counts.clear()
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    monkeypatch.delenv("CXRAUG_FAULT")
    return files._fault_counts.get("rename", 0)


def scratch_left(out: Path) -> list[str]:
    from manifests.files import is_scratch_name

    return [p.name for p in Path(out).rglob("*") if is_scratch_name(p.name)]


def kill_points(total: int) -> dict[str, int]:
    return {"first-write": 1, "mid-run": max(2, total // 2), "final-write": total}


def assert_survives_kills(monkeypatch, tmp_path, make_args, result, points=None) -> None:
    """Kill `cxraug make_args(out)` (SIGKILL) at its first write, a middle one and its last
    (or the `points` of `kill_points` named); each `--resume` must finish with `result(out)`
    equal to an uninterrupted run's and leave no scratch behind."""
    reference = tmp_path / "reference"
    total = count_renames(monkeypatch, make_args(reference))
    expected = result(reference)
    chosen = kill_points(total)
    for name, n in {k: chosen[k] for k in points or chosen}.items():
        out = tmp_path / name
        killed = cli_subprocess(make_args(out), tmp_path, fault=f"rename:{n}", timeout=600)
        assert killed.returncode == -9, (name, killed.stderr[-2000:])
        resumed = runner.invoke(app, [*make_args(out), "--resume"])
        assert resumed.exit_code == 0, (name, resumed.output)
        assert result(out) == expected, name
        assert not scratch_left(out), (name, scratch_left(out))


def synth_args(env, out: Path) -> list[str]:
    return [
        "synthesize", "--model", str(env["generator"]), "--prompts-from", str(env["phantom"]),
        "--labels", "pneumothorax:3,pleural_effusion:3", "--out", str(out),
        "--num-inference-steps", "2", "--batch-size", "2",
    ]  # fmt: skip


def synth_result(out: Path) -> list[tuple]:
    """Rows (plan row, hash) of the finished set, and each image's bytes hash."""
    m = read_manifest(out / "manifest.parquet")
    rows = sorted(zip(m.rows["plan_row"], m.rows["image_sha256"], strict=True))
    images = sorted(
        (p.name, hashlib.sha256(p.read_bytes()).hexdigest()) for p in (out / "images").glob("*")
    )
    return [*rows, *images]


def test_synthesize_survives_kill_at_first_mid_and_final_write(env, tmp_path, monkeypatch):
    assert_survives_kills(monkeypatch, tmp_path, lambda out: synth_args(env, out), synth_result)


def train_args(env, out: Path) -> list[str]:
    return [
        "train-classifier", "--real", str(env["phantom"]), "--out", str(out),
        "--backbone", "test_resnet", "--image-size", "32", "--epochs", "3",
        "--labels", "support_devices", "--patience", "0", "--batch-size", "8",
    ]  # fmt: skip


def train_result(out: Path) -> tuple:
    predictions = pq.read_table(out / "predictions.parquet").to_pandas()
    weights = hashlib.sha256((out / "model.safetensors").read_bytes()).hexdigest()
    return predictions.to_csv(index=False), weights


def test_train_classifier_survives_kill_at_first_mid_and_final_write(env, tmp_path, monkeypatch):
    assert_survives_kills(monkeypatch, tmp_path, lambda out: train_args(env, out), train_result)


def finetune_args(env, out: Path) -> list[str]:
    return [
        "finetune", "--manifest", str(env["phantom"]), "--base", "tiny", "--out", str(out),
        "--max-steps", "4", "--autoencoder-steps", "2", "--batch-size", "4",
        "--checkpointing-steps", "2",
    ]  # fmt: skip


def finetune_result(out: Path) -> list[tuple]:
    """Every weights file of the exported pipeline, by path and content hash."""
    return sorted(
        (p.relative_to(out).as_posix(), hashlib.sha256(p.read_bytes()).hexdigest())
        for p in out.rglob("*.safetensors")
        if p.relative_to(out).parts[0] in ("unet", "text_encoder", "vae")
    )


def test_finetune_survives_kill_at_first_mid_and_final_write(env, tmp_path, monkeypatch):
    assert_survives_kills(
        monkeypatch, tmp_path, lambda out: finetune_args(env, out), finetune_result
    )


# ------------------------------------------------------------------------------ safety


def test_resume_never_unpickles_a_planted_checkpoint_and_a_moved_run_resumes(
    env, tmp_path, monkeypatch
):
    """Kill a run mid-way, move its folder, plant pickles that would create a file in every
    checkpoint, resume from the new place: it finishes and the file never appears."""
    reference = tmp_path / "reference"
    total = count_renames(monkeypatch, train_args(env, reference))
    killed_at = tmp_path / "killed"
    killed = cli_subprocess(
        train_args(env, killed_at), tmp_path, fault=f"rename:{max(2, total // 2)}"
    )
    assert killed.returncode == -9, killed.stderr[-2000:]
    moved = tmp_path / "elsewhere" / "run"
    moved.parent.mkdir()
    shutil.move(killed_at, moved)
    marker = tmp_path / "pwned"
    checkpoints = [p for p in (moved / "checkpoints").iterdir() if p.is_dir()]
    assert checkpoints, "the kill came before the first checkpoint"
    for folder in checkpoints:
        for name in (
            "custom_checkpoint_0.pkl",
            "optimizer.bin",
            "scheduler.bin",
            "random_states_0.pkl",
        ):
            pickle_file(folder / name, marker)
    resumed = runner.invoke(app, [*train_args(env, moved), "--resume"])
    assert resumed.exit_code == 0, resumed.output
    assert not marker.exists(), "resume ran code from a planted pickle"
    assert train_result(moved) == train_result(reference)


def _sleeper() -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])


def test_second_live_process_is_refused_naming_the_holder(env, tmp_path):
    import socket

    from manifests.runfolder import LOCK_FILE

    holder = _sleeper()
    try:
        for args in (synth_args(env, tmp_path / "s"), train_args(env, tmp_path / "r")):
            out = Path(args[args.index("--out") + 1])
            out.mkdir()
            lock = {"pid": holder.pid, "host": socket.gethostname()}
            (out / LOCK_FILE).write_text(json.dumps(lock))
            before = snapshot(out)
            result = runner.invoke(app, args)
            lines = [line for line in result.output.splitlines() if line.strip()]
            assert result.exit_code == 2 and len(lines) == 1, result.output
            assert lines[0].startswith("error: ") and f"process {holder.pid}" in lines[0]
            assert snapshot(out) == before
    finally:
        holder.kill()
        holder.wait()


def test_stale_lock_of_a_dead_process_is_taken_over(env, tmp_path):
    import socket

    from manifests.runfolder import LOCK_FILE

    dead = _sleeper()
    dead.kill()
    dead.wait()
    out = tmp_path / "r"
    out.mkdir()
    (out / LOCK_FILE).write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname()}))
    result = runner.invoke(app, train_args(env, out))
    assert result.exit_code == 0, result.output
    assert (out / "metrics.json").is_file() and not (out / LOCK_FILE).exists()


def test_overwrite_never_writes_through_a_symlinked_images_folder(env, tmp_path):
    out = tmp_path / "s"
    args = synth_args(env, out)
    args[args.index("--labels") + 1] = "pneumothorax:2"
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("mine")
    shutil.rmtree(out / "images")
    (out / "images").symlink_to(outside, target_is_directory=True)
    again = runner.invoke(app, [*args, "--overwrite"])
    assert again.exit_code == 0, again.output
    assert sorted(p.name for p in outside.iterdir()) == ["keep.txt"]
    assert (out / "images").is_dir() and not (out / "images").is_symlink()
    assert len(list((out / "images").glob("*.png"))) == 2


def study_result(out: Path) -> str:
    return (out / "report" / "report.csv").read_text()


# The smoke study cut further (every stage still runs): seconds, not a minute.
TINY_STUDY = """
[data]
phantom_n = 48
phantom_patients = 16
fractions = [0.5, 0.2, 0.3]

[generator]
max_steps = 2
autoencoder_steps = 1
batch_size = 4
checkpointing_steps = 1

[synthesis]
labels = "pleural_effusion:2,pneumothorax:2"
negatives = 0
num_inference_steps = 1
batch_size = 4

[classifier]
image_size = 32
epochs = 1
batch_size = 8
matched_controls = false
synthetic_arm = false
pretrain_finetune = false

[report]
n_boot = 20
generator_eval = false
primary = "mix0.5 vs real, macro"
"""


def test_study_survives_a_kill_mid_run(tmp_path, monkeypatch):
    """A study killed (SIGKILL) half-way through its writes resumes to the same report."""
    config = tmp_path / "tiny.toml"
    config.write_text(TINY_STUDY)
    args = ["study", "--preset", "smoke", "--config", str(config), "--out"]
    assert_survives_kills(
        monkeypatch, tmp_path, lambda out: [*args, str(out)], study_result, points=["mid-run"]
    )
