"""Files every artifact writes: atomic writes, JSON records, content hashes, scratch names.

Writes go to a temporary name beside the target and are renamed onto it, so a reader (or
a resumed run) never sees half a file. Every temporary name cxraug makes is a *scratch
name* (`is_scratch_name`): a run folder holding only scratch entries is treated as fresh,
and resumes remove them.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from manifests.errors import UserError

TMP_SUFFIX = ".tmp"
TMP_PREFIX = ".tmp-"  # folders built under a temporary name, e.g. .tmp-checkpoint-00010


def is_scratch_name(name: str) -> bool:
    """Whether a file or folder name is one of cxraug's temporary names."""
    return name.startswith(".") and (name.endswith(TMP_SUFFIX) or name.startswith(TMP_PREFIX))


def scratch_dir(path: Path) -> Path:
    """The temporary name a folder is built under before it is renamed onto `path`."""
    path = Path(path)
    return path.with_name(f"{TMP_PREFIX}{path.name}")


FAULT_ENV = "CXRAUG_FAULT"
_fault_counts: dict[str, int] = {}


def fault_point(kind: str = "rename") -> None:
    """Test-only fault hook at each atomic rename of a file or a checkpoint folder.

    With `CXRAUG_FAULT=rename:N` in the environment this process SIGKILLs itself at its
    Nth `rename` fault point, just before the rename, as a hard kill at that write would;
    with `CXRAUG_FAULT=enospc:N` the Nth rename fails as on a full disk (OSError ENOSPC).

    The reliability suite (tests/test_reliability.py, benchmarks/reliability.py) uses it to
    kill a command at chosen writes, or fill its disk, and check that `--resume` finishes
    it. Unset (the normal case) it costs one dictionary lookup.
    """
    spec = os.environ.get(FAULT_ENV)
    if not spec:
        return
    want, _, n = spec.partition(":")
    if kind != "rename" or want not in ("rename", "enospc"):
        return
    _fault_counts[kind] = _fault_counts.get(kind, 0) + 1
    if _fault_counts[kind] != int(n or 1):
        return
    if want == "enospc":
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    import signal

    os.kill(os.getpid(), signal.SIGKILL)


_DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
_DISK_FULL_TEXTS = ("No space left on device", "Disk quota exceeded", "os error 28")


def is_disk_full(exc: BaseException | None) -> bool:
    """Whether `exc`, or an exception it was raised from or during, says the disk (or the
    user's quota) is full: an OSError with ENOSPC/EDQUOT, or a library's own error type
    (safetensors' SafetensorError, Arrow's) whose message says so."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in _DISK_FULL_ERRNOS:
            return True
        if any(text in str(exc) for text in _DISK_FULL_TEXTS):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: Path, overwrite: bool = False, flag: str = "--overwrite") -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success rename it onto `path`.

    Refuses an existing `path` unless `overwrite`. On error the temporary file is removed and
    `path` is untouched.
    """
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{path}: is a folder; give a file path")
    if path.exists() and not overwrite:
        raise UserError(f"{path}: already exists; pass {flag} to replace it")
    check_writable_parent(path, "")  # before creating any parent folder
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX, dir=path.parent)
    except FileExistsError as e:
        raise UserError(f"{path}: a parent ({e.filename}) is a file, not a folder") from None
    except NotADirectoryError:
        raise UserError(f"{path}: a parent of it is a file, not a folder") from None
    except PermissionError:
        raise UserError(f"{path}: cannot write there (permission denied)") from None
    except OSError as e:  # a read-only file system, a full disk, ...
        raise UserError(f"{path}: cannot write there ({e.strerror or e})") from None
    os.close(fd)
    # mkstemp creates 0600; give the result the permissions a plain open() would.
    os.chmod(tmp, 0o666 & ~_umask())
    try:
        yield Path(tmp)
        fault_point("rename")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_json(path: Path, data: object, overwrite: bool = True) -> None:
    """Write JSON atomically (indent 2, sorted keys)."""
    with atomic_path(path, overwrite=overwrite) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def read_json(path: Path, what: str = "file") -> dict:
    """A JSON object from `path`; UserError naming the file if it is missing or not JSON."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{path}: {what} not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(
            f"{path}: not valid JSON ({e.__class__.__name__}); {what} is corrupt"
        ) from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a JSON object in this {what}")
    return data


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def text_digest(text: str) -> str:
    """Hex SHA-256 of a string (UTF-8)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def check_output_folder(path: Path, flag: str) -> None:
    """Refuse an output folder that is a symbolic link or a file, or that cannot be created
    or written. A link is refused, not followed: `--overwrite` would empty the folder it
    points to, which may be anything."""
    path = Path(path)
    if path.is_symlink():
        raise UserError(
            f"{flag} {path}: is a symbolic link (to {os.readlink(path)}); give the folder "
            "itself or a new path"
        )
    if path.exists() and not path.is_dir():
        raise UserError(f"{flag} {path}: exists and is not a folder; give a folder path")
    _check_nearest_folder(path, path.absolute(), flag)


def check_writable_parent(path: Path, flag: str) -> None:
    """Refuse an output file whose nearest existing parent is a file or is not writable."""
    _check_nearest_folder(Path(path), Path(path).absolute().parent, flag)


def _check_nearest_folder(path: Path, start: Path, flag: str) -> None:
    where = f"{flag} {path}" if flag else str(path)
    nearest = start
    while not nearest.exists():
        nearest = nearest.parent
    if not nearest.is_dir():
        raise UserError(f"{where}: {nearest} is a file, not a folder")
    if not os.access(nearest, os.W_OK | os.X_OK):
        raise UserError(f"{where}: cannot write in {nearest} (permission denied)")


def check_safetensors(path: Path, flag: str = "") -> None:
    """Raise UserError if `path` is not a complete safetensors file (reads its header only)."""
    from safetensors import safe_open

    where = f"{flag}: {path}" if flag else str(path)
    try:
        with safe_open(str(path), framework="numpy") as f:
            f.keys()
    except Exception as exc:  # SafetensorError, OSError: a truncated or foreign file
        raise UserError(f"{where}: corrupt weights file ({exc})") from None
