"""The synthetic set folder: its file names, reader and writer (nobody else spells them).

A synthetic set folder holds:

* ``synthesis.json``: written when a run starts: its config and the identity (generator
  digest, prompt manifest digest, targets, sampler settings) a `--resume` must match, and
  its provenance (`manifests.provenance`).
* ``images/NNNNNN.png``: one PNG per plan row.
* ``shards/shard-<rank>-<k>.parquet``: committed manifest rows; a row is done exactly when
  a shard holds it.
* ``manifest.parquet``: every shard merged in plan order; written last, so its presence
  means the set is finished.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq

from manifests.errors import UserError
from manifests.files import atomic_path, read_json, write_json
from manifests.io import Manifest, to_table, write_manifest
from manifests.runfolder import FolderFormat
from manifests.schema import validate_frame

RECORD_FILE = "synthesis.json"
MANIFEST_FILE = "manifest.parquet"
IMAGES_DIR = "images"
SHARDS_DIR = "shards"
ROW_COLUMN = "plan_row"
FORMAT = FolderFormat(kind="synthetic set", started_file=RECORD_FILE, done_file=MANIFEST_FILE)
_SHARD_NAME = re.compile(r"^shard-(\d+)-(\d+)\.parquet$")


def manifest_path(out: Path) -> Path:
    return Path(out) / MANIFEST_FILE


def image_name(row: int) -> str:
    """An image's path relative to the set's folder."""
    return f"{IMAGES_DIR}/{row:06d}.png"


def read_record(out: Path) -> dict:
    return read_json(Path(out) / RECORD_FILE, "synthesis record")


def write_record(out: Path, record: dict) -> None:
    write_json(Path(out) / RECORD_FILE, record)


def make_folders(out: Path) -> None:
    (Path(out) / IMAGES_DIR).mkdir(parents=True, exist_ok=True)
    (Path(out) / SHARDS_DIR).mkdir(parents=True, exist_ok=True)


def shard_paths(out: Path) -> list[Path]:
    """The committed shards of a synthetic set, by rank then index."""
    folder = Path(out) / SHARDS_DIR
    if not folder.is_dir():
        return []
    found = [(m, p) for p in folder.iterdir() if (m := _SHARD_NAME.match(p.name))]
    return [p for m, p in sorted(found, key=lambda mp: (int(mp[0][1]), int(mp[0][2])))]


def committed_rows(out: Path) -> set[int]:
    """Plan rows that some committed shard holds (reads only that column)."""
    done: set[int] = set()
    for path in shard_paths(out):
        done.update(pq.read_table(path, columns=[ROW_COLUMN]).column(0).to_pylist())
    return done


def next_shard_path(out: Path, rank: int) -> Path:
    """The next unused shard name of this rank (shard names never collide)."""
    indices = [
        int(m[2]) for p in shard_paths(out) if (m := _SHARD_NAME.match(p.name))[1] == str(rank)
    ]
    return Path(out) / SHARDS_DIR / f"shard-{rank}-{max(indices, default=-1) + 1:06d}.parquet"


def write_shard(
    rows: pd.DataFrame, labels: tuple[str, ...], out: Path, path: Path, metadata: dict
) -> None:
    """Commit rows as one atomic Parquet shard (validated like a manifest)."""
    manifest = Manifest(rows=rows, labels=labels, root=out, metadata=dict(metadata))
    validate_frame(rows, labels, where=str(path))
    table = to_table(manifest)
    with atomic_path(path, overwrite=False) as tmp:
        pq.write_table(table, tmp)


def merge_shards(
    out: Path, labels: tuple[str, ...], plan_size: int, metadata: dict[str, str]
) -> Path:
    """Merge every committed shard into `manifest.parquet` (rows in plan order)."""
    out = Path(out)
    parts = [pq.read_table(p).to_pandas() for p in shard_paths(out)]
    rows = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    if len(rows):
        # A row is committed once; keep the first copy should a shard ever repeat one.
        rows = rows.drop_duplicates(subset=ROW_COLUMN).sort_values(ROW_COLUMN)
    missing = plan_size - len(rows)
    if missing:
        raise UserError(
            f"--out {out}: {missing} of {plan_size} rows not generated; re-run with --resume"
        )
    manifest = Manifest(
        rows=rows.reset_index(drop=True), labels=labels, root=out, metadata=metadata
    )
    return write_manifest(manifest, manifest_path(out), overwrite=True)


__all__ = [
    "FORMAT",
    "IMAGES_DIR",
    "MANIFEST_FILE",
    "RECORD_FILE",
    "ROW_COLUMN",
    "SHARDS_DIR",
    "committed_rows",
    "image_name",
    "make_folders",
    "manifest_path",
    "merge_shards",
    "next_shard_path",
    "read_record",
    "shard_paths",
    "write_record",
    "write_shard",
]
