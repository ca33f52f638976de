"""Does the classifier's loader keep ahead of the model on a 20,000-row mixed training set?

    python benchmarks/bench_loader.py [--model runs/demo/generator] [--n 12500]
        [--per-finding 100] [--train-size 20000] [--epochs 2] [--work /tmp/bench_loader]
        [--backbone resnet10t] [--image-size 64] [--tiny]

`train-classifier` on a 20,000-row mixed manifest. The script

1. draws `--n` phantom images (64 px) and splits them by patient 0.8/0.1/0.1. Phantom
   patient ids repeat from one phantom set to the next, so they are prefixed `loader-`:
   otherwise the provenance check would, rightly, refuse synthetic images from a generator
   fine-tuned on "the same" (equally named) patients of the demo's phantom set;
2. synthesizes `--per-finding` images per finding with `--model` (the demo generator,
   `synthesize --fast`'s sampler), prompted by the new set's train reports;
3. trains `--backbone` for `--epochs` epochs on `--train-size` rows, half real and half
   synthetic (`train-classifier --mix 0.5 --train-size`; rows beyond the unique images are
   drawn with repetition, as `manifests.mixing` does), and prints per epoch the training
   images/s and the seconds the loop spent waiting for the loader, plus the process's peak
   RSS. The loader keeps ahead when that wait is a small share of the epoch.

`--tiny` runs the same path in seconds (an untrained `tiny` generator, 48 phantoms, 64
rows, `test_resnet`) for the tests.
"""

from __future__ import annotations

import argparse
import resource
import shutil
import time
from pathlib import Path

FINDINGS = ("Cardiomegaly", "Pleural Effusion", "Pneumothorax", "Consolidation")


def make_real(folder: Path, n: int, seed: int) -> Path:
    """`n` phantoms split by patient, patient ids prefixed `loader-`."""
    from manifests.io import read_manifest, write_manifest
    from manifests.phantom import write_phantom_dataset
    from manifests.splits import split_by_patient

    source = read_manifest(write_phantom_dataset(folder, n=n, size=64, seed=seed, overwrite=True))
    source.rows["patient_id"] = "loader-" + source.rows["patient_id"].astype(str)
    split = split_by_patient(source, (0.8, 0.1, 0.1), seed=seed)
    return write_manifest(split, folder / "split.parquet", overwrite=True)


def make_synthetic(model: Path, real: Path, out: Path, per_finding: int, steps: int | None):
    from augmentor.config import FAST_SAMPLER, SynthesisConfig
    from augmentor.synthesize import synthesize

    scheduler, fast_steps, guidance = FAST_SAMPLER
    spec = ",".join(f"{f.lower().replace(' ', '_')}:{per_finding}" for f in FINDINGS)
    return synthesize(
        SynthesisConfig(
            model=str(model),
            prompts_from=str(real),
            out=str(out),
            labels=spec,
            scheduler=scheduler,
            num_inference_steps=steps or fast_steps,
            guidance_scale=guidance,
            batch_size=40,
            overwrite=True,
        )
    ).manifest


def train(real: Path, synthetic: Path, out: Path, args) -> dict:
    from classifier.config import TrainConfig
    from classifier.train import train_classifier
    from manifests.files import read_json

    train_classifier(
        TrainConfig(
            real=real,
            synthetic=synthetic,
            mix=0.5,
            train_size=args.train_size,
            out=out,
            backbone=args.backbone,
            labels=FINDINGS,
            image_size=args.image_size,
            epochs=args.epochs,
            batch_size=32,
            patience=0,
            # the --tiny generator is a bare pipeline: it records no training patients
            allow_foreign_synthetic=args.tiny,
            overwrite=True,
        ),
        log=lambda _t: None,
    )
    return read_json(out / "metrics.json", "classifier metrics")


def loader_rows(metrics: dict) -> list[dict]:
    """Per epoch: images, seconds, images/s, loader wait and its share of the epoch."""
    rows = []
    for h in metrics["history"]:
        seconds = float(h["train_seconds"])
        rows.append(
            {
                "epoch": int(h["epoch"]),
                "images": int(h["train_images"]),
                "seconds": seconds,
                "images_per_s": float(h["train_images_per_s"]),
                "loader_wait_s": float(h["loader_wait_s"]),
                "wait_share": float(h["loader_wait_s"]) / seconds if seconds > 0 else float("nan"),
            }
        )
    return rows


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, default=Path("runs/demo/generator"))
    parser.add_argument("--n", type=int, default=12500)
    parser.add_argument("--per-finding", type=int, default=100)
    parser.add_argument("--train-size", type=int, default=20000)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--backbone", default="resnet10t")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--work", type=Path, default=Path("/tmp/bench_loader"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tiny", action="store_true", help="seconds-long run for the tests")
    args = parser.parse_args(argv)
    steps = None
    if args.tiny:
        from augmentor.base import build_tiny_pipeline

        args.model = args.work / "tiny-generator"
        build_tiny_pipeline(seed=0).save_pretrained(args.model, safe_serialization=True)
        args.n, args.per_finding, args.train_size, args.epochs = 48, 2, 64, 1
        args.backbone, steps = "test_resnet", 1
    start = time.perf_counter()
    real = make_real(args.work / "phantom", args.n, args.seed)
    t_real = time.perf_counter() - start
    t = time.perf_counter()
    synthetic = make_synthetic(args.model, real, args.work / "synthetic", args.per_finding, steps)
    t_synth = time.perf_counter() - t
    t = time.perf_counter()
    metrics = train(real, synthetic, args.work / "run", args)
    t_train = time.perf_counter() - t
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"{metrics['n_real_train']} real + {metrics['n_synthetic_train']} synthetic train rows "
        f"({args.n} phantoms drawn in {t_real:.0f} s; {4 * args.per_finding} synthetic images "
        f"in {t_synth:.0f} s); {args.backbone} at {args.image_size} px, training {t_train:.0f} s; "
        f"peak RSS {rss:.0f} MiB"
    )
    rows = loader_rows(metrics)
    for r in rows:
        print(
            f"epoch {r['epoch']}: {r['images']} images in {r['seconds']:.1f} s "
            f"({r['images_per_s']:.1f}/s); waited on the loader {r['loader_wait_s']:.2f} s "
            f"({100 * r['wait_share']:.1f}% of the epoch)"
        )
    if args.tiny:
        shutil.rmtree(args.work, ignore_errors=True)
    return rows


if __name__ == "__main__":
    main()
