"""Does the re-identification audit flag a generator that redraws its training patient?

    python benchmarks/privacy_memorization.py [--steps 100 300] [--images 12] [--out DIR]

A phantom real set is split by patient into train and val. For each fine-tuning length,
two generators are fine-tuned from the `tiny` base with one recipe (`Recipe`):

* memorizing: on two studies of one train patient only (a handful of images, many steps:
  it learns to redraw them);
* control: on two studies of a patient outside the real set (`first_patient` past its
  pool), so it cannot have learnt any patient the audit looks for.

Both then synthesize images prompted by the memorized patient's reports
(`augmentor.synthesize`), and each set goes through the re-identification audit
(`augmentor.privacy.audit_privacy`, what `evaluate-generator --privacy` runs; one
verification model for both, trained on the real train split) and the pixel memorization
search (`augmentor.generator_metrics.memorization_table` on the 32 px signatures
`evaluate-generator` uses). One row per generator: the share of its images that match the
prompting patient beside the baseline (real val images against other train patients, every
match a false one), the share whose nearest train patient is a match, and the pixel
search's nearest-image correlation and flags.

The memorized patient is the first train patient whose first two studies are both positive
for `Recipe.label` (Cardiomegaly: a patient trait in the phantoms, so the control's images,
prompted with cardiomegaly reports, draw large hearts too and the audit must tell a large
heart from this patient's). Fine-tuning uses no caption dropout and synthesis no guidance
(scale 1): the generator is made to learn its few images, not the empty prompt.
`tests/test_privacy_generator.py` runs the default recipe and asserts the outcome; every
number is deterministic in `Recipe.seed` on one machine.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from augmentor.config import FinetuneConfig, SynthesisConfig
from augmentor.eval_config import GeneratorEvalConfig
from augmentor.features import image_hashes, pixel_signature
from augmentor.finetune import finetune
from augmentor.generator_metrics import memorization_table
from augmentor.privacy import (
    SYN_NEAREST,
    SYN_PROMPT,
    VAL_NEAREST,
    VAL_OTHER,
    PrivacyAudit,
    audit_privacy,
)
from augmentor.synthesize import synthesize
from manifests.images import load_image
from manifests.io import Manifest, read_manifest, write_manifest
from manifests.phantom import write_phantom_dataset

UNSEEN_PATIENT = 5000  # the control's patients are drawn from here on: none is in the real set


@dataclass(frozen=True)
class Recipe:
    """One run of the experiment.

    Attributes:
        patients: real phantom patients (three studies each); the first two thirds train.
        label: the memorized patient is the first train patient positive for it in their
            first two studies; the synthetic images are prompted for it.
        steps: fine-tuning steps of both generators.
        batch_size: images per fine-tuning step (the two images, each drawn twice).
        learning_rate: constant, AdamW.
        ema_decay: the generators are their EMA weights (a short average: the last ~50 steps).
        images: synthetic images per generator.
        sampler_steps: DDIM steps per image.
        reid_steps: verification-model training steps.
        seed: phantoms, fine-tuning, synthesis and the verification model.
    """

    patients: int = 24
    label: str = "Cardiomegaly"
    steps: int = 300
    batch_size: int = 4
    learning_rate: float = 2e-3
    ema_decay: float = 0.98
    images: int = 12
    sampler_steps: int = 20
    reid_steps: int = 200
    seed: int = 0


@dataclass
class GeneratorResult:
    """One generator's audit and pixel search."""

    name: str
    model: Path  # the generator folder
    audit: PrivacyAudit
    pixels: pd.DataFrame  # memorization_table rows, with `nn_pixel_patient`


# ---------------------------------------------------------------- data


def build_real(root: Path, recipe: Recipe) -> Path:
    """The real phantom set: 64 px, three studies per patient, the first two thirds of the
    patients train, the rest val (the audit's threshold); returns its manifest's path."""
    path = write_phantom_dataset(
        root / "real", n=3 * recipe.patients, size=64, seed=recipe.seed, patients=recipe.patients
    )
    real = read_manifest(path)
    order = {p: k for k, p in enumerate(sorted(set(real.rows["patient_id"])))}
    rank = real.rows["patient_id"].map(order).to_numpy()
    real.rows["split"] = np.where(rank < 2 * recipe.patients // 3, "train", "val")
    return write_manifest(real, path, overwrite=True)


def first_two_studies(rows: pd.DataFrame, patient: str) -> pd.Index:
    """Row labels of `patient`'s first two studies (by study id)."""
    own = rows[rows["patient_id"] == patient].sort_values("study_id")
    return own.index[:2]


def memorized_patient(real: Manifest, label: str) -> str:
    """The first train patient whose first two studies are both positive for `label`."""
    rows = real.rows
    for patient in sorted(set(rows.loc[rows["split"] == "train", "patient_id"])):
        studies = first_two_studies(rows, patient)
        if len(studies) == 2 and (rows.loc[studies, label] == 1).all():
            return patient
    raise ValueError(f"no train patient has two studies positive for {label}")


def generator_manifest(source: Manifest, train: pd.Index, path: Path) -> Path:
    """`source`'s rows `train` as the train split and its val rows of other patients as val
    (fine-tuning refuses a manifest never split by patient); nothing else."""
    rows = source.rows
    trained = rows["patient_id"].isin(rows.loc[train, "patient_id"]).to_numpy()
    keep = rows.index.isin(train) | ((rows["split"] == "val").to_numpy() & ~trained)
    part = rows[keep].copy()
    part["split"] = np.where(part.index.isin(train), "train", "val")
    return write_manifest(replace(source, rows=part.reset_index(drop=True)), path)


def control_manifest(root: Path, recipe: Recipe) -> Path:
    """Two studies of a patient outside the real set as train, a second one's as val."""
    path = write_phantom_dataset(
        root / "unseen", n=6, size=64, seed=recipe.seed, patients=2, first_patient=UNSEEN_PATIENT
    )
    unseen = read_manifest(path)
    unseen.rows["split"] = "val"
    train = first_two_studies(unseen.rows, sorted(set(unseen.rows["patient_id"]))[0])
    return generator_manifest(unseen, train, root / "unseen" / "generator.parquet")


# ---------------------------------------------------------------- generators


def fine_tune(manifest: Path, out: Path, recipe: Recipe) -> Path:
    """`tiny` fine-tuned on `manifest`'s train rows: the recipe's steps, no caption dropout,
    no film grain, EMA weights."""
    cfg = FinetuneConfig(
        manifest=str(manifest),
        base="tiny",
        out=str(out),
        batch_size=recipe.batch_size,
        max_steps=recipe.steps,
        learning_rate=recipe.learning_rate,
        caption_dropout=0.0,
        film_grain=False,
        ema=True,
        ema_decay=recipe.ema_decay,
        checkpointing_steps=recipe.steps + 1,  # none: nothing resumes here
        seed=recipe.seed,
        show_progress=False,
    )
    return finetune(cfg)


def synthesize_for(model: Path, prompts: Path, out: Path, recipe: Recipe) -> Path:
    """`recipe.images` images of `recipe.label`, prompted by `prompts`' train reports."""
    cfg = SynthesisConfig(
        model=str(model),
        prompts_from=str(prompts),
        out=str(out),
        labels=f"{recipe.label}:{recipe.images}",
        scheduler="ddim",
        num_inference_steps=recipe.sampler_steps,
        guidance_scale=1.0,
        batch_size=recipe.images,
        seed=recipe.seed,
    )
    return synthesize(cfg).manifest


# ---------------------------------------------------------------- audits


def audit(synthetic: Path, real: Path, out: Path, cache: Path, recipe: Recipe) -> PrivacyAudit:
    """`evaluate-generator --privacy`'s audit of `synthetic` against `real` (CPU)."""
    cfg = GeneratorEvalConfig(
        synthetic=synthetic,
        real=real,
        out=out,
        reid_steps=recipe.reid_steps,
        seed=recipe.seed,
        device="cpu",
    )
    syn, ref = read_manifest(synthetic), read_manifest(real)
    out.mkdir(parents=True, exist_ok=True)
    return audit_privacy(syn, ref, image_hashes(syn), image_hashes(ref), cache, cfg)


def pixel_search(synthetic: Path, real: Path) -> pd.DataFrame:
    """The memorization audit's pixel half: each synthetic image's nearest real train image
    by centred 32 px correlation, flagged at `evaluate-generator`'s default threshold."""
    syn, ref = read_manifest(synthetic), read_manifest(real)
    train = np.flatnonzero(ref.rows["split"].to_numpy() == "train")
    paths = ref.image_paths()
    train_px = np.stack([pixel_signature(load_image(paths[i]), 32) for i in train])
    syn_px = np.stack([pixel_signature(load_image(p), 32) for p in syn.image_paths()])
    hashes = image_hashes(ref)
    table = memorization_table(
        syn_px, syn_px, image_hashes(syn), train_px, train_px, [hashes[i] for i in train],
        feature_threshold=np.inf, pixel_threshold=GeneratorEvalConfig.memorization_threshold,
    )  # fmt: skip
    table["nn_pixel_patient"] = ref.rows["patient_id"].to_numpy()[train[table["nn_pixel_index"]]]
    return table


def run_experiment(root: Path, recipe: Recipe) -> tuple[str, list[GeneratorResult]]:
    """Both generators of `recipe` under `root`; returns the memorized patient and the
    memorizing generator's result, then the control's."""
    real_path = build_real(root, recipe)
    real = read_manifest(real_path)
    patient = memorized_patient(real, recipe.label)
    prompts = generator_manifest(
        real, first_two_studies(real.rows, patient), root / "real" / "memorized.parquet"
    )
    cache = root / "cache"  # one verification model for both audits
    results = []
    for name, manifest in (("memorizing", prompts), ("control", control_manifest(root, recipe))):
        model = fine_tune(manifest, root / name / "generator", recipe)
        synthetic = synthesize_for(model, prompts, root / name / "synthetic", recipe)
        results.append(
            GeneratorResult(
                name=name,
                model=model,
                audit=audit(synthetic, real_path, root / name / "eval", cache, recipe),
                pixels=pixel_search(synthetic, real_path),
            )
        )
    return patient, results


# ---------------------------------------------------------------- table


def _row(audit: PrivacyAudit, comparison: str) -> pd.Series:
    table = audit.table
    return table[(table["comparison"] == comparison) & (table["group"] == "all")].iloc[0]


def summary_row(result: GeneratorResult, patient: str, steps: int) -> dict:
    """One generator's line of the table."""
    syn, base = _row(result.audit, SYN_PROMPT), _row(result.audit, VAL_OTHER)
    nearest, base_nearest = _row(result.audit, SYN_NEAREST), _row(result.audit, VAL_NEAREST)
    return {
        "generator": result.name,
        "steps": steps,
        "n": int(syn["n"]),
        "prompting_share": syn["share_above"],
        "prompting_low": syn["share_low"],
        "baseline_share": base["share_above"],
        "baseline_high": base["share_high"],
        "nearest_share": nearest["share_above"],
        "baseline_nearest": base_nearest["share_above"],
        "threshold": result.audit.summary["threshold"],
        "val_true_match": result.audit.summary["val_true_match_rate"],
        "pixel_r_median": float(result.pixels["pixel_correlation"].median()),
        "pixel_flagged": float(result.pixels["flagged"].mean()),
        "pixel_nn_is_patient": float((result.pixels["nn_pixel_patient"] == patient).mean()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, nargs="+", default=[Recipe.steps])
    parser.add_argument("--images", type=int, default=Recipe.images)
    parser.add_argument("--seed", type=int, default=Recipe.seed)
    parser.add_argument("--label", default=Recipe.label)
    parser.add_argument("--out", type=Path, default=None, help="Keep the runs here.")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        base = args.out or Path(tmp)
        for steps in args.steps:
            recipe = Recipe(steps=steps, images=args.images, seed=args.seed, label=args.label)
            started = time.perf_counter()
            patient, results = run_experiment(base / f"steps-{steps}", recipe)
            seconds = time.perf_counter() - started
            for result in results:
                rows.append({**summary_row(result, patient, steps), "seconds": seconds})
    with pd.option_context("display.width", 200, "display.max_columns", 30):
        print(pd.DataFrame(rows).round(3).to_string(index=False))


if __name__ == "__main__":
    main()
