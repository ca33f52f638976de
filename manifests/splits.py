"""Patient-disjoint splits and the leakage check every consumer calls.

Splits group by patient: images of one patient are correlated, so a patient in both train
and test inflates every metric. Within that constraint splits are stratified on the
patients' label profile so rare findings land in every split.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from manifests.errors import UserError
from manifests.io import Manifest


def check_leakage(manifest: Manifest, where: str = "manifest") -> None:
    """Refuse a patient in two splits, or a synthetic row outside train.

    Call this before training or evaluating on any manifest.
    """
    rows = manifest.rows
    synthetic_eval = (rows["source"] == "synthetic") & (rows["split"] != "train")
    if synthetic_eval.any():
        row = int(np.flatnonzero(synthetic_eval.to_numpy())[0])
        raise UserError(
            f"{where}: row {row} is synthetic in split {rows['split'].iloc[row]!r}; "
            "synthetic rows may only be in train"
        )
    real = rows[rows["source"] == "real"]
    per_patient = real.groupby("patient_id")["split"].nunique()
    leaked = per_patient[per_patient > 1]
    if len(leaked):
        patient = leaked.index[0]
        splits = sorted(real.loc[real["patient_id"] == patient, "split"].unique())
        raise UserError(
            f"{where}: patient {patient!r} is in splits {', '.join(splits)} "
            f"({len(leaked)} patient(s) leak); splits must be patient-disjoint"
        )


def _patient_profiles(rows: pd.DataFrame, labels: Sequence[str]) -> pd.DataFrame:
    """Per patient: whether any of their images is positive for each label."""
    positive = (rows[list(labels)].to_numpy(dtype=np.float64) == 1).astype(np.int8)
    frame = pd.DataFrame(positive, columns=list(labels))
    frame["patient_id"] = rows["patient_id"].to_numpy()
    return frame.groupby("patient_id", sort=True).max()


def assign_patient_splits(
    patients: pd.DataFrame,
    fractions: tuple[float, float, float],
    seed: int,
) -> pd.Series:
    """Assign each patient (row of a 0/1 label profile) to train/val/test.

    Greedy iterative stratification: patients are visited rarest-label first (random order
    within ties) and go to the split furthest below its target share of that label, which
    keeps every split's label prevalence close to the whole set's.
    """
    rng = np.random.default_rng(seed)
    names = ("train", "val", "test")
    frac = np.asarray(fractions, dtype=np.float64)
    profiles = patients.to_numpy(dtype=np.int64)
    n_patients, n_labels = profiles.shape
    label_totals = profiles.sum(axis=0).astype(np.float64)
    wanted_labels = np.outer(frac, label_totals)  # (3, L)
    wanted_count = frac * n_patients
    have_labels = np.zeros_like(wanted_labels)
    have_count = np.zeros(3)

    # Rarest positive label of each patient decides its visiting order and its split (as in
    # Sechidis et al.'s iterative stratification): summing the need over all of a patient's
    # labels would let train's large need for common labels pull every rare case into train.
    rarity = np.where(profiles > 0, label_totals[None, :], np.inf)
    key = rarity.min(axis=1) if n_labels else np.full(n_patients, np.inf)
    rarest = rarity.argmin(axis=1) if n_labels else np.zeros(n_patients, dtype=np.int64)
    order = np.lexsort((rng.random(n_patients), key))
    out = np.empty(n_patients, dtype=object)
    for i in order:
        room = wanted_count - have_count
        if np.isfinite(key[i]):
            label = rarest[i]
            score = (wanted_labels[:, label] - have_labels[:, label]) + 1e-3 * room
        else:
            score = room
        score = np.where(frac > 0, score, -np.inf)
        best = int(np.argmax(score))
        out[i] = names[best]
        have_count[best] += 1
        have_labels[best] += profiles[i]
    return pd.Series(out, index=patients.index, name="split")


def split_by_patient(
    manifest: Manifest,
    fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
    seed: int = 0,
    keep_official: bool = True,
    stratify: bool = True,
) -> Manifest:
    """Assign real rows to train/val/test by patient, deterministic in `seed`.

    With `keep_official` and a manifest whose rows already carry an official split (the
    `official_split` column importers write), that split is kept: a dataset with an official
    test set keeps it, and only patients without an official assignment are split here.
    Synthetic rows stay in train.
    """
    if len(fractions) != 3 or any(f < 0 for f in fractions) or not np.isclose(sum(fractions), 1.0):
        raise UserError(
            f"--fractions: need three non-negative shares summing to 1, got {fractions}"
        )
    rows = manifest.rows.copy()
    real = (rows["source"] == "real").to_numpy()
    if not real.any():
        raise UserError("split: the manifest has no real rows")
    official = rows.get("official_split")
    fixed = np.zeros(len(rows), dtype=bool)
    fracs = np.asarray(fractions, dtype=np.float64)
    if keep_official and official is not None and official[real].notna().any():
        # A patient with any officially assigned image goes wholly to that split.
        by_patient = rows.loc[real & official.notna().to_numpy()].groupby("patient_id")[
            "official_split"
        ]
        if (by_patient.nunique() > 1).any():
            patient = by_patient.nunique().idxmax()
            raise UserError(f"official split puts patient {patient!r} in several splits")
        patient_split = by_patient.first()
        fixed = real & rows["patient_id"].isin(patient_split.index).to_numpy()
        rows.loc[fixed, "split"] = rows.loc[fixed, "patient_id"].map(patient_split).to_numpy()
        # Splits the dataset defines officially (its val or test) are not carved again.
        for name in set(patient_split.unique()) - {"train"}:
            fracs[("train", "val", "test").index(name)] = 0.0
        fracs = fracs / fracs.sum() if fracs.sum() > 0 else np.asarray([1.0, 0.0, 0.0])
    todo = rows[real & ~fixed]
    if len(todo):
        labels = list(manifest.labels) if stratify else []
        profiles = _patient_profiles(todo, labels)
        assigned = assign_patient_splits(profiles, tuple(fracs), seed)
        rows.loc[todo.index, "split"] = todo["patient_id"].map(assigned).to_numpy()
    out = manifest.with_rows(rows)
    check_leakage(out, where="split")
    return out


def split_counts(manifest: Manifest) -> pd.DataFrame:
    """Images and patients per split and source."""
    rows = manifest.rows
    return (
        rows.groupby(["split", "source"])
        .agg(images=("image_path", "size"), patients=("patient_id", "nunique"))
        .reset_index()
    )


def parse_fractions(text: str, flag: str = "--fractions") -> tuple[float, float, float]:
    """Parse 'train,val,test' shares such as '0.8,0.1,0.1'."""
    try:
        parts = tuple(float(x) for x in text.split(","))
    except ValueError:
        parts = ()
    if len(parts) != 3 or any(p < 0 for p in parts) or not np.isclose(sum(parts), 1.0):
        raise UserError(
            f"{flag}: expected three non-negative numbers summing to 1 like 0.8,0.1,0.1, got {text!r}"
        )
    return parts  # type: ignore[return-value]
