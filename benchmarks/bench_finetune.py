"""Fine-tuning throughput: cached autoencoder posteriors vs encoding every step.

    python benchmarks/bench_finetune.py [--n 64] [--batch-size 4] [--steps 10] [--blocks 3]
                                        [--threads 1] [--flops] [--finetune]

Both loops train the same `tiny` UNet (same initial weights, optimizer, loss, batch size)
on the same phantom images and reports, in one process:

* reference: what diffusers' `examples/text_to_image/train_text_to_image.py` does each
  step: a DataLoader reads and transforms the images, the autoencoder encodes them and
  draws `latent_dist.sample()`, the text encoder encodes the (pre-tokenised) reports.
* cached (`augmentor.finetune`): each image's posterior parameters and each report's
  embedding were computed once; a step draws a latent from the cached posterior.

The two run in alternating blocks of `--steps` steps (reference, cached, reference, ...) so
that load from other processes hits both alike. Each block is timed by the wall clock and
by this process's CPU time (`time.process_time`, which other processes' load does not
inflate; most telling with `--threads 1`); the figure per loop is the median over its
blocks, and the ratio is the median of the per-pair ratios. The one-time cost of filling
the caches is printed separately.

`--finetune` also times `augmentor.finetune.finetune` itself (the whole cxraug loop:
accelerate, caption dropout, gradient clipping, logging; text encoder trained as in the demo
preset, autoencoder stage skipped) on the same images, batch size and step count, and
right after it the plain diffusers-style loop again with the text encoder trained too
(`train_text_to_image.py --train_text_encoder`-like: encode every step, DataLoader), so the
two figures are taken back to back under the same load.

The most caching can give is 1 + encoder cost / training-step cost. `--flops` prints that
bound from FLOP counts (`torch.utils.flop_counter` on meta tensors, no weights, no
timing) for the tiny base at 64 px and for Stable Diffusion 1.5's architecture at 512 px.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
from gpu_check import VAE_CONFIG as SD_VAE_CONFIG  # the published SD 1.5 autoencoder

from augmentor.base import build_tiny_pipeline, image_channels
from augmentor.finetune import diffusion_loss
from augmentor.latents import cache_latents, preprocess_image, sample_latents
from augmentor.train_inputs import encode_prompts, tokenize_prompts
from manifests.images import load_image
from manifests.io import read_manifest, write_manifest
from manifests.phantom import write_phantom_dataset
from manifests.splits import split_by_patient


class ImageDataset(torch.utils.data.Dataset):
    """Reads and transforms an image per item, as the reference script's dataset does."""

    def __init__(self, paths, input_ids, resolution: int, channels: int) -> None:
        self.paths, self.input_ids = paths, input_ids
        self.resolution, self.channels = resolution, channels

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        pixels = preprocess_image(load_image(self.paths[i]), self.resolution, self.channels)
        return pixels, self.input_ids[i]


def endless(loader):
    while True:
        yield from loader


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=64, help="phantom images (64 px)")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--steps", type=int, default=10, help="optimizer steps per block")
    parser.add_argument("--blocks", type=int, default=3, help="blocks per loop")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--flops", action="store_true", help="also print FLOP-count bounds")
    parser.add_argument(
        "--finetune", action="store_true", help="also time augmentor.finetune.finetune itself"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    tmp = tempfile.TemporaryDirectory()
    manifest_path = write_phantom_dataset(Path(tmp.name), n=args.n, size=64, seed=0)
    # Split by patient (finetune refuses an unsplit manifest); both loops use the train rows.
    split = split_by_patient(read_manifest(manifest_path), (0.8, 0.1, 0.1), seed=0)
    write_manifest(split, manifest_path, overwrite=True)
    manifest = split.with_rows(split.rows[split.rows["split"] == "train"])
    paths, prompts = manifest.image_paths(), list(manifest.rows["report"].astype(str))

    pipe = build_tiny_pipeline(seed=0)
    vae, text_encoder, tokenizer = pipe.vae.eval(), pipe.text_encoder.eval(), pipe.tokenizer
    vae.requires_grad_(False)
    text_encoder.requires_grad_(False)
    from diffusers import DDPMScheduler

    noise_scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
    channels, resolution = image_channels(pipe), 64
    scaling = float(vae.config.scaling_factor)
    input_ids, _ = tokenize_prompts(tokenizer, prompts)

    # One-time cost of the caches (the cached loop pays it once per run).
    t = time.perf_counter()
    posteriors = cache_latents(vae, paths, resolution, channels, cache_dir=None)
    text_cache = encode_prompts(text_encoder, input_ids)
    cache_seconds = time.perf_counter() - t

    loops = {}
    for name in ("reference", "cached"):
        unet = copy.deepcopy(pipe.unet).train()
        unet.requires_grad_(True)
        loops[name] = {
            "unet": unet,
            "opt": torch.optim.AdamW(unet.parameters(), lr=1e-4, weight_decay=1e-2),
            "gen": torch.Generator().manual_seed(0),
            "rates": [],
            "cpu_rates": [],
        }
    loader = endless(
        torch.utils.data.DataLoader(
            ImageDataset(paths, input_ids, resolution, channels),
            batch_size=args.batch_size,
            shuffle=True,
            num_workers=0,
            generator=torch.Generator().manual_seed(0),
        )
    )
    order = torch.Generator().manual_seed(0)

    def reference_step(loop) -> None:
        pixels, ids = next(loader)
        with torch.no_grad():
            latents = vae.encode(pixels).latent_dist.sample(generator=loop["gen"]) * scaling
            hidden = text_encoder(ids, return_dict=False)[0]
        train_step(loop, latents, hidden)

    def cached_step(loop) -> None:
        idx = torch.randint(0, len(paths), (args.batch_size,), generator=order)
        latents = sample_latents(posteriors[idx], scaling, loop["gen"])
        train_step(loop, latents, text_cache[idx])

    def train_step(loop, latents, hidden) -> None:
        loss = diffusion_loss(loop["unet"], noise_scheduler, latents, hidden, loop["gen"])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(loop["unet"].parameters(), 1.0)
        loop["opt"].step()
        loop["opt"].zero_grad(set_to_none=True)

    steps = {"reference": reference_step, "cached": cached_step}
    for name, step in steps.items():  # warm-up, untimed
        step(loops[name])
    for _ in range(args.blocks):
        for name, step in steps.items():
            start, cpu = time.perf_counter(), time.process_time()
            for _ in range(args.steps):
                step(loops[name])
            images = args.steps * args.batch_size
            loops[name]["rates"].append(images / (time.perf_counter() - start))
            loops[name]["cpu_rates"].append(images / (time.process_time() - cpu))

    # Where a reference step's time goes (one batch, timed alone).
    pixels, ids = next(loader)
    parts = {}
    with torch.no_grad():
        for label, fn in (
            ("read+transform", lambda: next(loader)),
            ("autoencoder encode", lambda: vae.encode(pixels).latent_dist.sample()),
            ("text encoder", lambda: text_encoder(ids)[0]),
        ):
            t = time.perf_counter()
            for _ in range(5):
                fn()
            parts[label] = (time.perf_counter() - t) / 5 * 1000

    print(
        f"tiny base, {args.n} phantom images at 64 px, batch {args.batch_size}, "
        f"{args.threads} thread(s), {args.blocks} alternating blocks of {args.steps} steps"
    )
    for key, unit in (("rates", "images/s (wall)"), ("cpu_rates", "images per CPU-second")):
        ref, cached = loops["reference"][key], loops["cached"][key]
        pairs = [c / r for c, r in zip(cached, ref, strict=True)]
        print(f"{unit}:")
        print(f"  reference (encode every step): {statistics.median(ref):7.2f}  blocks {_fmt(ref)}")
        print(
            f"  cached posteriors + text:      {statistics.median(cached):7.2f}  blocks {_fmt(cached)}"
        )
        print(
            f"  ratio cached / reference: {statistics.median(pairs):.2f}x (per pair {_fmt(pairs)})"
        )
    step_ms = args.batch_size / statistics.median(loops["cached"]["rates"]) * 1000
    print(
        f"per batch of {args.batch_size}: cached step {step_ms:.0f} ms (wall); the reference adds "
        + ", ".join(f"{k} {v:.0f} ms" for k, v in parts.items())
    )
    print(f"one-time cache fill for {args.n} images: {cache_seconds:.2f} s")
    if args.finetune:
        compare_finetune(manifest_path, pipe, args, loader, noise_scheduler)
    tmp.cleanup()
    if args.flops:
        flop_bounds()


def compare_finetune(manifest_path: Path, pipe, args, loader, noise_scheduler) -> None:
    """cxraug's finetune() against a plain loop that trains UNet + text encoder, back to back."""
    from augmentor.config import FinetuneConfig
    from augmentor.finetune import finetune

    steps = args.steps * args.blocks
    start = time.perf_counter()
    out = finetune(
        FinetuneConfig(
            manifest=str(manifest_path),
            base="tiny",
            out=str(manifest_path.parent / "generator"),
            train_text_encoder=True,
            batch_size=args.batch_size,
            max_steps=steps,
            autoencoder_steps=0,
            checkpointing_steps=steps,
            cache_latents_on_disk=False,
            show_progress=False,
        ),
        log=lambda _t: None,
    )
    record = json.loads((out / "cxraug.json").read_text())
    cxraug_wall = time.perf_counter() - start

    unet, text_encoder = copy.deepcopy(pipe.unet).train(), copy.deepcopy(pipe.text_encoder)
    unet.requires_grad_(True)
    text_encoder.train().requires_grad_(True)
    params = [*unet.parameters(), *text_encoder.parameters()]
    optimizer = torch.optim.AdamW(params, lr=5e-4, weight_decay=1e-2)
    generator = torch.Generator().manual_seed(0)
    vae, scaling = pipe.vae, float(pipe.vae.config.scaling_factor)
    start = time.perf_counter()
    for _ in range(steps):
        pixels, ids = next(loader)
        with torch.no_grad():
            latents = vae.encode(pixels).latent_dist.sample(generator=generator) * scaling
        hidden = text_encoder(ids, return_dict=False)[0]
        loss = diffusion_loss(unet, noise_scheduler, latents, hidden, generator)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    plain = steps * args.batch_size / (time.perf_counter() - start)
    ours = record["images_per_second"]
    print(
        f"UNet + text encoder trained, {steps} steps of {args.batch_size}, back to back:\n"
        f"  cxraug finetune(): {ours:7.2f} images/s in its loop "
        f"({cxraug_wall:.1f} s wall for the whole call: load, cache, loop, export)\n"
        f"  plain diffusers-style loop (encode every step): {plain:7.2f} images/s\n"
        f"  ratio cxraug / plain: {ours / plain:.2f}x"
    )


def flop_bounds() -> None:
    """Encoder and UNet training-step FLOPs (batch 1) and the speed-up bound they imply."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from torch.utils.flop_counter import FlopCounterMode

    def count(unet, vae, res: int, latent: int, context: int) -> tuple[float, float]:
        with FlopCounterMode(display=False) as f:
            vae.encode(torch.randn(1, vae.config.in_channels, res, res, device="meta"))
        encoder = f.get_total_flops()
        with FlopCounterMode(display=False) as f:
            out = unet(
                torch.randn(1, 4, latent, latent, device="meta"),
                torch.tensor([10], device="meta"),
                torch.randn(1, 77, context, device="meta"),
            ).sample
            out.sum().backward()
        return encoder, f.get_total_flops()

    tiny = build_tiny_pipeline(seed=0)
    with torch.device("meta"):
        sd_unet = UNet2DConditionModel(sample_size=64, cross_attention_dim=768)  # SD 1.5 config
        sd_vae = AutoencoderKL(**{**SD_VAE_CONFIG, "sample_size": 512})
    for name, (enc, step) in (
        ("tiny, 64 px", count(tiny.unet.to("meta"), tiny.vae.to("meta"), 64, 16, 64)),
        ("SD 1.5 architecture, 512 px", count(sd_unet, sd_vae, 512, 64, 768)),
    ):
        print(
            f"FLOPs {name}: encoder {enc / 1e9:.2f} G, UNet forward+backward {step / 1e9:.2f} G; "
            f"caching bound {(enc + step) / step:.2f}x"
        )


def _fmt(values: list[float]) -> str:
    return "[" + ", ".join(f"{v:.2f}" for v in values) + "]"


if __name__ == "__main__":
    main()
