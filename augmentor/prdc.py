"""Precision, recall, density and coverage of generated images (Naeem et al. 2020).

"Reliable Fidelity and Diversity Metrics for Generative Models" (ICML 2020) judges a
generated set by k-nearest-neighbour balls in a feature space. Each real image's ball has
the radius of its distance to its k-th nearest real neighbour; each synthetic image's ball,
that of its k-th nearest synthetic neighbour. With n real and m synthetic images:

- precision: the share of synthetic images inside at least one real ball (are they
  realistic?);
- recall: the share of real images inside at least one synthetic ball (is the real variety
  drawn?);
- density: how many real balls hold each synthetic image, over k, averaged: about 1 when
  the two sets come from one distribution, above 1 where synthetic images crowd dense real
  regions; unlike precision it is not fooled by a few real outliers;
- coverage: the share of real images whose ball holds at least one synthetic image: about
  1 - 2^-k (0.97 at k = 5) for one distribution; unlike recall it is not inflated by a few
  synthetic outliers with large balls.

Distances are Euclidean and every comparison is strict (`d < radius`), the choices of the
authors' `prdc` package (`compute_prdc`), which CheXGenBench calls with k = 5 on RadDINO
features. Pure tensor maths on feature arrays; the distances are computed in blocks, so
memory stays at `block` x `block` float64 values whatever the number of images.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch

from augmentor.eval_config import PRDC_K  # 5: Naeem et al.'s default, and CheXGenBench's

PRDC_BLOCK = 2048  # rows per side of one block of distances (32 MB in float64)


@dataclass(frozen=True)
class Prdc:
    """Precision, recall, density and coverage of a synthetic set against a real one."""

    precision: float
    recall: float
    density: float
    coverage: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def _as_float64(x: np.ndarray | torch.Tensor) -> torch.Tensor:
    t = x if torch.is_tensor(x) else torch.from_numpy(np.asarray(x))
    t = t.detach().to("cpu", torch.float64)
    if t.ndim != 2:
        raise ValueError(f"features must be (rows, dims), got shape {tuple(t.shape)}")
    return t


def _distances(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Euclidean distances between the rows of `a` and of `b`, (len(a), len(b)).

    |a|^2 + |b|^2 - 2 a.b in float64 (float32 would lose small distances to rounding), with
    rounding below 0 taken as 0.
    """
    squared = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * (a @ b.T)
    return squared.clamp_(min=0.0).sqrt_()


def knn_radii(features: np.ndarray | torch.Tensor, k: int = PRDC_K, block: int = PRDC_BLOCK):
    """Each row's distance to its k-th nearest other row (the radius of its ball).

    As the `prdc` package: the (k + 1)-th smallest distance with the row itself counted
    (its distance 0 is the first), computed block by block with a running k + 1 smallest.

    Returns:
        (n,) float64 array.
    """
    x = _as_float64(features)
    if k < 1:
        raise ValueError(f"k = {k}: a ball needs at least the 1st nearest neighbour")
    if len(x) <= k:
        raise ValueError(f"k = {k} nearest neighbours need more than {k} rows, got {len(x)}")
    out = torch.empty(len(x), dtype=torch.float64)
    for qs in range(0, len(x), block):
        q = x[qs : qs + block]
        best = None
        for rs in range(0, len(x), block):
            d = _distances(q, x[rs : rs + block])
            if best is not None:
                d = torch.cat([best, d], dim=1)
            best = d.topk(min(k + 1, d.shape[1]), dim=1, largest=False).values
        out[qs : qs + block] = best[:, k]
    return out.numpy()


def prdc(
    real: np.ndarray | torch.Tensor,
    fake: np.ndarray | torch.Tensor,
    k: int = PRDC_K,
    real_radii: np.ndarray | None = None,
    block: int = PRDC_BLOCK,
) -> Prdc:
    """Precision, recall, density and coverage of `fake` against `real` (rows are images).

    Args:
        real, fake: feature arrays of one dimension; each needs more than `k` rows.
        k: the neighbour that sets each ball's radius.
        real_radii: `knn_radii(real, k)` where already computed (one real set judged
            against several synthetic ones).
        block: rows per side of one block of distances.

    Counts per real row (inside some synthetic ball; nearest synthetic distance) and per
    synthetic row (how many real balls hold it) are accumulated block by block, so the
    result is the all-at-once computation of the `prdc` package (up to float64 rounding
    of a distance that ties a radius).
    """
    r, f = _as_float64(real), _as_float64(fake)
    if r.shape[1] != f.shape[1]:
        raise ValueError(f"feature dimensions differ: {r.shape[1]} vs {f.shape[1]}")
    radius_real = torch.from_numpy(
        np.asarray(knn_radii(r, k, block) if real_radii is None else real_radii, np.float64)
    )
    if len(radius_real) != len(r):
        raise ValueError(f"{len(radius_real)} real radii for {len(r)} real rows")
    radius_fake = torch.from_numpy(knn_radii(f, k, block))
    balls_holding = torch.zeros(len(f), dtype=torch.float64)  # real balls holding each fake
    real_reached = torch.zeros(len(r), dtype=torch.bool)  # real inside some fake ball
    nearest_fake = torch.full((len(r),), float("inf"), dtype=torch.float64)
    for rs in range(0, len(r), block):
        rr, rad = r[rs : rs + block], radius_real[rs : rs + block, None]
        for fs in range(0, len(f), block):
            d = _distances(rr, f[fs : fs + block])  # (real block, fake block)
            balls_holding[fs : fs + block] += (d < rad).sum(0)
            real_reached[rs : rs + block] |= (d < radius_fake[None, fs : fs + block]).any(1)
            nearest_fake[rs : rs + block] = torch.minimum(
                nearest_fake[rs : rs + block], d.min(1).values
            )
    return Prdc(
        precision=float((balls_holding > 0).double().mean()),
        recall=float(real_reached.double().mean()),
        density=float(balls_holding.mean() / k),
        coverage=float((nearest_fake < radius_real).double().mean()),
    )
