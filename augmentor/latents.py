"""Training images as autoencoder posteriors, computed once and sampled every step.

Why cache the posterior and not a latent: diffusers' `train_text_to_image.py` encodes every
batch with the autoencoder and draws `latent_dist.sample()`, so each epoch sees a fresh
draw from the posterior N(mean, exp(logvar)) — a small augmentation that RoentGen's recipe
had. Keeping the posterior parameters (what `DiagonalGaussianDistribution` is built from)
keeps that draw while the encoder runs once per image instead of once per step.

The cache lives in memory and, optionally, on disk as one safetensors file per image in
``<cache_dir>/posterior-<vae digest>-<resolution>px/<image sha256>.safetensors``: a changed
autoencoder or resolution never reads stale entries. Images are encoded in fixed chunks of
rows, so a fill that was killed and resumed, or shared by several processes, writes the same
bytes as one uninterrupted fill (`cache_latents`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from manifests.files import atomic_path, file_sha256
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
    share: tuple[int, int] | None = None,
    progress: Callable[[int], None] | None = None,
) -> torch.Tensor | None:
    """Encode each image once; return the (N, 2 * latent_channels, h, w) posterior parameters.

    Images are encoded in fixed chunks keyed by row: chunk k is rows [k * batch_size,
    (k + 1) * batch_size), always encoded whole, whatever is already cached. Why: an
    encoder's output for an image moves in the last float bits with the other images in its
    batch, so encoding only the missing rows of a fill a kill interrupted would give other
    bytes than an uninterrupted fill. Fixed chunks make every entry the same however the
    fill was interrupted and however many processes shared it.

    With `cache_dir`, a chunk whose entries are all on disk is read instead of encoded and
    new entries are written (atomically), so a resumed or repeated run encodes nothing it
    finished. Rows with the same image (`shas`) share one entry, the encoding of the first
    such row. `share=(rank, world)` encodes only chunks k with k % world == rank (one
    process's share under `accelerate launch`) into the disk cache and returns None. `shas`
    (e.g. the manifest's `image_sha256`) saves hashing files; missing ones are computed.
    """
    n = len(paths)
    folder = None
    keys: list[Path] = []
    if cache_dir is not None:
        folder = posterior_cache_dir(cache_dir, vae_digest(vae), resolution)
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            sha = (shas[i] if shas is not None else None) or file_sha256(paths[i])
            keys.append(folder / f"{sha}.safetensors")
    first = {}  # entry -> the first row with that image: the row whose encoding it holds
    for i, key in enumerate(keys):
        first.setdefault(key, i)
    rank, world = share if share is not None else (0, 1)
    results: dict[int, torch.Tensor] = {}
    for k in range(rank, -(-n // batch_size), world):
        chunk = range(k * batch_size, min(n, (k + 1) * batch_size))
        owned = [i for i in chunk if folder is not None and first[keys[i]] == i]
        if folder is not None and all(keys[i].is_file() for i in owned):
            if share is None:
                results.update({i: load_file(keys[i])[POSTERIOR_KEY] for i in owned})
        else:
            pixels = load_pixels([paths[i] for i in chunk], resolution, channels)
            params = encode_posterior(vae, pixels).cpu()
            for i, p in zip(chunk, params, strict=True):
                results[i] = p.contiguous()
            for i in owned:
                if not keys[i].is_file():  # one a killed fill wrote holds these same bytes
                    _save_entry(results[i], keys[i])
        if progress:
            progress(len(chunk))
    if share is not None:
        return None
    if folder is not None:
        return torch.stack([results[first[keys[i]]] for i in range(n)])
    return torch.stack([results[i] for i in range(n)])


def _save_entry(tensor: torch.Tensor, path: Path) -> None:
    # Written beside the target and renamed: a killed run never leaves a torn entry.
    with atomic_path(path, overwrite=True) as tmp:
        save_file({POSTERIOR_KEY: tensor}, str(tmp))


def sample_latents(
    posterior: torch.Tensor, scaling_factor: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """A fresh draw from cached posterior parameters, scaled as the UNet expects."""
    return DiagonalGaussianDistribution(posterior).sample(generator=generator) * scaling_factor
