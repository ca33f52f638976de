"""Configurations of the generator's evaluation commands (`evaluate-generator`,
`probe-text-encoder`): defaults and help texts, the fidelity targets and KID's sampling.

Torch-free on purpose: the CLI builds its options from these dataclasses' fields
(`manifests.settings`) before it imports torch, so a default lives in one place; the
evaluation itself is `augmentor.evaluate` and `augmentor.probe`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from classifier.config import N_BOOT
from manifests import runfolder
from manifests.demographics import DEFAULT_AGE_EDGES, parse_age_edges
from manifests.settings import REPLACE_HELP, SEED_HELP, comma_list, setting

KID_SUBSETS = 100  # KID: random subsets (as clean-fid and torchmetrics) ...
KID_SUBSET_SIZE = 1000  # ... of at most this many images each
MIN_FID_IMAGES = 50  # per-label FID (and PRDC) needs at least this many images on each side
PRDC_K = 5  # precision/recall/density/coverage: the k-th neighbour sets a ball's radius
POOLINGS = ("mean", "eos")  # how the probe pools a report's token states


@dataclass(frozen=True)
class FidelityTargets:
    """What a generator that draws its prompts must reach, per finding.

    Attributes:
        hit_vs_real_positive: the hit rate of a prompted finding is at least this times the
            oracle's rate on real test positives.
        false_finding_margin: the false-finding rate is at most the oracle's rate on real
            test negatives (matched to the prompted findings: `matched_negative_rate`) plus
            this.
        side_hit_rate: the stated side is matched in at least this share of sided images.
    """

    hit_vs_real_positive: float = 0.8
    false_finding_margin: float = 0.10
    side_hit_rate: float = 0.85

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


@dataclass
class GeneratorEvalConfig:
    """Inputs and knobs of `evaluate_generator` (saved beside the outputs).

    The feature extractor is one of `features` (a cxraug classifier run), `features_timm`
    with `weights` (a timm model name and local weights), or `features_xrv` (a local
    torchxrayvision DenseNet-121 weights file: safetensors, or a state dict
    `torch.load(weights_only=True)` reads), or `features_raddino` (a local RadDINO folder,
    `augmentor.raddino`). `oracle` (prompt alignment and laterality)
    defaults to `features` when that is a run; with `features_timm` those sections are
    skipped. `privacy` adds the re-identification audit (`augmentor.privacy`), its
    threshold at `false_match_rate` on real val patients. `demographics` adds demographic
    fidelity (`augmentor.demographic_fidelity`) per prompted sex and age group (`age_edges`),
    with oracles from `demographic_oracle` or trained in `OUT/demographic_oracle`.
    `drop_memorized` writes the synthetic manifest without the flagged rows to
    `filtered_manifest` (default `<synthetic stem>.unmemorized.parquet` beside it; it must
    lie above the synthetic images, which stay put).
    """

    synthetic: Path = setting(help="Synthetic manifest (from cxraug synthesize).")
    real: Path = setting(help="Real manifest the generator was trained on (split).")
    out: Path = setting(flag=("--out", "-o"), help="Output folder (generator_eval.json).")
    features: Path | None = setting(
        None, help="Classifier run (trained on real data) giving features."
    )
    features_timm: str | None = setting(None, help="Or a timm model name (with --weights).")
    weights: Path | None = setting(None, help="Local weights for --features-timm.")
    features_xrv: Path | None = setting(
        None,
        help="Or torchxrayvision DenseNet-121 weights: a local .safetensors file or state "
        "dict (RoentGen's FID features; needs the xrv extra).",
    )
    features_raddino: Path | None = setting(
        None,
        help="Or a local RadDINO folder (config.json, model.safetensors, "
        "preprocessor_config.json, as microsoft/rad-dino): CheXGenBench's features.",
    )
    oracle: Path | None = setting(
        None, help="Classifier run for prompt alignment (default: --features)."
    )
    cache_dir: Path | None = setting(
        None, help="Feature cache by image hash (default: OUT/feature_cache)."
    )
    batch_size: int = setting(64, help="Images per forward pass.")
    memorization_threshold: float = setting(
        0.97,
        help="Flag a synthetic image whose 32x32 pixel correlation with a train image "
        "(centred on the mean train image) is at least this.",
    )
    feature_threshold: float = setting(
        0.98, help="Flag it too when the centred feature cosine is at least this."
    )
    drop_memorized: bool = setting(False, help="Write the synthetic manifest without flagged rows.")
    filtered_manifest: Path | None = setting(
        None,
        flag="--filtered-out",
        help="Where --drop-memorized writes (default: <synthetic>.unmemorized.parquet beside it).",
    )
    ssim_size: int | None = setting(
        None,
        help="Side images are resized to for MS-SSIM (default: theirs, at most 256).",
        cli=False,
    )
    max_pairs: int = setting(20, help="MS-SSIM pairs per group.")
    max_real: int | None = setting(None, help="At most N real images per split (random).")
    thumbnails: int = setting(12, help="Pairs shown in memorization.png.", cli=False)
    privacy: bool = setting(
        False,
        help="Also audit patient re-identification: score each synthetic image against the "
        "patient whose report prompted it with a verification model trained on real train "
        "pairs (docs/privacy.md).",
    )
    false_match_rate: float = setting(
        0.01,
        help="--privacy: the re-identification threshold's false-match rate on real val patients.",
    )
    reid_steps: int = setting(
        300, help="--privacy: training steps of the verification model.", cli=False
    )
    reid_image_size: int = setting(
        64, help="--privacy: side the verification model sees (px).", cli=False
    )
    reid_baseline_patients: int = setting(
        10,
        help="--privacy: train patients each real val image is scored against (baseline).",
        cli=False,
    )
    demographics: bool = setting(
        False,
        help="Also judge demographic fidelity: sex and age oracles trained on real train "
        "images score each synthetic image against its prompt's sex and age, per subgroup, "
        "beside real test images (docs/generator.md).",
    )
    demographic_oracle: Path | None = setting(
        None,
        help="--demographics: oracles saved before (an OUT/demographic_oracle folder) "
        "instead of training them in OUT/demographic_oracle.",
    )
    age_edges: tuple[float, ...] = setting(
        DEFAULT_AGE_EDGES,
        flag="--age-groups",
        parse=parse_age_edges,
        help="--demographics: age-group edges in years, e.g. 40,65 (<40, 40-64, 65+).",
    )
    demographic_steps: int = setting(
        300, help="--demographics: training steps of the oracles.", cli=False
    )
    demographic_image_size: int = setting(
        64, help="--demographics: side the oracles see (px).", cli=False
    )
    seed: int = setting(0, help=SEED_HELP)
    resume: bool = setting(False, help=runfolder.RESUME_HELP)
    overwrite: bool = setting(False, help=runfolder.OVERWRITE_HELP)
    device: str | None = setting(
        None, help="Torch device (default: cuda if present, else cpu).", cli=False
    )
    kid_subsets: int = setting(KID_SUBSETS, help="KID's random subsets.", cli=False)
    kid_subset_size: int = setting(KID_SUBSET_SIZE, help="KID's subset size (at most).", cli=False)
    min_fid_images: int = setting(
        MIN_FID_IMAGES,
        help="Per-label FID and PRDC only with at least this many images on each side "
        "(else 'too few').",
    )
    prdc_k: int = setting(
        PRDC_K, help="Precision/recall/density/coverage: neighbours per ball.", cli=False
    )
    n_boot: int = setting(
        N_BOOT,
        help="Bootstrap resamples (prompts, patients) of the prompt-fidelity intervals.",
        cli=False,
    )
    fidelity_targets: FidelityTargets = setting(default_factory=FidelityTargets, cli=False)


@dataclass
class ProbeConfig:
    """Inputs of `probe_text_encoder` (saved in its JSON output).

    `base` is `tiny` or a local diffusers folder (its `text_encoder/` and `tokenizer/`);
    `labels` (any spelling) default to every label with 2+ positives and 2+ negatives both
    in train and in held-out reports; `pooling` is `mean` (attention-masked mean of the last
    hidden states) or `eos` (the end-of-text token's pooled output, what CLIP trains for).
    """

    base: str = setting(help="'tiny' or the base diffusers folder.")
    finetuned: Path = setting(help="Fine-tuned generator directory.")
    manifest: Path = setting(help="Real manifest with reports, split by patient.")
    labels: tuple[str, ...] | None = setting(
        None, parse=comma_list, help="Comma list (default: probe-able labels)."
    )
    pooling: str = setting("mean", help="mean (over tokens) or eos (end-of-text token).")
    batch_size: int = setting(64, help="Reports per forward pass.", cli=False)
    c: float = setting(
        1.0, help="Inverse L2 strength of each logistic-regression probe.", cli=False
    )
    seed: int = setting(0, help=SEED_HELP)
    n_boot: int = setting(N_BOOT, help="Bootstrap resamples of held-out patients (CI).")
    out: Path | None = setting(
        None,
        flag=("--out", "-o"),
        help="Folder for text_encoder_probe.json (e.g. the eval folder).",
    )
    overwrite: bool = setting(False, help=REPLACE_HELP)


__all__ = [
    "KID_SUBSETS",
    "KID_SUBSET_SIZE",
    "MIN_FID_IMAGES",
    "PRDC_K",
    "POOLINGS",
    "FidelityTargets",
    "GeneratorEvalConfig",
    "ProbeConfig",
]
