"""Reliability by figures: kills, a full disk and bad inputs across the commands, in one run.

    python benchmarks/reliability.py [--work DIR] [--images 48] [--random-kills 2]
                                     [--seed 0] [--quick] [--json FILE]

On a phantom set (`--images`, 64 px, split by patient), a saved `tiny` generator and tiny
classifiers, in a scratch folder (`--work`, default a temporary one), every command running
in a fresh interpreter as a user would run it:

* **Kills.** finetune, synthesize and train-classifier each run once uninterrupted (the
  reference), with their atomic renames traced (which file each commits). Then the same
  command is SIGKILLed at chosen renames (`CXRAUG_FAULT=rename:N`, see
  `manifests.files.fault_point`): its first write, a middle one and its last; finetune
  also during its latent-cache fill, as it is about to write the first, a middle and the
  last cache entry; and each at `--random-kills` random times (a delay drawn, seeded, over
  the reference's duration). Each kill is followed by the same command with `--resume`. A
  kill is *resumed* when that exits 0 and leaves no scratch, *bit-identical* when the
  output's hashes (weights; images and rows; predictions and weights) equal the
  reference's.
* **Disk full.** The same three commands with `CXRAUG_FAULT=enospc:N`: their middle
  rename fails with ENOSPC, as on a full disk. *Clean* when the command exits 2, the last
  line is the only `error:` line, naming the folder and `--resume`, and there is no
  traceback; then `--resume` must finish bit-identical.
* **Bad inputs.** Each hostile input (an `--out` that is a symbolic link, a Parquet file
  with a corrupt data page, broken or foreign generator folders, duplicate image rows, a
  folder locked by a live process, a baseline naming no run, a NaN flag, ...) runs once.
  *Clean* when the command exits 2 with exactly one line, starting with `error: `, no
  traceback, and its output path exactly as it was found.

It prints one table: per command, kills resumed and bit-identical of those made, the disk-full
trial, and bad inputs clean of those tried; then every trial that fell short. The default run
takes about ten minutes on two idle CPU cores; `--quick` (fewer images and steps, a kill at
a middle write and, for finetune, one during the cache fill, no random kills, one bad input
of each kind) is a smoke test of about two minutes.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

CLI = 'import sys, cli; sys.argv[0] = "cxraug"; cli.app()'
# The same, recording the target of every atomic rename (in order) into $RELIABILITY_TRACE.
TRACED_CLI = """
import atexit, json, os, sys
from manifests import files, runfolder
renames = []
def trace(kind="rename"):
    names = sys._getframe(1).f_locals
    renames.append(str(names.get("path") or names.get("final")))
files.fault_point = runfolder.fault_point = trace
atexit.register(lambda: open(os.environ["RELIABILITY_TRACE"], "w").write(json.dumps(renames)))
import cli
sys.argv[0] = "cxraug"
cli.app()
"""


# ------------------------------------------------------------------------------ running


def cxraug(
    args: list[str], fault: str | None = None, trace: Path | None = None, timeout: float = 600
) -> subprocess.CompletedProcess:
    """`cxraug ARGS` in a fresh interpreter on this checkout (`fault`: CXRAUG_FAULT)."""
    return subprocess.run(
        [sys.executable, "-c", TRACED_CLI if trace else CLI, *map(str, args)],
        cwd=ROOT,
        env=_env(fault, trace),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _env(fault: str | None = None, trace: Path | None = None) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
    env.pop("CXRAUG_FAULT", None)
    if fault:
        env["CXRAUG_FAULT"] = fault
    if trace:
        env["RELIABILITY_TRACE"] = str(trace)
    return env


def _lines(proc: subprocess.CompletedProcess) -> list[str]:
    return [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]


def snapshot(path: Path | None) -> object:
    """What is at `path`: None if absent, a link's target, else every entry and its hash."""
    if path is None or not os.path.lexists(path):
        return None
    path = Path(path)
    if path.is_symlink():
        return ("link", os.readlink(path), snapshot(path.resolve()))
    if path.is_file():
        return hashlib.sha256(path.read_bytes()).hexdigest()
    entries = {}
    for p in sorted(path.rglob("*")):
        rel = p.relative_to(path).as_posix()
        entries[rel] = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
    return entries


def scratch_left(out: Path) -> list[str]:
    from manifests.files import is_scratch_name

    return [p.name for p in Path(out).rglob("*") if is_scratch_name(p.name)]


# ------------------------------------------------------------------------------ hostile inputs


def corrupt_page(src: Path, dst: Path) -> Path:
    """A copy of the Parquet file `src` with 400 bytes of its first data page flipped
    (from offset 200; the footer stays intact, so the schema still reads)."""
    data = bytearray(Path(src).read_bytes())
    for i in range(200, 600):
        data[i] ^= 0xFF
    Path(dst).parent.mkdir(parents=True, exist_ok=True)
    Path(dst).write_bytes(bytes(data))
    return Path(dst)


def duplicated_rows(src: Path, dst: Path) -> Path:
    """`src` with its first row repeated, written beside it (so image paths stay valid)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pq.read_table(src)
    pq.write_table(pa.concat_tables([table, table.slice(0, 1)]), dst)
    return Path(dst)


def _edit_json(path: Path, edit: Callable[[dict], object]) -> None:
    path.write_text(json.dumps(edit(json.loads(path.read_text()))))


def _mismatched_parts(folder: Path) -> None:
    """A UNet (its config and weights agreeing) taking 8 latent channels; the VAE makes 4."""
    from diffusers import UNet2DConditionModel

    config = dict(UNet2DConditionModel.load_config(folder / "unet"))
    config.update(in_channels=8, out_channels=8)
    shutil.rmtree(folder / "unet")
    UNet2DConditionModel.from_config(config).save_pretrained(folder / "unet")


BROKEN_GENERATORS: dict[str, Callable[[Path], object]] = {
    "unet-config-cut": lambda d: (d / "unet/config.json").write_text(
        (d / "unet/config.json").read_text()[:200]
    ),
    "index-garbage": lambda d: (d / "model_index.json").write_bytes(b"\x00\xffnot json{"),
    "unet-config-empty": lambda d: (d / "unet/config.json").write_text("{}"),
    "unet-shapes-disagree": lambda d: _edit_json(
        d / "unet/config.json", lambda c: {**c, "block_out_channels": [32, 64, 64]}
    ),
    "latent-channels-changed": lambda d: _edit_json(
        d / "vae/config.json", lambda c: {**c, "latent_channels": 8}
    ),
    "index-foreign-module": lambda d: _edit_json(
        d / "model_index.json", lambda c: {**c, "unet": ["os", "system"]}
    ),
    "tokenizer-empty": lambda d: [p.unlink() for p in (d / "tokenizer").iterdir()],
    "parts-from-different-models": _mismatched_parts,
}
"""Ways a generator folder breaks: each edits a copy of a good one in place."""


def broken_generator(good: Path, how: str, dst: Path) -> Path:
    shutil.copytree(good, dst)
    BROKEN_GENERATORS[how](dst)
    return dst


# ------------------------------------------------------------------------------ the set-up


@dataclass
class Setup:
    work: Path
    data: Path  # the split phantom manifest
    generator: Path
    quick: bool
    images: int
    references: dict[str, Path] = field(default_factory=dict)


def make_setup(work: Path, images: int, quick: bool) -> Setup:
    from augmentor.base import build_tiny_pipeline
    from manifests.io import read_manifest, write_manifest
    from manifests.phantom import write_phantom_dataset
    from manifests.splits import split_by_patient

    path = write_phantom_dataset(work / "data", n=images, size=64, seed=0, patients=images // 3)
    write_manifest(split_by_patient(read_manifest(path), (0.6, 0.2, 0.2), seed=0), path, True)
    generator = work / "generator"
    build_tiny_pipeline(seed=0).save_pretrained(generator, safe_serialization=True)
    return Setup(work=work, data=path, generator=generator, quick=quick, images=images)


@dataclass(frozen=True)
class Command:
    """A long command: its arguments for an output folder, and its output's digest."""

    name: str
    args: Callable[[Setup, Path], list[str]]
    digest: Callable[[Path], str]


def _hash_files(out: Path, paths) -> list[tuple[str, str]]:
    return sorted(
        (p.relative_to(out).as_posix(), hashlib.sha256(p.read_bytes()).hexdigest()) for p in paths
    )


def _digest(value: object) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def finetune_digest(out: Path) -> str:
    weights = [p for p in out.rglob("*.safetensors") if p.relative_to(out).parts[0] in _PIPE]
    return _digest(_hash_files(out, weights))


_PIPE = ("unet", "text_encoder", "vae")


def synthesize_digest(out: Path) -> str:
    from manifests.io import read_manifest

    rows = read_manifest(out / "manifest.parquet").rows
    pairs = sorted(zip(rows["plan_row"].tolist(), rows["image_sha256"].tolist(), strict=True))
    return _digest([pairs, _hash_files(out, (out / "images").glob("*"))])


def train_digest(out: Path) -> str:
    import pandas as pd

    predictions = pd.read_parquet(out / "predictions.parquet").to_csv(index=False)
    return _digest([predictions, _hash_files(out, [out / "model.safetensors"])])


def _finetune_args(s: Setup, out: Path) -> list[str]:
    steps = "2" if s.quick else "6"
    return [
        "finetune", "--manifest", s.data, "--base", "tiny", "--out", out, "--max-steps", steps,
        "--autoencoder-steps", "2", "--batch-size", "4", "--checkpointing-steps", "2",
    ]  # fmt: skip


def _synthesize_args(s: Setup, out: Path) -> list[str]:
    labels = "pneumothorax:2,pleural_effusion:2" if s.quick else "pneumothorax:4,pleural_effusion:4"
    return [
        "synthesize", "--model", s.generator, "--prompts-from", s.data, "--labels", labels,
        "--out", out, "--num-inference-steps", "2", "--batch-size", "2",
    ]  # fmt: skip


def _train_args(s: Setup, out: Path) -> list[str]:
    return [
        "train-classifier", "--real", s.data, "--out", out, "--backbone", "test_resnet",
        "--image-size", "32", "--epochs", "2" if s.quick else "3", "--labels", "support_devices",
        "--patience", "0", "--batch-size", "8",
    ]  # fmt: skip


COMMANDS = [
    Command("finetune", _finetune_args, finetune_digest),
    Command("synthesize", _synthesize_args, synthesize_digest),
    Command("train-classifier", _train_args, train_digest),
]


# ------------------------------------------------------------------------------ kills


@dataclass
class Trial:
    """One kill, disk-full or bad-input trial and how it ended."""

    command: str
    kind: str  # kill, disk-full, bad-input
    name: str
    made: bool = True  # False: a random kill that came after the command had finished
    clean: bool = False  # bad input / disk full: one error line, exit 2, output as found
    resumed: bool = False
    identical: bool = False
    detail: str = ""


@dataclass
class Reference:
    digest: str
    seconds: float
    renames: list[str]


def reference_run(command: Command, setup: Setup) -> Reference:
    out = setup.work / "reference" / command.name
    trace = setup.work / "reference" / f"{command.name}.renames.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    proc = cxraug(command.args(setup, out), trace=trace)
    seconds = time.monotonic() - start
    if proc.returncode != 0:
        raise SystemExit(f"reference {command.name} failed:\n{proc.stderr[-3000:]}")
    setup.references[command.name] = out
    return Reference(command.digest(out), seconds, json.loads(trace.read_text()))


def chosen_kills(ref: Reference, quick: bool) -> dict[str, int]:
    """Rename numbers (1-based) to kill at: the first, a middle and the last write."""
    n = len(ref.renames)
    if quick:
        return {"middle write": max(1, n // 2)}
    return {"first write": 1, "middle write": max(1, n // 2), "last write": n}


CACHE_ENTRIES = "cache/posterior-*/*.safetensors"  # augmentor.latents' disk cache
# The plain CLI, SIGKILLing itself as it is about to write the Nth latent-cache entry
# ($RELIABILITY_CACHE_KILL): the cache entries are the only safetensors augmentor.latents saves.
CACHE_KILL_CLI = """
import os, signal, sys
from augmentor import latents
real, written = latents.save_file, []
def save_file(*args, **kwargs):
    written.append(1)
    if len(written) == int(os.environ["RELIABILITY_CACHE_KILL"]):
        os.kill(os.getpid(), signal.SIGKILL)
    return real(*args, **kwargs)
latents.save_file = save_file
import cli
sys.argv[0] = "cxraug"
cli.app()
"""


def cache_fill_kills(setup: Setup, quick: bool) -> list[int]:
    """Latent-cache entries to kill finetune at: its first, a middle one and its last."""
    n = len(list(setup.references["finetune"].glob(CACHE_ENTRIES)))
    return [max(1, n // 2)] if quick else sorted({1, max(1, n // 2), n})


def kill_during_cache_fill(command: Command, setup: Setup, ref: Reference, entry: int) -> Trial:
    out = setup.work / "kills" / command.name / f"cache-{entry}"
    proc = subprocess.run(
        [sys.executable, "-c", CACHE_KILL_CLI, *map(str, command.args(setup, out))],
        cwd=ROOT,
        env={**_env(), "RELIABILITY_CACHE_KILL": str(entry)},
        capture_output=True,
        text=True,
        timeout=600,
    )
    total = len(list(setup.references["finetune"].glob(CACHE_ENTRIES)))
    name = f"cache fill, at entry {entry} of {total}"
    trial = Trial(command.name, "kill", name, made=proc.returncode == -9)
    if not trial.made:
        trial.detail = f"not killed: exit {proc.returncode}"
        return trial
    return _resume(command, setup, ref, out, trial)


def kill_at_rename(command: Command, setup: Setup, ref: Reference, name: str, n: int) -> Trial:
    out = setup.work / "kills" / command.name / name.replace(" ", "-").replace(",", "")
    killed = cxraug(command.args(setup, out), fault=f"rename:{n}")
    trial = Trial(command.name, "kill", f"{name} (rename {n})", made=killed.returncode == -9)
    if not trial.made:
        trial.detail = f"not killed: exit {killed.returncode}"
        return trial
    return _resume(command, setup, ref, out, trial)


def kill_at_random(
    command: Command, setup: Setup, ref: Reference, k: int, rng: random.Random
) -> Trial:
    out = setup.work / "kills" / command.name / f"random-{k}"
    delay = rng.uniform(0.2, 0.95) * ref.seconds
    proc = subprocess.Popen(
        [sys.executable, "-c", CLI, *map(str, command.args(setup, out))],
        cwd=ROOT,
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        proc.wait(timeout=delay)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    trial = Trial(command.name, "kill", f"random, after {delay:.1f} s", made=proc.returncode == -9)
    if not trial.made:
        trial.detail = "finished before the kill"
        return trial
    return _resume(command, setup, ref, out, trial)


def _resume(command: Command, setup: Setup, ref: Reference, out: Path, trial: Trial) -> Trial:
    resumed = cxraug([*command.args(setup, out), "--resume"])
    left = scratch_left(out) if out.exists() else []
    trial.resumed = resumed.returncode == 0 and not left
    if resumed.returncode != 0:
        trial.detail = f"--resume exited {resumed.returncode}: {(_lines(resumed) or [''])[-1]}"
    elif left:
        trial.detail = f"scratch left: {left[:3]}"
    else:
        trial.identical = command.digest(out) == ref.digest
        trial.detail = "" if trial.identical else "output differs from the uninterrupted run"
    return trial


def disk_full(command: Command, setup: Setup, ref: Reference) -> Trial:
    out = setup.work / "disk-full" / command.name
    n = max(1, len(ref.renames) // 2)
    full = cxraug(command.args(setup, out), fault=f"enospc:{n}")
    lines = _lines(full)
    errors = [line for line in lines if line.startswith("error: ")]
    trial = Trial(command.name, "disk-full", f"ENOSPC at rename {n}")
    trial.clean = (
        full.returncode == 2
        and "Traceback" not in full.stderr
        and errors == lines[-1:]
        and str(out) in lines[-1]
        and "--resume" in lines[-1]
    )
    if not trial.clean:
        trial.detail = f"exit {full.returncode}: {(lines or [''])[-1][:200]}"
        return trial
    return _resume(command, setup, ref, out, trial)


# ------------------------------------------------------------------------------ bad inputs


@dataclass(frozen=True)
class BadInput:
    """One hostile input: `build(setup, folder)` makes it and returns (args, output path)."""

    command: str
    name: str
    build: Callable[[Setup, Path], tuple[list, Path | None]]


def _symlinked(command: str, make_args: Callable[[Setup, Path], list]) -> BadInput:
    """`--out` (or OUT) is a symbolic link to a finished classifier run, which --overwrite
    would empty."""

    def build(s: Setup, tmp: Path):
        target = tmp / "precious"
        shutil.copytree(s.references["train-classifier"], target)
        link = tmp / "link"
        link.symlink_to(target, target_is_directory=True)
        return [*make_args(s, link), "--overwrite"], link

    return BadInput(command, "--out is a symbolic link", build)


def _corrupt(command: str, make_args: Callable[[Setup, Path, Path], list]) -> BadInput:
    def build(s: Setup, tmp: Path):
        bad = corrupt_page(s.data, s.data.with_name(f"corrupt-{command}.parquet"))
        out = tmp / "out"
        return make_args(s, bad, out), out

    return BadInput(command, "Parquet with a corrupt data page", build)


def _duplicates(command: str, make_args: Callable[[Setup, Path, Path], list]) -> BadInput:
    def build(s: Setup, tmp: Path):
        bad = duplicated_rows(s.data, s.data.with_name(f"duplicated-{command}.parquet"))
        out = tmp / "out"
        return make_args(s, bad, out), out

    return BadInput(command, "duplicate image_path rows", build)


def _broken(command: str, how: str, flag: str) -> BadInput:
    def build(s: Setup, tmp: Path):
        broken = broken_generator(s.generator, how, tmp / "generator")
        args = {c.name: c.args for c in COMMANDS}[command](s, tmp / "out")
        if command == "finetune":
            args[args.index("--base") + 1] = broken
        else:
            args[args.index("--model") + 1] = broken
        return args, tmp / "out"

    return BadInput(command, f"{flag} {how}", build)


def _locked(command: Command) -> BadInput:
    def build(s: Setup, tmp: Path):
        from manifests.runfolder import LOCK_FILE

        out = tmp / "out"
        out.mkdir()
        holder = {"pid": _lock_holder().pid, "host": socket.gethostname()}
        (out / LOCK_FILE).write_text(json.dumps(holder))
        return command.args(s, out), out

    return BadInput(command.name, "--out locked by a live process", build)


_HOLDER: list[subprocess.Popen] = []


def _lock_holder() -> subprocess.Popen:
    """A live process (sleeping) whose PID the planted locks name; stopped at the end."""
    if not _HOLDER:
        _HOLDER.append(subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)"]))
    return _HOLDER[0]


def _arg(args: list, flag: str, value) -> list:
    args = list(args)
    args[args.index(flag) + 1] = value
    return args


def bad_inputs(quick: bool) -> list[BadInput]:
    ft, syn, tc = COMMANDS
    hows = ["unet-config-cut", "parts-from-different-models"] if quick else list(BROKEN_GENERATORS)
    cases = [
        _symlinked("finetune", ft.args),
        _corrupt("finetune", lambda s, bad, out: _arg(ft.args(s, out), "--manifest", bad)),
        _duplicates("finetune", lambda s, bad, out: _arg(ft.args(s, out), "--manifest", bad)),
        *[_broken("finetune", how, "--base") for how in hows],
        _locked(ft),
        _symlinked("synthesize", syn.args),
        _corrupt("synthesize", lambda s, bad, out: _arg(syn.args(s, out), "--prompts-from", bad)),
        *[_broken("synthesize", how, "--model") for how in hows],
        _locked(syn),
        BadInput(
            "synthesize",
            "--guidance-scale nan",
            lambda s, t: ([*syn.args(s, t / "out"), "--guidance-scale", "nan"], t / "out"),
        ),
        _symlinked("train-classifier", tc.args),
        _corrupt("train-classifier", lambda s, bad, out: _arg(tc.args(s, out), "--real", bad)),
        _duplicates("train-classifier", lambda s, bad, out: _arg(tc.args(s, out), "--real", bad)),
        _locked(tc),
        _corrupt("manifest summary", lambda s, bad, out: ["manifest", "summary", bad]),
        _duplicates("manifest summary", lambda s, bad, out: ["manifest", "summary", bad]),
        _corrupt("manifest split", lambda s, bad, out: ["manifest", "split", bad, "--out", out]),
        _duplicates("manifest split", lambda s, bad, out: ["manifest", "split", bad, "--out", out]),
        _corrupt(
            "evaluate-generator",
            lambda s, bad, out: (
                ["evaluate-generator", "--synthetic", s.data, "--real", bad] + ["--out", out]
            ),
        ),
        _symlinked(
            "evaluate-generator",
            lambda s, out: (
                ["evaluate-generator", "--synthetic", s.data, "--real", s.data] + ["--out", out]
            ),
        ),
        _symlinked(
            "report",
            lambda s, out: (
                ["report", s.references["train-classifier"], "--out", out] + ["--n-boot", "10"]
            ),
        ),
        BadInput(
            "report",
            "--baseline naming no run",
            lambda s, t: (
                ["report", s.references["train-classifier"], "--out", t / "out"]
                + ["--baseline", "nosuch", "--n-boot", "10"],
                t / "out",
            ),
        ),
        _symlinked("study", lambda s, out: ["study", "--preset", "smoke", "--out", out]),
        _symlinked("demo-data", lambda s, out: ["demo-data", out, "--n", "3", "--size", "32"]),
    ]
    if quick:  # one of each kind
        kinds = {
            ("train-classifier", "--out is a symbolic link"),
            ("manifest summary", "Parquet with a corrupt data page"),
            ("manifest split", "duplicate image_path rows"),
            ("synthesize", "--model parts-from-different-models"),
            ("finetune", "--out locked by a live process"),
            ("report", "--baseline naming no run"),
        }
        cases = [c for c in cases if (c.command, c.name) in kinds]
    return cases


def try_bad_input(case: BadInput, setup: Setup, k: int) -> Trial:
    tmp = setup.work / "bad" / f"{k:03d}"
    tmp.mkdir(parents=True)
    args, out = case.build(setup, tmp)
    before = snapshot(out)
    proc = cxraug(args, timeout=300)
    lines = _lines(proc)
    trial = Trial(case.command, "bad-input", case.name)
    problems = []
    if "Traceback" in proc.stderr:
        problems.append("traceback")
    if proc.returncode != 2:
        problems.append(f"exit {proc.returncode}")
    if len(lines) != 1 or not lines[0].startswith("error: "):
        problems.append(f"{len(lines)} lines")
    if snapshot(out) != before:
        problems.append(f"{out} changed")
    trial.clean = not problems
    if problems:
        trial.detail = f"{', '.join(problems)}: {(lines or [''])[-1][:160]}"
    return trial


# ------------------------------------------------------------------------------ the table


def table(trials: list[Trial]) -> str:
    order = list(dict.fromkeys(t.command for t in trials))
    rows = [
        "| command | kills resumed | kills bit-identical | disk full: one line, resumed "
        "bit-identical | bad inputs clean |",
        "|---|---|---|---|---|",
    ]
    for command in order:
        mine = [t for t in trials if t.command == command]
        kills = [t for t in mine if t.kind == "kill" and t.made]
        full = [t for t in mine if t.kind == "disk-full"]
        bad = [t for t in mine if t.kind == "bad-input"]
        cells = [
            f"{sum(t.resumed for t in kills)} of {len(kills)}" if kills else "",
            f"{sum(t.identical for t in kills)} of {len(kills)}" if kills else "",
            ", ".join(
                f"{'yes' if t.clean else 'no'}, {'yes' if t.identical else 'no'}" for t in full
            ),
            f"{sum(t.clean for t in bad)} of {len(bad)}" if bad else "",
        ]
        rows.append(f"| {command} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def shortfalls(trials: list[Trial]) -> list[str]:
    out = []
    for t in trials:
        short = (
            (t.kind == "kill" and t.made and not (t.resumed and t.identical))
            or (t.kind == "disk-full" and not (t.clean and t.identical))
            or (t.kind == "bad-input" and not t.clean)
        )
        if short:
            out.append(f"{t.command}, {t.kind}, {t.name}: {t.detail}")
    return out


# ------------------------------------------------------------------------------ main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", type=Path, help="Scratch folder (default: a temporary one).")
    parser.add_argument("--images", type=int, default=48, help="Phantom images (64 px).")
    parser.add_argument("--random-kills", type=int, default=2, help="Random-time kills each.")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the random kill times.")
    parser.add_argument("--quick", action="store_true", help="A smoke run of a minute or two.")
    parser.add_argument("--json", type=Path, help="Also write every trial here.")
    args = parser.parse_args(argv)
    if args.quick:
        args.images, args.random_kills = min(args.images, 24), 0
    return args


def main(argv: list[str] | None = None) -> list[Trial]:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="cxraug-reliability-") as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        try:
            trials = run_all(work, args)
        finally:
            for holder in _HOLDER:
                holder.kill()
                holder.wait()
    print(table(trials))
    problems = shortfalls(trials)
    if problems:
        print("\nfell short:")
        print("\n".join(f"- {p}" for p in problems))
    if args.json:
        args.json.write_text(json.dumps([asdict(t) for t in trials], indent=2) + "\n")
    return trials


def run_all(work: Path, args: argparse.Namespace) -> list[Trial]:
    start = time.monotonic()
    setup = make_setup(work, args.images, args.quick)
    rng = random.Random(args.seed)
    trials: list[Trial] = []
    for command in COMMANDS:
        ref = reference_run(command, setup)
        say(f"{command.name}: reference {ref.seconds:.1f} s, {len(ref.renames)} renames", start)
        for name, n in chosen_kills(ref, args.quick).items():
            trials.append(kill_at_rename(command, setup, ref, name, n))
        if command.name == "finetune":
            for entry in cache_fill_kills(setup, args.quick):
                trials.append(kill_during_cache_fill(command, setup, ref, entry))
        for k in range(args.random_kills):
            trials.append(kill_at_random(command, setup, ref, k, rng))
        trials.append(disk_full(command, setup, ref))
        say(f"{command.name}: kills and disk full done", start)
    for k, case in enumerate(bad_inputs(args.quick)):
        trials.append(try_bad_input(case, setup, k))
    say("bad inputs done", start)
    return trials


def say(message: str, start: float) -> None:
    print(f"[{time.monotonic() - start:6.0f} s] {message}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
