"""Manifest throughput: validate and write a 1,000,000-row manifest; phantom images/s.

    python benchmarks/bench_manifests.py [--rows 1000000] [--phantoms 400] [--size 128]

Rows are generated (14 CheXpert labels, report text, realistic column types); the phantom
figure is all-inclusive (draw + PNG encode + manifest write) through `write_phantom_dataset`.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from manifests.io import Manifest, read_manifest, write_manifest
from manifests.schema import CHEXPERT_LABELS, validate_frame


def generated_rows(n: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    patients = rng.integers(0, n // 3 + 1, size=n)
    ids = np.char.add("p", patients.astype(str))
    rows = pd.DataFrame(
        {
            "image_path": np.char.add(
                np.char.add("files/", ids), np.char.add("/img", np.arange(n).astype(str))
            ),
            "source": "real",
            "dataset": "bench",
            "patient_id": ids,
            "study_id": np.char.add(ids, "-s1"),
            "split": rng.choice(np.array(["train", "val", "test"]), size=n, p=[0.8, 0.1, 0.1]),
            "view": rng.choice(np.array(["PA", "AP"]), size=n),
            "sex": rng.choice(np.array(["M", "F"]), size=n),
            "age": rng.integers(18, 95, size=n).astype(np.float64),
            "report": rng.choice(
                np.array(
                    [
                        "No acute cardiopulmonary process.",
                        "Small left pleural effusion.",
                        "Right pneumothorax.",
                    ]
                ),
                size=n,
            ),
        }
    )
    values = np.array([1.0, 0.0, -1.0, np.nan], dtype=np.float32)
    for label in CHEXPERT_LABELS:
        rows[label] = rng.choice(values, size=n)
    return rows


def bench_manifest(n: int) -> dict[str, float]:
    rows = generated_rows(n)
    start = time.perf_counter()
    validate_frame(rows, CHEXPERT_LABELS, where="bench")
    validate_s = time.perf_counter() - start
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "m.parquet"
        start = time.perf_counter()
        write_manifest(Manifest(rows=rows, labels=CHEXPERT_LABELS, root=Path(tmp)), path)
        write_s = time.perf_counter() - start  # includes a second validation
        start = time.perf_counter()
        back = read_manifest(path)
        read_s = time.perf_counter() - start
        assert len(back) == n
        size_mb = path.stat().st_size / 1e6
    return {"validate_s": validate_s, "write_s": write_s, "read_s": read_s, "size_mb": size_mb}


def bench_phantoms(n: int, size: int) -> float:
    from manifests.phantom import write_phantom_dataset

    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        write_phantom_dataset(Path(tmp) / "demo", n=n, size=size, seed=0)
        return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--phantoms", type=int, default=400)
    parser.add_argument("--size", type=int, default=128)
    args = parser.parse_args()
    m = bench_manifest(args.rows)
    print(
        f"manifest {args.rows:,} rows: validate {m['validate_s']:.2f} s "
        f"({args.rows / m['validate_s'] / 1e6:.2f} M rows/s), validate+write {m['write_s']:.2f} s, "
        f"read+validate {m['read_s']:.2f} s, file {m['size_mb']:.1f} MB"
    )
    if args.phantoms:
        rate = bench_phantoms(args.phantoms, args.size)
        print(
            f"phantoms {args.phantoms} x {args.size}px: {rate:.0f} images/s (draw + PNG + manifest)"
        )


if __name__ == "__main__":
    main()
