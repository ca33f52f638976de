"""What every importer shares: checked CSV reading, label parsing and relabelling, report
sections, safe paths, image checks, and the final assembly into a :class:`Manifest`.

Each importer builds a table of its rows with the core manifest columns, its label columns
and a private `_where` column ("train.csv line 7") so that an error about a row names the
source file and line; :func:`finish_import` filters, checks and drops `_where`.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from manifests.errors import UserError
from manifests.images import check_image
from manifests.io import Manifest
from manifests.schema import LABEL_SETS, label_set, normalize_label_name

NOTES_KEY = "cxraug.notes"
IMPORT_KEY = "cxraug.import"
FRONTAL_VIEWS = ("PA", "AP")
WHERE = "_where"
# The manifest columns every importer fills, in manifest order (labels follow them).
CORE_COLUMNS = ("image_path", "patient_id", "study_id", "view", "sex", "age", "report")

# Labels of different sets that name the same finding (normalised spellings). Everything
# else corresponds by name (torchxrayvision's relabel_dataset does the same).
LABEL_SYNONYMS: tuple[frozenset[str], ...] = (frozenset({"pleural effusion", "effusion"}),)

# Official split names as datasets spell them -> manifest split names.
SPLIT_NAMES = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validate": "val",
    "validation": "val",
    "test": "test",
    "testing": "test",
}


def where_lines(csv: Path, n: int) -> list[str]:
    """`"path/name.csv line k"` for data rows 0..n-1 (the header is line 1)."""
    return [f"{csv} line {i + 2}" for i in range(n)]


def find_table(root: Path, stem: str, flag: str = "--root") -> Path:
    """`root/stem.csv` or `root/stem.csv.gz`; a UserError naming both when neither exists."""
    for suffix in (".csv", ".csv.gz"):
        path = Path(root) / f"{stem}{suffix}"
        if path.is_file():
            return path
    raise UserError(f"{flag} {root}: neither {stem}.csv nor {stem}.csv.gz found")


def read_csv_checked(
    path: Path, required: Sequence[str], dtype: object = str, **kwargs
) -> pd.DataFrame:
    """Read a CSV (plain or .gz); a missing file, an unreadable file or a missing column is a
    UserError naming the CSV and the column."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: CSV not found")
    try:
        frame = pd.read_csv(path, dtype=dtype, **kwargs)
    except pd.errors.EmptyDataError:
        raise UserError(f"{path}: empty CSV (no header)") from None
    except (pd.errors.ParserError, UnicodeDecodeError, OSError, EOFError) as exc:
        raise UserError(f"{path}: unreadable CSV ({collapse_whitespace(str(exc))})") from None
    frame.columns = [str(c).strip() for c in frame.columns]
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise UserError(
            f"{path}: missing column(s) {', '.join(map(repr, missing))}; "
            f"found: {', '.join(map(repr, frame.columns))}"
        )
    if frame.empty:
        raise UserError(f"{path}: no data rows")
    return frame


def parse_label_values(
    frame: pd.DataFrame, columns: Sequence[str], where: Sequence[str]
) -> pd.DataFrame:
    """Label columns as float32 1/0/-1/NaN (blank = NaN); anything else is a UserError."""
    out = {}
    for column in columns:
        raw = frame[column]
        text = raw.astype("string").str.strip()
        values = pd.to_numeric(text, errors="coerce").to_numpy(dtype=np.float64)
        given = (text.fillna("") != "").to_numpy(dtype=bool)
        bad = given & ~np.isin(values, (1.0, 0.0, -1.0))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise UserError(
                f"{where[i]}: column {column!r}: {raw.iloc[i]!r} is not a label value; "
                "valid: 1, 0, -1 or blank"
            )
        out[column] = values.astype(np.float32)
    return pd.DataFrame(out, index=frame.index)


def label_key(name: str) -> str:
    key = normalize_label_name(name)
    for group in LABEL_SYNONYMS:
        if key in group:
            return min(group)  # one representative per synonym group
    return key


def relabel(
    values: pd.DataFrame, target: Sequence[str]
) -> tuple[pd.DataFrame, list[str], list[str]]:
    """Map label columns named in one set into `target` where the names correspond.

    Returns (frame with exactly the `target` columns, target labels with no source -> NaN,
    source columns with no target -> dropped).
    """
    source_by_key = {label_key(c): c for c in values.columns}
    out = {}
    unmapped = []
    for label in target:
        source = source_by_key.get(label_key(label))
        if source is None:
            out[label] = np.full(len(values), np.nan, dtype=np.float32)
            unmapped.append(label)
        else:
            out[label] = values[source].to_numpy(dtype=np.float32)
    target_keys = {label_key(t) for t in target}
    dropped = [c for c in values.columns if label_key(c) not in target_keys]
    return pd.DataFrame(out, index=values.index), unmapped, dropped


def resolve_labels(label_set_name: str | None, natural: str) -> tuple[str, tuple[str, ...]]:
    """(name, labels) of the requested label set, defaulting to the dataset's natural one."""
    name = (label_set_name or natural).strip().lower()
    if name not in LABEL_SETS:
        raise UserError(
            f"--label-set: unknown label set {label_set_name!r}; valid: {', '.join(LABEL_SETS)}"
        )
    return name, label_set(name)


def relabel_notes(
    unmapped: Sequence[str], dropped: Sequence[str], source: str, target: str
) -> list[str]:
    """Notes saying which labels a relabel left NaN or dropped."""
    notes = []
    if unmapped and source != target:
        notes.append(
            f"{len(unmapped)} {target} label(s) have no counterpart in {source} labels and are "
            f"NaN: {', '.join(unmapped)}"
        )
    if dropped:
        notes.append(
            f"{len(dropped)} {source} label(s) have no counterpart in {target} labels and were "
            f"dropped: {', '.join(dropped)}"
        )
    return notes


def normalize_sex(values: pd.Series) -> pd.Series:
    """'M'/'F' from M, F, Male, Female (any case); anything else (Unknown, blank) -> None."""
    key = values.astype("string").str.strip().str.lower()
    mapped = key.map({"m": "M", "male": "M", "f": "F", "female": "F"})
    return mapped.astype(object).where(mapped.notna(), None)


def normalize_view(values: pd.Series) -> pd.Series:
    """Upper-case, whitespace-collapsed view names ('pa' -> 'PA'); blank -> None."""
    text = values.astype("string").str.strip().str.upper().str.replace(r"\s+", " ", regex=True)
    text = text.where(text.fillna("") != "", pd.NA)
    return text.astype(object).where(text.notna(), None)


def parse_age(values: pd.Series, where: Sequence[str], column: str) -> np.ndarray:
    """Ages in years: numbers, or NIH's older '058Y' / '011M' / '020D' / '03W' spelling.

    Blank -> NaN; anything else, or a negative age, is a UserError naming the row.
    """
    text = values.astype("string").str.strip()
    number = pd.to_numeric(text, errors="coerce").to_numpy(dtype=np.float64)
    parts = text.str.extract(r"^(\d+(?:\.\d+)?)\s*([YyMmWwDd])$")
    per_year = {"y": 1.0, "m": 12.0, "w": 52.0, "d": 365.0}
    unit = parts[1].str.lower().map(per_year).to_numpy(dtype=np.float64)
    coded = pd.to_numeric(parts[0], errors="coerce").to_numpy(dtype=np.float64) / unit
    age = np.where(np.isnan(number), coded, number)
    given = (text.fillna("") != "").to_numpy()
    bad = given & (np.isnan(age) | (age < 0))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise UserError(f"{where[i]}: column {column!r}: {values.iloc[i]!r} is not an age")
    return age


def safe_relative(value: str, where: str, column: str, root: Path) -> str:
    """`value` as a clean relative POSIX path, refusing absolute paths and any that climb out
    of `root` with '..'. Symlinks are not resolved, so a dataset made of links still imports."""
    text = str(value).strip().replace("\\", "/")
    if not text:
        raise UserError(f"{where}: column {column!r} is empty")
    if text.startswith("/") or re.match(r"^[A-Za-z]:/", text):
        raise UserError(f"{where}: column {column!r}: {value!r} must be relative to {root}")
    parts = [p for p in text.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise UserError(f"{where}: column {column!r}: {value!r} escapes {root} ('..')")
    return "/".join(parts)


def absolute_posix(path: Path) -> str:
    """An absolute POSIX path without resolving symlinks."""
    return Path(os.path.abspath(path)).as_posix()


def check_images_exist(paths: Sequence[str], where: Sequence[str]) -> None:
    """Every image file exists (a cheap stat each); the first missing one is a UserError."""
    for path, at in zip(paths, where, strict=True):
        if not os.path.isfile(path):
            raise UserError(f"{at}: image not found: {path}")


def check_images_decode(paths: Sequence[str], where: Sequence[str], workers: int = 4) -> None:
    """Decode every image (threads: the decoders release the GIL); the first corrupt one in
    row order is a UserError naming the file and the source row."""

    def check(i: int) -> str | None:
        try:
            check_image(Path(paths[i]))
        except UserError as exc:
            return f"{where[i]}: {collapse_whitespace(str(exc))}"
        return None

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for message in pool.map(check, range(len(paths))):
            if message is not None:
                raise UserError(message)


# ------------------------------------------------------------------ report sections

# A section header: upper-case words and a colon, at a line start or after a sentence end
# ("FINDINGS: ... IMPRESSION: ..."), as the MIMIC-CXR section parser finds them.
# Besides upper-case headers, the main ones are also found in any case ("Impression:"), as in
# hand-written reports; other mixed-case "Word:" text ("Heart size: normal") is not a header.
_HEADER = re.compile(
    r"(?:^|(?<=[.;]\s))[ \t]*([A-Z][A-Z ()/,&-]{1,60}?|"
    r"(?i:findings and impressions?|impressions?|findings?|conclusions?))[ \t]*:",
    re.M,
)
# Report titles naming the views, which introduce the findings in some MIMIC-CXR reports.
_VIEW_TITLE = re.compile(
    r"\b(chest|portable|pa and lat|pa and lateral|ap and lateral|lateral and pa|two views|"
    r"frontal and lateral|frontal view|pa view|ap view|one view|upright|semi-upright)\b"
)


def _section_kind(header: str) -> str:
    name = re.sub(r"\s+", " ", header.strip().lower())
    if "impression" in name or name in ("conclusion", "conclusions", "summary"):
        return "impression"
    if "finding" in name or _VIEW_TITLE.search(name):
        return "findings"
    return name


def collapse_whitespace(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def report_section(text: str | None) -> tuple[str | None, str]:
    """The prompt text of a free-text report and where it came from.

    The last non-empty IMPRESSION (also CONCLUSION, "FINDINGS AND IMPRESSION"), else the last
    non-empty FINDINGS (also view titles such as "PA AND LATERAL CHEST:"), else, when the
    report has neither, its last paragraph, as the MIMIC-CXR section parser does. Whitespace
    is collapsed. Returns (text or None, 'impression' | 'findings' | 'last paragraph' | 'none').
    """
    if text is None or (isinstance(text, float) and np.isnan(text)):
        return None, "none"
    text = str(text).replace("\r\n", "\n").replace("\r", "\n")
    headers = list(_HEADER.finditer(text))
    sections: dict[str, str] = {}
    for i, match in enumerate(headers):
        end = headers[i + 1].start() if i + 1 < len(headers) else len(text)
        body = collapse_whitespace(text[match.end() : end])
        kind = _section_kind(match.group(1))
        if body:
            sections[kind] = body  # the last non-empty section of a kind wins
    for kind in ("impression", "findings"):
        if kind in sections:
            return sections[kind], kind
    if headers:
        # No impression or findings header: the last paragraph of the final section.
        tail = text[headers[-1].end() :]
    else:
        tail = text
    paragraphs = [p for p in re.split(r"\n[ \t]*\n", tail) if p.strip()]
    if not headers and len(paragraphs) < 2:
        # Plain text without structure: use it whole.
        body = collapse_whitespace(text)
        return (body, "text") if body else (None, "none")
    if paragraphs:
        return collapse_whitespace(paragraphs[-1]), "last paragraph"
    return None, "none"


def section_counts_note(kinds: Iterable[str], what: str = "reports") -> str:
    """'reports: 3 impression, 1 findings, 1 none' (the importer's report provenance)."""
    counts = pd.Series(list(kinds)).value_counts()
    order = ["impression", "findings", "last paragraph", "text", "none"]
    said = ", ".join(f"{int(counts[k])} {k}" for k in order if k in counts)
    return f"{what}: {said}"


# ------------------------------------------------------------------ assembly


def official_split(values: pd.Series, where: Sequence[str], column: str) -> pd.Series:
    """Official split names mapped to train/val/test (blank -> None); others: UserError."""
    key = values.astype("string").str.strip().str.lower()
    mapped = key.map(SPLIT_NAMES)
    bad = (key.fillna("") != "").to_numpy() & mapped.isna().to_numpy()
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise UserError(
            f"{where[i]}: column {column!r}: {values.iloc[i]!r} is not a split; "
            f"valid: {', '.join(sorted(SPLIT_NAMES))}"
        )
    return mapped.astype(object).where(mapped.notna(), None)


@dataclass(frozen=True)
class ImportRequest:
    """What every importer is asked for, besides its own source files.

    Attributes:
        dataset: the importer's name (the manifest's `dataset` column).
        root: the dataset's folder.
        label_set: the name of the label set the manifest gets; `labels` its labels.
        frontal_only: keep PA/AP images only.
        check_images: decode every image, not only check that it exists.
    """

    dataset: str
    root: Path
    label_set: str
    labels: tuple[str, ...]
    frontal_only: bool = False
    check_images: bool = False


def import_request(
    dataset: str,
    root: Path,
    label_set: str | None,
    natural: str,
    frontal_only: bool,
    check_images: bool,
) -> ImportRequest:
    """The request of one import, `label_set` resolved (default: the dataset's `natural`)."""
    name, labels = resolve_labels(label_set, natural)
    return ImportRequest(dataset, Path(root), name, tuple(labels), frontal_only, check_images)


def finish_import(
    request: ImportRequest,
    rows: pd.DataFrame,
    labels: pd.DataFrame,
    notes: list[str],
    sources: dict[str, object],
    extra: Sequence[str] = (),
    is_frontal: Callable[[pd.DataFrame], np.ndarray] | None = None,
) -> Manifest:
    """Filter, check and assemble imported rows into a validated manifest.

    `rows` holds the core columns (image_path absolute; split filled here), optionally
    `official_split`, and `_where`; `labels` the label columns, aligned with `rows`. The
    manifest's columns are the core ones, the labels, the `extra` columns of `rows`, then
    `official_split`. With `request.frontal_only`, rows whose view is not PA/AP (or
    `is_frontal(rows)` false) are dropped; an empty result names the flag. Every remaining
    image must exist; with `request.check_images` every one must decode.

    The import record in the metadata names the importer, its root, label set and
    `frontal_only`, plus the importer's own `sources` (the files and options it read).
    """
    dataset, root = request.dataset, request.root
    tail = [*extra, *(c for c in ("official_split", WHERE) if c in rows.columns)]
    rows = pd.concat([rows[list(CORE_COLUMNS)], labels, rows[tail]], axis=1)
    rows = rows.reset_index(drop=True)
    notes = list(notes)
    if request.frontal_only:
        keep = (
            is_frontal(rows)
            if is_frontal is not None
            else rows["view"].isin(FRONTAL_VIEWS).to_numpy()
        )
        if not keep.any():
            views = sorted({str(v) for v in rows["view"].dropna().unique()})
            raise UserError(
                f"--frontal-only: no PA/AP images left among {len(rows)} rows "
                f"(views found: {', '.join(views) or 'none'})"
            )
        dropped = int((~keep).sum())
        if dropped:
            notes.append(f"--frontal-only dropped {dropped} non-frontal image(s)")
        rows = rows[keep].reset_index(drop=True)

    where = rows[WHERE].tolist()
    paths = rows["image_path"].tolist()
    check_images_exist(paths, where)
    if request.check_images:
        check_images_decode(paths, where)

    rows["source"] = "real"
    rows["dataset"] = dataset
    if "official_split" in rows.columns:
        official = rows["official_split"].astype(object)
        official = official.where(official.notna(), None)
        rows["official_split"] = official
        rows["split"] = official.where(official.notna(), "train")
        counts = official.value_counts()
        if len(counts):
            said = ", ".join(f"{int(n)} {name}" for name, n in counts.items())
            unassigned = int(official.isna().sum())
            notes.append(
                f"official split kept in column official_split ({said}; {unassigned} unassigned); "
                "run `cxraug manifest split` to carve the rest by patient"
            )
    else:
        rows["split"] = "train"
    rows = rows.drop(columns=[WHERE])

    provenance = {
        "importer": dataset,
        "root": str(root.absolute()),
        **sources,
        "label_set": request.label_set,
        "frontal_only": request.frontal_only,
    }
    metadata = {
        NOTES_KEY: json.dumps(notes),
        IMPORT_KEY: json.dumps(provenance, sort_keys=True, default=str),
    }
    manifest = Manifest(rows=rows, labels=request.labels, root=root, metadata=metadata)
    manifest.validate(where=f"{dataset} import")
    return manifest


def manifest_notes(manifest: Manifest) -> list[str]:
    """The notes an importer left in the manifest's metadata."""
    return json.loads(manifest.metadata.get(NOTES_KEY, "[]"))


def import_summary(manifest: Manifest) -> str:
    """One line: images, patients, studies, label set, split counts."""
    rows = manifest.rows
    splits = rows["split"].value_counts()
    said = ", ".join(f"{n} {s}" for s, n in splits.items())
    return (
        f"{len(rows)} images, {rows['patient_id'].nunique()} patients, "
        f"{rows['study_id'].nunique()} studies, {len(manifest.labels)} labels; split: {said}"
    )
