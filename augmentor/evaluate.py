"""Generator evaluation: fidelity, diversity, prompt alignment, laterality, memorization.

`evaluate_generator` compares a synthetic manifest with the real manifest the generator
was trained on, using a feature extractor (a cxraug classifier run trained on real data, or
local timm weights) and, for prompt alignment, a classifier run as oracle. It writes
`generator_eval.json` (schema `GENERATOR_EVAL_SCHEMA`, below), `generator_eval.md`,
`memorization.parquet` and `memorization.png` into its output folder.

`filter_by_oracle` is the quality filter `cxraug synthesize --filter-with RUN` applies.
`generator_section` renders a `generator_eval.json` as Markdown/HTML for `cxraug report`.

What each metric means, and its limits:

- FID: Fréchet distance between Gaussian fits of extractor features of the synthetic images
  and of the real train images (what the generator learnt from). FID is biased upwards for
  small sets, so the real test images against real train give the floor to read it by.
- Diversity: mean MS-SSIM of image pairs (lower = more diverse); synthetic pairs of one
  prompt and of one target label, against real pairs of one label and of one patient.
- Prompt alignment: per target label, the share of synthetic images the oracle calls
  positive at a threshold chosen on real val images (Youden's J; 0.5 if val has one class),
  next to the same rate on real test positives (sensitivity) and negatives (false-positive
  rate). A generator that renders its prompts well sits near the real positives' rate.
- Laterality: for labels with a side (effusion, pneumothorax, consolidation), a side
  detector built from the oracle's response to left- and right-mirrored images, fit on
  real train images with known side (phantom ground truth, else the report's side word),
  scored on real test images (its own accuracy, the ceiling) and on synthetic images
  against the side the prompt states.
- Memorization: every synthetic image's nearest real train image by cosine of extractor
  features and by pixel correlation of 32x32 thumbnails; pairs at or above either
  threshold are flagged, exact byte copies always. The same search from real test images
  (other patients) gives the rate at which the thresholds flag honest images.
  Defaults (pixel r 0.97, feature cosine 0.98) were set on phantoms, the hardest case
  (one drawing template for every patient): with a resnet18 classifier at 64 px, 174
  held-out real phantoms reached at most r 0.963 and cosine 0.941 against 426 train
  images. Real radiographs vary more; read the held-out baseline the report prints.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from augmentor.features import (
    FeatureExtractor,
    HalfMirrorEmbedder,
    PixelEmbedder,
    check_run_dir,
    embed_images,
    image_hashes,
    load_feature_extractor,
    load_run_extractor,
)
from augmentor.metrics import (
    fid_from_features,
    ms_ssim,
    ms_ssim_scales,
    nearest_neighbours,
    pair_indices,
    positive_rate,
    youden_threshold,
)
from manifests.errors import UserError
from manifests.images import load_image
from manifests.io import Manifest, atomic_path, read_manifest, write_json, write_manifest
from manifests.splits import check_leakage

GENERATOR_EVAL_SCHEMA = "cxraug.generator_eval/1"
GENERATOR_EVAL_FILE = "generator_eval.json"
PROBE_FILE = "text_encoder_probe.json"

DEFAULT_PIXEL_THRESHOLD = 0.97
DEFAULT_FEATURE_THRESHOLD = 0.98

# Labels whose findings have a side, and the word that names them in report sentences.
LATERAL_LABELS = {
    "Pleural Effusion": r"effusion",
    "Pneumothorax": r"pneumothorax",
    "Consolidation": r"consolidation",
}
_NEGATION = re.compile(r"^\s*(no|without|negative for|resolved|resolution of)\b", re.IGNORECASE)


@dataclass
class GeneratorEvalConfig:
    """Inputs and knobs of `evaluate_generator` (saved beside the outputs).

    Attributes:
        synthetic: the synthetic manifest (from `cxraug synthesize`).
        real: the real manifest the generator was trained on (patient-disjoint splits).
        out: output folder.
        features: a cxraug classifier run whose backbone gives the features.
        features_timm, weights: alternatively a timm model name and local weights file.
        oracle: classifier run for prompt alignment and laterality (default: `features`
            when that is a run; none with `features_timm` -> those sections are skipped).
        cache_dir: feature cache (default `<out>/feature_cache`).
        memorization_threshold: pixel correlation (32x32) at or above which a synthetic
            image counts as a near-copy of its nearest train image.
        feature_threshold: extractor-feature cosine at or above which it does too.
        drop_memorized: also write the synthetic manifest without the flagged rows, to
            `filtered_manifest` (default `<synthetic stem>.unmemorized.parquet` beside the
            synthetic manifest; it must lie above the synthetic images, which stay put).
        ssim_size: side images are resized to for MS-SSIM (default: the synthetic images'
            size, at most 256).
        max_pairs: pairs per group for MS-SSIM (and at most 20x that in all per comparison).
        max_real: use at most this many real images per split (random, seeded); None = all.
        thumbnails: pairs shown in `memorization.png`.
    """

    synthetic: Path
    real: Path
    out: Path
    features: Path | None = None
    features_timm: str | None = None
    weights: Path | None = None
    oracle: Path | None = None
    cache_dir: Path | None = None
    batch_size: int = 64
    memorization_threshold: float = DEFAULT_PIXEL_THRESHOLD
    feature_threshold: float = DEFAULT_FEATURE_THRESHOLD
    drop_memorized: bool = False
    filtered_manifest: Path | None = None
    ssim_size: int | None = None
    max_pairs: int = 20
    max_real: int | None = None
    thumbnails: int = 12
    seed: int = 0
    overwrite: bool = False
    device: str | None = None


@dataclass
class GeneratorEval:
    """What `evaluate_generator` measured: the JSON document and its tables."""

    summary: dict
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    out: Path = Path(".")


# ---------------------------------------------------------------- inputs


def _check_inputs(cfg: GeneratorEvalConfig) -> tuple[Manifest, Manifest]:
    """Read and check the two manifests; UserError on anything a user can fix."""
    synthetic = read_manifest(cfg.synthetic)
    real = read_manifest(cfg.real)
    if synthetic.labels != real.labels:
        raise UserError(
            f"--synthetic {cfg.synthetic}: label set differs from --real {cfg.real} "
            f"({len(synthetic.labels)} vs {len(real.labels)} labels); use manifests of one study"
        )
    syn_rows = synthetic.rows["source"] == "synthetic"
    if not syn_rows.any():
        raise UserError(
            f"--synthetic {cfg.synthetic}: no synthetic rows (source == 'synthetic'); "
            "pass the manifest written by `cxraug synthesize`"
        )
    real_rows = real.rows["source"] == "real"
    if not real_rows.any():
        raise UserError(f"--real {cfg.real}: no real rows (source == 'real')")
    synthetic = synthetic.with_rows(synthetic.rows[syn_rows])
    real = real.with_rows(real.rows[real_rows])
    check_leakage(real, where=f"--real {cfg.real}")
    if not (real.rows["split"] == "train").any():
        raise UserError(f"--real {cfg.real}: no train rows; split it first (cxraug manifest split)")
    for flag, value in (
        ("--memorization-threshold", cfg.memorization_threshold),
        ("--feature-threshold", cfg.feature_threshold),
    ):
        if not -1.0 <= value <= 1.0:
            raise UserError(f"{flag}: {value} is outside [-1, 1] (a correlation/cosine)")
    if cfg.max_pairs < 1:
        raise UserError(f"--max-pairs: {cfg.max_pairs}; must be at least 1")
    return synthetic, real


def _filtered_path(cfg: GeneratorEvalConfig, synthetic: Manifest) -> Path:
    """Where --drop-memorized writes, checked before any work is done."""
    source = Path(cfg.synthetic)
    path = Path(cfg.filtered_manifest or source.with_name(f"{source.stem}.unmemorized.parquet"))
    if path.exists() and not cfg.overwrite:
        raise UserError(f"--filtered-out {path}: already exists; pass --overwrite to replace it")
    folder = path.parent.resolve()
    for image in synthetic.image_paths()[:1] + synthetic.image_paths()[-1:]:
        if not image.resolve().is_relative_to(folder):
            raise UserError(
                f"--filtered-out {path}: synthetic image paths must stay relative, so the "
                f"filtered manifest must lie in a folder above the images ({image.parent})"
            )
    return path


def _subsample_real(real: Manifest, max_real: int | None, seed: int) -> Manifest:
    if max_real is None:
        return real
    if max_real < 2:
        raise UserError(f"--max-real: {max_real}; must be at least 2")
    rng = np.random.default_rng(seed)
    keep = []
    for _, group in real.rows.groupby("split", sort=True):
        idx = group.index.to_numpy()
        keep.append(idx if len(idx) <= max_real else np.sort(rng.choice(idx, max_real, False)))
    return real.with_rows(real.rows.loc[np.sort(np.concatenate(keep))])


def _finite(value: float) -> float | None:
    """JSON-safe float: None for NaN/inf."""
    return float(value) if value is not None and math.isfinite(value) else None


def _records(frame: pd.DataFrame) -> list[dict]:
    out = []
    for rec in frame.to_dict(orient="records"):
        out.append(
            {
                k: (_finite(v) if isinstance(v, float) else v.item() if hasattr(v, "item") else v)
                for k, v in rec.items()
            }
        )
    return out


# ---------------------------------------------------------------- fidelity


def fidelity_table(
    syn_features: np.ndarray,
    syn_targets: pd.Series,
    real_features: np.ndarray,
    real_rows: pd.DataFrame,
    labels: tuple[str, ...],
    min_images: int = 10,
) -> tuple[pd.DataFrame, float | None]:
    """FID of all synthetic images, and per target label, against real train images.

    Per label the reference is the real train positives of that label; labels with fewer
    than `min_images` on either side are left out (FID is meaningless there). Also returns
    the real baseline: FID of real test (else val) images against real train.
    """
    train = (real_rows["split"] == "train").to_numpy()
    rows = [
        {
            "subset": "all",
            "fid": fid_from_features(syn_features, real_features[train]),
            "n_synthetic": len(syn_features),
            "n_real": int(train.sum()),
        }
    ]
    for label in pd.unique(syn_targets.dropna()):
        if label not in labels:
            continue
        syn = (syn_targets == label).to_numpy()
        ref = train & (real_rows[label].to_numpy() == 1)
        if syn.sum() >= min_images and ref.sum() >= min_images:
            rows.append(
                {
                    "subset": str(label),
                    "fid": fid_from_features(syn_features[syn], real_features[ref]),
                    "n_synthetic": int(syn.sum()),
                    "n_real": int(ref.sum()),
                }
            )
    baseline = None
    for split in ("test", "val"):
        held = (real_rows["split"] == split).to_numpy()
        if held.sum() >= 2:
            baseline = {
                "subset": f"real {split} (baseline)",
                "fid": fid_from_features(real_features[held], real_features[train]),
                "n_synthetic": 0,
                "n_real": int(held.sum()),
            }
            break
    frame = pd.DataFrame(rows + ([baseline] if baseline else []))
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


def diversity_table(
    synthetic: Manifest,
    real: Manifest,
    size: int,
    max_pairs: int = 20,
    seed: int = 0,
) -> pd.DataFrame:
    """Mean MS-SSIM (lower = more diverse) of synthetic and real image pairs.

    Rows: synthetic pairs sharing a prompt (at most `max_pairs` per prompt), synthetic
    pairs sharing a target label, real train pairs positive for that label (per label),
    real train pairs of one patient (at most `max_pairs` per patient); each comparison
    draws at most 20 x `max_pairs` pairs. Images are resized to `size` so both sides use
    the same MS-SSIM scales.
    """
    cap = 20 * max_pairs
    syn_rows = synthetic.rows
    syn_bank = _ImageBank(synthetic.image_paths(), size)
    real_bank = _ImageBank(real.image_paths(), size)
    records = []

    def add(comparison: str, label: str, bank: _ImageBank, pairs) -> None:
        values = _pairs_ms_ssim(bank, *pairs)
        records.append(
            {
                "comparison": comparison,
                "label": label,
                "pairs": len(values),
                "ms_ssim_mean": float(values.mean()) if len(values) else float("nan"),
                "ms_ssim_std": float(values.std()) if len(values) else float("nan"),
            }
        )

    everyone = np.arange(len(syn_rows))
    if "prompt" in syn_rows.columns:
        prompts = syn_rows["prompt"].fillna("").to_numpy()
        add("synthetic, same prompt", "all", syn_bank,
            _group_pairs(prompts, everyone, max_pairs, cap, seed))  # fmt: skip
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
        add("real train, same patient", "all", real_bank,
            _group_pairs(patients, train, max_pairs, cap, seed))  # fmt: skip
    return pd.DataFrame(records)


# ---------------------------------------------------------------- prompt alignment


def label_thresholds(
    probs: np.ndarray, values: pd.DataFrame, labels: list[str]
) -> dict[str, tuple[float, str]]:
    """Per label: the Youden threshold on these (real val) rows, or 0.5 with the reason."""
    out = {}
    for j, label in enumerate(labels):
        v = values[label].to_numpy(dtype=np.float64)
        known = np.isin(v, (0.0, 1.0))
        t = youden_threshold(v[known], probs[known, j]) if known.any() else None
        out[label] = (t, "youden (real val)") if t is not None else (0.5, "0.5 (val has one class)")
    return out


def alignment_table(
    syn_probs: np.ndarray,
    syn_targets: pd.Series,
    real_probs: np.ndarray,
    real_rows: pd.DataFrame,
    oracle_labels: tuple[str, ...],
) -> pd.DataFrame:
    """Per target label: oracle-positive share of its synthetic images vs real test rates."""
    labels = list(oracle_labels)
    val = (real_rows["split"] == "val").to_numpy()
    test = (real_rows["split"] == "test").to_numpy()
    thresholds = label_thresholds(real_probs[val], real_rows[val], labels)
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


# ---------------------------------------------------------------- laterality


def stated_side(text: str | None, label: str) -> str | None:
    """The side a report/prompt gives for `label`: 'left', 'right', 'both' or None.

    Looks at sentences naming the finding that are not negated ("No pneumothorax.");
    'bilateral'/'both' or both side words give 'both'. Sides are the patient's.
    """
    if not isinstance(text, str) or label not in LATERAL_LABELS:
        return None
    word = re.compile(LATERAL_LABELS[label], re.IGNORECASE)
    for sentence in re.split(r"[.;\n]", text):
        if not word.search(sentence) or _NEGATION.search(sentence):
            continue
        lower = sentence.lower()
        if re.search(r"\b(bilateral|both|bibasilar)\b", lower):
            return "both"
        left, right = bool(re.search(r"\bleft\b", lower)), bool(re.search(r"\bright\b", lower))
        if left and right:
            return "both"
        if left or right:
            return "left" if left else "right"
    return None


def true_side(row: pd.Series, label: str) -> str | None:
    """Ground-truth side of a real row: phantom_findings where present, else its report."""
    findings = row.get("phantom_findings")
    if isinstance(findings, str) and findings:
        entry = json.loads(findings).get(label)
        if isinstance(entry, dict) and entry.get("side") in ("left", "right", "both"):
            return entry["side"]
        if entry is None:
            return None
    return stated_side(row.get("report"), label)


def laterality_table(
    synthetic: Manifest,
    real: Manifest,
    halves_syn: dict[str, np.ndarray],
    halves_real: dict[str, np.ndarray],
    oracle_labels: tuple[str, ...],
    seed: int = 0,
) -> tuple[pd.DataFrame, list[str]]:
    """Per lateral label: side hit rate on real test images and on synthetic images.

    The side detector is a logistic regression on the oracle's probabilities for the two
    half-mirrored images (and their difference), fit on real train images with one known
    side; the image-to-patient side convention is learnt, not assumed.
    """
    from sklearn.linear_model import LogisticRegression

    notes: list[str] = []
    records = []
    targets = synthetic.rows.get("target_label", pd.Series([None] * len(synthetic)))
    for label in LATERAL_LABELS:
        if label not in oracle_labels or label not in set(targets.dropna()):
            continue
        j = list(oracle_labels).index(label)

        def design(h: dict[str, np.ndarray], idx: np.ndarray, j: int = j) -> np.ndarray:
            a, b = h["probs_image_left"][idx, j], h["probs_image_right"][idx, j]
            return np.stack([a, b, a - b], axis=1)

        positive = np.flatnonzero(real.rows[label].to_numpy() == 1)
        sides = np.full(len(real), None, dtype=object)
        sides[positive] = [true_side(real.rows.iloc[i], label) for i in positive]
        split = real.rows["split"].to_numpy()
        one_sided = np.isin(sides, ["left", "right"]) & (real.rows[label].to_numpy() == 1)
        fit = np.flatnonzero(one_sided & (split == "train"))
        y_fit = sides[fit] == "left"
        if len(fit) < 4 or y_fit.all() or not y_fit.any():
            notes.append(f"laterality {label}: fewer than 2 left and 2 right real train cases")
            continue
        detector = LogisticRegression(random_state=seed).fit(design(halves_real, fit), y_fit)
        held = np.flatnonzero(one_sided & (split != "train"))
        real_hits = (
            float((detector.predict(design(halves_real, held)) == (sides[held] == "left")).mean())
            if len(held)
            else float("nan")
        )
        syn_mask = (targets == label).to_numpy()
        prompt_sides = np.array(
            [stated_side(p, label) for p in synthetic.rows.get("prompt", [None] * len(targets))],
            dtype=object,
        )
        syn = np.flatnonzero(syn_mask & np.isin(prompt_sides, ["left", "right"]))
        syn_hits = (
            float(
                (detector.predict(design(halves_syn, syn)) == (prompt_sides[syn] == "left")).mean()
            )
            if len(syn)
            else float("nan")
        )
        records.append(
            {
                "label": label,
                "synthetic_side_hit_rate": syn_hits,
                "n_synthetic_sided": len(syn),
                "real_heldout_side_hit_rate": real_hits,
                "n_real_heldout_sided": len(held),
                "n_real_train_sided": len(fit),
            }
        )
    return pd.DataFrame(records), notes


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


def _thumbnail(path: Path, size: int = 96) -> np.ndarray:
    img = load_image(path)
    return np.asarray(Image.fromarray(img).resize((size, size), Image.Resampling.BILINEAR))


def plot_memorization(table: pd.DataFrame, path: Path, n: int, overwrite: bool = True) -> int:
    """Side-by-side thumbnails: synthetic image | nearest train image (pixel space).

    Shows the flagged pairs first, then the most similar others, up to `n` pairs.
    Returns the number of pairs drawn.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    order = table.sort_values(["flagged", "pixel_correlation"], ascending=False).head(n)
    per_row = 3  # pairs per figure row: synthetic | nearest train, three times
    rows = max(1, math.ceil(len(order) / per_row))
    fig, axes = plt.subplots(
        rows, 2 * per_row, figsize=(2 * 1.6 * per_row, 1.9 * rows + 0.4), squeeze=False
    )
    for ax in axes.flat:
        ax.set_axis_off()
    for k, (_, rec) in enumerate(order.iterrows()):
        r, c = divmod(k, per_row)
        left, right = axes[r][2 * c], axes[r][2 * c + 1]
        left.imshow(_thumbnail(Path(rec["image_path"])), cmap="gray", vmin=0, vmax=255)
        right.imshow(_thumbnail(Path(rec["nn_pixel_path"])), cmap="gray", vmin=0, vmax=255)
        flag = "FLAGGED " if rec["flagged"] else ""
        left.set_title(
            f"{flag}synthetic\nr={rec['pixel_correlation']:.3f} cos={rec['feature_cosine']:.3f}",
            fontsize=7,
            color="red" if rec["flagged"] else "black",
        )
        right.set_title(f"nearest train\n{rec['nn_pixel_patient']}", fontsize=7)
    fig.suptitle(
        f"memorization audit: {int(table['flagged'].sum())} of {len(table)} flagged "
        "(pairs: synthetic | nearest train image in pixel space)",
        fontsize=8,
    )
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    with atomic_path(path, overwrite=overwrite) as tmp, open(tmp, "wb") as f:
        fig.savefig(f, format="png", dpi=100)
    plt.close(fig)
    return len(order)


# ---------------------------------------------------------------- orchestration


def _extractors(cfg: GeneratorEvalConfig) -> tuple[FeatureExtractor, FeatureExtractor | None]:
    if cfg.features is not None:
        check_run_dir(cfg.features, "--features")
    if cfg.oracle is not None:
        check_run_dir(cfg.oracle, "--oracle")
    features = load_feature_extractor(
        run_dir=cfg.features, timm_name=cfg.features_timm, weights=cfg.weights, device=cfg.device
    )
    if cfg.oracle is not None and (cfg.features is None or Path(cfg.oracle) != Path(cfg.features)):
        oracle = load_run_extractor(cfg.oracle, cfg.device, flag="--oracle")
    else:
        oracle = features if features.labels else None
    return features, oracle


def _embed_subset(
    manifest: Manifest,
    hashes: list[str],
    mask: np.ndarray,
    embedder,
    cache_dir: Path,
    cfg: GeneratorEvalConfig,
) -> dict[str, np.ndarray]:
    """An embedder's outputs for the rows in `mask`; NaN rows elsewhere (never read)."""
    idx = np.flatnonzero(mask)
    paths = manifest.image_paths()
    part = embed_images(
        [paths[i] for i in idx], [hashes[i] for i in idx], [embedder], cache_dir, cfg.batch_size
    )[0]
    full = {}
    for name, array in part.items():
        full[name] = np.full((len(manifest), *array.shape[1:]), np.nan, dtype=np.float64)
        full[name][idx] = array
    return full


def evaluate_generator(
    cfg: GeneratorEvalConfig, progress: Callable[[str], None] | None = None
) -> GeneratorEval:
    """Run every generator metric and write the report files into `cfg.out`.

    Returns:
        the JSON document (also in `<out>/generator_eval.json`) and its tables.
    """
    say = progress or (lambda _msg: None)
    out = Path(cfg.out)
    json_path = out / GENERATOR_EVAL_FILE
    if json_path.exists() and not cfg.overwrite:
        raise UserError(f"{json_path}: already exists; pass --overwrite to replace it")
    synthetic, real = _check_inputs(cfg)
    filtered_path = _filtered_path(cfg, synthetic) if cfg.drop_memorized else None
    real = _subsample_real(real, cfg.max_real, cfg.seed)
    features, oracle = _extractors(cfg)
    cache_dir = Path(cfg.cache_dir) if cfg.cache_dir else out / "feature_cache"
    notes: list[str] = []

    say(f"hashing {len(synthetic)} synthetic and {len(real)} real images")
    syn_hashes, real_hashes = image_hashes(synthetic), image_hashes(real)
    embedders = [features, PixelEmbedder(32)]
    if oracle is not None and oracle is not features:
        embedders.append(oracle)
    say(f"embedding with {features.name} (cache {cache_dir})")
    syn_out = embed_images(
        synthetic.image_paths(), syn_hashes, embedders, cache_dir, cfg.batch_size
    )
    real_out = embed_images(real.image_paths(), real_hashes, embedders, cache_dir, cfg.batch_size)
    syn_feat, real_feat = syn_out[0]["features"], real_out[0]["features"]
    syn_pix, real_pix = syn_out[1]["pixels"], real_out[1]["pixels"]
    oracle_at = 0 if oracle is features else 2
    targets = synthetic.rows.get("target_label", pd.Series([None] * len(synthetic)))
    tables: dict[str, pd.DataFrame] = {}

    say("fidelity (FID)")
    fid, baseline_fid = fidelity_table(syn_feat, targets, real_feat, real.rows, real.labels)
    tables["fidelity"] = fid
    if (
        len(syn_feat) < syn_feat.shape[1]
        or (real.rows["split"] == "train").sum() < syn_feat.shape[1]
    ):
        notes.append(
            f"FID on fewer images than feature dimensions ({syn_feat.shape[1]}): covariances "
            "are singular and FID is biased upwards; compare with the real baseline row"
        )

    say("diversity (MS-SSIM)")
    # MS-SSIM at the synthetic images' size, at most 256 px (5 scales fit from 176 px up).
    size = cfg.ssim_size or min(256, int(min(load_image(synthetic.image_paths()[0]).shape)))
    tables["diversity"] = diversity_table(synthetic, real, size, cfg.max_pairs, cfg.seed)
    if "prompt" in synthetic.rows and not synthetic.rows["prompt"].duplicated().any():
        notes.append("every synthetic prompt is unique: no same-prompt MS-SSIM pairs")

    alignment = laterality = None
    if oracle is not None:
        say("prompt alignment and laterality")
        syn_probs = syn_out[oracle_at]["probs"]
        real_probs = real_out[oracle_at]["probs"]
        alignment = alignment_table(syn_probs, targets, real_probs, real.rows, oracle.labels)
        tables["alignment"] = alignment
        lateral = [
            lab for lab in LATERAL_LABELS if lab in oracle.labels and lab in set(targets.dropna())
        ]
        if lateral:
            # Two extra forward passes per image: only for rows a lateral label concerns.
            halves = HalfMirrorEmbedder(oracle)
            syn_rows = targets.isin(lateral).to_numpy()
            real_rows = (real.rows[lateral].to_numpy() == 1).any(axis=1)
            syn_h = _embed_subset(synthetic, syn_hashes, syn_rows, halves, cache_dir, cfg)
            real_h = _embed_subset(real, real_hashes, real_rows, halves, cache_dir, cfg)
            laterality, lat_notes = laterality_table(
                synthetic, real, syn_h, real_h, oracle.labels, cfg.seed
            )
            notes.extend(lat_notes)
            tables["laterality"] = laterality
    else:
        notes.append("no oracle classifier run (--oracle): prompt alignment and laterality skipped")

    say("memorization audit")
    train = np.flatnonzero(real.rows["split"].to_numpy() == "train")
    train_hashes = [real_hashes[i] for i in train]
    memo = memorization_table(
        syn_feat,
        syn_pix,
        syn_hashes,
        real_feat[train],
        real_pix[train],
        train_hashes,
        cfg.feature_threshold,
        cfg.memorization_threshold,
    )
    real_paths = real.image_paths()
    syn_paths = synthetic.image_paths()
    memo.insert(0, "image_path", [p.as_posix() for p in syn_paths])
    memo.insert(1, "image_sha256", syn_hashes)
    memo.insert(2, "target_label", targets.to_numpy())
    memo["nn_feature_path"] = [real_paths[train[i]].as_posix() for i in memo["nn_feature_index"]]
    memo["nn_pixel_path"] = [real_paths[train[i]].as_posix() for i in memo["nn_pixel_index"]]
    patient = real.rows["patient_id"].to_numpy()
    memo["nn_pixel_patient"] = [patient[train[i]] for i in memo["nn_pixel_index"]]
    memo = memo.drop(columns=["nn_feature_index", "nn_pixel_index"])
    tables["memorization"] = memo
    # The same search from held-out real images: how often honest images get flagged.
    held = np.flatnonzero(real.rows["split"].to_numpy() != "train")
    baseline_flag = None
    if len(held):
        base = memorization_table(
            real_feat[held],
            real_pix[held],
            [real_hashes[i] for i in held],
            real_feat[train],
            real_pix[train],
            train_hashes,
            cfg.feature_threshold,
            cfg.memorization_threshold,
        )
        baseline_flag = {
            "n": len(held),
            "flagged_share": float(base["flagged"].mean()),
            "pixel_correlation_median": float(base["pixel_correlation"].median()),
            "pixel_correlation_max": float(base["pixel_correlation"].max()),
            "feature_cosine_median": float(base["feature_cosine"].median()),
            "feature_cosine_max": float(base["feature_cosine"].max()),
        }
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "memorization.parquet", overwrite=True) as tmp:
        memo.to_parquet(tmp, index=False)
    plot_memorization(memo, out / "memorization.png", cfg.thumbnails)
    dropped_path = None
    if filtered_path is not None:
        kept = synthetic.with_rows(synthetic.rows[~memo["flagged"].to_numpy()])
        if not len(kept):
            notes.append("--drop-memorized: every synthetic image is flagged; no manifest written")
        else:
            dropped_path = str(write_manifest(kept, filtered_path, overwrite=cfg.overwrite))

    summary = {
        "schema": GENERATOR_EVAL_SCHEMA,
        "synthetic_manifest": str(cfg.synthetic),
        "real_manifest": str(cfg.real),
        "generator_digest": synthetic.metadata.get("cxraug.generator_digest"),
        "feature_extractor": {
            "name": features.name,
            "key": features.key,
            "dim": int(syn_feat.shape[1]),
        },
        "oracle": oracle.name if oracle is not None else None,
        "n_synthetic": len(synthetic),
        "n_real": {s: int((real.rows["split"] == s).sum()) for s in ("train", "val", "test")},
        "fidelity": {
            "fid": _finite(float(fid["fid"].iloc[0])),
            "reference": "real train",
            "real_baseline_fid": _finite(baseline_fid) if baseline_fid is not None else None,
            "rows": _records(fid),
        },
        "diversity": {
            "metric": "MS-SSIM (lower = more diverse)",
            "image_size": size,
            "scales": max(1, ms_ssim_scales(size, size)),
            "rows": _records(tables["diversity"]),
        },
        "alignment": None
        if alignment is None
        else {
            "threshold_rule": "Youden's J on real val images per label; 0.5 if val has one class",
            "rows": _records(alignment),
        },
        "laterality": None
        if laterality is None
        else {
            "method": "logistic side detector on the oracle's response to half-mirrored "
            "images, fit on real train images of known side",
            "rows": _records(laterality),
        },
        "memorization": {
            "pixel_threshold": cfg.memorization_threshold,
            "feature_threshold": cfg.feature_threshold,
            "n_synthetic": len(memo),
            "n_flagged": int(memo["flagged"].sum()),
            "n_exact_copies": int(memo["exact_copy"].sum()),
            "flagged_share": float(memo["flagged"].mean()),
            "pixel_correlation_max": float(memo["pixel_correlation"].max()),
            "feature_cosine_max": float(memo["feature_cosine"].max()),
            "real_heldout_baseline": baseline_flag,
            "table": "memorization.parquet",
            "figure": "memorization.png",
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
        "notes": notes,
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()},
    }
    write_json(json_path, summary, overwrite=True)
    with atomic_path(out / "generator_eval.md", overwrite=True) as tmp:
        tmp.write_text(generator_section(json_path)["md"])
    return GeneratorEval(summary=summary, tables=tables, out=out)


_DISPLAY = {
    "fidelity": (
        "fidelity: FID against real train (lower is better)",
        {"subset": "subset", "fid": "FID", "n_synthetic": "n synthetic", "n_real": "n real"},
    ),
    "diversity": (
        "diversity: MS-SSIM of image pairs (lower is more diverse)",
        {"comparison": "pairs of", "label": "label", "pairs": "n",
         "ms_ssim_mean": "MS-SSIM", "ms_ssim_std": "sd"},
    ),
    "alignment": (
        "prompt alignment: share the oracle calls positive",
        {"label": "label", "n_synthetic": "n syn", "synthetic_positive_rate": "synthetic",
         "real_test_positive_rate": "real pos", "real_test_negative_rate": "real neg",
         "threshold": "threshold"},
    ),
    "laterality": (
        "laterality: side hit rate (synthetic vs prompt; real held-out vs truth)",
        {"label": "label", "synthetic_side_hit_rate": "synthetic",
         "n_synthetic_sided": "n syn", "real_heldout_side_hit_rate": "real held-out",
         "n_real_heldout_sided": "n real"},
    ),
}  # fmt: skip


def display_tables(result: GeneratorEval) -> list[tuple[str, pd.DataFrame]]:
    """(title, table) pairs for a terminal: the main columns under short headers."""
    out = []
    for key, (title, columns) in _DISPLAY.items():
        table = result.tables.get(key)
        if table is not None and len(table):
            out.append((title, table[list(columns)].rename(columns=columns)))
    return out


# ---------------------------------------------------------------- quality filter


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


def check_oracle_filter(run_dir: Path | None, min_prob: float | None) -> None:
    """Check `--filter-with RUN --min-prob P` before a long synthesis starts."""
    if run_dir is None:
        if min_prob is not None:
            raise UserError(
                "--min-prob: only used with --filter-with RUN (an oracle classifier run)"
            )
        return
    check_run_dir(run_dir, "--filter-with")
    if min_prob is not None and not 0.0 <= min_prob <= 1.0:
        raise UserError(f"--min-prob: {min_prob} is outside [0, 1]")


def apply_oracle_filter(
    manifest_path: Path,
    run_dir: Path,
    min_prob: float,
    cache_dir: Path | None = None,
    batch_size: int = 64,
) -> OracleFilterSummary:
    """`synthesize --filter-with RUN --min-prob P`: filter a synthetic manifest in place.

    Every row is scored first and all rows, rejected ones included, are written with their
    `oracle_prob` to `oracle_scores.parquet` beside the manifest; then the manifest is
    atomically replaced by the kept rows (with `oracle_prob`). The images of rejected rows
    stay on disk. Re-running is idempotent (scores come from the feature cache).
    """
    if not 0.0 <= min_prob <= 1.0:
        raise UserError(f"--min-prob: {min_prob} is outside [0, 1]")
    check_run_dir(run_dir, "--filter-with")
    manifest_path = Path(manifest_path)
    manifest = read_manifest(manifest_path)
    if "oracle_prob" in manifest.rows.columns:
        manifest = manifest.with_rows(manifest.rows.drop(columns=["oracle_prob"]))
    folder = manifest_path.parent
    scorer = oracle_scorer(run_dir, cache_dir or folder / "feature_cache", batch_size)
    unknown = sorted(set(manifest.rows["target_label"].dropna()) - set(scorer.labels))
    if len(unknown) == manifest.rows["target_label"].nunique():
        raise UserError(
            f"--filter-with {run_dir}: the oracle was trained on {', '.join(scorer.labels)}; "
            f"none of the target labels ({', '.join(unknown)})"
        )
    scored = score_by_oracle(manifest, scorer)
    scores_path = folder / "oracle_scores.parquet"
    with atomic_path(scores_path, overwrite=True) as tmp:
        scored.rows.to_parquet(tmp, index=False)
    kept = filter_by_oracle(scored, scorer, min_prob)
    if not len(kept):
        raise UserError(
            f"--min-prob {min_prob}: the oracle rejects every image; nothing left "
            f"(scores in {scores_path})"
        )
    write_manifest(kept, manifest_path, overwrite=True)
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


# ---------------------------------------------------------------- report section


def _fmt(value, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _md_table(rows: list[dict], columns: list[str]) -> str:
    if not rows:
        return "_none_\n"
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_fmt(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def _html_table(rows: list[dict], columns: list[str]) -> str:
    from html import escape

    if not rows:
        return "<p><em>none</em></p>"
    head = "".join(f"<th>{escape(c)}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{escape(_fmt(r.get(c)))}</td>" for c in columns) + "</tr>"
        for r in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _section_blocks(doc: dict, probe: dict | None) -> list[tuple]:
    """The report as ('h', text) / ('p', text) / ('table', rows, columns) blocks."""
    n_real = doc["n_real"]
    blocks: list[tuple] = [
        ("h", "Generator evaluation"),
        (
            "p",
            f"Features: {doc['feature_extractor']['name']}; {doc['n_synthetic']} synthetic "
            f"images; real train/val/test {n_real['train']}/{n_real['val']}/{n_real['test']}.",
        ),
        ("h", "Fidelity (FID against real train; lower is better)"),
        ("table", doc["fidelity"]["rows"], ["subset", "fid", "n_synthetic", "n_real"]),
    ]
    div = doc["diversity"]
    blocks += [
        ("h", f"Diversity ({div['metric']}; {div['image_size']} px, {div['scales']} scales)"),
        ("table", div["rows"], ["comparison", "label", "pairs", "ms_ssim_mean", "ms_ssim_std"]),
    ]
    if doc.get("alignment"):
        blocks += [
            ("h", "Prompt alignment"),
            ("p", f"Oracle {doc['oracle']}; threshold: {doc['alignment']['threshold_rule']}."),
            (
                "table",
                doc["alignment"]["rows"],
                [
                    "label",
                    "n_synthetic",
                    "synthetic_positive_rate",
                    "real_test_positive_rate",
                    "real_test_negative_rate",
                    "threshold",
                ],
            ),
        ]
    if doc.get("laterality"):
        blocks += [
            ("h", "Laterality"),
            ("p", f"Method: {doc['laterality']['method']}."),
            (
                "table",
                doc["laterality"]["rows"],
                [
                    "label",
                    "synthetic_side_hit_rate",
                    "n_synthetic_sided",
                    "real_heldout_side_hit_rate",
                    "n_real_heldout_sided",
                ],
            ),
        ]
    memo = doc["memorization"]
    base = memo.get("real_heldout_baseline") or {}
    blocks += [
        ("h", "Memorization audit"),
        (
            "p",
            f"{memo['n_flagged']} of {memo['n_synthetic']} synthetic images flagged "
            f"({memo['n_exact_copies']} exact copies; pixel correlation >= "
            f"{memo['pixel_threshold']} or feature cosine >= {memo['feature_threshold']}); "
            f"max pixel correlation {_fmt(memo['pixel_correlation_max'])}, max feature cosine "
            f"{_fmt(memo['feature_cosine_max'])}. Share of held-out real images flagged at the "
            f"same thresholds: {_fmt(base.get('flagged_share'))}. "
            f"Thumbnails: {memo['figure']}.",
        ),
    ]
    if memo["flagged"]:
        blocks.append(
            (
                "table",
                memo["flagged"],
                [
                    "image_path",
                    "target_label",
                    "pixel_correlation",
                    "feature_cosine",
                    "nn_pixel_path",
                ],
            )
        )
    if probe:
        blocks += [
            ("h", "Text encoder probe (held-out reports, linear probe AUROC)"),
            (
                "table",
                probe["rows"],
                ["label", "base_auroc", "finetuned_auroc", "delta", "relative_pct"],
            ),
        ]
        blocks += [("p", f"Probe note: {note}") for note in probe.get("notes", [])]
    for note in doc.get("notes", []):
        blocks.append(("p", f"Note: {note}"))
    return blocks


def generator_section(path: Path) -> dict[str, str]:
    """`generator_eval.json` (or its folder) as report fragments: {'md': ..., 'html': ...}.

    For `cxraug report`: call it with an evaluate-generator output folder when one exists
    and insert the fragment. Also shows `text_encoder_probe.json` beside it when present,
    and embeds `memorization.png` in the HTML.
    """
    import base64
    from html import escape

    path = Path(path)
    if path.is_dir():
        path = path / GENERATOR_EVAL_FILE
    if not path.is_file():
        raise UserError(f"{path}: no generator evaluation (run cxraug evaluate-generator)")
    doc = json.loads(path.read_text())
    if doc.get("schema") != GENERATOR_EVAL_SCHEMA:
        raise UserError(f"{path}: schema {doc.get('schema')!r}, expected {GENERATOR_EVAL_SCHEMA}")
    probe_path = path.parent / PROBE_FILE
    probe = json.loads(probe_path.read_text()) if probe_path.is_file() else None
    md, html = [], ["<section class='generator-eval'>"]
    first = True
    for block in _section_blocks(doc, probe):
        if block[0] == "h":
            md.append(("## " if first else "### ") + block[1] + "\n\n")
            html.append(f"<h2>{escape(block[1])}</h2>" if first else f"<h3>{escape(block[1])}</h3>")
            first = False
        elif block[0] == "p":
            md.append(block[1] + "\n\n")
            html.append(f"<p>{escape(block[1])}</p>")
        else:
            md.append(_md_table(block[1], block[2]) + "\n")
            html.append(_html_table(block[1], block[2]))
    figure = path.parent / doc["memorization"]["figure"]
    if figure.is_file():
        data = base64.b64encode(figure.read_bytes()).decode()
        html.append(f"<img alt='memorization audit' src='data:image/png;base64,{data}'/>")
    html.append("</section>")
    return {"md": "".join(md), "html": "".join(html)}
