"""Fit `tiny`'s pretrained autoencoder once, reproducibly, and write it into the package.

    OMP_NUM_THREADS=1 python benchmarks/fit_tiny_autoencoder.py --work /tmp/tiny-vae
        [--out augmentor/pretrained/tiny_vae] [--steps 4000]

Stable Diffusion ships an autoencoder trained once on its own images; fine-tunes keep it
frozen. This script makes `tiny`'s equivalent: it draws `POOL_IMAGES` phantoms
(`manifests.phantom.write_phantom_dataset`, 64 px as every preset draws them) from a
patient pool numbered from `POOL_FIRST_PATIENT`. A phantom patient's anatomy, studies and
id follow from its number and the seed, and every preset numbers its patients from 0 up to
a few hundred, so the pool shares no patient with any study, whatever its seed (the tests
check every preset). It then fits the randomly initialised autoencoder (the one
`build_tiny_pipeline(pretrained_autoencoder=False)` builds) with
`augmentor.autoencoder.fit_autoencoder`, the fit a fine-tune from `tiny` used to run on its
own train images, only longer and on more images, on one CPU thread (reproducible, and
about 25-30 minutes on a shared machine). It writes the weights, diffusers' config.json and
`recipe.json` (data, fit, result, library versions, the weights' sha256) to `--out`.

The autoencoder is convolutional, so it also encodes images larger than 64 px; it has only
seen 64-px phantoms.
"""

from __future__ import annotations

import argparse
import platform
import time
from dataclasses import asdict
from pathlib import Path

import diffusers
import torch

from augmentor.autoencoder import fit_autoencoder
from augmentor.base import TINY_AUTOENCODER_DIR, build_tiny_pipeline, save_tiny_autoencoder
from augmentor.latents import load_pixels
from manifests.io import read_manifest
from manifests.phantom import write_phantom_dataset

# The pool: 1,500 phantoms of 500 patients numbered from one million. Presets draw a few
# hundred patients numbered from 0 (a study of a million patients would reach the pool).
POOL_FIRST_PATIENT = 1_000_000
POOL_IMAGES = 1500
POOL_PATIENTS = 500
POOL_SEED = 0
IMAGE_SIZE = 64
# The fit: `FinetuneConfig`'s autoencoder batch size and learning rate, 2.5x the demo's
# 1,600 steps, on 4.7x its train images.
STEPS = 4000
BATCH_SIZE = 8
LEARNING_RATE = 1e-3
KL_WEIGHT = 1e-6
FIT_SEED = 0
INIT_SEED = 0  # build_tiny_pipeline's seed: the autoencoder's random initialisation


def pool_patient_ids() -> tuple[str, str]:
    """The first and last patient id of the pool."""
    first = POOL_FIRST_PATIENT
    return f"phantom-p{first:05d}", f"phantom-p{first + POOL_PATIENTS - 1:05d}"


def recipe(steps: int) -> dict:
    """What the fit depends on, written beside the weights (result and digest added later)."""
    first, last = pool_patient_ids()
    return {
        "script": "benchmarks/fit_tiny_autoencoder.py",
        "data": {
            "generator": "manifests.phantom.write_phantom_dataset",
            "n": POOL_IMAGES,
            "size": IMAGE_SIZE,
            "seed": POOL_SEED,
            "patients": POOL_PATIENTS,
            "first_patient": POOL_FIRST_PATIENT,
            "patient_ids": [first, last],
        },
        "fit": {
            "function": "augmentor.autoencoder.fit_autoencoder",
            "init": f"augmentor.base.build_tiny_pipeline(seed={INIT_SEED}, "
            "pretrained_autoencoder=False).vae",
            "steps": steps,
            "batch_size": BATCH_SIZE,
            "learning_rate": LEARNING_RATE,
            "lr_schedule": "cosine to 0",
            "kl_weight": KL_WEIGHT,
            "seed": FIT_SEED,
            "threads": 1,
            "device": "cpu",
        },
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "diffusers": diffusers.__version__,
        },
    }


def draw_pool(work: Path) -> Path:
    """The pool's phantoms under `work/pool` (reused if already drawn); its manifest path."""
    manifest = work / "pool" / "manifest.parquet"
    if manifest.is_file():
        return manifest
    return write_phantom_dataset(
        work / "pool",
        n=POOL_IMAGES,
        size=IMAGE_SIZE,
        seed=POOL_SEED,
        patients=POOL_PATIENTS,
        first_patient=POOL_FIRST_PATIENT,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", type=Path, required=True, help="folder for the phantoms")
    parser.add_argument("--out", type=Path, default=TINY_AUTOENCODER_DIR)
    parser.add_argument("--steps", type=int, default=STEPS)
    args = parser.parse_args()
    torch.set_num_threads(1)  # reproducible, and the machine may be shared
    start = time.perf_counter()
    manifest = read_manifest(draw_pool(args.work))
    pixels = load_pixels(manifest.image_paths(), IMAGE_SIZE, 1)
    print(f"pool: {len(pixels)} phantoms of {manifest.rows['patient_id'].nunique()} patients")
    vae = build_tiny_pipeline(seed=INIT_SEED, pretrained_autoencoder=False).vae
    fit = fit_autoencoder(
        vae,
        pixels,
        steps=args.steps,
        batch_size=BATCH_SIZE,
        learning_rate=LEARNING_RATE,
        kl_weight=KL_WEIGHT,
        seed=FIT_SEED,
        show_progress=True,
    )
    written = save_tiny_autoencoder(
        vae,
        {**recipe(args.steps), "result": asdict(fit), "seconds": time.perf_counter() - start},
        args.out,
    )
    print(f"{args.out}: sha256 {written['weights_sha256']}, {fit.seconds:.0f} s of fitting")


if __name__ == "__main__":
    main()
