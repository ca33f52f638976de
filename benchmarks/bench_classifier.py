"""Classifier training throughput: cxraug vs a plain timm + torchvision ImageFolder loop.

    python benchmarks/bench_classifier.py [--n 600] [--size 256] [--image-size 128]
        [--backbone resnet18] [--epochs 3] [--batch-size 32] [--baseline-workers 2]

One run, same images (the train split of a phantom set), same backbone, batch size,
optimizer, learning rate and comparable augmentation:

* cxraug: the training session `train_classifier` loops over (`start_training`, then
  `session.train_epoch()`: decode once into a uint8 cache, batched tensor augmentation).
* baseline: `torchvision.datasets.ImageFolder` (PNG decode + PIL transforms every epoch,
  `--baseline-workers` loader processes) feeding the same timm model with AdamW + BCE.
* loader only: cxraug's DataLoader plus its batch augmentation, no model, images/s.

Epochs of the two alternate, so both see the same load on a shared machine. Epoch 0 of
each is a warm-up and left out of the per-epoch rates; the one-time decode of
cxraug's cache is reported separately and in an all-in rate. Targets: training >= 1.0x the
baseline, loader-only >= 3x cxraug's training rate.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def make_data(folder: Path, n: int, size: int, seed: int) -> Path:
    from manifests.io import read_manifest, write_manifest
    from manifests.phantom import write_phantom_dataset
    from manifests.splits import split_by_patient

    path = write_phantom_dataset(folder, n=n, size=size, seed=seed)
    write_manifest(split_by_patient(read_manifest(path), (0.8, 0.1, 0.1), seed=0), path, True)
    return path


def image_folder(manifest_path: Path, label: str, out: Path) -> int:
    """The train images in an ImageFolder layout (class folder = the label's value)."""
    from manifests.io import read_manifest

    m = read_manifest(manifest_path)
    train = m.rows["split"].to_numpy() == "train"
    for path, value in zip(
        np.asarray(m.image_paths(), dtype=object)[train], m.rows.loc[train, label], strict=True
    ):
        folder = out / ("positive" if value == 1 else "other")
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, folder / path.name)
    return int(train.sum())


class Baseline:
    """The plain loop: ImageFolder + PIL transforms in loader workers, timm model, AdamW, BCE."""

    def __init__(self, root: Path, args, mean: float, std: float, n_labels: int):
        import timm
        from torchvision import datasets, transforms

        torch.manual_seed(0)
        tf = transforms.Compose(
            [
                transforms.Grayscale(1),
                transforms.Resize((args.image_size, args.image_size)),
                transforms.RandomAffine(10, translate=(0.05, 0.05), scale=(0.9, 1.1)),
                transforms.ColorJitter(brightness=0.1, contrast=0.1),
                transforms.ToTensor(),
                transforms.Normalize([mean], [std]),
            ]
        )
        self.loader = torch.utils.data.DataLoader(
            datasets.ImageFolder(str(root), transform=tf),
            batch_size=args.batch_size,
            shuffle=True,
            num_workers=args.baseline_workers,
            pin_memory=torch.cuda.is_available(),
            drop_last=True,
            persistent_workers=args.baseline_workers > 0,
        )
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.model = timm.create_model(args.backbone, num_classes=n_labels, in_chans=1)
        self.model.to(self.device)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=args.lr, weight_decay=0.01)
        self.n_labels = n_labels

    def epoch(self) -> float:
        """One epoch; images/s."""
        amp = torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.device.type == "cuda")
        self.model.train()
        start, images = time.perf_counter(), 0
        for x, y in self.loader:
            x = x.to(self.device, non_blocking=True)
            target = torch.nn.functional.one_hot(y, self.n_labels).float().to(self.device)
            with amp:
                logits = self.model(x)
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logits.float(), target)
            loss.backward()
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            images += len(x)
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        return images / (time.perf_counter() - start)


def run_loader_only(manifest_path: Path, args, labels) -> float:
    """cxraug's loader + batch augmentation over the train images, no model."""
    from classifier.config import AugmentConfig
    from classifier.data import (
        CachedImages,
        augment_batch,
        decode_images,
        label_targets,
        make_loader,
        normalize,
    )
    from manifests.io import filter_manifest, read_manifest

    m = filter_manifest(read_manifest(manifest_path), split="train")
    cache = decode_images(m.image_paths(), args.image_size, num_threads=4)
    targets, mask = label_targets(m.rows[list(labels)].to_numpy(np.float32))
    loader = make_loader(
        CachedImages(cache.images, targets, mask),
        args.batch_size,
        shuffle=True,
        pin_memory=torch.cuda.is_available(),
        drop_last=True,
    )
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    generator = torch.Generator().manual_seed(0)
    cfg = AugmentConfig()
    rates = []
    for _ in range(max(2, args.epochs)):
        start, images = time.perf_counter(), 0
        for batch in loader:
            x = normalize(augment_batch(batch["image"].to(device), cfg, generator), 0.5, 0.25)
            images += len(x)
        if device.type == "cuda":
            torch.cuda.synchronize()
        rates.append(images / (time.perf_counter() - start))
    return float(np.mean(rates[1:]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=600, help="phantom images (80%% train)")
    parser.add_argument("--size", type=int, default=256, help="phantom PNG side")
    parser.add_argument("--image-size", type=int, default=128, help="model input side")
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--workers", type=int, default=0, help="cxraug loader processes")
    parser.add_argument("--baseline-workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--keep", type=Path, default=None, help="keep data/runs here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from classifier.config import TrainConfig
    from classifier.train import decide_folder_state, start_training
    from classifier.training.accelerator import build_accelerator

    labels = ("Support Devices", "Pleural Effusion", "Pneumothorax", "Cardiomegaly")
    tmp = Path(args.keep or tempfile.mkdtemp(prefix="bench-classifier-"))
    tmp.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    manifest = make_data(tmp / "data", args.n, args.size, seed=0)
    n_train = image_folder(manifest, "Support Devices", tmp / "imagefolder")
    print(
        f"data: {args.n} phantoms at {args.size}px, {n_train} train ({time.perf_counter() - start:.1f}s)"
    )

    # cxraug's own training session (what `train_classifier` loops over) and the baseline,
    # epochs interleaved so both see the same machine load.
    cfg = TrainConfig(
        real=manifest,
        out=tmp / "run",
        backbone=args.backbone,
        labels=labels,
        image_size=args.image_size,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        patience=0,
        num_workers=args.workers,
        overwrite=True,
    )
    state_name = decide_folder_state(cfg)
    accelerator = build_accelerator(cfg.mixed_precision, cfg.seed)
    session = start_training(cfg, accelerator, state_name, log=lambda line: None)
    base = Baseline(tmp / "imagefolder", args, session.mean, session.std, len(labels))
    ours, theirs, waits, seconds, images, train_s = [], [], 0.0, 0.0, 0, 0.0
    for epoch in range(args.epochs):
        record = session.train_epoch()
        session.state.epoch += 1
        rate = base.epoch()
        seconds += record["train_seconds"]
        images += record["train_images"]
        if epoch > 0:  # epoch 0 warms up both
            ours.append(record["train_images_per_s"])
            theirs.append(rate)
            waits += record["loader_wait_s"]
            train_s += record["train_seconds"]
        print(
            f"epoch {epoch}: cxraug {record['train_images_per_s']:.1f}, baseline {rate:.1f} images/s"
        )
    ours_rate, baseline = float(np.mean(ours)), float(np.mean(theirs))
    all_in = images / (session.data.cache_seconds + seconds)

    # -- loader only
    loader = run_loader_only(manifest, args, labels)

    device = (
        torch.cuda.get_device_name(0)
        if torch.cuda.is_available()
        else platform.processor() or "cpu"
    )
    print(
        f"device {device}; torch threads {torch.get_num_threads()}; cpus {os.cpu_count()}; "
        f"{args.backbone} at {args.image_size}px, batch {args.batch_size}, {args.epochs} epochs"
    )
    print(
        f"cxraug training   {ours_rate:8.1f} images/s (epochs 1+; waited on the loader {waits:.2f}s of {train_s:.1f}s)"
    )
    print(
        f"cxraug all-in     {all_in:8.1f} images/s (all epochs incl. the one-time decode, "
        f"{session.data.cache_seconds:.2f}s)"
    )
    print(
        f"baseline training {baseline:8.1f} images/s (ImageFolder, {args.baseline_workers} workers)"
    )
    print(f"loader only       {loader:8.1f} images/s (cxraug loader + batch augmentation)")
    pairs = np.asarray(ours) / np.asarray(theirs)
    print(
        f"speed-up vs baseline: {ours_rate / baseline:.2f}x of mean rates, "
        f"{np.median(pairs):.2f}x median of adjacent-epoch pairs (target >= 1.0x)"
    )
    print(f"loader / training:    {loader / ours_rate:.1f}x (target >= 3x)")
    if args.keep is None:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
