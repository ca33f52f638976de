"""The oracle quality filter: keep synthetic images a real-data classifier agrees with.

A stage of its own (`cxraug synthesize --filter-with RUN`, and any caller of
`synthesize_and_filter`): a classifier run trained on real train data (the oracle) scores
every synthetic image for its target label; rows under `OracleFilterConfig.min_prob` leave
the manifest, and every row's score stays in `oracle_scores.parquet` beside it. Both files
are written through `augmentor.synthetic_set`, the folder's owner.

The oracle chooses which images train a classifier, so what it saw counts as the set's:
it is refused (before any image is generated) when it trained on a val or test patient of
the manifest whose reports prompt the set, or chose its epoch on a test patient
(`classifier.run_patients`), and what it saw goes into the set's provenance record, which
every consumer checks against its own real manifest (`manifests.provenance`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from augmentor import synthetic_set as sset
from augmentor.config import OracleFilterConfig, SynthesisConfig
from augmentor.features import check_run_dir, embed_images, image_hashes, load_run_extractor
from augmentor.synthesize import SynthesisResult, synthesize
from augmentor.synthetic_set import (
    feature_cache_dir,
    write_filtered_manifest,
    write_oracle_scores,
)
from classifier.run_patients import check_source_run, source_seen
from manifests import provenance
from manifests.errors import UserError
from manifests.io import Manifest, read_manifest


def oracle_scorer(
    run_dir: Path,
    cache_dir: Path | None = None,
    batch_size: int = 64,
    device: str | None = None,
) -> Callable[[Manifest], pd.DataFrame]:
    """A scorer for `filter_by_oracle`: manifest -> per-label probabilities of a run."""
    extractor = load_run_extractor(run_dir, device, flag="--filter-with")

    def score(manifest: Manifest) -> pd.DataFrame:
        folder = cache_dir or Path(manifest.root) / ".feature_cache"
        hashes = image_hashes(manifest)
        probs = embed_images(manifest.image_paths(), hashes, [extractor], folder, batch_size)
        return pd.DataFrame(probs[0]["probs"], columns=list(extractor.labels))

    score.labels = extractor.labels  # type: ignore[attr-defined]
    return score


def filter_by_oracle(
    manifest: Manifest, scorer: Callable[[Manifest], pd.DataFrame], min_prob: float
) -> Manifest:
    """Keep synthetic rows whose target label the oracle scores at least `min_prob`.

    Every row gets `oracle_prob` (the oracle's probability of the row's `target_label`)
    before filtering; a manifest that already has the column is not scored again, so
    `rejected_by_oracle` can list the complement. Rows without a target label, or whose
    target the oracle was not trained on, are kept with `oracle_prob` NaN.
    """
    if not 0.0 <= min_prob <= 1.0:
        raise UserError(f"--min-prob: {min_prob} is outside [0, 1]")
    scored = score_by_oracle(manifest, scorer)
    prob = scored.rows["oracle_prob"].to_numpy(dtype=np.float64)
    keep = np.isnan(prob) | (prob >= min_prob)
    return scored.with_rows(scored.rows[keep])


def score_by_oracle(manifest: Manifest, scorer: Callable[[Manifest], pd.DataFrame]) -> Manifest:
    """The manifest with `oracle_prob` per row (see `filter_by_oracle`); idempotent."""
    if "oracle_prob" in manifest.rows.columns:
        return manifest
    if "target_label" not in manifest.rows.columns:
        raise UserError("--filter-with: the manifest has no target_label column (not synthetic)")
    probs = scorer(manifest)
    targets = manifest.rows["target_label"].to_numpy()
    values = np.full(len(manifest), np.nan)
    for i, target in enumerate(targets):
        if isinstance(target, str) and target in probs.columns:
            values[i] = float(probs[target].iloc[i])
    return manifest.with_rows(manifest.rows.assign(oracle_prob=values))


def rejected_by_oracle(scored: Manifest, min_prob: float) -> pd.DataFrame:
    """Rows of a scored manifest that `filter_by_oracle` drops (path, target, probability)."""
    prob = scored.rows["oracle_prob"].to_numpy(dtype=np.float64)
    rows = scored.rows[~np.isnan(prob) & (prob < min_prob)]
    return rows[["image_path", "target_label", "oracle_prob"]].reset_index(drop=True)


@dataclass
class OracleFilterSummary:
    """What `apply_oracle_filter` did: per-label counts and the rejected rows."""

    manifest: Path
    scores: Path
    min_prob: float
    counts: pd.DataFrame  # target_label, kept, rejected, mean_oracle_prob
    rejected: pd.DataFrame  # image_path, target_label, oracle_prob


def oracle_filter_config(run: Path | None, min_prob: float | None) -> OracleFilterConfig | None:
    """The config for `--filter-with RUN --min-prob P` (None without RUN), checked up front.

    Call it before a long synthesis starts: a missing run or a bad probability fails now.
    `min_prob` None takes the default.
    """
    if run is None:
        if min_prob is not None:
            raise UserError(
                "--min-prob: only used with --filter-with RUN (an oracle classifier run)"
            )
        return None
    cfg = OracleFilterConfig(run=Path(run))
    if min_prob is not None:
        cfg.min_prob = min_prob
    check_oracle_filter(cfg)
    return cfg


def check_oracle_filter(cfg: OracleFilterConfig) -> None:
    """UserError unless `cfg.run` is a classifier run and `cfg.min_prob` lies in [0, 1]."""
    check_run_dir(cfg.run, "--filter-with")
    if not 0.0 <= cfg.min_prob <= 1.0:
        raise UserError(f"--min-prob: {cfg.min_prob} is outside [0, 1]")


def oracle_seen(run_dir: Path, prompts_from: Path | None) -> provenance.SeenPatients:
    """What the oracle run saw; one UserError naming `--filter-with` when it trained on a val
    or test patient of `prompts_from` (the set's prompt manifest), or chose its epoch on a
    test patient. Without `prompts_from`, read only (consumers check the record)."""
    if prompts_from is None:
        return source_seen(Path(run_dir), "--filter-with")
    prompts = read_manifest(Path(prompts_from))
    return check_source_run(prompts, str(prompts_from), Path(run_dir), "--filter-with")[0]


def named_prompts(manifest_path: Path, manifest: Manifest) -> Path | None:
    """The prompt manifest a synthetic set's folder names, if it is still there with the
    patient -> split map its provenance records; else None."""
    folder = Path(manifest_path).parent
    record = provenance.read_record(manifest)
    if record is None or not (folder / sset.RECORD_FILE).is_file():
        return None
    path = sset.read_record(folder).get("config", {}).get("prompts_from")
    if not path or not Path(path).is_file():
        return None
    same = provenance.split_map_digest(read_manifest(Path(path))) == record.get(
        "prompt_split_digest"
    )
    return Path(path) if same else None


def apply_oracle_filter(
    manifest_path: Path, cfg: OracleFilterConfig, prompts_from: Path | None = None
) -> OracleFilterSummary:
    """Filter a synthetic manifest in place with the oracle `cfg.run`.

    The oracle is checked against `prompts_from` (default: the prompt manifest the set's
    folder names, `named_prompts`) and what it saw is recorded in the set's provenance
    (`oracle_seen`). Every row is scored first and all rows, rejected ones included, are
    written with their `oracle_prob` to `oracle_scores.parquet` beside the manifest; then
    the manifest is atomically replaced by the kept rows (with `oracle_prob`). The images of
    rejected rows stay on disk. Re-running is idempotent (scores come from the feature cache).
    """
    check_oracle_filter(cfg)
    run_dir, min_prob = cfg.run, cfg.min_prob
    manifest_path = Path(manifest_path)
    manifest = read_manifest(manifest_path)
    prompts_from = prompts_from or named_prompts(manifest_path, manifest)
    seen = oracle_seen(run_dir, prompts_from)
    if "oracle_prob" in manifest.rows.columns:
        manifest = manifest.with_rows(manifest.rows.drop(columns=["oracle_prob"]))
    cache_dir = cfg.cache_dir or feature_cache_dir(manifest_path)
    scorer = oracle_scorer(run_dir, cache_dir, cfg.batch_size)
    unknown = sorted(set(manifest.rows["target_label"].dropna()) - set(scorer.labels))
    if len(unknown) == manifest.rows["target_label"].nunique():
        raise UserError(
            f"--filter-with {run_dir}: the oracle was trained on {', '.join(scorer.labels)}; "
            f"none of the target labels ({', '.join(unknown)})"
        )
    scored = score_by_oracle(manifest, scorer)
    scores_path = write_oracle_scores(manifest_path, scored.rows)
    kept = filter_by_oracle(scored, scorer, min_prob)
    if not len(kept):
        raise UserError(
            f"--min-prob {min_prob}: the oracle rejects every image; nothing left "
            f"(scores in {scores_path})"
        )
    write_filtered_manifest(manifest_path, provenance.with_filter(kept, str(run_dir), seen))
    rejected = rejected_by_oracle(scored, min_prob)
    rows = scored.rows.assign(
        kept=scored.rows["oracle_prob"].isna() | (scored.rows["oracle_prob"] >= min_prob)
    )
    counts = (
        rows.groupby("target_label", sort=True)
        .agg(kept=("kept", "sum"), total=("kept", "size"), mean_oracle_prob=("oracle_prob", "mean"))
        .reset_index()
    )
    counts["rejected"] = counts["total"] - counts["kept"]
    counts = counts[["target_label", "kept", "rejected", "mean_oracle_prob"]]
    return OracleFilterSummary(manifest_path, scores_path, min_prob, counts, rejected)


def synthesize_and_filter(
    synthesis: SynthesisConfig,
    oracle: OracleFilterConfig | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> tuple[SynthesisResult, OracleFilterSummary | None]:
    """`synthesize`, then (on the main process, when `oracle` is given) the oracle filter.

    The oracle config, and what the oracle saw against `--prompts-from`, are checked before
    any image is generated. Returns the synthesis result and the filter's summary (None
    without `oracle` and on other processes).
    """
    prompts_from = Path(synthesis.prompts_from)
    if oracle is not None:
        check_oracle_filter(oracle)
        oracle_seen(oracle.run, prompts_from)
    result = synthesize(synthesis, on_batch=on_batch)
    if oracle is None or not result.is_main_process:
        return result, None
    return result, apply_oracle_filter(result.manifest, oracle, prompts_from)
