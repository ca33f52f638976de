"""Generator evaluation: fidelity, diversity, prompt alignment, laterality, memorization.

`evaluate_generator` compares a synthetic manifest with the real manifest the generator
was trained on, using a feature extractor (a cxraug classifier run trained on real data;
local timm weights, e.g. `--features-timm inception_v3 --weights FILE`, the architecture
FID/KID are usually reported with; the numbers match clean-fid's only with its weights and
resizing; torchxrayvision's DenseNet-121, `--features-xrv FILE`, RoentGen's CXR-specific
features, matching its setup only with the published `densenet121-res224-all` weights; or
a local RadDINO folder, `--features-raddino DIR`, CheXGenBench's features) and,
for prompt alignment, a classifier run as oracle. It writes `generator_eval.json`,
`generator_eval.md`, `memorization.parquet` and `memorization.png` into its output folder
through `augmentor.eval_folder`, the folder's owner (names, schema, reader, and
`generator_section` for `cxraug report`).

The tables are computed in `augmentor.generator_metrics` and rendered in
`augmentor.generator_report`; the oracle quality filter of `cxraug synthesize` is
`augmentor.oracle_filter`.

What each metric means, and its limits:

- FID: Fréchet distance between Gaussian fits of extractor features of the synthetic images
  and of the real train images (what the generator learnt from), always named by its
  extractor ("FID (oracle features, 512-d)", "FID (Inception, 2048-d)", ...). FID is biased
  upwards, the more the fewer the images, so it is compared only at equal n: the synthetic
  row and the real baseline row (real test images against the same train images) use the
  same number of images, the larger set subsampled with the seed. Per-label FID needs
  `min_fid_images` images on each side, else it reads "too few images".
- KID: unbiased polynomial-kernel MMD of the same features (averaged over random subsets, as
  clean-fid and torchmetrics), with a bootstrap standard error that redraws both sets in
  every replicate; unbiased at small sample sizes, unlike FID.
- Precision, recall, density, coverage (Naeem et al. 2020, `augmentor.prdc`): k-nearest-
  neighbour balls (k = 5) of the same features, beside FID and KID in the same rows, at the
  same n and with the same per-label minimum: are synthetic images where real ones are
  (precision, density), and is the real variety drawn (recall, coverage)?
- Diversity: mean MS-SSIM of image pairs (lower = more diverse); synthetic pairs of one
  prompt and of one target label, against real pairs of one label and of one patient.
  Synthesized with `--images-per-prompt K`, the same-prompt row follows RoentGen's
  protocol: all pairs among each drawn prompt's K images (4 images: 6 pairs).
- Prompt alignment: per target label, the share of synthetic images the oracle calls
  positive at a threshold chosen on held-out real images (Youden's J; 0.5 if they have one
  class): the oracle run's validation patients, images it did not train on
  (`generator_metrics.oracle_holdout`), next to the same rate on real test positives
  (sensitivity) and negatives (false-positive rate) of patients it never saw.
- Prompt fidelity: one table, a row per finding: the hit rate above; the false-finding rate (share
  of synthetic images whose prompt negates or does not mention the finding that the oracle
  calls positive, against its rate on real test negatives matched to the prompt mix); the
  side matched (below); and whether each point rate meets `FidelityTargets` (a 'No Finding'
  row for `synthesize --negatives`). Synthetic rates carry 95% intervals clustered by prompt
  (a prompt's images are correlated), real rates intervals clustered by patient, and the
  differences synthetic - real one-sided 95% bounds from a bootstrap of prompts and, apart,
  of patients.
- Laterality: for labels with a side (effusion, pneumothorax, consolidation), a side
  detector built from the oracle's response to left- and right-mirrored images, fit on
  the oracle's held-out calibration images with known side (phantom ground truth, else the
  report's side word), scored on real test images (its own accuracy, the ceiling) and on
  synthetic images against the side the prompt states.
- Re-identification (`--privacy`, `augmentor.privacy`): a patient-verification model
  trained on real train pairs scores each synthetic image against the patient whose report
  prompted it, beside real val images scored against train patients (docs/privacy.md).
- Demographic fidelity (`--demographics`, `augmentor.demographic_fidelity`): sex and age
  oracles trained on real train images; per prompted sex and age group, the share of
  synthetic images whose predicted sex is the prompt's and their age error, beside the
  same oracles on real test images.
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

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from augmentor.demographic_fidelity import audit_demographics, check_demographics
from augmentor.eval_config import GeneratorEvalConfig
from augmentor.eval_folder import (
    FORMAT,
    feature_cache_dir,
    memorization_figure_path,
    read_generator_eval,
    samples_figure_path,
    similarity_stats,
    summary_document,
    write_memorization_table,
    write_summary,
)
from augmentor.features import (
    FeatureExtractor,
    HalfMirrorEmbedder,
    PixelEmbedder,
    XrvFeatureExtractor,
    check_run_dir,
    embed_images,
    embed_subset,
    image_hashes,
    load_feature_extractor,
    load_run_extractor,
)
from augmentor.generator_metrics import (
    OracleHoldout,
    alignment_table,
    diversity_table,
    extractor_title,
    fidelity_table,
    memorization_table,
    oracle_holdout,
    prompt_fidelity_table,
    prompt_groups_repeat,
)
from augmentor.generator_report import plot_memorization, plot_samples, sample_rows
from augmentor.laterality import laterality_table
from augmentor.metrics import ms_ssim_scales
from augmentor.privacy import audit_privacy
from augmentor.raddino import RadDinoFeatureExtractor
from augmentor.report_text import LATERAL_LABELS
from augmentor.synthetic_set import (
    check_unmemorized_path,
    unmemorized_path,
    write_unmemorized_manifest,
)
from classifier.run import read_seen_patients
from manifests import runfolder
from manifests.errors import UserError
from manifests.files import check_output_folder
from manifests.images import load_image
from manifests.io import Manifest, read_manifest
from manifests.progress import say_to
from manifests.provenance import SeenPatients
from manifests.splits import check_leakage


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


# ---------------------------------------------------------------- orchestration


# What gives the features: a classifier run or timm weights, torchxrayvision's DenseNet or
# a RadDINO folder.
Extractor = FeatureExtractor | XrvFeatureExtractor | RadDinoFeatureExtractor


def _extractors(cfg: GeneratorEvalConfig) -> tuple[Extractor, FeatureExtractor | None]:
    if cfg.features is not None:
        check_run_dir(cfg.features, "--features")
    if cfg.oracle is not None:
        check_run_dir(cfg.oracle, "--oracle")
    features = load_feature_extractor(
        run_dir=cfg.features,
        timm_name=cfg.features_timm,
        weights=cfg.weights,
        device=cfg.device,
        xrv_weights=cfg.features_xrv,
        raddino_dir=cfg.features_raddino,
    )
    if cfg.oracle is not None and (cfg.features is None or Path(cfg.oracle) != Path(cfg.features)):
        oracle = load_run_extractor(cfg.oracle, cfg.device, flag="--oracle")
    else:
        oracle = features if features.labels else None
    return features, oracle


@dataclass
class Embedded:
    """Every per-image array the metrics need (rows in manifest order)."""

    syn_hashes: list[str]
    real_hashes: list[str]
    syn_features: np.ndarray
    real_features: np.ndarray
    syn_pixels: np.ndarray
    real_pixels: np.ndarray
    syn_probs: np.ndarray | None  # oracle probabilities (None without an oracle)
    real_probs: np.ndarray | None


def _embed(
    synthetic: Manifest,
    real: Manifest,
    features: Extractor,
    oracle: FeatureExtractor | None,
    cache_dir: Path,
    cfg: GeneratorEvalConfig,
    say: Callable[[str], None],
) -> Embedded:
    """Hash and embed every image once (features, 32 px thumbnails, oracle), via the cache."""
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
    oracle_at = 0 if oracle is features else 2
    return Embedded(
        syn_hashes=syn_hashes,
        real_hashes=real_hashes,
        syn_features=syn_out[0]["features"],
        real_features=real_out[0]["features"],
        syn_pixels=syn_out[1]["pixels"],
        real_pixels=real_out[1]["pixels"],
        syn_probs=syn_out[oracle_at]["probs"] if oracle is not None else None,
        real_probs=real_out[oracle_at]["probs"] if oracle is not None else None,
    )


def oracle_seen(cfg: GeneratorEvalConfig) -> SeenPatients | None:
    """What the oracle run (`--oracle`, else `--features`) records of its patients."""
    run_dir = cfg.oracle if cfg.oracle is not None else cfg.features
    return read_seen_patients(Path(run_dir)) if run_dir is not None else None


def oracle_tables(
    synthetic: Manifest,
    real: Manifest,
    oracle: FeatureExtractor,
    emb: Embedded,
    cache_dir: Path,
    cfg: GeneratorEvalConfig,
    holdout: OracleHoldout | None = None,
) -> tuple[dict[str, pd.DataFrame], list[str]]:
    """Prompt alignment, laterality and prompt fidelity: what the oracle sees, calibrated and
    judged on real images it did not train on (`holdout`; default from the oracle run's
    recorded patients, `oracle_holdout`)."""
    if holdout is None:
        holdout = oracle_holdout(real.rows, oracle_seen(cfg))
    targets = synthetic.rows.get("target_label", pd.Series([None] * len(synthetic)))
    tables = {
        "alignment": alignment_table(
            emb.syn_probs, targets, emb.real_probs, real.rows, oracle.labels, holdout
        )
    }
    notes: list[str] = list(holdout.notes)
    lateral = [
        lab for lab in LATERAL_LABELS if lab in oracle.labels and lab in set(targets.dropna())
    ]
    laterality = None
    if lateral:
        # Two extra forward passes per image: only for rows a lateral label concerns.
        halves = HalfMirrorEmbedder(oracle)
        syn_rows = targets.isin(lateral).to_numpy()
        real_rows = (real.rows[lateral].to_numpy() == 1).any(axis=1)
        syn_h = embed_subset(synthetic, emb.syn_hashes, syn_rows, halves, cache_dir, cfg.batch_size)
        real_h = embed_subset(real, emb.real_hashes, real_rows, halves, cache_dir, cfg.batch_size)
        laterality, lat_notes = laterality_table(
            synthetic, real, syn_h, real_h, oracle.labels, cfg.seed, holdout
        )
        notes.extend(lat_notes)
        tables["laterality"] = laterality
    tables["prompt_fidelity"] = prompt_fidelity_table(
        emb.syn_probs,
        synthetic.rows,
        emb.real_probs,
        real.rows,
        oracle.labels,
        laterality,
        cfg.fidelity_targets,
        holdout,
        cfg.n_boot,
        cfg.seed,
    )
    if (targets == "No Finding").any() and "No Finding" not in oracle.labels:
        notes.append(
            "the oracle has no 'No Finding' label: 'No Finding' prompts count only toward "
            "other findings' false-finding rates"
        )
    return tables, notes


def _memorization(
    synthetic: Manifest, real: Manifest, emb: Embedded, cfg: GeneratorEvalConfig
) -> tuple[pd.DataFrame, dict | None]:
    """Nearest train image of every synthetic image, and the same search from held-out real
    images (how often the thresholds flag honest images)."""
    targets = synthetic.rows.get("target_label", pd.Series([None] * len(synthetic)))
    train = np.flatnonzero(real.rows["split"].to_numpy() == "train")
    train_hashes = [emb.real_hashes[i] for i in train]
    memo = memorization_table(
        emb.syn_features,
        emb.syn_pixels,
        emb.syn_hashes,
        emb.real_features[train],
        emb.real_pixels[train],
        train_hashes,
        cfg.feature_threshold,
        cfg.memorization_threshold,
    )
    real_paths = real.image_paths()
    syn_paths = synthetic.image_paths()
    memo.insert(0, "image_path", [p.as_posix() for p in syn_paths])
    memo.insert(1, "image_sha256", emb.syn_hashes)
    memo.insert(2, "target_label", targets.to_numpy())
    memo["nn_feature_path"] = [real_paths[train[i]].as_posix() for i in memo["nn_feature_index"]]
    memo["nn_pixel_path"] = [real_paths[train[i]].as_posix() for i in memo["nn_pixel_index"]]
    patient = real.rows["patient_id"].to_numpy()
    memo["nn_pixel_patient"] = [patient[train[i]] for i in memo["nn_pixel_index"]]
    memo = memo.drop(columns=["nn_feature_index", "nn_pixel_index"])
    held = np.flatnonzero(real.rows["split"].to_numpy() != "train")
    if not len(held):
        return memo, None
    base = memorization_table(
        emb.real_features[held],
        emb.real_pixels[held],
        [emb.real_hashes[i] for i in held],
        emb.real_features[train],
        emb.real_pixels[train],
        train_hashes,
        cfg.feature_threshold,
        cfg.memorization_threshold,
    )
    return memo, {"n": len(held), **similarity_stats(base)}


def evaluate_generator(
    cfg: GeneratorEvalConfig, progress: Callable[[str], None] | None = None
) -> GeneratorEval:
    """Run every generator metric and write the report files into `cfg.out`.

    Returns:
        the JSON document (also in `<out>/generator_eval.json`) and its tables.
    """
    say = say_to(progress)
    out = Path(cfg.out)
    check_output_folder(out, "--out")  # before hashing or embedding anything
    state = runfolder.folder_state(out, FORMAT, cfg.resume, cfg.overwrite)
    if state == runfolder.FINISHED:
        say(f"{out}: already evaluated; nothing to do")
        return GeneratorEval(summary=read_generator_eval(out)[0], tables={}, out=out)
    synthetic, real = _check_inputs(cfg)
    check_demographics(cfg, real)
    with runfolder.run_folder(out, state, fmt=FORMAT):
        return _evaluate(cfg, synthetic, real, say)


def _evaluate(
    cfg: GeneratorEvalConfig, synthetic: Manifest, real: Manifest, say: Callable[[str], None]
) -> GeneratorEval:
    """The evaluation proper, inside the held output folder."""
    out = Path(cfg.out)
    filtered_path = (
        check_unmemorized_path(
            unmemorized_path(cfg.synthetic, cfg.filtered_manifest), synthetic, cfg.overwrite
        )
        if cfg.drop_memorized
        else None
    )
    real = _subsample_real(real, cfg.max_real, cfg.seed)
    features, oracle = _extractors(cfg)
    cache_dir = Path(cfg.cache_dir) if cfg.cache_dir else feature_cache_dir(out)
    emb = _embed(synthetic, real, features, oracle, cache_dir, cfg, say)
    targets = synthetic.rows.get("target_label", pd.Series([None] * len(synthetic)))
    tables: dict[str, pd.DataFrame] = {}
    notes: list[str] = []

    say("fidelity (FID, KID, precision/recall/density/coverage)")
    dim = emb.syn_features.shape[1]
    extractor = extractor_title(features.name, dim, oracle.name if oracle else None)
    tables["fidelity"], baseline_fid = fidelity_table(
        emb.syn_features, targets, emb.real_features, real.rows, real.labels,
        min_fid_images=cfg.min_fid_images, kid_subsets=cfg.kid_subsets,
        kid_subset_size=cfg.kid_subset_size, seed=cfg.seed, extractor=extractor,
        prdc_k=cfg.prdc_k,
    )  # fmt: skip
    first = tables["fidelity"].iloc[0]
    if min(first["n_compared"], first["n_reference"]) < dim:
        notes.append(
            f"FID on fewer images than feature dimensions ({dim}): covariances "
            "are singular and FID is biased upwards; compare only with the real baseline "
            "row, at the same n"
        )

    say("diversity (MS-SSIM)")
    # MS-SSIM at the synthetic images' size, at most 256 px (5 scales fit from 176 px up).
    size = cfg.ssim_size or min(256, int(min(load_image(synthetic.image_paths()[0]).shape)))
    tables["diversity"] = diversity_table(synthetic, real, size, cfg.max_pairs, cfg.seed)
    if "prompt" in synthetic.rows and not synthetic.rows["prompt"].duplicated().any():
        notes.append("every synthetic prompt is unique: no same-prompt MS-SSIM pairs")
    elif prompt_groups_repeat(synthetic.rows):
        diversity = tables["diversity"]
        same = diversity[diversity["comparison"] == "synthetic, same prompt"].iloc[0]
        notes.append(
            "same-prompt MS-SSIM follows RoentGen's protocol: all pairs within each prompt "
            "group (one drawn prompt's images, synthesize --images-per-prompt; 4 images give "
            f"6 pairs): {same['groups']} groups, {same['pairs']} pairs"
        )

    threshold_source = None
    if oracle is not None:
        say("prompt alignment, laterality and prompt fidelity")
        holdout = oracle_holdout(real.rows, oracle_seen(cfg))
        threshold_source = holdout.source
        found, oracle_notes = oracle_tables(synthetic, real, oracle, emb, cache_dir, cfg, holdout)
        tables.update(found)
        notes.extend(oracle_notes)
    else:
        notes.append("no oracle classifier run (--oracle): prompt alignment and laterality skipped")

    say("memorization audit")
    memo, baseline_flag = _memorization(synthetic, real, emb, cfg)
    tables["memorization"] = memo
    out.mkdir(parents=True, exist_ok=True)
    write_memorization_table(out, memo)
    plot_memorization(memo, memorization_figure_path(out), cfg.thumbnails)
    grid_rows = sample_rows(real, synthetic, seed=cfg.seed)
    if grid_rows:
        plot_samples(grid_rows, samples_figure_path(out))
    dropped_path = None
    if filtered_path is not None:
        kept = synthetic.with_rows(synthetic.rows[~memo["flagged"].to_numpy()])
        if not len(kept):
            notes.append("--drop-memorized: every synthetic image is flagged; no manifest written")
        else:
            dropped_path = str(write_unmemorized_manifest(kept, filtered_path, cfg.overwrite))

    privacy = None
    if cfg.privacy:
        say("re-identification audit")
        privacy = audit_privacy(
            synthetic, real, emb.syn_hashes, emb.real_hashes, cache_dir, cfg, say
        )
        tables["privacy"] = privacy.table
    demographics = None
    if cfg.demographics:
        say("demographic fidelity")
        demographics = audit_demographics(
            synthetic, real, emb.syn_hashes, emb.real_hashes, cache_dir, cfg, say
        )
        tables["demographics"] = demographics.table
    summary = summary_document(
        asdict(cfg), synthetic, real, features, oracle, tables, size,
        max(1, ms_ssim_scales(size, size)), dim, notes,
        baseline_fid=baseline_fid, baseline_flag=baseline_flag, dropped_path=dropped_path,
        extractor=extractor, threshold_source=threshold_source,
        privacy=privacy.summary if privacy else None,
        demographics=demographics.summary if demographics else None,
    )  # fmt: skip
    write_summary(out, summary)
    return GeneratorEval(summary=summary, tables=tables, out=out)
