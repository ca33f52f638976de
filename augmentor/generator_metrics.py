"""The generator evaluation's tables: FID/KID/PRDC, diversity, alignment, memorization, prompt
fidelity (laterality's is `augmentor.laterality`), and which real images calibrate the
oracle and which judge it (`OracleHoldout`).

Each function takes arrays (features, oracle probabilities, thumbnails) and manifest rows and
returns a table; `augmentor.evaluate` loads the images, runs the extractors and writes the
tables out. What each metric means, and its limits, is in `augmentor.evaluate`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from augmentor.eval_config import (
    KID_SUBSET_SIZE,
    KID_SUBSETS,
    MIN_FID_IMAGES,
    PRDC_K,
    FidelityTargets,
)
from augmentor.metrics import (
    cluster_bootstrap_weights,
    clustered_rate_interval,
    fid_from_features,
    kid_from_features,
    ms_ssim,
    nearest_neighbours,
    pair_indices,
    positive_rate,
    rate_interval,
    weighted_rates,
    whole_group_pairs,
    youden_threshold,
)
from augmentor.prdc import knn_radii, prdc
from augmentor.report_text import LATERAL_LABELS, stated_side
from classifier.config import N_BOOT
from manifests.images import load_image
from manifests.io import Manifest
from manifests.provenance import SeenPatients

# ---------------------------------------------------------------- fidelity: FID and KID

TOO_FEW = "too few images"


def extractor_title(name: str, dim: int, oracle_name: str | None = None) -> str:
    """What FID's features are, for every place FID is shown: 'oracle features, 512-d',
    'Inception, 2048-d', 'torchxrayvision DenseNet-121, 1024-d', 'RadDINO, 768-d', ...

    `name` is the extractor's (`run:PATH`, `timm:NAME`, `xrv:PATH`, `raddino:DIR`); `oracle_name` the
    oracle's, when there is one (a run that is also the oracle is named so).
    """
    kind, _, source = name.partition(":")
    if kind == "run":
        what = "oracle features" if name == oracle_name else f"classifier-run features ({source})"
    elif kind == "timm":
        what = "Inception" if source.startswith("inception") else f"timm {source}"
    elif kind == "xrv":
        what = "torchxrayvision DenseNet-121"
    elif kind == "raddino":
        what = "RadDINO"
    else:
        what = name
    return f"{what}, {int(dim)}-d"


PRDC_COLUMNS = ("precision", "recall", "density", "coverage")


def _prdc_columns(
    query: np.ndarray, ref: np.ndarray, k: int, min_n: int, ref_radii: np.ndarray | None
) -> dict:
    """Precision, recall, density and coverage of `query` against `ref` (`augmentor.prdc`),
    with `prdc_note`; NaNs and 'too few images' below `min_n` (at least k + 1) on a side."""
    least = max(min_n, k + 1)
    if min(len(query), len(ref)) < least:
        return {c: float("nan") for c in PRDC_COLUMNS} | {"prdc_note": f"{TOO_FEW} (< {least})"}
    return prdc(ref, query, k, real_radii=ref_radii).as_dict() | {"prdc_note": ""}


def _distance_row(
    subset: str,
    compared: str,
    query: np.ndarray,
    ref: np.ndarray,
    kid: dict,
    min_fid: int = 2,
    prdc_k: int = PRDC_K,
    ref_radii: np.ndarray | None = None,
) -> dict:
    """FID, KID and PRDC of `query` against `ref`; FID and PRDC left out (and said why)
    below `min_fid`. `ref_radii`: `knn_radii(ref, prdc_k)` where already computed."""
    dim = query.shape[1]
    n = min(len(query), len(ref))
    fid, note = float("nan"), ""
    if n < max(min_fid, 2):
        note = f"{TOO_FEW} (< {min_fid})"
    else:
        fid = fid_from_features(query, ref)
        if n < dim:
            note = f"n < {dim} dims: FID biased upwards"
    kid_mean, kid_se = kid_from_features(query, ref, **kid)
    return {
        "subset": subset,
        "compared": compared,
        "n_compared": len(query),
        "n_reference": len(ref),
        "fid": fid,
        "fid_note": note,
        "kid_mean": kid_mean,
        "kid_se": kid_se,
        **_prdc_columns(query, ref, prdc_k, min_fid, ref_radii),
        "prdc_k": prdc_k,
    }


def _draw(n: int, k: int, rng: np.random.Generator) -> np.ndarray:
    """`k` of `n` row positions, sorted (all when k >= n)."""
    return np.arange(n) if k >= n else np.sort(rng.choice(n, k, replace=False))


def fidelity_table(
    syn_features: np.ndarray,
    syn_targets: pd.Series,
    real_features: np.ndarray,
    real_rows: pd.DataFrame,
    labels: tuple[str, ...],
    min_fid_images: int = MIN_FID_IMAGES,
    kid_subsets: int = KID_SUBSETS,
    kid_subset_size: int = KID_SUBSET_SIZE,
    seed: int = 0,
    extractor: str = "",
    prdc_k: int = PRDC_K,
) -> tuple[pd.DataFrame, float | None]:
    """FID, KID and PRDC of the synthetic images, all and per target label, against real train.

    FID is biased upwards, the more so the fewer the images, so FIDs compare only at equal n:
    the 'all' row and the real baseline row (real test, else val, images against the same
    real train images) use the same number of compared images, the larger of the two sets
    subsampled with `seed`. Per label the reference is the real train positives of that
    label; below `min_fid_images` on either side its FID is not given (`fid_note` says
    'too few images'), as it is not anywhere n is below 2. `fid_note` also says where n is
    below the feature dimension. KID (`kid_mean`, `kid_se`: `kid_from_features`) is unbiased
    where FID is not. `precision`, `recall`, `density`, `coverage` (`augmentor.prdc`, real
    train as the real set, `prdc_k` neighbours) sit beside them, with `prdc_note` saying
    'too few images' where FID's does (or where a side has no more than `prdc_k` rows); like
    FID they depend on n, so they too compare at equal n. Every row carries `extractor`
    (what the features are) and its n (`n_compared`, `n_reference`). Also returns the
    baseline FID (its row is the last).
    """
    kid = {"subsets": kid_subsets, "subset_size": kid_subset_size, "seed": seed}
    rng = np.random.default_rng(seed)
    train = (real_rows["split"] == "train").to_numpy()
    held = None
    for split in ("test", "val"):
        rows = (real_rows["split"] == split).to_numpy()
        if rows.sum() >= 2:
            held = (split, np.flatnonzero(rows))
            break
    n_equal = len(syn_features) if held is None else min(len(syn_features), len(held[1]))
    syn_all = syn_features[_draw(len(syn_features), n_equal, rng)]
    # The real train balls serve both the 'all' row and the baseline row: computed once.
    train_radii = knn_radii(real_features[train], prdc_k) if train.sum() > prdc_k else None
    whole = {"prdc_k": prdc_k, "ref_radii": train_radii}
    rows = [_distance_row("all", "synthetic", syn_all, real_features[train], kid, **whole)]
    for label in pd.unique(syn_targets.dropna()):
        if label not in labels:
            continue
        syn = (syn_targets == label).to_numpy()
        ref = train & (real_rows[label].to_numpy() == 1)
        rows.append(
            _distance_row(str(label), "synthetic", syn_features[syn], real_features[ref], kid,
                          min_fid_images, prdc_k)
        )  # fmt: skip
    baseline = None
    if held is not None:
        split, idx = held
        query = real_features[idx[_draw(len(idx), n_equal, rng)]]
        baseline = _distance_row(
            f"real {split} (baseline)",
            f"real {split}",
            query,
            real_features[train],
            kid,
            **whole,
        )
    frame = pd.DataFrame(rows + ([baseline] if baseline else []))
    frame.insert(0, "extractor", extractor)
    return frame, (baseline["fid"] if baseline else None)


# ---------------------------------------------------------------- diversity


class _ImageBank:
    """Images of a manifest resized to one size, decoded on first use and kept.

    Only images that take part in a sampled pair are ever read, so memory is bounded by the
    number of pairs, not by the size of the manifests.
    """

    def __init__(self, paths: list[Path], size: int):
        self.paths, self.size = paths, size
        self._images: dict[int, np.ndarray] = {}

    def __getitem__(self, indices: np.ndarray) -> np.ndarray:
        out = np.empty((len(indices), self.size, self.size), dtype=np.uint8)
        for k, i in enumerate(indices):
            i = int(i)
            if i not in self._images:
                img = load_image(self.paths[i])
                if img.shape != (self.size, self.size):
                    img = np.asarray(
                        Image.fromarray(img).resize(
                            (self.size, self.size), Image.Resampling.BILINEAR
                        )
                    )
                self._images[i] = img
            out[k] = self._images[i]
        return out


def _pairs_ms_ssim(bank: _ImageBank, first: np.ndarray, second: np.ndarray) -> np.ndarray:
    values = [
        ms_ssim(bank[first[s : s + 128]], bank[second[s : s + 128]])
        for s in range(0, len(first), 128)
    ]
    return np.concatenate(values) if values else np.zeros(0)


def _group_pairs(
    groups: np.ndarray, members: np.ndarray, max_pairs: int, cap: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Pairs within equal `groups` values, as indices from `members`; at most `cap` in all."""
    first, second = pair_indices(groups, max_pairs, seed)
    if len(first) > cap:
        pick = np.sort(np.random.default_rng(seed).choice(len(first), cap, replace=False))
        first, second = first[pick], second[pick]
    return members[first], members[second]


# Synthetic manifest column: rows that share it are one drawn prompt's images
# (`synthesize --images-per-prompt K`).
PROMPT_GROUP = "prompt_group"


def prompt_groups_repeat(rows: pd.DataFrame) -> bool:
    """Whether some drawn prompt made two or more of these synthetic rows."""
    return PROMPT_GROUP in rows.columns and bool(rows[PROMPT_GROUP].duplicated().any())


def same_prompt_pairs(
    rows: pd.DataFrame, max_pairs: int, cap: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, int]:
    """Synthetic image pairs that share a prompt, and how many prompt groups they come from.

    RoentGen's protocol where rows repeat a drawn prompt (`prompt_group`, from
    `synthesize --images-per-prompt K`): all pairs within each group (K = 4: 6 pairs),
    whole groups drawn at random when there are more than `cap` pairs. Otherwise (one
    image per drawn prompt) rows whose prompt text is equal, at most `max_pairs` per prompt
    and `cap` in all.
    """
    if prompt_groups_repeat(rows):
        return whole_group_pairs(rows[PROMPT_GROUP].to_numpy(), cap, seed)
    prompts = rows["prompt"].fillna("").to_numpy()
    first, second = _group_pairs(prompts, np.arange(len(rows)), max_pairs, cap, seed)
    return first, second, len(pd.unique(prompts[first]))


def diversity_table(
    synthetic: Manifest,
    real: Manifest,
    size: int,
    max_pairs: int = 20,
    seed: int = 0,
) -> pd.DataFrame:
    """Mean MS-SSIM (lower = more diverse) of synthetic and real image pairs.

    Rows: synthetic pairs sharing a prompt (`same_prompt_pairs`: all pairs of each drawn
    prompt's images where a prompt made several, RoentGen's protocol; else at most
    `max_pairs` per prompt text), synthetic pairs sharing a target label, real train pairs
    positive for that label (per label), real train pairs of one patient (at most
    `max_pairs` per patient); each comparison draws at most 20 x `max_pairs` pairs.
    `groups` counts the prompts, labels or patients the pairs come from. Images are resized
    to `size` so both sides use the same MS-SSIM scales.
    """
    cap = 20 * max_pairs
    syn_rows = synthetic.rows
    syn_bank = _ImageBank(synthetic.image_paths(), size)
    real_bank = _ImageBank(real.image_paths(), size)
    records = []

    def add(comparison: str, label: str, bank: _ImageBank, pairs, groups: int = 1) -> None:
        values = _pairs_ms_ssim(bank, *pairs)
        records.append(
            {
                "comparison": comparison,
                "label": label,
                "groups": int(groups) if len(values) else 0,
                "pairs": len(values),
                "ms_ssim_mean": float(values.mean()) if len(values) else float("nan"),
                "ms_ssim_std": float(values.std()) if len(values) else float("nan"),
            }
        )

    if "prompt" in syn_rows.columns:
        first, second, groups = same_prompt_pairs(syn_rows, max_pairs, cap, seed)
        add("synthetic, same prompt", "all", syn_bank, (first, second), groups)
    targets = (
        syn_rows["target_label"].fillna("").to_numpy()
        if "target_label" in syn_rows.columns
        else np.array([""] * len(syn_rows))
    )
    train = np.flatnonzero(real.rows["split"].to_numpy() == "train")
    for label in pd.unique(targets):
        if not label:
            continue
        members = np.flatnonzero(targets == label)
        add("synthetic, same target label", label, syn_bank,
            _group_pairs(np.zeros(len(members)), members, cap, cap, seed))  # fmt: skip
        if label in real.labels:
            positives = train[real.rows[label].to_numpy()[train] == 1]
            if len(positives) >= 2:
                add("real train, same label", label, real_bank,
                    _group_pairs(np.zeros(len(positives)), positives, cap, cap, seed))  # fmt: skip
    patients = real.rows["patient_id"].to_numpy()[train]
    if pd.Series(patients).duplicated().any():
        pairs = _group_pairs(patients, train, max_pairs, cap, seed)
        n_patients = len(pd.unique(real.rows["patient_id"].to_numpy()[pairs[0]]))
        add("real train, same patient", "all", real_bank, pairs, n_patients)
    return pd.DataFrame(records)


# ---------------------------------------------------------------- the oracle's held-out images


@dataclass(frozen=True)
class OracleHoldout:
    """Which real images calibrate the oracle and which it is judged on.

    `calibrate`: rows that set its per-label thresholds and fit the side detector, images of
    patients it did not train on (its validation patients). `reference`: real test rows of
    patients it neither trained on nor validated with, where its rates on real positives and
    negatives are read. `source` says in words where `calibrate` came from.
    """

    calibrate: np.ndarray
    reference: np.ndarray
    source: str
    notes: tuple[str, ...] = ()

    @classmethod
    def from_splits(cls, real_rows: pd.DataFrame) -> OracleHoldout:
        """The manifest's own val (calibrate) and test (reference) rows."""
        split = real_rows["split"].to_numpy()
        return cls(split == "val", split == "test", "the real manifest's val split")


def oracle_holdout(real_rows: pd.DataFrame, seen: SeenPatients | None) -> OracleHoldout:
    """The oracle's held-out images in `real_rows`, from what its run records (`seen`).

    Calibration images are those of its validation patients (`seen.selected`) that it did
    not train on; where none of them is in `real_rows`, the val rows of patients it did not
    train on. Reference images are the test rows of patients it neither trained nor
    validated on. Without a record (`seen` None) the manifest's val and test splits are
    used, and a note says the oracle's patients could not be checked.
    """
    if seen is None:
        base = OracleHoldout.from_splits(real_rows)
        return replace(
            base,
            source=base.source + " (the oracle run records no patients: unchecked)",
            notes=(
                "the oracle run records no patients: its thresholds and side detector come "
                "from the real val split, whose patients it may have trained on",
            ),
        )
    patients = real_rows["patient_id"].astype(str)
    split = real_rows["split"].to_numpy()
    trained = patients.isin(set(seen.trained)).to_numpy()
    selected = patients.isin(set(seen.selected)).to_numpy()
    calibrate = selected & ~trained
    notes = []
    if calibrate.any():
        n_patients = patients[calibrate].nunique()
        source = (
            f"the oracle run's validation patients ({int(calibrate.sum())} images, "
            f"{n_patients} patients it did not train on)"
        )
    else:
        calibrate = (split == "val") & ~trained
        source = "the real val split, patients the oracle did not train on"
        notes.append("none of the oracle run's validation patients is in --real: " + source)
    test = split == "test"
    reference = test & ~trained & ~selected
    if (test & ~reference).any():
        notes.append(
            f"{int((test & ~reference).sum())} real test images of patients the oracle trained "
            "or validated on are left out of its reference rates"
        )
    return OracleHoldout(calibrate, reference, source, tuple(notes))


# ---------------------------------------------------------------- prompt alignment


def label_thresholds(
    probs: np.ndarray, values: pd.DataFrame, labels: list[str]
) -> dict[str, tuple[float, str]]:
    """Per label: the Youden threshold on these (held-out real) rows, or 0.5 with the reason."""
    out = {}
    for j, label in enumerate(labels):
        v = values[label].to_numpy(dtype=np.float64)
        known = np.isin(v, (0.0, 1.0))
        t = youden_threshold(v[known], probs[known, j]) if known.any() else None
        out[label] = (t, "youden") if t is not None else (0.5, "0.5 (one class held out)")
    return out


def alignment_table(
    syn_probs: np.ndarray,
    syn_targets: pd.Series,
    real_probs: np.ndarray,
    real_rows: pd.DataFrame,
    oracle_labels: tuple[str, ...],
    holdout: OracleHoldout | None = None,
) -> pd.DataFrame:
    """Per target label: oracle-positive share of its synthetic images vs real test rates
    (thresholds on `holdout.calibrate`, rates on `holdout.reference`; default the val and
    test splits)."""
    holdout = holdout or OracleHoldout.from_splits(real_rows)
    labels = list(oracle_labels)
    cal, test = holdout.calibrate, holdout.reference
    thresholds = label_thresholds(real_probs[cal], real_rows[cal], labels)
    records = []
    for target in pd.unique(syn_targets.dropna()):
        if target not in labels:
            continue
        j = labels.index(target)
        t, source = thresholds[target]
        syn = (syn_targets == target).to_numpy()
        v = real_rows[target].to_numpy(dtype=np.float64)
        pos, neg = test & (v == 1), test & (v == 0)
        records.append(
            {
                "label": target,
                "n_synthetic": int(syn.sum()),
                "synthetic_positive_rate": positive_rate(syn_probs[syn, j], t),
                "real_test_positive_rate": positive_rate(real_probs[pos, j], t),
                "real_test_negative_rate": positive_rate(real_probs[neg, j], t),
                "n_real_pos": int(pos.sum()),
                "n_real_neg": int(neg.sum()),
                "synthetic_mean_prob": float(syn_probs[syn, j].mean()),
                "threshold": t,
                "threshold_source": source,
            }
        )
    return pd.DataFrame(records)


# ---------------------------------------------------------------- memorization


def memorization_table(
    syn_features: np.ndarray,
    syn_pixels: np.ndarray,
    syn_hashes: list[str],
    train_features: np.ndarray,
    train_pixels: np.ndarray,
    train_hashes: list[str],
    feature_threshold: float,
    pixel_threshold: float,
) -> pd.DataFrame:
    """Nearest train image of each query in feature and pixel space, and the flag.

    Both spaces are centred on the train mean before the cosine: chest radiographs share
    one layout (and post-ReLU features one large common component), so raw similarities
    of unrelated images are already near 1 and cannot separate copies; after centring,
    a similarity measures what sets an image apart from the average chest. An exact copy
    still scores 1.

    Columns: `nn_feature_index`, `feature_cosine`, `nn_pixel_index`, `pixel_correlation`,
    `exact_copy` (same content hash as a train image), `flagged` (exact copy, or either
    similarity at or above its threshold). Indices point into the train arrays.
    """
    f_mean = train_features.mean(axis=0, keepdims=True)
    p_mean = train_pixels.mean(axis=0, keepdims=True)
    f_sim, f_idx = nearest_neighbours(syn_features - f_mean, train_features - f_mean, k=1)
    p_sim, p_idx = nearest_neighbours(syn_pixels - p_mean, train_pixels - p_mean, k=1)
    train_set = set(train_hashes)
    exact = np.array([h in train_set for h in syn_hashes], dtype=bool)
    frame = pd.DataFrame(
        {
            "nn_feature_index": f_idx[:, 0],
            "feature_cosine": f_sim[:, 0].astype(np.float64),
            "nn_pixel_index": p_idx[:, 0],
            "pixel_correlation": p_sim[:, 0].astype(np.float64),
            "exact_copy": exact,
        }
    )
    frame["flagged"] = (
        exact
        | (frame["feature_cosine"] >= feature_threshold - 1e-6)
        | (frame["pixel_correlation"] >= pixel_threshold - 1e-6)
    )
    return frame


# ---------------------------------------------------------------- prompt fidelity

NO_FINDING = "No Finding"


def _check(applies: bool, value: float, bound: float, at_least: bool) -> bool | None:
    """None where a target does not apply; False where it applies but was not measurable."""
    if not applies:
        return None
    if not (math.isfinite(value) and math.isfinite(bound)):
        return False
    return bool(value >= bound - 1e-12 if at_least else value <= bound + 1e-12)


def unprompted_mask(synthetic_rows: pd.DataFrame, label: str) -> np.ndarray:
    """Synthetic rows whose prompt does not ask for `label`: not its target, and the prompt
    negates it (0) or does not mention it (NaN, or no column); the false-finding denominator."""
    n = len(synthetic_rows)
    stated = (
        synthetic_rows[label].to_numpy(dtype=np.float64)
        if label in synthetic_rows.columns
        else np.full(n, np.nan)
    )
    target = synthetic_rows.get("target_label", pd.Series([None] * n)).to_numpy()
    return (target != label) & (np.isnan(stated) | (stated == 0))


def other_findings(label: str, labels) -> list[str]:
    """The findings a false-finding rate for `label` is matched on: the others, not No Finding."""
    return [x for x in labels if x not in (label, NO_FINDING)]


def stated_findings(rows: pd.DataFrame, labels: list[str]) -> np.ndarray:
    """(N, len(labels)) 0/1: which of `labels` each row states as present (a missing column: none)."""
    n = len(rows)
    columns = [
        rows[x].to_numpy(dtype=np.float64) == 1 if x in rows.columns else np.zeros(n, bool)
        for x in labels
    ]
    return np.stack(columns, axis=1).astype(np.int8) if labels else np.zeros((n, 0), np.int8)


def matched_negative_rate(
    scores: np.ndarray,
    threshold: float,
    real_rows: pd.DataFrame,
    negatives: np.ndarray,
    counted_rows: pd.DataFrame,
    others: list[str],
) -> float:
    """The oracle's rate on real negatives, matched to the other findings the prompts state.

    `scores`: the oracle's score for the finding on each real row, positive at `threshold`;
    `negatives`: the real test rows negative for it; `counted_rows`: the synthetic rows its
    false-finding rate counts; `others`: the oracle's other findings. The oracle reads some
    findings into others (enlarged hearts and effusions as consolidation, say) at their own
    rates, so its rate over all real negatives, most of them normal, is not what a
    generator that drew its prompts perfectly would score when most of its unprompted images
    are prompted for other findings. Here the real negatives are grouped by which of
    `others` they show and the synthetic rows by which their prompt states, and each real
    group's rate is weighted by its share of the synthetic rows: direct standardisation to
    the prompt mix (`benchmarks/false_findings.py` prints the groups). A synthetic group no
    real negative falls in takes the rate over all negatives, as does an empty `others`.
    """
    overall = positive_rate(scores[negatives], threshold)
    if len(counted_rows) == 0 or not others:
        return overall
    real_keys = stated_findings(real_rows, others)
    keys, counts = np.unique(stated_findings(counted_rows, others), axis=0, return_counts=True)
    total = 0.0
    for key, count in zip(keys, counts, strict=True):
        group = negatives & (real_keys == key).all(axis=1)
        total += count * (positive_rate(scores[group], threshold) if group.any() else overall)
    return float(total / counts.sum())


def _interval(name: str, rate: float, n: int) -> dict[str, float]:
    """`name`_low / `name`_high: the 95% Wilson interval of a rate measured on `n` images."""
    successes = round(rate * n) if math.isfinite(rate) else 0
    low, high = rate_interval(successes, n) if math.isfinite(rate) else (math.nan, math.nan)
    return {f"{name}_low": low, f"{name}_high": high}


def _clustered(name: str, hits: np.ndarray, clusters: np.ndarray) -> dict[str, float]:
    """`name`_low / `name`_high: the 95% interval of a rate whose images share clusters."""
    low, high = clustered_rate_interval(hits, clusters)
    return {f"{name}_low": low, f"{name}_high": high}


def prompt_clusters(rows: pd.DataFrame) -> np.ndarray:
    """The prompt each synthetic row was drawn with, the unit its images are correlated in:
    its prompt text (a report), else its `prompt_group`, else the row alone."""
    n = len(rows)
    own = pd.Series([f"row {i}" for i in range(n)], index=rows.index)
    if "prompt" in rows.columns:
        return rows["prompt"].astype(object).where(rows["prompt"].notna(), own).to_numpy()
    if PROMPT_GROUP in rows.columns:
        return rows[PROMPT_GROUP].astype(str).to_numpy()
    return own.to_numpy()


def patient_clusters(rows: pd.DataFrame) -> np.ndarray:
    """Each real row's patient (its images are correlated), else the row alone."""
    if "patient_id" in rows.columns:
        return rows["patient_id"].astype(str).to_numpy()
    return np.array([f"row {i}" for i in range(len(rows))], dtype=object)


def _matched_replicates(
    real_hits: np.ndarray,
    real_keys: np.ndarray,
    real_weights: np.ndarray,
    syn_keys: np.ndarray,
    syn_weights: np.ndarray,
) -> np.ndarray:
    """`matched_negative_rate` per resample: real negatives weighted by `real_weights`
    (n_boot, n_neg), the prompt mix by `syn_weights` (n_boot or 1, n_unprompted)."""
    overall = weighted_rates(real_weights, real_hits)
    if syn_keys.shape[1] == 0 or len(syn_keys) == 0:
        return overall
    keys, group = np.unique(syn_keys, axis=0, return_inverse=True)
    group = np.asarray(group).ravel()
    syn_onehot = np.eye(len(keys))[group]
    real_onehot = (real_keys[:, None, :] == keys[None, :, :]).all(axis=2).astype(np.float64)
    num = real_weights @ (real_onehot * real_hits[:, None])
    den = real_weights @ real_onehot
    with np.errstate(invalid="ignore", divide="ignore"):
        rates = np.where(den > 0, num / np.where(den > 0, den, 1.0), overall[:, None])
        share = syn_weights @ syn_onehot
        share = share / share.sum(axis=1, keepdims=True)
    return (share * rates).sum(axis=1)


def _one_sided(values: np.ndarray, q: float) -> float:
    """The `q` percentile of bootstrap values (NaN when none is finite)."""
    finite = values[np.isfinite(values)]
    return float(np.percentile(finite, q)) if len(finite) else float("nan")


def prompt_fidelity_table(
    syn_probs: np.ndarray,
    synthetic_rows: pd.DataFrame,
    real_probs: np.ndarray,
    real_rows: pd.DataFrame,
    oracle_labels: tuple[str, ...],
    laterality: pd.DataFrame | None = None,
    targets: FidelityTargets = FidelityTargets(),
    holdout: OracleHoldout | None = None,
    n_boot: int = N_BOOT,
    seed: int = 0,
) -> pd.DataFrame:
    """Per finding: does the generator draw it when prompted, and only then?

    For each oracle label that is prompted, or has real test negatives (the 'No Finding' row
    last), at the oracle's per-label threshold from its held-out calibration images
    (`holdout.calibrate`, Youden's J; default the val split), with its reference rates on
    real test images it never saw (`holdout.reference`; default the test split):

    - `hit_rate`: share of synthetic images prompted for the finding (`target_label`) that
      the oracle calls positive, against `real_positive_rate` on real test positives;
    - `false_finding_rate`: share of synthetic images whose prompt negates the finding
      (label 0) or does not mention it (NaN) that the oracle calls positive, against
      `real_negative_rate` on real test negatives and `matched_negative_rate`, the same
      matched to the other findings those images' prompts state (`matched_negative_rate()`;
      the target compares with this one);
    - `side_hit_rate`: for findings with a side, the side detector's agreement with the side
      the prompt states (from `laterality_table`), against `real_side_hit_rate` on real
      held-out images.

    Intervals (`<rate>_low`, `<rate>_high`, 95%): a synthetic rate's images share prompts,
    so its interval is clustered by prompt (`prompt_clusters`; `n_prompts`,
    `n_unprompted_prompts`, `n_sided_prompts` count them); a real rate's is clustered by
    patient (`clustered_rate_interval`: Wilson's at the design-effect-adjusted size, Wilson's
    itself where no cluster repeats); the matched rate's is a percentile bootstrap of real
    patients. `hit_minus_real` (hit - real pos) with `hit_minus_real_low`, and
    `false_minus_matched` (false finding - matched) with `false_minus_matched_high`, are
    one-sided 95% bounds from `n_boot` resamples of prompts (synthetic) and of patients
    (real), drawn independently.

    The targets judge the point rates. `hit_ok`, `false_finding_ok` and `side_ok` compare
    with `targets` (None where a target does not apply: nothing prompted, nothing
    unprompted, no side); `meets_targets` is True when every target that applies is met
    (one that applies but cannot be measured, e.g. the side detector could not be fit, is
    not met).
    """
    holdout = holdout or OracleHoldout.from_splits(real_rows)
    labels = list(oracle_labels)
    cal, test = holdout.calibrate, holdout.reference
    thresholds = label_thresholds(real_probs[cal], real_rows[cal], labels)
    n = len(synthetic_rows)
    prompted_by = synthetic_rows.get("target_label", pd.Series([None] * n)).to_numpy()
    prompts = synthetic_rows.get("prompt", pd.Series([None] * n)).to_numpy()
    syn_clusters = prompt_clusters(synthetic_rows)
    real_clusters = patient_clusters(real_rows)
    # One resample of prompts and one of patients serve every finding (seeded apart).
    syn_w = cluster_bootstrap_weights(syn_clusters, n_boot, seed)
    ref_idx = np.flatnonzero(test)
    real_w = cluster_bootstrap_weights(real_clusters[ref_idx], n_boot, seed + 1)
    sides = {} if laterality is None else {r["label"]: r for r in laterality.to_dict("records")}
    order = [x for x in labels if x != NO_FINDING] + [x for x in labels if x == NO_FINDING]
    records = []
    for label in order:
        j = labels.index(label)
        t, _ = thresholds[label]
        prompted = prompted_by == label
        unprompted = unprompted_mask(synthetic_rows, label)
        v = real_rows[label].to_numpy(dtype=np.float64)
        pos, neg = test & (v == 1), test & (v == 0)
        if not prompted.any() and not (unprompted.any() and neg.any()):
            continue  # never prompted, and no real negatives to read a false finding by
        syn_hits = syn_probs[:, j] >= t
        real_hits = real_probs[:, j] >= t
        hit = positive_rate(syn_probs[prompted, j], t)
        false = positive_rate(syn_probs[unprompted, j], t)
        real_pos = positive_rate(real_probs[pos, j], t)
        real_neg = positive_rate(real_probs[neg, j], t)
        others = other_findings(label, labels)
        matched_neg = matched_negative_rate(
            real_probs[:, j], t, real_rows, neg, synthetic_rows[unprompted], others
        )
        # Bootstrap: columns of the resample weights that each rate reads.
        pos_r, neg_r = pos[ref_idx], neg[ref_idx]
        real_keys = stated_findings(real_rows[neg], others)
        syn_keys = stated_findings(synthetic_rows[unprompted], others)
        matched_args = (real_hits[neg], real_keys, real_w[:, neg_r], syn_keys)
        fixed_mix = np.ones((1, int(unprompted.sum())))
        matched_real_only = _matched_replicates(*matched_args, fixed_mix)
        hit_diff = weighted_rates(syn_w[:, prompted], syn_hits[prompted]) - weighted_rates(
            real_w[:, pos_r], real_hits[pos]
        )
        false_diff = weighted_rates(
            syn_w[:, unprompted], syn_hits[unprompted]
        ) - _matched_replicates(*matched_args, syn_w[:, unprompted])
        n_sided = 0
        sided_prompts = 0
        side = real_side = float("nan")
        side_bounds = {"side_hit_rate_low": math.nan, "side_hit_rate_high": math.nan}
        real_side_bounds = {"real_side_hit_rate_low": math.nan, "real_side_hit_rate_high": math.nan}
        if label in LATERAL_LABELS:
            sided = np.array([stated_side(p, label) in ("left", "right") for p in prompts])
            sided &= prompted
            n_sided, sided_prompts = int(sided.sum()), len(pd.unique(syn_clusters[sided]))
            if label in sides:
                row = sides[label]
                side = float(row["synthetic_side_hit_rate"])
                real_side = float(row["real_heldout_side_hit_rate"])
                if "synthetic_side_hit_rate_low" in row:
                    side_bounds = {
                        "side_hit_rate_low": row["synthetic_side_hit_rate_low"],
                        "side_hit_rate_high": row["synthetic_side_hit_rate_high"],
                    }
                    real_side_bounds = {
                        "real_side_hit_rate_low": row["real_heldout_side_hit_rate_low"],
                        "real_side_hit_rate_high": row["real_heldout_side_hit_rate_high"],
                    }
                else:  # a table without clustered intervals: Wilson on the images judged
                    side_bounds = _interval("side_hit_rate", side, int(row["n_synthetic_sided"]))
        record = {
            "finding": label,
            "n_prompted": int(prompted.sum()),
            "n_prompts": len(pd.unique(syn_clusters[prompted])),
            "hit_rate": hit,
            **_clustered("hit_rate", syn_hits[prompted], syn_clusters[prompted]),
            "real_positive_rate": real_pos,
            **_clustered("real_positive_rate", real_hits[pos], real_clusters[pos]),
            "n_real_pos": int(pos.sum()),
            "n_real_pos_patients": len(pd.unique(real_clusters[pos])),
            "hit_minus_real": hit - real_pos,
            "hit_minus_real_low": _one_sided(hit_diff, 5.0),
            "n_unprompted": int(unprompted.sum()),
            "n_unprompted_prompts": len(pd.unique(syn_clusters[unprompted])),
            "false_finding_rate": false,
            **_clustered("false_finding_rate", syn_hits[unprompted], syn_clusters[unprompted]),
            "real_negative_rate": real_neg,
            **_clustered("real_negative_rate", real_hits[neg], real_clusters[neg]),
            "n_real_neg": int(neg.sum()),
            "n_real_neg_patients": len(pd.unique(real_clusters[neg])),
            "matched_negative_rate": matched_neg,
            "matched_negative_rate_low": _one_sided(matched_real_only, 2.5),
            "matched_negative_rate_high": _one_sided(matched_real_only, 97.5),
            "false_minus_matched": false - matched_neg,
            "false_minus_matched_high": _one_sided(false_diff, 95.0),
            "n_sided": n_sided,
            "n_sided_prompts": sided_prompts,
            "side_hit_rate": side,
            **side_bounds,
            "real_side_hit_rate": real_side,
            **real_side_bounds,
            "threshold": t,
            "hit_ok": _check(
                prompted.any(), hit, targets.hit_vs_real_positive * real_pos, at_least=True
            ),
            "false_finding_ok": _check(
                unprompted.any(), false, matched_neg + targets.false_finding_margin, at_least=False
            ),
            "side_ok": _check(n_sided > 0, side, targets.side_hit_rate, at_least=True),
        }
        checks = [record[k] for k in ("hit_ok", "false_finding_ok", "side_ok")]
        record["meets_targets"] = all(c is not False for c in checks)
        records.append(record)
    return pd.DataFrame(records)
