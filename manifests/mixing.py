"""Mixing real and synthetic training images into one classifier training manifest.

The mix ratio `m` is the synthetic *fraction* of the training set,
``n_synthetic / (n_real + n_synthetic) = m``:

* without a fixed size, all ``R`` real train images are kept and
  ``n_synthetic = round(R * m / (1 - m))`` are added; so ``m = 0`` is real only and
  ``m = 0.5`` adds as many synthetic as real images (``m = 0.75`` adds three times as many).
  ``m = 1`` is synthetic only, with as many synthetic images as there are real train images
  (``R``), so arms at every ratio see a comparable amount of data.
* with ``train_size = T``, the total is fixed: ``n_synthetic = round(T * m)``,
  ``n_real = T - n_synthetic``.

Images are drawn without replacement when enough exist. When more are asked for than
exist, every available image is used the same number of times and the remainder is drawn
without replacement (sampling with repetition, reported in `MixPlan` and in the
manifest's metadata). The real validation and test rows are kept untouched: only the
training set is mixed.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from manifests.errors import UserError
from manifests.io import Manifest, absolutize

MIX_METADATA_KEY = "cxraug.mix"


@dataclass(frozen=True)
class MixPlan:
    """How many real and synthetic train images a mix takes, and from how many available."""

    mix: float
    train_size: int | None
    n_real: int
    n_synthetic: int
    real_available: int
    synthetic_available: int

    @property
    def real_repeated(self) -> bool:
        """True when real images are used more than once (more asked for than exist)."""
        return self.n_real > self.real_available

    @property
    def synthetic_repeated(self) -> bool:
        """True when synthetic images are used more than once (more asked for than exist)."""
        return self.n_synthetic > self.synthetic_available

    def describe(self) -> str:
        """One line for the terminal: counts and any repetition."""
        text = f"mix {self.mix:g}: {self.n_real} real + {self.n_synthetic} synthetic train images"
        notes = []
        if self.real_repeated:
            notes.append(f"real drawn with repetition from {self.real_available}")
        if self.synthetic_repeated:
            notes.append(f"synthetic drawn with repetition from {self.synthetic_available}")
        return text + (f" ({'; '.join(notes)})" if notes else "")


def check_mix(mix: float, flag: str = "--mix") -> float:
    """Validate a mix ratio (a number in [0, 1])."""
    try:
        value = float(mix)
    except (TypeError, ValueError):
        raise UserError(f"{flag}: {mix!r} is not a number; valid: 0 to 1") from None
    if not (0.0 <= value <= 1.0):
        raise UserError(
            f"{flag}: {mix!r} is outside [0, 1]; it is the synthetic fraction of the "
            "training set (0 real only, 1 synthetic only)"
        )
    return value


def plan_mix(
    real_available: int,
    synthetic_available: int,
    mix: float,
    train_size: int | None = None,
) -> MixPlan:
    """Counts of real and synthetic train images for a mix (see the module docstring)."""
    mix = check_mix(mix)
    if train_size is not None:
        if int(train_size) != train_size or train_size < 1:
            raise UserError(f"--train-size: {train_size!r} must be a positive integer")
        n_synthetic = int(round(train_size * mix))
        n_real = int(train_size) - n_synthetic
    elif mix >= 1.0:
        n_real, n_synthetic = 0, real_available
    else:
        n_real = real_available
        n_synthetic = int(round(real_available * mix / (1.0 - mix)))
    if n_real > 0 and real_available == 0:
        raise UserError("--real: the manifest has no real rows in split 'train'")
    if n_synthetic > 0 and synthetic_available == 0:
        raise UserError(
            f"--mix {mix:g} needs synthetic images; pass --synthetic with a manifest that "
            "has synthetic rows (or use --mix 0)"
        )
    if n_real + n_synthetic == 0:
        raise UserError("--mix: the mixed training set would be empty")
    return MixPlan(
        mix=mix,
        train_size=None if train_size is None else int(train_size),
        n_real=n_real,
        n_synthetic=n_synthetic,
        real_available=real_available,
        synthetic_available=synthetic_available,
    )


def draw_rows(n_available: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """`n` row indices out of `n_available`: without replacement when possible, else each
    index the same number of times plus a random remainder (never a lopsided resample)."""
    if n <= 0:
        return np.zeros(0, dtype=np.int64)
    whole, rest = divmod(n, n_available)
    parts = [np.tile(np.arange(n_available), whole)] if whole else []
    parts.append(rng.choice(n_available, size=rest, replace=False))
    return np.sort(np.concatenate(parts)).astype(np.int64)


def parse_positive_rates(text: str, labels: Sequence[str], flag: str = "--oversample-to") -> dict:
    """'LABEL:SHARE,...' -> {label: share}: each label a manifest label, each share in (0, 1)."""
    rates = {}
    for part in [p for p in str(text).split(",") if p.strip()]:
        label, sep, value = part.rpartition(":")
        label = label.strip()
        try:
            share = float(value) if sep else math.nan
        except ValueError:
            share = math.nan
        if label not in labels:
            raise UserError(f"{flag}: {label or part!r} is not a label; valid: {', '.join(labels)}")
        if not 0.0 < share < 1.0:
            raise UserError(f"{flag}: {part.strip()!r}; give LABEL:SHARE with 0 < SHARE < 1")
        rates[label] = share
    if not rates:
        raise UserError(f"{flag}: {text!r}; give LABEL:SHARE,... e.g. Pneumothorax:0.3")
    return rates


def positive_rates(rows: pd.DataFrame, labels: Sequence[str]) -> dict[str, float]:
    """The share of `rows` positive (1) for each label: a training set's label balance."""
    values = rows[list(labels)].to_numpy(np.float64) == 1
    return {
        label: float(values[:, j].mean()) if len(rows) else 0.0 for j, label in enumerate(labels)
    }


def oversample_weights(positive: np.ndarray, target: np.ndarray, rounds: int = 100) -> np.ndarray:
    """Per-row weights whose weighted positive share per label is `target` (raking).

    `positive` is ``(n, L)`` booleans, `target` ``(L,)`` shares; each round scales, label by
    label, the positives' weights by target / current and the negatives' by the
    complements. A label without positives (or negatives) keeps its share.
    """
    w = np.ones(len(positive))
    for _ in range(rounds):
        for j, t in enumerate(target):
            pos = positive[:, j]
            share = w[pos].sum() / w.sum()
            if 0.0 < share < 1.0:
                w = np.where(pos, w * t / share, w * (1.0 - t) / (1.0 - share))
    return w / w.sum()


def draw_weighted(weights: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """`n` row indices, row i about ``n * weights[i]`` times: the whole part of each
    expectation exactly, the rest drawn by the fractional parts (no lopsided resample)."""
    expected = n * np.asarray(weights, np.float64)
    counts = np.floor(expected).astype(np.int64)
    rest = n - int(counts.sum())
    if rest > 0:
        frac = expected - counts
        extra = rng.choice(len(weights), size=rest, replace=False, p=frac / frac.sum())
        counts[extra] += 1
    return np.repeat(np.arange(len(weights)), counts).astype(np.int64)


def mix_manifests(
    real: Manifest,
    synthetic: Manifest | None,
    mix: float,
    train_size: int | None = None,
    seed: int = 0,
    oversample_to: dict[str, float] | None = None,
) -> Manifest:
    """A training manifest: real val/test untouched, real + synthetic train rows per `mix`.

    Args:
        real: the real manifest (split); its train rows are the real pool, its val/test rows
            are copied as they are. Synthetic rows in it are refused.
        synthetic: a manifest whose `source == 'synthetic'` rows are the synthetic pool (other
            rows are ignored); may be None when `mix == 0`.
        mix: synthetic fraction of the training set in [0, 1]; without `train_size`,
            ``n_synthetic = round(R * mix / (1 - mix))`` next to all ``R`` real train images
            (0.5 adds as many synthetic as real), and `mix == 1` takes ``R`` synthetic only.
        train_size: fix the total: ``n_synthetic = round(train_size * mix)``, the rest real.
        seed: which rows are drawn.
        oversample_to: {label: positive share}: real-only (`mix` 0) with `train_size`, the
            real rows are drawn by :func:`oversample_weights` so the training set's positive
            share per label is about these (the label balance of the mixed arm a control
            is matched to: more positives, not more information).

    Returns:
        A manifest with absolute image paths; its metadata `cxraug.mix` holds the plan (JSON).
    """
    mix = check_mix(mix)
    rows = real.rows
    if (rows["source"] != "real").any():
        row = int(np.flatnonzero((rows["source"] != "real").to_numpy())[0])
        raise UserError(
            f"--real: row {row} is {rows['source'].iloc[row]!r}; the real manifest must hold "
            "real rows only (pass synthetic rows with --synthetic)"
        )
    if mix > 0 and synthetic is None:
        raise UserError(f"--mix {mix:g} needs synthetic images; pass --synthetic MANIFEST")
    is_train = (rows["split"] == "train").to_numpy()
    real_train = rows[is_train]
    syn_rows = pd.DataFrame()
    if synthetic is not None and mix > 0:
        if tuple(synthetic.labels) != tuple(real.labels):
            raise UserError(
                f"--synthetic: label set {list(synthetic.labels)} differs from the real "
                f"manifest's {list(real.labels)}"
            )
        syn_all = absolutize(synthetic).rows
        syn_rows = syn_all[syn_all["source"] == "synthetic"]
    plan = plan_mix(len(real_train), len(syn_rows), mix, train_size)

    rng = np.random.default_rng(seed)
    real_abs = absolutize(real).rows
    if oversample_to is not None:
        if mix != 0 or train_size is None:
            raise UserError("--oversample-to: only for a real-only run (--mix 0) with --train-size")
        labels = list(oversample_to)
        positive = real_train[labels].to_numpy(np.float64) == 1
        weights = oversample_weights(positive, np.array([oversample_to[x] for x in labels]))
        real_index = draw_weighted(weights, plan.n_real, rng)
    else:
        real_index = draw_rows(len(real_train), plan.n_real, rng)
    parts = [real_abs[~is_train], real_abs[is_train].iloc[real_index]]
    if plan.n_synthetic:
        parts.append(syn_rows.iloc[draw_rows(len(syn_rows), plan.n_synthetic, rng)])
    out_rows = pd.concat(parts, ignore_index=True, sort=False)
    metadata = dict(real.metadata)
    if synthetic is not None and plan.n_synthetic:
        metadata.update(synthetic.metadata)
    info = asdict(plan) | {
        "real_repeated": plan.real_repeated,
        "synthetic_repeated": plan.synthetic_repeated,
        "seed": seed,
        "oversample_to": oversample_to,
    }
    metadata[MIX_METADATA_KEY] = json.dumps(info, sort_keys=True)
    return Manifest(rows=out_rows, labels=real.labels, root=Path("/"), metadata=metadata)


def mix_plan_of(manifest: Manifest) -> MixPlan | None:
    """The `MixPlan` stored in a mixed manifest's metadata, if any."""
    raw = manifest.metadata.get(MIX_METADATA_KEY)
    if not raw:
        return None
    info = json.loads(raw)
    fields = {k: info[k] for k in MixPlan.__dataclass_fields__}
    return MixPlan(**fields)


def patient_order(rows: pd.DataFrame, labels: Sequence[str], seed: int) -> list[str]:
    """A seeded, label-stratified order of the patients in `rows` (real train rows).

    Patients are grouped by their rarest positive label (no positive: its own group),
    shuffled within the group, and interleaved in proportion to group sizes, so every prefix
    of the order holds each group in about its share. Subsets taken as prefixes of one
    order are nested: for a given seed, a smaller subset lies inside every larger one.
    """
    positive = rows[list(labels)].to_numpy(dtype=np.float64) == 1
    frame = pd.DataFrame(positive, columns=list(labels))
    frame["patient_id"] = rows["patient_id"].astype(str).to_numpy()
    profiles = frame.groupby("patient_id", sort=True).max()
    prevalence = profiles.sum(axis=0).to_numpy()
    rarity = np.where(profiles.to_numpy(), prevalence[None, :], np.inf)
    group = np.where(np.isfinite(rarity.min(axis=1)), rarity.argmin(axis=1), -1)
    rng = np.random.default_rng([int(seed), 7])
    keys = np.empty(len(profiles))
    for g in np.unique(group):
        members = np.flatnonzero(group == g)
        # Evenly spaced positions within [0, 1), jittered: proportional interleaving.
        keys[members] = (rng.permutation(len(members)) + rng.random(len(members))) / len(members)
    return [str(p) for p in profiles.index.to_numpy()[np.argsort(keys, kind="stable")]]


def check_real_size(size: float | None, flag: str = "--real-size") -> float | None:
    """None, a count (an integer >= 1) or a fraction in (0, 1)."""
    if size is None:
        return None
    value = float(size)
    if not (0 < value < 1 or (value >= 1 and value == int(value))):
        raise UserError(
            f"{flag}: {size!r}; give a number of real train images (an integer >= 1) or a "
            "fraction of them in (0, 1)"
        )
    return value


def subset_real_train(real: Manifest, size: float, seed: int = 0) -> Manifest:
    """Keep a patient-level, label-stratified subset of the real train rows (val/test kept).

    `size` is a number of images (patients are added in `patient_order` until the subset
    holds at least that many) or a fraction of the train images. Nested across sizes for a
    given seed.
    """
    size = check_real_size(size)
    rows = real.rows
    is_train = ((rows["split"] == "train") & (rows["source"] == "real")).to_numpy()
    train = rows[is_train]
    n_train = len(train)
    target = int(round(size * n_train)) if size < 1 else int(size)
    if target > n_train:
        raise UserError(
            f"--real-size: {target} images asked for, the real train split has {n_train}"
        )
    order = patient_order(train, real.labels, seed)
    counts = train["patient_id"].astype(str).value_counts()
    cumulative = np.cumsum(counts.reindex(order).to_numpy())
    keep = set(order[: int(np.searchsorted(cumulative, max(target, 1))) + 1])
    drop = is_train & ~rows["patient_id"].astype(str).isin(keep).to_numpy()
    return real.with_rows(rows[~drop])
