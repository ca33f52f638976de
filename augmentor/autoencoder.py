"""Fitting `tiny`'s 1-channel autoencoder: the shipped pretrained one, or one per run.

A real Stable Diffusion base brings a pretrained autoencoder that stays frozen; so does
`tiny` (`augmentor.base`, fitted once by `benchmarks/fit_tiny_autoencoder.py`). With
`finetune --fit-autoencoder` a run instead fits `tiny`'s from its random initialisation on
its own train images. Either way the fit is reconstruction loss (L1 + MSE) with a small KL
term, as the latent diffusion paper's first stage (without the perceptual and GAN terms,
which need pretrained networks we cannot download). A fit can checkpoint every K steps and
resume from its last checkpoint bit-identically (`checkpoint_dir`).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from augmentor.optim import adamw
from classifier.training.state import load_train_state, save_train_state
from manifests.files import fault_point, scratch_dir
from manifests.progress import progress, say_to


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
    log: Callable[[str], None] | None = None,
    show_progress: bool = True,
    bf16: bool = False,
    checkpoint_dir: Path | None = None,
    checkpoint_every: int = 200,
) -> AutoencoderFit:
    """Fit `vae` in place on `pixels` ((N, C, H, W) in [-1, 1]); set its latent scaling factor.

    Prints the reconstruction error before and after, measured on up to 64 of the images.
    `bf16`: the forward pass under bfloat16 autocast (weights, optimizer and loss stay
    float32), for CPUs with bf16 instructions and GPUs. `checkpoint_dir`: every
    `checkpoint_every` steps the fit's whole state (weights, optimizer, schedule, random
    states; no pickles) replaces the one there, and a fit that finds one continues from it
    to the same weights an uninterrupted fit reaches. The caller removes it when done.
    """
    import time

    log = say_to(log)
    start = time.perf_counter()
    generator = torch.Generator().manual_seed(seed)
    probe = pixels[: min(64, len(pixels))]
    optimizer = adamw(vae.parameters(), lr=learning_rate, weight_decay=0.0)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(steps, 1))
    state = {"models": {"vae": vae}, "optimizer": optimizer, "scheduler": scheduler}
    gens = {"fit": generator}
    done = 0
    saved = _saved_fit_state(Path(checkpoint_dir)) if checkpoint_dir is not None else None
    if saved is not None:
        record = load_train_state(saved, **state, generators=gens)
        done, before = int(record["step"]), float(record["error_before"])
        log(f"autoencoder: resuming the fit at step {done}/{steps} from {checkpoint_dir}")
    else:
        before = reconstruction_error(vae, probe)
    log(f"autoencoder: reconstruction error before fitting {before:.4f} (mean |x - x'|, [-1, 1])")
    vae.train()
    bar = progress(
        range(done, steps), desc="fit autoencoder", disable=not show_progress, leave=False
    )
    for step in bar:
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
        if checkpoint_dir is not None and (step + 1) % checkpoint_every == 0 and step + 1 < steps:
            _save_fit_state(Path(checkpoint_dir), state, gens, step + 1, before)
    vae.eval()
    after = reconstruction_error(vae, probe)
    scaling = latent_scaling_factor(vae, probe)
    vae.register_to_config(scaling_factor=scaling)
    log(
        f"autoencoder: reconstruction error after {steps} steps {after:.4f} "
        f"(before {before:.4f}); latent scaling factor {scaling:.4f}"
    )
    return AutoencoderFit(before, after, steps, scaling, time.perf_counter() - start)


def _saved_fit_state(folder: Path) -> Path | None:
    """The fit checkpoint to resume from: `folder`, or its previous copy if a kill fell
    between the two renames of `_save_fit_state`; None if there is none."""
    for candidate in (folder, folder.with_name(folder.name + ".old")):
        if (candidate / "vae.safetensors").is_file():
            return candidate
    return None


def _save_fit_state(folder: Path, state: dict, gens: dict, step: int, before: float) -> None:
    """Replace the fit checkpoint in `folder` with the state after `step` steps, atomically."""
    tmp = scratch_dir(folder)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_train_state(tmp, **state, trainer={"step": step, "error_before": before}, generators=gens)
    old = folder.with_name(folder.name + ".old")
    if folder.exists():
        folder.rename(old)
    fault_point()
    tmp.rename(folder)
    shutil.rmtree(old, ignore_errors=True)
