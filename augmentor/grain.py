"""Film grain: measured on the training images, put back on the generator's output.

A latent autoencoder reconstructs structure, not per-pixel noise: its decoder returns the
mean image, so every synthetic radiograph comes out grain-free. Video codecs meet the same
loss and answer it with film grain synthesis (AV1: estimate the grain on the source, code
only its parameters, add fresh grain after decoding). cxraug does the same for `tiny`:

* `fit_grain`: for each intensity band of the autoencoder's reconstruction, the standard
  deviation of the *white* part of the residual (image - reconstruction). Grain differs
  from pixel to pixel; structure the decoder blurs away (an edge, a vessel) changes little
  between neighbours except at a few edge pixels, so a robust spread of neighbour
  differences (median absolute difference) measures the grain alone.
* `add_grain`: fresh Gaussian grain with that intensity-dependent standard deviation, drawn
  from each image's own seed (an image never depends on its batch mates).

The model is a few numbers in the generator's `cxraug.json`; plain diffusers loading the
same folder gives the grain-free images.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch

BANDS = 16
GRAIN_STREAM = 0x6772  # the grain's seed stream, apart from the sampler's
METHOD = "median absolute neighbour difference of the residual, per intensity band"


@dataclass(frozen=True)
class GrainModel:
    """Standard deviation of the grain (images in [0, 1]) per band of intensity [k/B, (k+1)/B)."""

    std: tuple[float, ...]
    n_images: int
    method: str = METHOD

    def to_dict(self) -> dict:
        return {**asdict(self), "std": list(self.std)}

    @classmethod
    def from_dict(cls, record: dict) -> GrainModel:
        return cls(
            tuple(float(s) for s in record["std"]), int(record["n_images"]), record["method"]
        )


def _bands(images: np.ndarray, bands: int) -> np.ndarray:
    return np.clip((images * bands).astype(np.intp), 0, bands - 1)


def fit_grain(images: np.ndarray, reconstructions: np.ndarray, bands: int = BANDS) -> GrainModel:
    """The grain of `images` ((N, H, W) in [0, 1]) that `reconstructions` lack.

    Per band of reconstruction intensity, a robust noise estimate from the residual's
    neighbour differences: d = r(x) - r(x + 1) has variance 2 sigma^2 plus whatever the
    smooth part of the residual changes by. That smooth part is large only at the few
    pixels on a blurred edge, so the median absolute difference ignores it:
    sigma = 1.4826 * median(|d|) / sqrt(2). Bands with too few pixels take the nearest
    measured band's value.
    """
    if images.shape != reconstructions.shape or images.ndim != 3:
        raise ValueError(
            f"need two (N, H, W) arrays of one shape: {images.shape}, {reconstructions.shape}"
        )
    r = (images - reconstructions).astype(np.float32)
    where = reconstructions[:, :-1, :-1]
    diffs = np.concatenate(
        [
            np.abs(r[:, :-1, :-1] - r[:, :-1, 1:]).ravel(),
            np.abs(r[:, :-1, :-1] - r[:, 1:, :-1]).ravel(),
        ]
    )
    band = np.tile(_bands(where, bands).ravel(), 2)
    std = np.zeros(bands)
    measured = []
    for k in range(bands):
        values = diffs[band == k]
        if len(values) >= 64:
            std[k] = 1.4826 * float(np.median(values)) / np.sqrt(2.0)
            measured.append(k)
    if not measured:
        return GrainModel(tuple([0.0] * bands), len(images))
    std = np.interp(np.arange(bands), measured, std[measured])
    return GrainModel(tuple(float(s) for s in std), len(images))


def add_grain(images: np.ndarray, model: GrainModel, seeds: list[int]) -> np.ndarray:
    """`images` ((B, H, W) floats in [0, 1]) with fresh grain, row b drawn from `seeds[b]`."""
    std = np.asarray(model.std, dtype=np.float32)[_bands(images, len(model.std))]
    noise = np.stack(
        [
            np.random.default_rng([int(s), GRAIN_STREAM]).standard_normal(images.shape[1:])
            for s in seeds
        ]
    ).astype(np.float32)
    return np.clip(images + std * noise, 0.0, 1.0)


@torch.no_grad()
def reconstruct(vae, pixels: torch.Tensor, batch_size: int = 32) -> torch.Tensor:
    """decode(posterior mean) of `pixels` ((N, C, H, W) in [-1, 1]), clamped to [-1, 1]."""
    out = []
    for start in range(0, len(pixels), batch_size):
        x = pixels[start : start + batch_size].to(vae.device, vae.dtype)
        out.append(vae.decode(vae.encode(x).latent_dist.mode()).sample.float().cpu())
    return torch.cat(out).clamp(-1, 1)


def gray01(pixels: torch.Tensor) -> np.ndarray:
    """(N, C, H, W) in [-1, 1] -> (N, H, W) in [0, 1] (channel mean)."""
    return ((pixels.float().mean(dim=1) + 1) / 2).numpy()


def fit_autoencoder_grain(vae, pixels: torch.Tensor) -> GrainModel:
    """The grain the autoencoder `vae` loses on `pixels` ((N, C, H, W) in [-1, 1])."""
    return fit_grain(gray01(pixels), gray01(reconstruct(vae, pixels)))
