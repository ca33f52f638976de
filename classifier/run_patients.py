"""What a classifier run saw, and the check on a run used as a source (`--init-from`,
`--filter-with`).

A run records what its weights saw (`run_seen`, a `manifests.provenance.SeenPatients`, in
its folder's patient record, `classifier.run`): its real train patients, what its synthetic
set brings (prompt, generator and oracle filter patients) and its `--init-from` run's
record; its validation patients chose its epoch. `source_seen` reads that record back; for a
run from before it, from the manifests its `config.json` names, when they are still there
unchanged (the whole real train split, not only a `--real-size` subset), and incomplete
otherwise. `check_source_run` refuses a source that reaches a val or test patient of the
real manifest in use (`manifests.provenance.check_seen`).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from classifier.run import read_config, read_seen_patients
from manifests import provenance
from manifests.io import Manifest, manifest_digest, read_manifest
from manifests.provenance import SeenPatients

MAX_CHAIN = 32  # --init-from links followed through runs without a patient record


def run_seen(
    train: pd.DataFrame,
    val: pd.DataFrame,
    synthetic: Manifest | None,
    source: SeenPatients | None,
) -> SeenPatients:
    """What a run training on `train` (real and synthetic rows), choosing its epoch on `val`,
    from `synthetic` and starting from a run that saw `source`, has seen."""
    real = train[train["source"] == "real"]
    seen = SeenPatients.of(real["patient_id"], val["patient_id"])
    if synthetic is not None:
        seen = seen.union(provenance.synthetic_seen(synthetic))
    return seen.union(source) if source is not None else seen


def source_seen(run_dir: Path, flag: str, depth: int = 0) -> SeenPatients:
    """What the run in `run_dir` saw: its record, or what its config.json's inputs say."""
    seen = read_seen_patients(run_dir)
    if seen is not None:
        return seen
    config = read_config(Path(run_dir), flag=flag)
    real = _unchanged(config.get("real"), config.get("real_digest"))
    if real is None or depth >= MAX_CHAIN:
        return SeenPatients(complete=False)
    rows = real.rows[real.rows["source"] == "real"]
    seen = SeenPatients.of(
        rows.loc[rows["split"] == "train", "patient_id"],
        rows.loc[rows["split"] == "val", "patient_id"],
    )
    if config.get("n_synthetic_train"):
        synthetic = _unchanged(config.get("synthetic"), config.get("synthetic_digest"))
        seen = seen.union(
            provenance.synthetic_seen(synthetic)
            if synthetic is not None
            else SeenPatients(complete=False)
        )
    if config.get("init_from"):
        seen = seen.union(source_seen(Path(config["init_from"]), flag, depth + 1))
    return seen


def _unchanged(path: str | None, digest: str | None) -> Manifest | None:
    """The manifest at `path` if it is still there with the recorded digest."""
    if not path or not Path(path).is_file() or manifest_digest(Path(path)) != digest:
        return None
    return read_manifest(Path(path))


def check_source_run(
    real: Manifest,
    real_name: str,
    run_dir: Path,
    flag: str,
    allow_incomplete: bool = False,
) -> tuple[SeenPatients, str]:
    """What `run_dir` saw, and `provenance.CHECKED` (or `FOREIGN`, when it cannot all be
    checked and `allow_incomplete`); one UserError `FLAG RUN: ...` when it trained on a val
    or test patient of `real` (named `real_name`), or chose its epoch on a test patient."""
    seen = source_seen(run_dir, flag)
    hint = (
        f"start from a run trained on the train split of {real_name} only"
        if flag == "--init-from"
        else f"use a classifier trained on the train split of {real_name} only"
    )
    status = provenance.check_seen(
        provenance.held_out_patients(real),
        seen,
        where=f"{flag} {run_dir}",
        source=real_name,
        hint=hint,
        allow_incomplete=allow_incomplete,
        allow_flag="--allow-foreign-synthetic" if flag == "--init-from" else None,
    )
    return seen, status


__all__ = ["check_source_run", "run_seen", "source_seen"]
