"""The data of one classifier run: mixed train, real val and test, each image decoded once.

`classifier.train` calls :func:`prepare_data` before it builds the model: it reads and
leakage-checks the manifests (`--real`, `--synthetic`), refuses a synthetic set whose
provenance touches a val or test patient, and an `--init-from` run that saw one
(`classifier.run_patients`), draws the `--real-size` subset of the real train
rows and mixes in the synthetic share (`manifests.mixing`), chooses the labels from the real
train rows, and decodes every image once into a uint8 cache (`classifier.data`). Unreadable
images are skipped and counted per split; val and test keep only real rows. What the run
sees (`RunData.seen`) is recorded in its folder.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from classifier.config import TrainConfig
from classifier.data import CachedImages, decode_images, label_targets, resolve_labels
from classifier.run_patients import check_source_run, run_seen
from manifests import provenance
from manifests.errors import UserError
from manifests.io import Manifest, read_manifest
from manifests.mixing import (
    MixPlan,
    mix_manifests,
    mix_plan_of,
    parse_positive_rates,
    subset_real_train,
)
from manifests.splits import check_leakage


@dataclass
class RunData:
    """Everything the loop needs from the manifests, decoded once."""

    labels: tuple[str, ...]
    images: np.ndarray  # uint8 (U, 1, S, S), every readable image once
    train: pd.DataFrame  # rows with a `_pos` column (row of `images`)
    val: pd.DataFrame
    test: pd.DataFrame
    plan: MixPlan
    bad: dict[str, int]
    first_bad: str | None
    cache_seconds: float
    synthetic_provenance: str | None = None
    init_from_provenance: str | None = None  # provenance.CHECKED / FOREIGN; None without
    seen: provenance.SeenPatients | None = None  # what the run sees (`run_seen`)


@dataclass
class TrainingSet:
    """The mixed training manifest, the real manifest it came from, and provenance."""

    mixed: Manifest
    real: Manifest  # the whole real manifest (every train row, before --real-size)
    synthetic_provenance: str | None  # provenance.CHECKED / FOREIGN; None without synthetic
    synthetic: Manifest | None = None
    source: provenance.SeenPatients | None = None  # what the --init-from run saw
    init_from_provenance: str | None = None


def load_manifests(cfg: TrainConfig) -> TrainingSet:
    """The mixed training manifest (real val/test untouched), leakage- and provenance-checked.

    A synthetic set is refused when any of its prompts came from, or its generator trained
    on, a val or test patient of `--real` (`manifests.provenance`); so is an `--init-from`
    run trained on one (`classifier.run_patients`).
    """
    real = read_manifest(Path(cfg.real))
    check_leakage(real, where=f"--real {cfg.real}")
    source, source_status = None, None
    if cfg.init_from is not None:
        source, source_status = check_source_run(
            real, str(cfg.real), Path(cfg.init_from), "--init-from", cfg.allow_foreign_synthetic
        )
    synthetic, status = None, None
    if cfg.synthetic is not None and cfg.mix > 0:
        synthetic = read_manifest(Path(cfg.synthetic))
        check_leakage(synthetic, where=f"--synthetic {cfg.synthetic}")
        status = provenance.check_synthetic(
            real, synthetic, cfg.allow_foreign_synthetic, where=f"--synthetic {cfg.synthetic}"
        )
    for split in ("train", "val", "test"):
        if split == "train" and cfg.mix == 1:
            continue
        if not (real.rows["split"] == split).any():
            raise UserError(
                f"--real {cfg.real}: no rows in split {split!r}; split it first "
                "(cxraug manifest split)"
            )
    pool = real if cfg.real_size is None else subset_real_train(real, cfg.real_size, cfg.seed)
    oversample = None
    if cfg.oversample_to is not None:
        oversample = parse_positive_rates(cfg.oversample_to, list(real.labels))
    mixed = mix_manifests(
        pool, synthetic, cfg.mix, cfg.train_size, seed=cfg.seed, oversample_to=oversample
    )
    check_leakage(mixed, where="mixed training set")
    return TrainingSet(mixed, real, status, synthetic, source, source_status)


def prepare_data(cfg: TrainConfig, log: Callable[[str], None]) -> RunData:
    """Mix, choose labels, decode every image once."""
    if cfg.synthetic is not None and cfg.mix == 0:
        log("note: --synthetic is not used with --mix 0 (real images only)")
    training = load_manifests(cfg)
    mixed = training.mixed
    plan = mix_plan_of(mixed)
    assert plan is not None
    # From the real train rows only (before --real-size), so every arm of a study, whatever
    # its synthetic share or real size, trains on the same label set.
    real_train = training.real.with_rows(training.real.rows[training.real.rows["split"] == "train"])
    labels = resolve_labels(real_train, cfg.labels, cfg.uncertain, cfg.min_label_count)
    rows = mixed.rows
    paths = rows["image_path"].astype(str).to_numpy()
    unique, inverse = np.unique(paths, return_inverse=True)
    start = time.perf_counter()
    threads = max(1, min(8, os.cpu_count() or 1))
    cache = decode_images(
        [Path(p) for p in unique],
        cfg.image_size,
        on_bad_image=cfg.on_bad_image,
        num_threads=threads,
        cache_dir=cfg.cache_dir,
    )
    seconds = time.perf_counter() - start
    position = np.full(len(unique), -1, dtype=np.int64)
    position[cache.keep] = np.arange(len(cache.keep))
    rows = rows.assign(_pos=position[inverse])
    bad_rows = rows["_pos"].to_numpy() < 0
    bad = {
        s: int((bad_rows & (rows["split"] == s).to_numpy()).sum()) for s in ("train", "val", "test")
    }
    rows = rows[~bad_rows]
    parts = {}
    for split in ("train", "val", "test"):
        part = rows[rows["split"] == split].reset_index(drop=True)
        if split != "train":
            part = part[part["source"] == "real"].reset_index(drop=True)
        if part.empty:
            raise UserError(f"--real {cfg.real}: no readable images left in split {split!r}")
        parts[split] = part
    if len(parts["train"]) < 2:
        raise UserError("the training set has fewer than 2 readable images")
    log(
        f"{plan.describe()}; val {len(parts['val'])}, test {len(parts['test'])} images; "
        f"decoded {len(unique)} images once in {seconds:.1f}s"
    )
    if sum(bad.values()):
        log(
            f"skipped {sum(bad.values())} unreadable images (train {bad['train']}, val "
            f"{bad['val']}, test {bad['test']}); first: {cache.bad[0]}"
        )
    return RunData(
        labels=labels,
        images=cache.images,
        train=parts["train"],
        val=parts["val"],
        test=parts["test"],
        plan=plan,
        bad=bad,
        first_bad=cache.bad[0] if cache.bad else None,
        cache_seconds=seconds,
        synthetic_provenance=training.synthetic_provenance,
        init_from_provenance=training.init_from_provenance,
        seen=run_seen(parts["train"], parts["val"], training.synthetic, training.source),
    )


def split_dataset(data: RunData, part: pd.DataFrame, uncertain: str) -> CachedImages:
    targets, mask = label_targets(part[list(data.labels)].to_numpy(np.float32), uncertain)
    return CachedImages(data.images, targets, mask, positions=part["_pos"].to_numpy())
