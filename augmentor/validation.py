"""Validation grids while fine-tuning: one image per validation prompt, a fixed seed.

Written into the generator folder's `validation/` (`augmentor.generator.write_validation_grid`)
every `--validation-steps`, so a user can watch what the prompts draw as training goes.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from augmentor import generator
from augmentor.config import FinetuneConfig


def _grid(images: np.ndarray, columns: int = 4) -> np.ndarray:
    """(N, H, W[, C]) floats in [0, 1] as one grayscale uint8 grid."""
    if images.ndim == 4:
        images = images.mean(axis=-1)
    n, h, w = images.shape
    cols = min(columns, n)
    rows = math.ceil(n / cols)
    grid = np.zeros((rows * h, cols * w), dtype=np.float32)
    for i, img in enumerate(images):
        r, c = divmod(i, cols)
        grid[r * h : (r + 1) * h, c * w : (c + 1) * w] = img
    return (np.clip(grid, 0, 1) * 255).round().astype(np.uint8)


def run_validation(pipe, cfg: FinetuneConfig, resolution: int, step: int, out: Path) -> Path:
    """One image per validation prompt (fixed seed) as a PNG grid in DIR/validation/."""
    pipe.set_progress_bar_config(disable=True)
    rng = torch.Generator(device="cpu").manual_seed(cfg.seed)
    images = pipe(
        list(cfg.validation_prompts),
        height=resolution,
        width=resolution,
        num_inference_steps=cfg.validation_inference_steps,
        guidance_scale=cfg.validation_guidance_scale,
        generator=rng,
        output_type="np",
    ).images
    return generator.write_validation_grid(
        out, step, _grid(np.asarray(images)), cfg.validation_prompts
    )
