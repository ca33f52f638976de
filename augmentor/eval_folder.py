"""The generator-evaluation folder: its file names, its summary document and the keys its
readers use (`summary_document`), its reader and writers (nobody else spells them).

`cxraug evaluate-generator --out FOLDER` (`augmentor.evaluate`) fills it; `cxraug
probe-text-encoder --out FOLDER` (`augmentor.probe`) may add its probe; `cxraug report
--generator-eval`, the study's report stage and the dataset card (`augmentor.card`) read
it. Torch-free, so those readers never load a model. The folder holds:

* ``generator_eval.json``: every measurement (schema `GENERATOR_EVAL_SCHEMA`); written last,
  so its presence means the evaluation is finished (`FORMAT`).
* ``generator_eval.md``: the same as a report section.
* ``memorization.parquet`` (every synthetic image's nearest train image),
  ``memorization.png`` (the closest pairs) and ``samples.png`` (real beside synthetic).
* ``privacy.csv`` (the re-identification table) and ``privacy_images.csv`` (every synthetic
  image's scores), with `--privacy` (`augmentor.privacy`).
* ``demographics.csv`` (the demographic fidelity table) and ``demographic_oracle/`` (the
  sex and age oracles trained for it, `augmentor.demographic_oracle`), with
  `--demographics` (`augmentor.demographic_fidelity`).
* ``feature_cache/``: extractor features by image hash (unless `--cache-dir` says otherwise);
  with `--privacy` also the verification model (``feature_cache/reid/<key>/``).
* ``text_encoder_probe.json`` and ``.csv``: the text encoder probe, when one was written here.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

from augmentor.generator_report import render_section
from manifests import runfolder
from manifests.errors import UserError
from manifests.files import atomic_path, write_json
from manifests.io import Manifest

GENERATOR_EVAL_SCHEMA = "cxraug.generator_eval/1"
GENERATOR_EVAL_FILE = "generator_eval.json"
# A one-shot folder: its record is written last; --resume keeps a finished one.
FORMAT = runfolder.FolderFormat("generator evaluation", GENERATOR_EVAL_FILE, GENERATOR_EVAL_FILE)
GENERATOR_EVAL_MD = "generator_eval.md"
MEMORIZATION_TABLE = "memorization.parquet"
MEMORIZATION_FIGURE = "memorization.png"
SAMPLES_FIGURE = "samples.png"  # real beside synthetic, per prompted finding and side
FEATURE_CACHE_DIR = "feature_cache"
PRIVACY_TABLE = "privacy.csv"
PRIVACY_IMAGES = "privacy_images.csv"
DEMOGRAPHICS_TABLE = "demographics.csv"
DEMOGRAPHIC_ORACLE_DIR = "demographic_oracle"
PROBE_SCHEMA = "cxraug.text_encoder_probe/1"
PROBE_FILE = "text_encoder_probe.json"
PROBE_TABLE = "text_encoder_probe.csv"


# ------------------------------------------------------------------------------ paths


def summary_path(path: Path) -> Path:
    """`generator_eval.json` of a folder; a file path is returned as it is."""
    path = Path(path)
    return path / GENERATOR_EVAL_FILE if path.is_dir() else path


def feature_cache_dir(out: Path) -> Path:
    return Path(out) / FEATURE_CACHE_DIR


def memorization_figure_path(out: Path) -> Path:
    return Path(out) / MEMORIZATION_FIGURE


def samples_figure_path(out: Path) -> Path:
    return Path(out) / SAMPLES_FIGURE


def probe_path(out: Path) -> Path:
    """Where `probe-text-encoder --out` writes its JSON."""
    return Path(out) / PROBE_FILE


# ------------------------------------------------------------------------------ writing


def write_memorization_table(out: Path, table: pd.DataFrame) -> Path:
    path = Path(out) / MEMORIZATION_TABLE
    with atomic_path(path, overwrite=True) as tmp:
        table.to_parquet(tmp, index=False)
    return path


def write_privacy(out: Path, table: pd.DataFrame, images: pd.DataFrame) -> None:
    """Write the re-identification table and the per-image scores (`augmentor.privacy`)."""
    for name, frame in ((PRIVACY_TABLE, table), (PRIVACY_IMAGES, images)):
        with atomic_path(Path(out) / name, overwrite=True) as tmp:
            frame.to_csv(tmp, index=False)


def write_demographics(out: Path, table: pd.DataFrame) -> Path:
    """Write the demographic fidelity table (`augmentor.demographic_fidelity`)."""
    with atomic_path(Path(out) / DEMOGRAPHICS_TABLE, overwrite=True) as tmp:
        table.to_csv(tmp, index=False)
    return Path(out) / DEMOGRAPHICS_TABLE


def write_summary(out: Path, doc: dict) -> Path:
    """Write `generator_eval.json` (last: it marks the folder finished) and its Markdown."""
    path = Path(out) / GENERATOR_EVAL_FILE
    write_json(path, doc, overwrite=True)
    with atomic_path(Path(out) / GENERATOR_EVAL_MD, overwrite=True) as tmp:
        tmp.write_text(generator_section(path)["md"])
    return path


def write_probe(out: Path, doc: dict, table: pd.DataFrame) -> Path:
    """Write the text encoder probe (JSON, stamped with `PROBE_SCHEMA`, and its CSV table)."""
    path = probe_path(out)
    write_json(path, {"schema": PROBE_SCHEMA, **doc}, overwrite=True)
    with atomic_path(Path(out) / PROBE_TABLE, overwrite=True) as tmp:
        table.to_csv(tmp, index=False)
    return path


def _finite(value: float) -> float | None:
    """JSON-safe float: None for NaN/inf."""
    return float(value) if value is not None and math.isfinite(value) else None


def _records(frame: pd.DataFrame) -> list[dict]:
    """A table as JSON-safe records (NaN and inf as null, numpy scalars as Python's)."""
    out = []
    for rec in frame.to_dict(orient="records"):
        out.append(
            {
                k: (_finite(v) if isinstance(v, float) else v.item() if hasattr(v, "item") else v)
                for k, v in rec.items()
            }
        )
    return out


def similarity_stats(table: pd.DataFrame) -> dict[str, float]:
    """Flagged share and nearest-neighbour similarities of a `memorization_table`."""
    return {
        "flagged_share": float(table["flagged"].mean()),
        "pixel_correlation_median": float(table["pixel_correlation"].median()),
        "pixel_correlation_max": float(table["pixel_correlation"].max()),
        "feature_cosine_median": float(table["feature_cosine"].median()),
        "feature_cosine_max": float(table["feature_cosine"].max()),
    }


def summary_document(
    config: dict,
    synthetic: Manifest,
    real: Manifest,
    features,
    oracle,
    tables: dict[str, pd.DataFrame],
    size: int,
    scales: int,
    dim: int,
    notes: list[str],
    baseline_fid: float | None,
    baseline_flag: dict | None,
    dropped_path: str | None,
    extractor: str | None = None,
    threshold_source: str | None = None,
    privacy: dict | None = None,
    demographics: dict | None = None,
) -> dict:
    """The `generator_eval.json` document (schema `GENERATOR_EVAL_SCHEMA`).

    Args:
        config: the evaluation's `GeneratorEvalConfig` as a dict (`dataclasses.asdict`).
        features, oracle: the feature extractor (its `name`, `key`) and the oracle run's
            extractor (its `name`; None without one).
        tables: the evaluation's tables by section.
        size, scales, dim: MS-SSIM image size and scales, feature dimension.
        extractor: what the features are, as FID is named by them
            (`augmentor.generator_metrics.extractor_title`).
        threshold_source: where the oracle's thresholds and side detector came from.
        privacy: the re-identification audit's summary (`augmentor.privacy`), if run.
        demographics: the demographic fidelity summary (`augmentor.demographic_fidelity`).
    """
    fid, memo = tables["fidelity"], tables["memorization"]
    alignment, laterality = tables.get("alignment"), tables.get("laterality")
    fidelity = tables.get("prompt_fidelity")
    return {
        "schema": GENERATOR_EVAL_SCHEMA,
        "synthetic_manifest": str(config["synthetic"]),
        "real_manifest": str(config["real"]),
        "generator_digest": synthetic.metadata.get("cxraug.generator_digest"),
        "feature_extractor": {
            "name": features.name,
            "key": features.key,
            "dim": int(dim),
        },
        "oracle": oracle.name if oracle is not None else None,
        "n_synthetic": len(synthetic),
        "n_real": {s: int((real.rows["split"] == s).sum()) for s in ("train", "val", "test")},
        "fidelity": {
            "extractor": extractor or features.name,
            "feature_dim": int(dim),
            "fid_label": f"FID ({extractor or features.name})",
            "fid": _finite(float(fid["fid"].iloc[0])),
            "n_compared": int(fid["n_compared"].iloc[0]),
            "n_reference": int(fid["n_reference"].iloc[0]),
            "kid": _finite(float(fid["kid_mean"].iloc[0])),
            "kid_se": _finite(float(fid["kid_se"].iloc[0])),
            "kid_subsets": config["kid_subsets"],
            "kid_subset_size": config["kid_subset_size"],
            "kid_se_method": "bootstrap: each replicate redraws both sets with replacement",
            "reference": "real train",
            "equal_n": "the synthetic row and the real baseline row compare the same number "
            "of images (the larger set subsampled with the seed); FID is biased upwards at "
            "small n, so only FIDs of equal n compare",
            "real_baseline_fid": _finite(baseline_fid) if baseline_fid is not None else None,
            "min_fid_images": config["min_fid_images"],
            "rows": _records(fid),
        },
        "diversity": {
            "metric": "MS-SSIM (lower = more diverse)",
            "image_size": size,
            "scales": scales,
            "rows": _records(tables["diversity"]),
        },
        "alignment": None
        if alignment is None
        else {
            "threshold_rule": "Youden's J per label on real images the oracle did not train "
            "on; 0.5 if they have one class",
            "threshold_source": threshold_source,
            "rows": _records(alignment),
        },
        "laterality": None
        if laterality is None
        else {
            "method": "logistic side detector on the oracle's response to half-mirrored "
            "images, fit on its held-out calibration images of known side",
            "fit_on": threshold_source,
            "rows": _records(laterality),
        },
        "prompt_fidelity": None
        if fidelity is None
        else {
            "targets": dict(config["fidelity_targets"]),
            "threshold_rule": "Youden's J per label on real images the oracle did not train "
            "on; 0.5 if they have one class",
            "threshold_source": threshold_source,
            "interval_method": "95% intervals: synthetic rates clustered by prompt, real "
            "rates by patient (Wilson at the design-effect-adjusted size); the matched "
            "real-negative rate by a bootstrap of patients; differences synthetic - real: "
            f"one-sided 95% bounds from {config['n_boot']} resamples of prompts and, "
            "independently, of patients",
            "n_boot": config["n_boot"],
            "unprompted": "synthetic images whose prompt's label for the finding is 0 "
            "(negated) or NaN (not mentioned)",
            "all_meet_targets": bool(fidelity["meets_targets"].all()) if len(fidelity) else None,
            "rows": _records(fidelity),
        },
        "samples": {"figure": SAMPLES_FIGURE},
        "memorization": {
            "pixel_threshold": config["memorization_threshold"],
            "feature_threshold": config["feature_threshold"],
            "n_synthetic": len(memo),
            "n_flagged": int(memo["flagged"].sum()),
            "n_exact_copies": int(memo["exact_copy"].sum()),
            **similarity_stats(memo),
            "real_heldout_baseline": baseline_flag,
            "table": MEMORIZATION_TABLE,
            "figure": MEMORIZATION_FIGURE,
            "flagged": _records(
                memo[memo["flagged"]][
                    [
                        "image_path",
                        "target_label",
                        "pixel_correlation",
                        "feature_cosine",
                        "exact_copy",
                        "nn_pixel_path",
                        "nn_pixel_patient",
                    ]
                ].head(50)
            ),
            "dropped_manifest": dropped_path,
        },
        "privacy": privacy,
        "demographics": demographics,
        "notes": notes,
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in config.items()},
    }


# ------------------------------------------------------------------------------ reading


def read_generator_eval(path: Path) -> tuple[dict, dict | None]:
    """`generator_eval.json` (or its folder) and the `text_encoder_probe.json` beside it."""
    path = summary_path(path)
    if not path.is_file():
        raise UserError(f"{path}: no generator evaluation (run cxraug evaluate-generator)")
    doc = json.loads(path.read_text())
    if doc.get("schema") != GENERATOR_EVAL_SCHEMA:
        raise UserError(f"{path}: schema {doc.get('schema')!r}, expected {GENERATOR_EVAL_SCHEMA}")
    probe_file = probe_path(path.parent)
    probe = json.loads(probe_file.read_text()) if probe_file.is_file() else None
    return doc, probe


def load_summary(path: Path) -> dict | None:
    """`generator_eval.json` (or its folder), or None when it is missing or unreadable."""
    try:
        return json.loads(summary_path(path).read_text())
    except (OSError, ValueError):
        return None


def evaluated_manifest(doc: dict) -> str | None:
    """The synthetic manifest an evaluation audited, as its config names it."""
    return (doc.get("config") or {}).get("synthetic")


def audited(folder: Path, manifest_path: Path) -> Path | None:
    """`generator_eval.json` of `folder` when it audited `manifest_path`, else None."""
    path = summary_path(Path(folder))
    doc = load_summary(path) if path.is_file() else None
    synthetic = evaluated_manifest(doc or {})
    if synthetic and Path(synthetic).resolve() == Path(manifest_path).resolve():
        return path
    return None


def find_beside(manifest_path: Path) -> Path | None:
    """The evaluation in a manifest's own folder that audited that manifest, if any."""
    return audited(Path(manifest_path).resolve().parent, manifest_path)


def memorization_audit(doc: dict) -> dict | None:
    """The memorization audit's summary (its counts, thresholds and files; not the
    flagged rows), or None."""
    memo = doc.get("memorization")
    return {k: v for k, v in memo.items() if k != "flagged"} if memo else None


def privacy_audit(doc: dict) -> dict | None:
    """The re-identification audit's summary (without its table rows), or None."""
    audit = doc.get("privacy")
    return {k: v for k, v in audit.items() if k != "rows"} if audit else None


def _share(row: dict) -> str:
    if row.get("share_above") is None:
        return "n/a"
    low, high = row.get("share_low"), row.get("share_high")
    interval = f" [{low:.3f}, {high:.3f}]" if low is not None and high is not None else ""
    return f"{row['share_above']:.3f}{interval}"


def privacy_lines(audit: dict) -> list[str]:
    """The re-identification table as text lines, its baseline rows beside the synthetic."""
    tmr = audit.get("val_true_match_rate")
    lines = [
        f"re-identification: threshold {audit['threshold']:.3f} (false-match rate "
        f"{audit['false_match_rate']:g} on {audit['threshold_pairs']['different_patient']} "
        f"real val pairs; true-match rate {'n/a' if tmr is None else f'{tmr:.3f}'}); "
        f"{audit['n_audited']} of {audit['n_synthetic']} synthetic images have a prompting "
        "patient",
        f"  {'comparison':<42} {'group':<32} {'n':>5} {'above':>5} {'share [95% CI]':>22} "
        f"{'mean':>6} {'max':>6}",
    ]
    for row in audit["rows"]:
        mean, top = row.get("mean_score"), row.get("max_score")
        lines.append(
            f"  {row['comparison']:<42} {row['group'][:32]:<32} {row['n']:>5} "
            f"{row['n_above']:>5} {_share(row):>22} "
            f"{'n/a' if mean is None else f'{mean:.3f}':>6} "
            f"{'n/a' if top is None else f'{top:.3f}':>6}"
        )
    lines += [f"note: {note}" for note in audit.get("notes", [])]
    return lines


def summary_lines(doc: dict, out: Path) -> list[str]:
    """What `cxraug evaluate-generator` prints after its tables."""
    memo = doc["memorization"]
    lines = [
        f"memorization: {memo['n_flagged']} of {memo['n_synthetic']} synthetic images flagged "
        f"(max pixel r {memo['pixel_correlation_max']:.3f}, max feature cos "
        f"{memo['feature_cosine_max']:.3f})"
    ]
    if memo["dropped_manifest"]:
        lines.append(f"wrote {memo['dropped_manifest']} without the flagged images")
    if doc.get("privacy"):
        lines += privacy_lines(doc["privacy"])
    lines += [f"note: {note}" for note in doc["notes"]]
    privacy = f", {PRIVACY_TABLE}" if doc.get("privacy") else ""
    privacy += f", {DEMOGRAPHICS_TABLE}" if doc.get("demographics") else ""
    lines += [f"note: {note}" for note in (doc.get("demographics") or {}).get("notes", [])]
    lines.append(
        f"wrote {Path(out) / GENERATOR_EVAL_FILE}, {GENERATOR_EVAL_MD}, {MEMORIZATION_FIGURE}"
        f"{privacy}"
    )
    return lines


def generator_section(path: Path) -> dict[str, str]:
    """`generator_eval.json` (or its folder) as report fragments: {'md': ..., 'html': ...}.

    For `cxraug report`: call it with an evaluate-generator output folder when one exists
    and insert the fragment. Also shows `text_encoder_probe.json` beside it when present,
    and embeds `memorization.png` in the HTML.
    """
    path = Path(path)
    folder = path if path.is_dir() else path.parent
    doc, probe = read_generator_eval(path)
    figure = folder / doc["memorization"]["figure"]
    samples = folder / doc.get("samples", {}).get("figure", SAMPLES_FIGURE)
    return render_section(
        doc,
        probe,
        figure.read_bytes() if figure.is_file() else None,
        samples.read_bytes() if samples.is_file() else None,
    )


__all__ = [
    "DEMOGRAPHICS_TABLE",
    "DEMOGRAPHIC_ORACLE_DIR",
    "FORMAT",
    "GENERATOR_EVAL_FILE",
    "GENERATOR_EVAL_SCHEMA",
    "PRIVACY_IMAGES",
    "PRIVACY_TABLE",
    "PROBE_SCHEMA",
    "audited",
    "evaluated_manifest",
    "find_beside",
    "generator_section",
    "load_summary",
    "memorization_audit",
    "privacy_audit",
    "privacy_lines",
    "probe_path",
    "read_generator_eval",
    "similarity_stats",
    "summary_document",
    "summary_lines",
    "write_demographics",
    "write_memorization_table",
    "write_privacy",
    "write_probe",
    "write_summary",
]
