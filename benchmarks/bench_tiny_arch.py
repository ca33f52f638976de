"""What attention costs in `tiny`'s training steps: its layout against an attention-light one.

    python benchmarks/bench_tiny_arch.py [--blocks 5] [--steps 10] [--threads 2]

Two parts of the fine-tune, each timed for `tiny` as built (`augmentor.base`: SD v1's layout,
cross-attention at the UNet's two lower levels, self-attention in the autoencoder's middle
blocks) and for a lighter layout (`LIGHT_UNET`, `LIGHT_AUTOENCODER`: cross-attention at
4x4 only, no attention in the autoencoder), same widths otherwise:

* UNet step: forward, loss, backward and an AdamW step on 16 latents of 16x16x4 with
  random 77-token text states, as `finetune` trains it (batch 16, the demo's);
* autoencoder step: encode, sample, decode, L1 loss, backward and AdamW on 8 images of
  64x64, as `augmentor.autoencoder.fit_autoencoder` fits it.

The light layout is faster but was not adopted: on the demo its generator drew
pneumothoraces less often (README, Generator levers). The two layouts run in alternating
blocks of `--steps` steps (tiny, light, tiny, ...) so load from other processes hits both
alike; the figure per layout is the median block, and the ratio the median of the per-pair
ratios. Run it alone: on 2 cores a second busy process halves the figures.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from generator_fidelity import rebuilt

from augmentor.base import build_tiny_pipeline

LIGHT_UNET = {
    "down_block_types": ["DownBlock2D", "DownBlock2D", "CrossAttnDownBlock2D"],
    "up_block_types": ["CrossAttnUpBlock2D", "UpBlock2D", "UpBlock2D"],
}
LIGHT_AUTOENCODER = {"mid_block_add_attention": False}


def unet_step(unet, batch: int = 16):
    """One training step of `unet` (fused AdamW where torch has it), as a closure."""
    gen = torch.Generator().manual_seed(0)
    size, channels = unet.config.sample_size, unet.config.in_channels
    latents = torch.randn(batch, channels, size, size, generator=gen)
    states = torch.randn(batch, 77, unet.config.cross_attention_dim, generator=gen)
    t = torch.randint(0, 1000, (batch,), generator=gen)
    optimizer = torch.optim.AdamW(unet.parameters(), lr=1e-4)

    def step() -> None:
        loss = torch.nn.functional.mse_loss(unet(latents, t, states).sample, latents)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def autoencoder_step(vae, batch: int = 8, size: int = 64):
    """One fitting step of `vae` on random images, as a closure."""
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(batch, vae.config.in_channels, size, size, generator=gen) * 2 - 1
    optimizer = torch.optim.AdamW(vae.parameters(), lr=1e-3)

    def step() -> None:
        posterior = vae.encode(x).latent_dist
        loss = (vae.decode(posterior.sample(generator=gen)).sample - x).abs().mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def alternate(first, second, blocks: int, steps: int) -> tuple[float, float, float]:
    """Median seconds per step of `first` and `second` over alternating blocks, and the
    median of the per-pair ratios first / second."""
    for fn in (first, second):
        fn()
        fn()
    times: list[list[float]] = [[], []]
    for _ in range(blocks):
        for k, fn in enumerate((first, second)):
            start = time.perf_counter()
            for _ in range(steps):
                fn()
            times[k].append((time.perf_counter() - start) / steps)
    ratios = [x / y for x, y in zip(*times, strict=True)]
    return statistics.median(times[0]), statistics.median(times[1]), statistics.median(ratios)


def layouts(seed: int = 0) -> dict[str, tuple]:
    """(tiny, light) models per part, with the same seed."""
    pipe = build_tiny_pipeline(seed)
    torch.manual_seed(seed)
    unet_light = rebuilt(pipe.unet, LIGHT_UNET)
    torch.manual_seed(seed)
    vae_light = rebuilt(pipe.vae, LIGHT_AUTOENCODER)
    return {"UNet": (pipe.unet, unet_light), "autoencoder": (pipe.vae, vae_light)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--blocks", type=int, default=5)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    for part, (tiny, light) in layouts().items():
        make = unet_step if part == "UNet" else autoencoder_step
        t_tiny, t_light, ratio = alternate(make(tiny), make(light), args.blocks, args.steps)
        print(
            f"{part} training step: tiny {t_tiny * 1000:.0f} ms, light {t_light * 1000:.0f} "
            f"ms: {ratio:.2f}x ({args.blocks} alternating blocks of {args.steps} steps, "
            f"{args.threads} threads)"
        )


if __name__ == "__main__":
    main()
