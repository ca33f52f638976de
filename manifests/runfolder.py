"""One run-folder mechanism for every long command (finetune, synthesize, train-classifier,
study, evaluate-generator).

A run folder is in one of four states, decided read-only (so every process of a
distributed run can decide before anyone writes):

* ``fresh``: missing, empty, or holding only cxraug's scratch (temporary names, empty
  folders, a lock): a run killed during its very first write starts again cleanly.
* ``resume``: `--resume` and the folder holds an unfinished run of this kind.
* ``finished``: `--resume` and the run's last record exists: nothing to do.
* ``overwrite``: `--overwrite` and the folder holds a run of this kind (never a foreign
  folder): its contents are removed, without following symbolic links out of it.

Anything else is refused with one line that says what to pass. Each artifact module
declares its `FolderFormat` (which file marks the folder as its kind, which marks it
finished); nobody else spells those names.

While a run writes, `RunFolder` holds a lock file naming the process and host; a second
process on the same folder is refused, a lock left by a dead process is taken over. On a
user error in a fresh run, the folder is put back as it was found; on any exit, scratch is
removed. A full disk is one user error naming the folder; what was written stays, so
`--resume` continues once space is freed.

Checkpoints are folders `checkpoints/checkpoint-N`, built under a scratch name and renamed
once complete, the oldest removed beyond a limit.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from manifests.errors import UserError
from manifests.files import (
    check_output_folder,
    fault_point,
    is_disk_full,
    is_scratch_name,
    read_json,
    scratch_dir,
    write_json,
)

FRESH, RESUME, FINISHED, OVERWRITE = "fresh", "resume", "finished", "overwrite"
LOCK_FILE = ".cxraug.lock"
CHECKPOINTS_DIR = "checkpoints"
CHECKPOINT_DONE = "checkpoint.json"  # written last inside a checkpoint folder
_CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")

RESUME_HELP = (
    "Continue the unfinished run in the output folder (a finished one is left as it is; an "
    "empty one starts fresh)."
)
OVERWRITE_HELP = (
    "Replace the output folder if it holds an earlier run of this command (a foreign folder "
    "is never deleted)."
)


@dataclass(frozen=True)
class FolderFormat:
    """What makes a folder an artifact of one kind.

    Attributes:
        kind: how messages name it ("classifier run", "generator", ...).
        started_file: relative path written when a run starts (its config): its presence
            marks the folder as this kind.
        done_file: relative path written last: its presence marks the run finished.
    """

    kind: str
    started_file: str
    done_file: str

    def is_mine(self, out: Path) -> bool:
        return (Path(out) / self.started_file).is_file() or self.is_done(out)

    def is_done(self, out: Path) -> bool:
        return (Path(out) / self.done_file).exists()


# ------------------------------------------------------------------------------ state


def holds_only_scratch(out: Path) -> bool:
    """True for a folder whose entries (recursively) are only scratch, empty folders or a lock."""
    for entry in Path(out).iterdir():
        if entry.name == LOCK_FILE or is_scratch_name(entry.name):
            continue
        if entry.is_dir() and not entry.is_symlink() and holds_only_scratch(entry):
            continue
        return False
    return True


def check_resume_overwrite(resume: bool, overwrite: bool) -> None:
    if resume and overwrite:
        raise UserError("--resume and --overwrite exclude each other; pick one")


def folder_state(
    out: Path, fmt: FolderFormat, resume: bool, overwrite: bool, flag: str = "--out"
) -> str:
    """`fresh`, `resume`, `finished` or `overwrite` (see the module docstring); read-only."""
    out = Path(out)
    check_resume_overwrite(resume, overwrite)
    check_output_folder(out, flag)  # a symbolic link, a file, no permission
    if not out.exists() or holds_only_scratch(out):
        return FRESH
    mine = fmt.is_mine(out)
    if resume:
        if not mine:
            raise UserError(
                f"{flag} {out}: not a {fmt.kind} folder (no {fmt.started_file}); nothing to "
                "resume; use a new folder"
            )
        return FINISHED if fmt.is_done(out) else RESUME
    if overwrite:
        if not mine:
            raise UserError(
                f"{flag} {out}: not empty and not a {fmt.kind} folder (no {fmt.started_file}); "
                "refusing to delete it; use a new folder"
            )
        return OVERWRITE
    if mine:
        done = fmt.is_done(out)
        raise UserError(
            f"{flag} {out}: already holds {'a finished' if done else 'an unfinished'} "
            f"{fmt.kind}; pass --resume to {'keep' if done else 'continue'} it or --overwrite "
            "to replace it"
        )
    raise UserError(
        f"{flag} {out}: already exists, is not empty and is not a {fmt.kind} folder; use a "
        "new or empty folder"
    )


# ------------------------------------------------------------------------------ cleaning


def empty_folder(out: Path) -> None:
    """Remove everything inside `out`; symbolic links are unlinked, never followed."""
    for entry in Path(out).iterdir():
        if entry.name == LOCK_FILE:
            continue
        if entry.is_symlink() or not entry.is_dir():
            entry.unlink()
        else:
            shutil.rmtree(entry)


def remove_scratch(out: Path) -> int:
    """Delete cxraug's temporary files and folders below `out`; returns how many."""
    out = Path(out)
    if not out.is_dir():
        return 0
    removed = 0
    for entry in list(out.iterdir()):
        if entry.name == LOCK_FILE:
            continue
        if is_scratch_name(entry.name):
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
            removed += 1
        elif entry.is_dir() and not entry.is_symlink():
            removed += remove_scratch(entry)
    return removed


# ------------------------------------------------------------------------------ lock


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _read_lock(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def acquire_lock(out: Path, flag: str = "--out") -> Path:
    """Take `out/.cxraug.lock` for this process; refuse a live holder, take over a dead one."""
    path = Path(out) / LOCK_FILE
    me = {"pid": os.getpid(), "host": socket.gethostname()}
    for _ in range(3):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = _read_lock(path)
            if holder is None:  # being written right now, or garbage: look again once
                holder = {"pid": -1, "host": me["host"]}
            same_host = holder.get("host") == me["host"]
            pid = int(holder.get("pid", -1))
            if same_host and pid == me["pid"]:
                return path
            if same_host and (pid <= 0 or not _pid_alive(pid)):
                path.unlink(missing_ok=True)  # stale: its process is gone
                continue
            raise UserError(
                f"{flag} {out}: in use by process {pid} on {holder.get('host')} "
                f"(lock {path}); wait for it to finish, or delete the lock if it is gone"
            ) from None
        with os.fdopen(fd, "w") as f:
            json.dump(me, f)
        return path
    raise UserError(f"{flag} {out}: could not take the lock {path}; try again")


def release_lock(out: Path) -> None:
    path = Path(out) / LOCK_FILE
    holder = _read_lock(path)
    if holder is not None and holder.get("pid") == os.getpid():
        path.unlink(missing_ok=True)


@contextlib.contextmanager
def run_folder(
    out: Path,
    state: str,
    main: bool = True,
    flag: str = "--out",
    fmt: FolderFormat | None = None,
) -> Iterator[Path]:
    """Hold `out` for one run in `state` (from `folder_state`).

    On the main process: takes the lock (creating the folder), empties it for `overwrite`,
    removes stale scratch. On a `UserError` in a fresh or overwritten run that has not yet
    written its first durable record (`fmt.started_file`; with no `fmt`, at any point) the
    folder is put back as found (removed if this run created it, else emptied), so the
    corrected command starts cleanly; a run that got further stays resumable. On any exit
    scratch is removed and the lock released. Other processes only wait on the main one.
    """
    out = Path(out)
    if not main:
        with disk_full_is_resumable(out, flag):
            yield out
        return
    existed = out.exists()
    check_output_folder(out, flag)  # before creating anything
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:  # no permission, a file in the way, a read-only file system
        raise UserError(f"{flag} {out}: cannot create it ({e.strerror or e})") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise UserError(f"{flag} {out}: cannot write there (permission denied)")
    acquire_lock(out, flag)
    try:
        if state == OVERWRITE:
            empty_folder(out)
        remove_scratch(out)
        with disk_full_is_resumable(out, flag):
            yield out
    except UserError as exc:
        started = fmt is not None and (out / fmt.started_file).is_file()
        if fmt is None and is_disk_full(exc):  # no record says what is durable: keep it all
            started = True
        if state in (FRESH, OVERWRITE) and not started:
            if existed:
                empty_folder(out)
            else:
                release_lock(out)
                shutil.rmtree(out, ignore_errors=True)
        raise
    finally:
        remove_scratch(out)
        release_lock(out)


@contextlib.contextmanager
def disk_full_is_resumable(out: Path, flag: str = "--out") -> Iterator[None]:
    """A full disk anywhere in the block (OSError ENOSPC, safetensors' or Arrow's error
    saying so) as one UserError naming `out` and how to continue."""
    try:
        yield
    except Exception as exc:
        if not is_disk_full(exc):
            raise
        raise UserError(
            f"{flag} {out}: no space left on the device; free some, then run the same "
            "command with --resume to continue"
        ) from exc


# ------------------------------------------------------------------------------ config


def check_resume_config(saved: dict, new: dict, free: set[str], out: Path) -> None:
    """Refuse a resume whose settings differ from the saved ones (except `free` keys)."""
    for key, value in new.items():
        if key in free or key not in saved:
            continue
        if saved[key] != value:
            old = saved[key]
            what = (
                "the input changed" if key.endswith("digest") else f"{key}={old!r}, now {value!r}"
            )
            raise UserError(
                f"--resume: {out} was started with different settings ({what}); use the "
                "same settings, --overwrite, or a new --out"
            )


def read_record(path: Path, what: str) -> dict:
    """A run folder's JSON record (config, metrics...), UserError if missing or corrupt."""
    return read_json(path, what)


# ------------------------------------------------------------------------------ checkpoints


def checkpoint_step(path: Path) -> int | None:
    m = _CHECKPOINT_RE.match(Path(path).name)
    return int(m[1]) if m else None


def list_checkpoints(out: Path) -> list[Path]:
    """Complete checkpoints of a run folder, oldest first."""
    folder = Path(out) / CHECKPOINTS_DIR
    if not folder.is_dir():
        return []
    found = [
        p
        for p in folder.iterdir()
        if p.is_dir() and checkpoint_step(p) is not None and (p / CHECKPOINT_DONE).is_file()
    ]
    return sorted(found, key=checkpoint_step)


def latest_checkpoint(out: Path) -> Path | None:
    done = list_checkpoints(out)
    return done[-1] if done else None


def checkpoint_dir(out: Path, step: int) -> Path:
    """Where checkpoint `step` lives once committed."""
    return Path(out) / CHECKPOINTS_DIR / f"checkpoint-{step}"


def checkpoint_scratch_dir(out: Path, step: int) -> Path:
    """The scratch name checkpoint `step` is built under (what every rank writes into)."""
    return scratch_dir(checkpoint_dir(out, step))


def checkpoint_scratch(out: Path, step: int) -> Path:
    """An empty scratch folder to save checkpoint `step` into (then `commit_checkpoint`)."""
    tmp = checkpoint_scratch_dir(out, step)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    return tmp


def commit_checkpoint(out: Path, tmp: Path, step: int, keep: int | None) -> Path:
    """Mark `tmp` complete, rename it to `checkpoint-step`, keep the newest `keep`."""
    write_json(Path(tmp) / CHECKPOINT_DONE, {"step": step})
    final = checkpoint_dir(out, step)
    if final.exists():  # the same step saved again (e.g. resumed at the end): replace
        shutil.rmtree(final)
    fault_point("rename")
    os.replace(tmp, final)
    if keep is not None:
        for old in list_checkpoints(out)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    return final


def relative_to_run(path: str | Path | None, out: Path) -> str | None:
    """A path as recorded in a run folder: relative when inside it, so a moved run resumes."""
    if path is None:
        return None
    path, out = Path(path).absolute(), Path(out).absolute()
    try:
        return path.relative_to(out).as_posix()
    except ValueError:
        return str(path)


__all__ = [
    "CHECKPOINTS_DIR",
    "FINISHED",
    "FRESH",
    "LOCK_FILE",
    "OVERWRITE",
    "OVERWRITE_HELP",
    "RESUME",
    "RESUME_HELP",
    "FolderFormat",
    "acquire_lock",
    "check_resume_config",
    "check_resume_overwrite",
    "checkpoint_dir",
    "checkpoint_scratch",
    "checkpoint_scratch_dir",
    "disk_full_is_resumable",
    "checkpoint_step",
    "commit_checkpoint",
    "empty_folder",
    "folder_state",
    "holds_only_scratch",
    "latest_checkpoint",
    "list_checkpoints",
    "read_record",
    "release_lock",
    "remove_scratch",
    "run_folder",
    "write_json",
]
