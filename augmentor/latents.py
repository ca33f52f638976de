"""Training images as autoencoder posteriors, computed once and sampled every step.

Why cache the posterior and not a latent: diffusers' `train_text_to_image.py` encodes every
batch with the autoencoder and draws `latent_dist.sample()`, so each epoch sees a fresh
draw from the posterior N(mean, exp(logvar)) — a small augmentation that RoentGen's recipe
had. Keeping the posterior parameters (what `DiagonalGaussianDistribution` is built from)
keeps that draw while the encoder runs once per image instead of once per step.

The cache lives in memory and, optionally, on disk as one safetensors file per image in
``<cache_dir>/posterior-<vae digest>-<resolution>px/<image sha256>.safetensors``: a changed
autoencoder or resolution never reads stale entries.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from manifests.files import file_sha256
from manifests.images import load_image

try:  # diffusers >= 0.25
    from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution
except ImportError:  # pragma: no cover - older layout
    from diffusers.models.vae import DiagonalGaussianDistribution

POSTERIOR_KEY = "posterior"


def preprocess_image(image: np.ndarray, resolution: int, channels: int) -> torch.Tensor:
    """A 2-D uint8 image as the autoencoder's input: (channels, res, res) in [-1, 1].

    Resize the short side to `resolution` and centre-crop (as diffusers' training scripts
    do; no flip: laterality matters on a chest X-ray). A grayscale image feeds an RGB
    autoencoder by repeating its one channel.
    """
    img = Image.fromarray(np.asarray(image, dtype=np.uint8), mode="L")
    w, h = img.size
    scale = resolution / min(w, h)
    if (w, h) != (resolution, resolution):
        size = (max(resolution, round(w * scale)), max(resolution, round(h * scale)))
        img = img.resize(size, Image.Resampling.BILINEAR)
        left, top = (img.size[0] - resolution) // 2, (img.size[1] - resolution) // 2
        img = img.crop((left, top, left + resolution, top + resolution))
    x = torch.from_numpy(np.asarray(img, dtype=np.float32) / 127.5 - 1.0)
    return x.unsqueeze(0).repeat(channels, 1, 1)


def load_pixels(paths: Sequence[Path], resolution: int, channels: int) -> torch.Tensor:
    """Images from disk as one (N, channels, res, res) tensor in [-1, 1]."""
    return torch.stack([preprocess_image(load_image(p), resolution, channels) for p in paths])


def vae_digest(vae: torch.nn.Module) -> str:
    """A short digest of an autoencoder's weights and config (keys the disk cache)."""
    digest = hashlib.sha256()
    config = getattr(vae, "config", {})
    digest.update(repr(sorted(dict(config).items())).encode())
    for name, tensor in sorted(vae.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


@torch.no_grad()
def encode_posterior(vae: torch.nn.Module, pixels: torch.Tensor) -> torch.Tensor:
    """The autoencoder posterior parameters (mean and log-variance, stacked on dim 1)."""
    param = next(vae.parameters())
    dist = vae.encode(pixels.to(param.device, param.dtype)).latent_dist
    return dist.parameters.float()


def posterior_cache_dir(cache_dir: Path, digest: str, resolution: int) -> Path:
    return Path(cache_dir) / f"posterior-{digest}-{resolution}px"


def cache_latents(
    vae: torch.nn.Module,
    paths: Sequence[Path],
    resolution: int,
    channels: int,
    cache_dir: Path | None = None,
    batch_size: int = 16,
    shas: Sequence[str | None] | None = None,
    only: Sequence[int] | None = None,
    progress: Callable[[int], None] | None = None,
) -> torch.Tensor | None:
    """Encode each image once; return the (N, 2 * latent_channels, h, w) posterior parameters.

    With `cache_dir`, entries found on disk are read instead of encoded and new ones are
    written (atomically), so a resumed or repeated run encodes nothing. `only` restricts the
    work to some rows (one process's share under `accelerate launch`); it then only fills
    the disk cache and returns None. `shas` (e.g. the manifest's `image_sha256`) saves
    hashing files; missing ones are computed.
    """
    vae_key = vae_digest(vae) if cache_dir is not None else ""
    folder = posterior_cache_dir(cache_dir, vae_key, resolution) if cache_dir else None
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
    rows = list(range(len(paths))) if only is None else list(only)
    results: dict[int, torch.Tensor] = {}
    todo: list[int] = []
    keys: dict[int, Path] = {}
    for i in rows:
        if folder is not None:
            sha = (shas[i] if shas is not None else None) or file_sha256(paths[i])
            keys[i] = folder / f"{sha}.safetensors"
            if keys[i].is_file():
                results[i] = load_file(keys[i])[POSTERIOR_KEY]
                if progress:
                    progress(1)
                continue
        todo.append(i)
    for start in range(0, len(todo), batch_size):
        chunk = todo[start : start + batch_size]
        params = encode_posterior(vae, load_pixels([paths[i] for i in chunk], resolution, channels))
        for i, p in zip(chunk, params.cpu(), strict=True):
            results[i] = p.contiguous()
            if folder is not None:
                _save_entry(results[i], keys[i])
        if progress:
            progress(len(chunk))
    if only is not None:
        return None
    return torch.stack([results[i] for i in range(len(paths))])


def _save_entry(tensor: torch.Tensor, path: Path) -> None:
    # Written beside the target and renamed: a killed run never leaves a torn entry.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    save_file({POSTERIOR_KEY: tensor}, str(tmp))
    os.replace(tmp, path)


def sample_latents(
    posterior: torch.Tensor, scaling_factor: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """A fresh draw from cached posterior parameters, scaled as the UNet expects."""
    return DiagonalGaussianDistribution(posterior).sample(generator=generator) * scaling_factor
