"""Stage one of fine-tuning from `tiny`: fit its 1-channel autoencoder on the training images.

A real Stable Diffusion base brings a pretrained autoencoder that stays frozen. `tiny` has
none (its weights are random), so before the UNet can learn anything its latents must mean
something: 1,600 steps (by default) of reconstruction loss (L1 + MSE) with a small KL
term, as the latent diffusion paper's first stage does (without the perceptual and GAN
terms, which need pretrained networks we cannot download).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from augmentor.optim import adamw
from manifests.progress import progress


@dataclass
class AutoencoderFit:
    """Reconstruction error (mean absolute error, images in [-1, 1]) before and after."""

    error_before: float
    error_after: float
    steps: int
    scaling_factor: float
    seconds: float


@torch.no_grad()
def reconstruction_error(vae: torch.nn.Module, pixels: torch.Tensor, batch_size: int = 16) -> float:
    """Mean absolute error of decode(posterior mean) against the images."""
    vae.eval()
    total, count = 0.0, 0
    for start in range(0, len(pixels), batch_size):
        x = pixels[start : start + batch_size]
        rec = vae.decode(vae.encode(x).latent_dist.mode()).sample
        total += float((rec - x).abs().sum())
        count += x.numel()
    return total / max(count, 1)


@torch.no_grad()
def latent_scaling_factor(
    vae: torch.nn.Module, pixels: torch.Tensor, batch_size: int = 16
) -> float:
    """1 / std of the posterior means: scaled latents then have unit variance.

    Stable Diffusion's 0.18215 was computed this way for its autoencoder; the UNet's noise
    schedule assumes latents of about unit scale.
    """
    means = [
        vae.encode(pixels[s : s + batch_size]).latent_dist.mean
        for s in range(0, len(pixels), batch_size)
    ]
    return float(1.0 / torch.cat(means).std().clamp(min=1e-6))


def fit_autoencoder(
    vae: torch.nn.Module,
    pixels: torch.Tensor,
    steps: int = 1600,
    batch_size: int = 8,
    learning_rate: float = 1e-3,
    kl_weight: float = 1e-6,
    seed: int = 0,
    log: Callable[[str], None] = print,
    show_progress: bool = True,
    bf16: bool = False,
) -> AutoencoderFit:
    """Fit `vae` in place on `pixels` ((N, C, H, W) in [-1, 1]); set its latent scaling factor.

    Prints the reconstruction error before and after, measured on up to 64 of the images.
    `bf16`: the forward pass under bfloat16 autocast (weights, optimizer and loss stay
    float32), for CPUs with bf16 instructions and GPUs.
    """
    import time

    start = time.perf_counter()
    generator = torch.Generator().manual_seed(seed)
    probe = pixels[: min(64, len(pixels))]
    before = reconstruction_error(vae, probe)
    log(f"autoencoder: reconstruction error before fitting {before:.4f} (mean |x - x'|, [-1, 1])")
    optimizer = adamw(vae.parameters(), lr=learning_rate, weight_decay=0.0)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(steps, 1))
    vae.train()
    bar = progress(range(steps), desc="fit autoencoder", disable=not show_progress, leave=False)
    for _ in bar:
        idx = torch.randint(0, len(pixels), (min(batch_size, len(pixels)),), generator=generator)
        x = pixels[idx]
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bf16):
            posterior = vae.encode(x).latent_dist
            rec = vae.decode(posterior.sample(generator=generator)).sample.float()
        kl = posterior.kl().float().mean()
        loss = F.l1_loss(rec, x) + F.mse_loss(rec, x) + kl_weight * kl
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        bar.set_postfix(loss=f"{loss.item():.4f}")
    vae.eval()
    after = reconstruction_error(vae, probe)
    scaling = latent_scaling_factor(vae, probe)
    vae.register_to_config(scaling_factor=scaling)
    log(
        f"autoencoder: reconstruction error after {steps} steps {after:.4f} "
        f"(before {before:.4f}); latent scaling factor {scaling:.4f}"
    )
    return AutoencoderFit(before, after, steps, scaling, time.perf_counter() - start)
