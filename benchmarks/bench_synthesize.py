"""Synthesis speed and memory: batched vs one-image-per-call images/s; peak RSS at 200 vs 2,000.

    python benchmarks/bench_synthesize.py [--rows 32] [--batch-size 16] [--steps 4]
        [--repeats 3] [--threads 0] [--sizes 200,2000] [--memory-steps 1] [--memory-batch-size 32]
        [--model GEN --prompts M] [--skip-throughput]

At the limit of one machine: `--model runs/demo/generator --prompts
runs/demo/data/manifest.parquet --sizes 2000,20000 --skip-throughput` runs the demo
generator end to end at 2,000 and 20,000 images and compares peak RSS and images/s.

Throughput: the same `tiny` generator, rows (phantom train reports, one seed each), steps
and guidance, generated through `generate_images` once with `--batch-size` rows per call
and once with one row per call, in this one process (a warm-up call first). Images/s
counts pipeline calls only (text encoding, denoising, decoding, grayscale conversion).
On a CPU the tiny UNet's convolutions and attention already saturate a core at one image
per call, so batching only amortises per-call overhead there; the larger gains batching is
known for come from accelerators left idle by one-image calls.

Memory: `synthesize` end to end (plan, PNGs, shards, merge) in a fresh subprocess per
size; each child reports its own peak RSS (`ru_maxrss`), so the figures are comparable.
Flat memory means the 2,000-image peak is about the 200-image one.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from augmentor.base import build_tiny_pipeline  # noqa: E402
from augmentor.config import SynthesisConfig  # noqa: E402
from augmentor.prompts import balanced_prompts  # noqa: E402
from augmentor.synthesize import generate_images, synthesize  # noqa: E402
from manifests.io import read_manifest, write_manifest  # noqa: E402
from manifests.phantom import write_phantom_dataset  # noqa: E402
from manifests.splits import split_by_patient  # noqa: E402


def setup(folder: Path) -> tuple[Path, Path]:
    """Phantom report manifest (prompts) and a saved tiny generator directory."""
    prompts = write_phantom_dataset(folder / "phantom", n=120, size=64, seed=0)
    # Prompts come from a manifest split by patient (synthesize refuses an unsplit one).
    split = split_by_patient(read_manifest(prompts), (0.8, 0.1, 0.1), seed=0)
    write_manifest(split, prompts, overwrite=True)
    model = folder / "generator"
    build_tiny_pipeline(seed=0).save_pretrained(model, safe_serialization=True)
    return prompts, model


def bench_throughput(
    prompts: Path, model: Path, rows: int, batch: int, steps: int, repeats: int
) -> dict:
    """Median images/s of one-row calls and of `batch`-row calls, rounds interleaved so that
    load from other processes on a shared machine hits both alike."""
    from augmentor.base import load_pipeline

    pipe = load_pipeline(model)
    pipe.set_progress_bar_config(disable=True)
    plan = balanced_prompts(
        read_manifest(prompts), {"Pleural Effusion": rows // 2}, negatives=rows - rows // 2, seed=0
    )
    texts, seeds = plan["prompt"].tolist(), plan["seed"].tolist()
    generate_images(pipe, texts[:batch], seeds[:batch], steps, 4.0)  # warm-up

    def run(per_call: int) -> float:
        start = time.perf_counter()
        for i in range(0, rows, per_call):
            generate_images(pipe, texts[i : i + per_call], seeds[i : i + per_call], steps, 4.0)
        return rows / (time.perf_counter() - start)

    single, batched = [], []
    for _ in range(repeats):
        single.append(run(1))
        batched.append(run(batch))
        print(
            f"  round: one per call {single[-1]:.2f} img/s, batched {batched[-1]:.2f} img/s",
            flush=True,
        )
    s, b = statistics.median(single), statistics.median(batched)
    return {"single": s, "batched": b, "ratio": b / s}


def child(prompts: str, model: str, out: str, n: int, steps: int, batch: int, threads: int) -> None:
    """Run one synthesis and print its peak RSS (MiB) as JSON."""
    if threads:
        torch.set_num_threads(threads)
    start = time.perf_counter()
    synthesize(
        SynthesisConfig(
            model=model,
            prompts_from=prompts,
            out=out,
            labels=f"pneumothorax:{n // 2},pleural_effusion:{n - n // 2}",
            num_inference_steps=steps,
            batch_size=batch,
        )
    )
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    print(json.dumps({"n": n, "seconds": time.perf_counter() - start, "peak_rss_mib": peak_mib}))


def bench_memory(
    prompts: Path, model: Path, folder: Path, n: int, steps: int, batch: int, threads: int
) -> dict:
    args = [sys.executable, __file__, "--child", str(prompts), str(model), str(folder / f"out{n}")]
    args += [str(n), str(steps), str(batch), str(threads)]
    done = subprocess.run(args, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        prompts, model, out, n, steps, batch, threads = sys.argv[2:9]
        child(prompts, model, out, int(n), int(steps), int(batch), int(threads))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--sizes", default="200,2000")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--memory-steps", type=int, default=1)
    parser.add_argument("--memory-batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--model", type=Path, help="a generator folder (default: a fresh tiny)")
    parser.add_argument("--prompts", type=Path, help="its split prompt manifest (with --model)")
    parser.add_argument("--skip-throughput", action="store_true", help="memory runs only")
    args = parser.parse_args()
    if (args.model is None) != (args.prompts is None):
        parser.error("--model and --prompts go together")

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        prompts, model = (args.prompts, args.model) if args.model else setup(folder)
        if args.threads:
            torch.set_num_threads(args.threads)
        load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
        print(f"torch threads: {torch.get_num_threads()}; load average {load}", flush=True)
        if not args.skip_throughput:
            t = bench_throughput(
                prompts, model, args.rows, args.batch_size, args.steps, args.repeats
            )
            print(
                f"throughput ({args.rows} rows, {args.steps} PNDM steps, guidance 4, 64 px): "
                f"one image per call {t['single']:.2f} img/s, batch {args.batch_size} "
                f"{t['batched']:.2f} img/s -> {t['ratio']:.2f}x "
                f"(target 3x; medians of {args.repeats})",
                flush=True,
            )
        peaks, rates = [], []
        for n in (int(s) for s in args.sizes.split(",")):
            m = bench_memory(
                prompts, model, folder, n, args.memory_steps, args.memory_batch_size, args.threads
            )
            peaks.append(m["peak_rss_mib"])
            rates.append(n / m["seconds"])
            print(
                f"memory: {n} images ({args.memory_steps} step(s), batch {args.memory_batch_size}) "
                f"peak RSS {m['peak_rss_mib']:.0f} MiB in {m['seconds']:.1f} s "
                f"({rates[-1]:.1f} images/s end to end)",
                flush=True,
            )
        print(f"peak RSS ratio largest/smallest: {peaks[-1] / peaks[0]:.3f} (flat ~ 1)")
        print(f"images/s ratio largest/smallest: {rates[-1] / rates[0]:.3f} (target >= 0.95)")


if __name__ == "__main__":
    main()
