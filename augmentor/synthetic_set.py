"""The synthetic set folder: its file names, reader and writer (nobody else spells them).

A synthetic set folder holds:

* ``synthesis.json``: written when a run starts: its config and the identity (generator
  digest, prompt manifest digest, targets, sampler settings) a `--resume` must match, and
  its provenance (`manifests.provenance`).
* ``images/NNNNNN.png``: one PNG per plan row.
* ``shards/shard-<rank>-<k>.parquet``: committed manifest rows; a row is done exactly when
  a shard holds it.
* ``manifest.parquet``: every shard merged in plan order; written last, so its presence
  means the set is finished. The oracle filter (`augmentor.oracle_filter`) replaces it by
  the rows it keeps (:func:`write_filtered_manifest`; the set stays finished).
* ``oracle_scores.parquet``: every row with the oracle's score, rejected rows included
  (:func:`write_oracle_scores`), and ``feature_cache/``, the oracle's image features.
* ``demographic_scores.parquet``: every row with the demographic oracles' predictions and
  the demographic filter's verdict (`augmentor.demographic_filter`,
  :func:`write_demographic_scores`); the manifest it leaves holds the filter's reject
  counts per cell in its metadata (`DEMOGRAPHIC_FILTER_KEY`, :func:`read_demographic_filter`).

Beside a synthetic manifest, `cxraug evaluate-generator --drop-memorized` writes it without
the flagged near-copies, by default as ``<stem>.unmemorized.parquet``
(:func:`write_unmemorized_manifest`). Every file above is written by this module's
functions only.
"""

from __future__ import annotations

import json
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
SCORES_FILE = "oracle_scores.parquet"
DEMOGRAPHIC_SCORES_FILE = "demographic_scores.parquet"
DEMOGRAPHIC_FILTER_KEY = "cxraug.demographic_filter"  # manifest metadata: the filter's counts
FEATURE_CACHE_DIR = "feature_cache"
UNMEMORIZED_SUFFIX = ".unmemorized.parquet"
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


# ------------------------------------------------------------------------------ filters


def write_oracle_scores(manifest_path: Path, rows: pd.DataFrame) -> Path:
    """Every row the oracle scored, rejected ones included, beside the manifest (atomic)."""
    path = Path(manifest_path).parent / SCORES_FILE
    with atomic_path(path, overwrite=True) as tmp:
        rows.to_parquet(tmp, index=False)
    return path


def write_demographic_scores(manifest_path: Path, rows: pd.DataFrame) -> Path:
    """Every row the demographic filter judged, rejected ones included, beside the manifest."""
    path = Path(manifest_path).parent / DEMOGRAPHIC_SCORES_FILE
    with atomic_path(path, overwrite=True) as tmp:
        rows.to_parquet(tmp, index=False)
    return path


def read_demographic_filter(manifest: Manifest) -> dict | None:
    """The demographic filter's record in a manifest's metadata (rule, counts per cell), or
    None when no demographic filter chose its rows."""
    raw = manifest.metadata.get(DEMOGRAPHIC_FILTER_KEY)
    try:
        record = json.loads(raw) if raw else None
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


def feature_cache_dir(manifest_path: Path) -> Path:
    """The oracle filter's default feature cache, beside the manifest."""
    return Path(manifest_path).parent / FEATURE_CACHE_DIR


def write_filtered_manifest(manifest_path: Path, kept: Manifest) -> Path:
    """Replace a finished set's manifest by the rows a filter kept (atomic: the set is
    finished before and after)."""
    return write_manifest(kept, Path(manifest_path), overwrite=True)


def unmemorized_path(manifest_path: Path, requested: Path | None = None) -> Path:
    """Where the manifest without its memorized rows goes: `requested`, or by default
    ``<stem>.unmemorized.parquet`` beside the synthetic manifest."""
    source = Path(manifest_path)
    return Path(requested or source.with_name(f"{source.stem}{UNMEMORIZED_SUFFIX}"))


def check_unmemorized_path(path: Path, synthetic: Manifest, overwrite: bool) -> Path:
    """UserError unless `path` may take the de-memorized manifest: new (or `overwrite`),
    and in a folder above the synthetic images (their paths stay relative)."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise UserError(f"--filtered-out {path}: already exists; pass --overwrite to replace it")
    folder = path.parent.resolve()
    for image in synthetic.image_paths()[:1] + synthetic.image_paths()[-1:]:
        if not image.resolve().is_relative_to(folder):
            raise UserError(
                f"--filtered-out {path}: synthetic image paths must stay relative, so the "
                f"filtered manifest must lie in a folder above the images ({image.parent})"
            )
    return path


def write_unmemorized_manifest(kept: Manifest, path: Path, overwrite: bool) -> Path:
    """Write the synthetic rows the memorization audit did not flag to `path`."""
    return write_manifest(kept, Path(path), overwrite=overwrite)


__all__ = [
    "DEMOGRAPHIC_FILTER_KEY",
    "DEMOGRAPHIC_SCORES_FILE",
    "FEATURE_CACHE_DIR",
    "FORMAT",
    "IMAGES_DIR",
    "MANIFEST_FILE",
    "RECORD_FILE",
    "ROW_COLUMN",
    "SCORES_FILE",
    "SHARDS_DIR",
    "UNMEMORIZED_SUFFIX",
    "check_unmemorized_path",
    "committed_rows",
    "feature_cache_dir",
    "image_name",
    "make_folders",
    "manifest_path",
    "merge_shards",
    "next_shard_path",
    "read_demographic_filter",
    "read_record",
    "shard_paths",
    "unmemorized_path",
    "write_demographic_scores",
    "write_filtered_manifest",
    "write_oracle_scores",
    "write_record",
    "write_shard",
    "write_unmemorized_manifest",
]
