"""Fine-tune `tiny` for a few minutes on ~1,000 phantom CXRs; does the prompt show up?

    python benchmarks/finetune_quality.py --out /tmp/quality [--manifest M] [--n 1250]
        [--steps 800] [--batch-size 8] [--learning-rate 1e-3] [--autoencoder-steps 300]
        [--threads 1] [--resume]

Without `--manifest` it draws `--n` phantom images (64 px) and splits them by patient
0.8/0.1/0.1, so about 1,000 train images. It runs `augmentor.finetune.finetune` (text
encoder trained too, RoentGen's best setting; EMA; cosine schedule) with one validation
grid per quarter of the run, then writes, beside the generator:

* ``samples.png``: one row per finding prompt below, six seeds each (PNDM, 25 steps,
  guidance 4), and ``real.png``: six real train images with that finding, row for row.
* ``quality.json``: timings, images/s, the prompts, the autoencoder fit.

The generator folder (`OUT/generator`) is what a classifier-based hit-rate check reads
(e.g. `cxraug synthesize --model OUT/generator ...` then a phantom-trained classifier).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from augmentor.config import FinetuneConfig
from augmentor.finetune import finetune
from augmentor.generator import read_generator_record
from manifests.files import write_json
from manifests.images import load_image, save_png
from manifests.io import read_manifest, write_manifest
from manifests.phantom import write_phantom_dataset
from manifests.splits import split_by_patient

# One prompt per finding, in the phantom reports' own phrasing; the regex picks real rows.
FINDINGS = {
    "No Finding": (
        "No acute cardiopulmonary process. Heart size is normal. "
        "No focal consolidation, pleural effusion, or pneumothorax.",
        r"^(No acute cardiopulmonary process|Clear lungs)",
    ),
    "Pleural Effusion (right, large)": (
        "Large right pleural effusion with a meniscus. Heart size is normal. "
        "No focal consolidation. No pneumothorax.",
        r"Large right pleural effusion",
    ),
    "Pneumothorax (left, large)": (
        "Large left pneumothorax with a visible pleural line. Heart size is normal. "
        "No focal consolidation. No pleural effusion.",
        r"Large left pneumothorax",
    ),
    "Cardiomegaly (severe)": (
        "Severe cardiomegaly. No focal consolidation. No pleural effusion. No pneumothorax.",
        r"[Ss]evere(ly)? (cardiomegaly|enlarge)",
    ),
    "Consolidation (left upper lobe)": (
        "Dense consolidation of the left upper lobe, concerning for pneumonia. "
        "Heart size is normal. No pleural effusion. No pneumothorax.",
        r"consolidation (of|in) the left upper lobe|Left upper lobe consolidation",
    ),
    "Support Devices (endotracheal tube)": (
        "Endotracheal tube in standard position. Heart size is normal. "
        "No focal consolidation, pleural effusion, or pneumothorax.",
        r"Endotracheal tube",
    ),
}
SEEDS = 6


def phantom_manifest(out: Path, n: int, seed: int) -> Path:
    path = write_phantom_dataset(out, n=n, size=64, seed=seed, overwrite=True)
    split = split_by_patient(read_manifest(path), (0.8, 0.1, 0.1), seed=seed)
    write_manifest(split, path, overwrite=True)
    return path


def real_grid(manifest_path: Path, path: Path) -> None:
    """Six real train images per finding (rows as in samples.png)."""
    m = read_manifest(manifest_path)
    rows = m.rows
    train = (rows["split"] == "train").to_numpy()
    paths = m.image_paths()
    tiles = []
    for _, pattern in FINDINGS.values():
        hit = np.flatnonzero(train & rows["report"].fillna("").str.contains(pattern).to_numpy())
        row = [load_image(paths[i]) for i in hit[:SEEDS]]
        row += [np.zeros_like(row[0] if row else np.zeros((64, 64), np.uint8))] * (SEEDS - len(row))
        tiles.append(np.concatenate(row, axis=1))
    save_png(np.concatenate(tiles, axis=0), path)


@torch.no_grad()
def sample_grid(generator_dir: Path, path: Path, steps: int = 25, guidance: float = 4.0) -> None:
    """Each finding prompt with seeds 0..5, one row per prompt."""
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(generator_dir)
    pipe.set_progress_bar_config(disable=True)
    rows = []
    for prompt, _ in FINDINGS.values():
        images = pipe(
            [prompt] * SEEDS,
            num_inference_steps=steps,
            guidance_scale=guidance,
            generator=[torch.Generator().manual_seed(s) for s in range(SEEDS)],
            output_type="np",
        ).images[..., 0]
        rows.append(np.concatenate(list(images), axis=1))
    grid = (np.clip(np.concatenate(rows, axis=0), 0, 1) * 255).round().astype(np.uint8)
    save_png(grid, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument(
        "--manifest", type=Path, help="a split phantom manifest (default: draw one)"
    )
    parser.add_argument("--n", type=int, default=1250, help="phantom images to draw (80%% train)")
    parser.add_argument("--steps", type=int, default=800)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--autoencoder-steps", type=int, default=300)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--resume", action="store_true", help="continue an interrupted run")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)

    start = time.perf_counter()
    manifest = args.manifest or args.out / "phantom" / "manifest.parquet"
    if args.manifest is None and not manifest.is_file():
        phantom_manifest(manifest.parent, args.n, args.seed)
    prompts = tuple(p for p, _ in FINDINGS.values())
    cfg = FinetuneConfig(
        manifest=str(manifest),
        base="tiny",
        out=str(args.out / "generator"),
        train_text_encoder=True,
        learning_rate=args.learning_rate,
        lr_scheduler="cosine",
        lr_warmup_steps=min(100, args.steps // 10),
        batch_size=args.batch_size,
        max_steps=args.steps,
        ema=True,
        ema_decay=0.999,
        seed=args.seed,
        checkpointing_steps=max(1, args.steps // 4),
        validation_prompts=prompts,
        validation_steps=max(1, args.steps // 4),
        autoencoder_steps=args.autoencoder_steps,
        resume=args.resume,
        overwrite=not args.resume,
    )
    out = finetune(cfg)
    train_done = time.perf_counter()
    sample_grid(out, args.out / "samples.png")
    real_grid(manifest, args.out / "real.png")
    record = read_generator_record(out)
    summary = {
        "command_args": {k: str(v) for k, v in vars(args).items()},
        "wall_seconds_finetune": train_done - start,
        "wall_seconds_total": time.perf_counter() - start,
        "images_per_second": record["images_per_second"],
        "timings": record["timings"],
        "autoencoder_fit": record["autoencoder_fit"],
        "n_train_images": record["n_train_images"],
        "global_step": record["global_step"],
        "final_losses": record["losses"][-5:],
        "rows": list(FINDINGS),
        "prompts": list(prompts),
    }
    write_json(args.out / "quality.json", summary)
    print(
        f"fine-tuned tiny for {record['global_step']} steps on {record['n_train_images']} phantom "
        f"images in {summary['wall_seconds_finetune'] / 60:.1f} min "
        f"({record['images_per_second']:.1f} images/s in the loop); "
        f"samples {args.out / 'samples.png'}, real {args.out / 'real.png'}, "
        f"validation grids {out / 'validation'}"
    )


if __name__ == "__main__":
    main()
