"""Generator-evaluation speed: feature extraction images/s and nearest-neighbour search.

    python benchmarks/bench_features.py [--images 512] [--size 128] [--backbone resnet18]
        [--nn 10000] [--dim 1024] [--threads N]

Feature extraction runs `augmentor.features.embed_images` on phantom PNGs with a
classifier-run extractor (random weights; speed does not depend on them) in three modes,
all on the same images and model in one run:

- per image: one image per forward pass, no cache (the naive loop);
- batched, cold cache: the default path (batched forward passes, decode threads, results
  written to the on-disk cache);
- batched, warm cache: a rerun over the same images, answered from the cache.

The nearest-neighbour figure is the memorization audit's search (`nearest_neighbours`:
blocked matrix multiply on L2-normalised features, torch top-k) for `--nn` random queries
against `--nn` random references of `--dim` dimensions (random features are fine for
timing), against the full similarity matrix with numpy argmax as the reference.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def make_run(folder: Path, backbone: str, size: int, labels: list[str]) -> Path:
    """A classifier run directory as train-classifier writes it (random weights)."""
    import timm
    from safetensors.torch import save_model

    torch.manual_seed(0)
    model = timm.create_model(backbone, num_classes=len(labels), in_chans=1)
    save_model(model, str(folder / "model.safetensors"))
    config = {"backbone": backbone, "labels": labels, "image_size": size, "mean": 0.5, "std": 0.25}
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def bench_extraction(n: int, size: int, backbone: str, batch_size: int) -> dict[str, float]:
    from augmentor.features import embed_images, image_hashes, load_run_extractor
    from manifests.io import read_manifest
    from manifests.phantom import write_phantom_dataset

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        manifest = read_manifest(write_phantom_dataset(tmp / "data", n=n, size=size, seed=0))
        run = make_run(tmp / "data", backbone, size, list(manifest.labels))
        extractor = load_run_extractor(run, device="cpu")
        paths, hashes = manifest.image_paths(), image_hashes(manifest)
        results = {}

        # Naive: one image per forward pass, decoded in the loop, no cache.
        from manifests.images import load_image

        k = min(n, 128)
        extractor([load_image(paths[0])] * 2)  # warm-up: first-call allocations
        start = time.perf_counter()
        for path in paths[:k]:
            extractor([load_image(path)])
        results["per_image_images_per_s"] = k / (time.perf_counter() - start)

        start = time.perf_counter()
        embed_images(paths, hashes, [extractor], tmp / "cache", batch_size=batch_size)
        results["batched_cold_images_per_s"] = n / (time.perf_counter() - start)

        start = time.perf_counter()
        embed_images(paths, hashes, [extractor], tmp / "cache", batch_size=batch_size)
        results["batched_warm_cache_images_per_s"] = n / (time.perf_counter() - start)
        results["feature_dim"] = extractor.feature_dim
    return results


def bench_nn(n: int, dim: int) -> dict[str, float]:
    from augmentor.metrics import nearest_neighbours

    rng = np.random.default_rng(0)
    query = rng.normal(size=(n, dim)).astype(np.float32)
    reference = rng.normal(size=(n, dim)).astype(np.float32)
    start = time.perf_counter()
    sims, idx = nearest_neighbours(query, reference, k=1)
    blocked = time.perf_counter() - start

    start = time.perf_counter()
    qn = query / np.linalg.norm(query, axis=1, keepdims=True)
    rn = reference / np.linalg.norm(reference, axis=1, keepdims=True)
    full = qn @ rn.T
    ref_idx = full.argmax(axis=1)
    naive = time.perf_counter() - start
    assert (ref_idx == idx[:, 0]).mean() > 0.999
    return {
        "blocked_topk_s": blocked,
        "blocked_topk_queries_per_s": n / blocked,
        "numpy_full_matrix_s": naive,
        "numpy_full_matrix_peak_mb": full.nbytes / 2**20,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--nn", type=int, default=10_000)
    parser.add_argument("--dim", type=int, default=1024)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch threads: {torch.get_num_threads()}")
    ext = bench_extraction(args.images, args.size, args.backbone, args.batch_size)
    print(
        f"feature extraction ({args.backbone}, {args.size} px, {args.images} phantom PNGs, "
        f"dim {ext['feature_dim']}):"
    )
    print(f"  per image, no cache     {ext['per_image_images_per_s']:8.1f} images/s")
    print(f"  batched, cold cache     {ext['batched_cold_images_per_s']:8.1f} images/s")
    print(f"  batched, warm cache     {ext['batched_warm_cache_images_per_s']:8.1f} images/s")
    print(
        f"  batched / per image     {ext['batched_cold_images_per_s'] / ext['per_image_images_per_s']:8.2f}x"
    )
    nn = bench_nn(args.nn, args.dim)
    print(f"nearest neighbour, {args.nn:,} x {args.nn:,} random features, dim {args.dim}:")
    print(
        f"  blocked matmul + top-k  {nn['blocked_topk_s']:8.2f} s "
        f"({nn['blocked_topk_queries_per_s']:,.0f} queries/s)"
    )
    print(
        f"  numpy full matrix       {nn['numpy_full_matrix_s']:8.2f} s "
        f"({nn['numpy_full_matrix_peak_mb']:,.0f} MB similarity matrix)"
    )


if __name__ == "__main__":
    main()
