"""Reading, writing and combining manifests.

A :class:`Manifest` is a pandas table plus its label set and the folder its relative
`image_path`s are relative to. Writes validate first and are atomic (temp file + rename),
so a reader never sees a half-written file. Data pages carry CRC checksums, verified on
read, so a damaged file is refused rather than read as other values.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from manifests.errors import UserError
from manifests.files import atomic_path, file_sha256
from manifests.schema import (
    CORE_COLUMNS,
    DEFAULT_LABEL_SET,
    HASH_COLUMN,
    LABEL_SETS,
    META_GENERATOR_DIGEST,
    META_LABEL_SET,
    META_LABELS,
    META_VERSION,
    SCHEMA_VERSION,
    SYNTHETIC_COLUMNS,
    coerce_frame,
    label_set_name,
    validate_frame,
)


@dataclass
class Manifest:
    """A manifest in memory.

    Attributes:
        rows: one row per image, columns as in manifest v1.
        labels: the label columns, in order.
        root: folder that relative `image_path`s are relative to.
        metadata: extra Parquet key-value metadata (e.g. `cxraug.generator_digest`).
    """

    rows: pd.DataFrame
    labels: tuple[str, ...] = LABEL_SETS[DEFAULT_LABEL_SET]
    root: Path = Path(".")
    metadata: dict[str, str] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.rows)

    def image_paths(self) -> list[Path]:
        """Absolute paths of the images, row order."""
        root = Path(self.root)
        return [Path(p) if os.path.isabs(p) else root / p for p in self.rows["image_path"]]

    def with_rows(self, rows: pd.DataFrame) -> Manifest:
        """The same manifest (labels, root, metadata) over other rows."""
        return replace(self, rows=rows.reset_index(drop=True), metadata=dict(self.metadata))

    def validate(self, where: str = "manifest") -> None:
        validate_frame(self.rows, self.labels, where)


def _rebase_paths(paths: pd.Series, old_root: Path, new_root: Path) -> pd.Series:
    """Express image paths relative to `new_root` where they lie under it, else absolute."""
    old_root = Path(os.path.abspath(old_root))
    new_root = Path(os.path.abspath(new_root))
    if old_root == new_root:
        return paths
    out = []
    for p in paths:
        absolute = Path(p) if os.path.isabs(p) else old_root / p
        absolute = Path(os.path.normpath(absolute))
        try:
            out.append(absolute.relative_to(new_root).as_posix())
        except ValueError:
            out.append(absolute.as_posix())
    return pd.Series(out, index=paths.index, dtype=object)


def to_table(manifest: Manifest) -> pa.Table:
    """The manifest as an Arrow table with manifest v1 types and metadata."""
    frame = coerce_frame(manifest.rows, manifest.labels)
    schema_fields = [pa.field(c, t, nullable=n) for c, (t, n) in CORE_COLUMNS.items()]
    schema_fields += [pa.field(label, pa.float32()) for label in manifest.labels]
    known = set(CORE_COLUMNS) | set(manifest.labels)
    for column in frame.columns:
        if column in known:
            continue
        if column in SYNTHETIC_COLUMNS:
            typ = SYNTHETIC_COLUMNS[column]
            if pa.types.is_integer(typ):
                frame[column] = frame[column].astype("Int64")
        elif column == HASH_COLUMN:
            typ = pa.string()
        else:
            typ = pa.array(frame[column].head(1000), from_pandas=True).type
            if pa.types.is_null(typ):
                typ = pa.string()
        schema_fields.append(pa.field(column, typ))
    meta = {
        META_VERSION: SCHEMA_VERSION.encode(),
        META_LABELS: json.dumps(list(manifest.labels)).encode(),
        META_LABEL_SET: label_set_name(manifest.labels).encode(),
    }
    meta.update({k.encode(): str(v).encode() for k, v in manifest.metadata.items()})
    schema = pa.schema(schema_fields, metadata=meta)
    return pa.Table.from_pandas(frame, schema=schema, preserve_index=False)


def write_manifest(manifest: Manifest, path: Path, overwrite: bool = False) -> Path:
    """Validate and atomically write `manifest` to `path` (Parquet).

    Relative image paths are rewritten relative to the output's folder; images outside it
    are stored as absolute paths (never with '..').
    """
    path = Path(path)
    rows = manifest.rows.reset_index(drop=True)
    rows = rows.assign(image_path=_rebase_paths(rows["image_path"], manifest.root, path.parent))
    out = replace(manifest, rows=rows, root=path.parent)
    out.validate(where=str(path))
    table = to_table(out)
    with atomic_path(path, overwrite=overwrite) as tmp:
        pq.write_table(table, tmp, compression="zstd", write_page_checksum=True)
    return path


def _text_as_utf8(table: pa.Table, path: Path) -> pa.Table:
    """Binary columns (text written as bytes by another tool) as UTF-8 strings; a UserError
    naming the column and row where the bytes are not UTF-8."""
    for i, column_field in enumerate(table.schema):
        if not (
            pa.types.is_binary(column_field.type) or pa.types.is_large_binary(column_field.type)
        ):
            continue
        column = table.column(i)
        try:
            text = column.cast(pa.string())
        except pa.ArrowInvalid:
            row = next(
                r
                for r, value in enumerate(column.to_pylist())
                if value is not None and not _is_utf8(value)
            )
            raise UserError(
                f"{path}: column {column_field.name!r}, row {row}: text is not UTF-8; re-encode it "
                "(e.g. from latin-1) and write the manifest again"
            ) from None
        table = table.set_column(i, pa.field(column_field.name, pa.string()), text)
    return table


def _is_utf8(value: bytes) -> bool:
    try:
        value.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def read_manifest(
    path: Path, columns: Sequence[str] | None = None, validate: bool = True
) -> Manifest:
    """Read and validate a manifest; `columns` reads only those (plus the core columns)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: manifest not found")
    try:
        schema = pq.read_schema(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise UserError(f"{path}: not a Parquet manifest ({exc})") from None
    meta = schema.metadata or {}
    if META_VERSION not in meta:
        raise UserError(f"{path}: no {META_VERSION.decode()} metadata; not a cxraug manifest")
    version = meta[META_VERSION].decode()
    if version != SCHEMA_VERSION:
        raise UserError(f"{path}: schema version {version}, this cxraug reads {SCHEMA_VERSION}")
    try:
        labels = tuple(json.loads(meta[META_LABELS]))
    except (ValueError, TypeError):  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise UserError(
            f"{path}: its {META_LABELS.decode()} metadata is not a JSON list of label names; "
            "the manifest is corrupt (rewrite it with cxraug)"
        ) from None
    if not all(isinstance(label, str) for label in labels):
        raise UserError(f"{path}: its {META_LABELS.decode()} metadata is not a list of names")
    extra = {
        k.decode(): v.decode()
        for k, v in meta.items()
        if k.startswith(b"cxraug.") and k not in (META_VERSION, META_LABELS, META_LABEL_SET)
    }
    if columns is not None:
        wanted = list(dict.fromkeys([*CORE_COLUMNS, *labels, *columns]))
        columns = [c for c in wanted if c in schema.names]
    try:
        table = pq.read_table(path, columns=columns, page_checksum_verification=True)
    except (pa.ArrowException, OSError) as exc:  # a damaged page: bad header, CRC, zstd
        reason = " ".join("".join(c if c.isprintable() else " " for c in str(exc)).split())
        raise UserError(
            f"{path}: corrupt Parquet manifest, its data cannot be read ({reason}); restore "
            "it from a copy or write it again"
        ) from None
    try:
        rows = _text_as_utf8(table, path).to_pandas()
    except UnicodeDecodeError as exc:
        raise UserError(
            f"{path}: holds text that is not UTF-8 ({exc.reason}); re-encode it"
        ) from None
    manifest = Manifest(rows=rows, labels=labels, root=path.parent, metadata=extra)
    if validate:
        manifest.validate(where=str(path))
    return manifest


def absolutize(manifest: Manifest) -> Manifest:
    """The same manifest with every image path absolute (root-independent)."""
    rows = manifest.rows.assign(image_path=[p.as_posix() for p in manifest.image_paths()])
    return replace(manifest, rows=rows, root=Path("/"))


def concat_manifests(manifests: Sequence[Manifest]) -> Manifest:
    """Stack manifests with the same label set; image paths become absolute."""
    if not manifests:
        raise UserError("nothing to concatenate: no manifests given")
    labels = manifests[0].labels
    for m in manifests[1:]:
        if m.labels != labels:
            raise UserError(f"label sets differ: {list(labels)} vs {list(m.labels)}")
    parts = [absolutize(m).rows for m in manifests]
    metadata: dict[str, str] = {}
    for m in manifests:
        metadata.update(m.metadata)
    rows = pd.concat(parts, ignore_index=True, sort=False)
    return Manifest(rows=rows, labels=labels, root=Path("/"), metadata=metadata)


def filter_manifest(
    manifest: Manifest,
    split: str | Sequence[str] | None = None,
    source: str | None = None,
    views: Sequence[str] | None = None,
    where: str = "filter",
) -> Manifest:
    """Rows matching every given criterion; an empty result is a UserError naming the filter."""
    rows = manifest.rows
    mask = np.ones(len(rows), dtype=bool)
    if split is not None:
        splits = [split] if isinstance(split, str) else list(split)
        mask &= rows["split"].isin(splits).to_numpy()
    if source is not None:
        mask &= (rows["source"] == source).to_numpy()
    if views is not None:
        wanted = {v.upper() for v in views}
        mask &= rows["view"].fillna("").str.upper().isin(wanted).to_numpy()
    if not mask.any():
        crit = {"split": split, "source": source, "views": views}
        said = ", ".join(f"{k}={v}" for k, v in crit.items() if v is not None)
        raise UserError(f"{where}: no rows left after filtering ({said})")
    return manifest.with_rows(rows[mask])


def label_prevalence(manifest: Manifest) -> pd.DataFrame:
    """Per split/source and label: positives, negatives, uncertain, missing and prevalence."""
    records = []
    for (split, source), group in manifest.rows.groupby(["split", "source"], sort=True):
        for label in manifest.labels:
            v = group[label].to_numpy(dtype=np.float64)
            pos, neg, unc = int((v == 1).sum()), int((v == 0).sum()), int((v == -1).sum())
            records.append(
                {
                    "split": split,
                    "source": source,
                    "label": label,
                    "positive": pos,
                    "negative": neg,
                    "uncertain": unc,
                    "missing": int(np.isnan(v).sum()),
                    "prevalence": pos / len(v) if len(v) else float("nan"),
                }
            )
    return pd.DataFrame.from_records(records)


def manifest_digest(path: Path) -> str:
    """A short content digest of a manifest file (for provenance records)."""
    return file_sha256(path)[:16]


GENERATOR_DIGEST_KEY = META_GENERATOR_DIGEST.decode()
