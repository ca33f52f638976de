"""Phantom dataset throughput: images/s for `write_phantom_dataset`, and where the time goes.

    python benchmarks/bench_phantom.py [--n 2000] [--size 128] [--seed 0]

The headline figure is all-inclusive (sample studies, draw, PNG encode + write, reports,
manifest write) in one process, as wall-clock images/s and as images per CPU-second of this
process (robust when other jobs share the cores). The breakdown times the parts alone.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from manifests.phantom import (
    PHANTOM_DESIGN,
    draw_phantom,
    encode_png,
    phantom_studies,
    study_report,
    write_phantom_dataset,
)


def bench_write(n: int, size: int, seed: int = 0) -> tuple[float, float]:
    """All-inclusive (wall images/s, images per CPU-second) of `write_phantom_dataset`."""
    with tempfile.TemporaryDirectory() as tmp:
        wall, cpu = time.perf_counter(), time.process_time()
        write_phantom_dataset(Path(tmp) / "demo", n=n, size=size, seed=seed)
        return n / (time.perf_counter() - wall), n / (time.process_time() - cpu)


def bench_parts(n: int, size: int, seed: int = 0) -> dict[str, float]:
    """CPU milliseconds per image for sampling, reports, drawing and PNG encoding."""
    out = {}
    start = time.process_time()
    studies = phantom_studies(n, seed=seed)
    out["sample"] = time.process_time() - start
    start = time.process_time()
    for i, study in enumerate(studies):
        study_report(study, np.random.default_rng(i))
    out["report"] = time.process_time() - start
    start = time.process_time()
    images = [draw_phantom(s, size) for s in studies]
    out["draw"] = time.process_time() - start
    start = time.process_time()
    for image in images:
        encode_png(image)
    out["png"] = time.process_time() - start
    return {k: 1e3 * v / n for k, v in out.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    parts = bench_parts(min(args.n, 500), args.size, args.seed)
    wall, cpu = bench_write(args.n, args.size, args.seed)
    load = os.getloadavg()[0]
    print(
        f"phantoms (design {PHANTOM_DESIGN}) {args.n} x {args.size}px: {wall:.0f} images/s wall, {cpu:.0f} images per "
        f"CPU-second (one process; draw + PNG + reports + manifest; {os.cpu_count()} CPUs, "
        f"load average {load:.1f})"
    )
    print("CPU ms per image: " + ", ".join(f"{k} {v:.2f}" for k, v in parts.items()))


if __name__ == "__main__":
    main()
