"""Generator metrics as plain maths on arrays: FID (and its mergeable moments), KID,
MS-SSIM, nearest neighbours, probes (precision/recall/density/coverage: `augmentor.prdc`).

Nothing here reads files or models; `augmentor.features` turns images into arrays,
`augmentor.generator_metrics` builds the evaluation's tables from them and
`augmentor.evaluate` runs the evaluation. Every function is deterministic given its
inputs (and `seed` where one is taken).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from augmentor.eval_config import KID_SUBSET_SIZE, KID_SUBSETS

# ---------------------------------------------------------------- fidelity: FID


def feature_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance (unbiased, float64) of row-wise features."""
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2 or len(x) < 2:
        raise ValueError(f"need at least 2 feature rows, got shape {x.shape}")
    return x.mean(axis=0), np.cov(x, rowvar=False)


def _psd_sqrt(sigma: np.ndarray) -> np.ndarray:
    """Square root of a symmetric positive semi-definite matrix (eigenvalues below 0, from
    rounding, are taken as 0)."""
    values, vectors = np.linalg.eigh(sigma)
    return (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T


def frechet_distance(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray
) -> float:
    """Fréchet distance between two Gaussians (Heusel et al. 2017, the 'F' of FID).

    d = |mu1 - mu2|^2 + tr(S1 + S2 - 2 sqrt(S1 S2)). tr sqrt(S1 S2) is computed as
    tr sqrt(A S2 A) with A = sqrt(S1): the same eigenvalues, but of a symmetric positive
    semi-definite matrix, so two symmetric eigendecompositions replace the general matrix
    square root (about 50x faster at 512 dimensions, exact for singular covariances, never
    complex).
    """
    mu1, mu2 = np.atleast_1d(mu1).astype(np.float64), np.atleast_1d(mu2).astype(np.float64)
    sigma1 = np.atleast_2d(sigma1).astype(np.float64)
    sigma2 = np.atleast_2d(sigma2).astype(np.float64)
    diff = mu1 - mu2
    root = _psd_sqrt((sigma1 + sigma1.T) / 2)
    product = root @ sigma2 @ root
    trace_covmean = np.sqrt(np.clip(np.linalg.eigvalsh((product + product.T) / 2), 0.0, None)).sum()
    value = diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * trace_covmean
    # Tiny negative values are rounding error of a distance that is 0.
    return float(max(value, 0.0))


def fid_from_features(a: np.ndarray, b: np.ndarray) -> float:
    """FID between two feature sets (rows are images)."""
    return frechet_distance(*feature_stats(a), *feature_stats(b))


# ---------------------------------------------------------------- fidelity: FID from shards


@dataclass(frozen=True)
class FeatureMoments:
    """What FID's Gaussian needs from a set of feature rows, as sums that merge exactly.

    Attributes:
        n: number of rows.
        total: (d,) sum of the rows.
        outer: (d, d) sum of the rows' outer products x x^T.

    Shards of one image set (chunks, processes, machines) each keep their own; the set's
    moments are their sums (`merge_moments`; `torch.distributed.all_reduce` with SUM does
    the same across processes), so mean and covariance, and FID from them, are those of the
    whole set. An average of per-shard FIDs is not: FID is biased by each shard's small n.
    Float64 keeps the rounding of `outer - n mean mean^T` far below FID's own noise.
    """

    n: int
    total: np.ndarray
    outer: np.ndarray


def feature_moments(features: np.ndarray) -> FeatureMoments:
    """The sums of one shard of feature rows (float64)."""
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"features must be (rows, dims), got shape {x.shape}")
    return FeatureMoments(len(x), x.sum(axis=0), x.T @ x)


def merge_moments(parts: Sequence[FeatureMoments]) -> FeatureMoments:
    """The moments of the union of the shards (their sums)."""
    if not parts:
        raise ValueError("no shards to merge")
    dims = {p.total.shape for p in parts}
    if len(dims) != 1:
        raise ValueError(f"shards of different feature dimensions: {sorted(dims)}")
    return FeatureMoments(
        sum(p.n for p in parts),
        np.sum([p.total for p in parts], axis=0),
        np.sum([p.outer for p in parts], axis=0),
    )


def moments_stats(moments: FeatureMoments) -> tuple[np.ndarray, np.ndarray]:
    """Mean and unbiased covariance from the sums, as `feature_stats` gives them."""
    n = moments.n
    if n < 2:
        raise ValueError(f"need at least 2 feature rows, got {n}")
    mean = moments.total / n
    cov = (moments.outer - n * np.outer(mean, mean)) / (n - 1)
    return mean, (cov + cov.T) / 2


def fid_from_moments(a: FeatureMoments, b: FeatureMoments) -> float:
    """FID between two sets given by their (merged) moments."""
    return frechet_distance(*moments_stats(a), *moments_stats(b))


# ---------------------------------------------------------------- fidelity: KID

# Up to this many kernel entries (float64, ~240 MB) the whole kernel matrices are computed
# once and each subset reads its block: 25x less work than one product per subset.
_KID_GRAM_LIMIT = 30_000_000


def _poly_kernel(x: np.ndarray, y: np.ndarray, gamma: float, degree: int, coef: float):
    return (gamma * (x @ y.T) + coef) ** degree


def _unbiased_mmd(k_xx: np.ndarray, k_yy: np.ndarray, k_xy: np.ndarray) -> float:
    m, n = len(k_xx), len(k_yy)
    within_x = (k_xx.sum() - np.trace(k_xx)) / (m * (m - 1))
    within_y = (k_yy.sum() - np.trace(k_yy)) / (n * (n - 1))
    return float(within_x + within_y - 2.0 * k_xy.mean())


def polynomial_mmd(
    x: np.ndarray, y: np.ndarray, degree: int = 3, gamma: float | None = None, coef: float = 1.0
) -> float:
    """Unbiased squared MMD between two feature sets under a polynomial kernel.

    k(a, b) = (gamma a.b + coef)^degree with gamma = 1 / dim by default (Bińkowski et al.
    2018, the kernel of KID). Unbiased: the diagonal k(x_i, x_i) is left out of the
    within-set means, so the estimate is 0 in expectation for one distribution (and can be
    slightly negative).
    """
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if len(x) < 2 or len(y) < 2:
        raise ValueError(f"need at least 2 rows per set, got {len(x)} and {len(y)}")
    g = 1.0 / x.shape[1] if gamma is None else gamma
    return _unbiased_mmd(
        _poly_kernel(x, x, g, degree, coef),
        _poly_kernel(y, y, g, degree, coef),
        _poly_kernel(x, y, g, degree, coef),
    )


def _kid_bootstrap_replicate(
    k_aa: np.ndarray, k_bb: np.ndarray, k_ab: np.ndarray, i: np.ndarray, j: np.ndarray
) -> float:
    """Unbiased MMD^2 of a resample drawn with replacement (`i` from a, `j` from b): the
    within-set means leave out every pair of one original image (a drawn twice is not a
    pair of two images), so the replicate stays unbiased."""
    ca = np.bincount(i, minlength=len(k_aa)).astype(np.float64)
    cb = np.bincount(j, minlength=len(k_bb)).astype(np.float64)

    def within(k: np.ndarray, c: np.ndarray) -> float:
        pairs = c.sum() ** 2 - (c**2).sum()
        return float((c @ k @ c - (c**2 * np.diag(k)).sum()) / pairs) if pairs > 0 else 0.0

    return within(k_aa, ca) + within(k_bb, cb) - 2.0 * float(ca @ k_ab @ cb) / (len(i) * len(j))


def kid_from_features(
    a: np.ndarray,
    b: np.ndarray,
    subsets: int = KID_SUBSETS,
    subset_size: int = KID_SUBSET_SIZE,
    seed: int = 0,
) -> tuple[float, float]:
    """KID between two feature sets and its bootstrap standard error.

    KID: `polynomial_mmd` (cubic kernel, gamma = 1 / dim, coef 1) averaged over `subsets`
    draws of min(`subset_size`, len) rows of each set without replacement, as clean-fid and
    torchmetrics average it; when both sets fit in one subset every draw is the whole sets
    and KID is their unbiased estimate. Unlike FID it is unbiased at small sample sizes.

    Standard error: the standard deviation over `subsets` bootstrap replicates, each drawing
    BOTH sets anew with replacement (min(`subset_size`, len) rows of each; pairs of one
    original image left out of the within-set means). Up to `subset_size` images per set
    that is the bootstrap SE of the KID reported; beyond it, the SE of a KID of
    `subset_size` images, which is larger (conservative). NaNs for sets of fewer than 2 rows.
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    m_a, m_b = min(subset_size, len(a)), min(subset_size, len(b))
    if min(m_a, m_b) < 2:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    whole = m_a == len(a) and m_b == len(b)
    draws = [
        (rng.choice(len(a), m_a, replace=False), rng.choice(len(b), m_b, replace=False))
        for _ in range(1 if whole else subsets)
    ]
    boots = [(rng.integers(0, len(a), m_a), rng.integers(0, len(b), m_b)) for _ in range(subsets)]
    g = 1.0 / a.shape[1]
    if (len(a) + len(b)) ** 2 <= _KID_GRAM_LIMIT:
        k_aa, k_bb = _poly_kernel(a, a, g, 3, 1.0), _poly_kernel(b, b, g, 3, 1.0)
        k_ab = _poly_kernel(a, b, g, 3, 1.0)
        values = [
            _unbiased_mmd(k_aa[np.ix_(i, i)], k_bb[np.ix_(j, j)], k_ab[np.ix_(i, j)])
            for i, j in draws
        ]
        replicates = [_kid_bootstrap_replicate(k_aa, k_bb, k_ab, i, j) for i, j in boots]
    else:
        values = [polynomial_mmd(a[i], b[j]) for i, j in draws]
        replicates = []
        for i, j in boots:
            # Kernels of the drawn rows only, indices renumbered onto them.
            ui, ii = np.unique(i, return_inverse=True)
            uj, jj = np.unique(j, return_inverse=True)
            x, y = a[ui], b[uj]
            replicates.append(
                _kid_bootstrap_replicate(
                    _poly_kernel(x, x, g, 3, 1.0),
                    _poly_kernel(y, y, g, 3, 1.0),
                    _poly_kernel(x, y, g, 3, 1.0),
                    ii,
                    jj,
                )
            )
    se = float(np.std(replicates, ddof=1)) if len(replicates) > 1 else float("nan")
    return float(np.mean(values)), se


# ---------------------------------------------------------------- rates and their intervals


def rate_interval(successes: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a binomial rate of `successes` in `n` (NaNs for n = 0).

    A rate of 80 images has a standard error of about 0.04: the interval says whether a
    rate that misses a target by less than that could be noise. Wilson's interval keeps close
    to its nominal coverage at small n and rates near 0 or 1, where the normal one does not
    (Brown, Cai & DasGupta 2001). `successes` and `n` may be fractional (an effective size).
    """
    from scipy.stats import norm

    if n <= 0:
        return float("nan"), float("nan")
    z = float(norm.ppf(1 - (1 - level) / 2))
    p = min(max(successes / n, 0.0), 1.0)
    centre = (p + z**2 / (2 * n)) / (1 + z**2 / n)
    half = z / (1 + z**2 / n) * np.sqrt(p * (1 - p) / n + z**2 / (4 * n**2))
    return float(max(centre - half, 0.0)), float(min(centre + half, 1.0))


def design_effect(hits: np.ndarray, clusters: np.ndarray) -> float:
    """How much clustering inflates the variance of a rate over independent images (>= 1).

    The cluster-robust variance of the ratio estimate (sum of hits / images, clusters as the
    units) over the binomial variance p(1 - p) / n, at least 1 (Korn & Graubard 1998 cap the
    effective size at n). At a rate of 0 or 1 the spread between clusters cannot be seen, so
    the design effect is the mean cluster size: each cluster then counts once (conservative).
    """
    y = np.asarray(hits, dtype=np.float64)
    n = len(y)
    codes, uniques = pd.factorize(pd.Series(clusters).astype(str))
    k = len(uniques)
    if n == 0 or k == n:
        return 1.0
    p = y.mean()
    if p <= 0.0 or p >= 1.0 or k < 2:
        return n / k
    per_hits = np.bincount(codes, weights=y, minlength=k)
    per_size = np.bincount(codes, minlength=k).astype(np.float64)
    robust = k / (k - 1) * ((per_hits - p * per_size) ** 2).sum() / n**2
    return float(max(robust / (p * (1 - p) / n), 1.0))


def clustered_rate_interval(
    hits: np.ndarray, clusters: np.ndarray, level: float = 0.95
) -> tuple[float, float]:
    """Wilson interval of a rate whose images come in correlated clusters (a prompt's images,
    a patient's images): Wilson's at the effective size n / `design_effect` (Kish's design
    effect). Where every cluster holds one image it is Wilson's interval itself."""
    y = np.asarray(hits, dtype=np.float64)
    if len(y) == 0:
        return float("nan"), float("nan")
    n_eff = len(y) / design_effect(y, clusters)
    return rate_interval(y.mean() * n_eff, n_eff, level)


def cluster_bootstrap_weights(clusters: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
    """(n_boot, len(clusters)) weights: how often each row's cluster was drawn in each of
    `n_boot` resamples of the clusters with replacement (the cluster bootstrap as weights;
    a weighted mean per resample is the resampled rate)."""
    codes, uniques = pd.factorize(pd.Series(clusters).astype(str))
    k = len(uniques)
    if k == 0:
        return np.zeros((n_boot, 0))
    counts = np.random.default_rng(seed).multinomial(k, np.full(k, 1.0 / k), size=n_boot)
    return counts[:, codes].astype(np.float32)  # small counts: exact, half the memory


def weighted_rates(weights: np.ndarray, hits: np.ndarray) -> np.ndarray:
    """Per resample (row of `weights`): the weighted share of `hits`; NaN where no weight."""
    total = weights.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, weights @ np.asarray(hits, np.float64) / total, np.nan)


# ---------------------------------------------------------------- diversity: MS-SSIM

# Wang, Simoncelli & Bovik 2003, "Multi-scale structural similarity for image quality
# assessment": weights of the 5 scales, finest first.
MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
SSIM_WINDOW = 11
SSIM_SIGMA = 1.5


def _gaussian_window(size: int, sigma: float) -> torch.Tensor:
    coords = torch.arange(size, dtype=torch.float64) - (size - 1) / 2.0
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    return (g / g.sum()).to(torch.float32)


def ms_ssim_scales(height: int, width: int, window: int = SSIM_WINDOW) -> int:
    """How many of the 5 scales fit: the coarsest image must stay at least `window` wide.

    At 256 px all 5 fit; at 128 px 4 (128, 64, 32, 16); at 64 px 3; below 11 px none, and
    `ms_ssim` then shrinks the window instead.
    """
    side = min(height, width)
    scales = 0
    while scales < len(MS_SSIM_WEIGHTS) and side >= window:
        scales += 1
        side //= 2
    return scales


def _ssim_components(
    x: torch.Tensor, y: torch.Tensor, window: torch.Tensor, data_range: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per image: mean SSIM and mean contrast-structure term (valid gaussian filtering)."""
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    channels = x.shape[1]
    wx = window.view(1, 1, 1, -1).repeat(channels, 1, 1, 1)
    wy = window.view(1, 1, -1, 1).repeat(channels, 1, 1, 1)

    def blur(t: torch.Tensor) -> torch.Tensor:
        # Separable gaussian, no padding: the original SSIM uses only full windows.
        return F.conv2d(F.conv2d(t, wx, groups=channels), wy, groups=channels)

    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x**2
    var_y = blur(y * y) - mu_y**2
    cov = blur(x * y) - mu_x * mu_y
    cs_map = (2 * cov + c2) / (var_x + var_y + c2)
    ssim_map = ((2 * mu_x * mu_y + c1) / (mu_x**2 + mu_y**2 + c1)) * cs_map
    return ssim_map.flatten(1).mean(1), cs_map.flatten(1).mean(1)


def ms_ssim(
    x: np.ndarray | torch.Tensor,
    y: np.ndarray | torch.Tensor,
    data_range: float = 255.0,
    scales: int | None = None,
) -> np.ndarray:
    """Multi-scale SSIM of image pairs (Wang et al. 2003); 1 for identical images.

    Args:
        x, y: images as (N, H, W) or (N, C, H, W) (or a single (H, W) pair), values in
            [0, data_range].
        data_range: 255 for uint8 images.
        scales: number of scales; default as many of the standard 5 as the image size
            allows (see `ms_ssim_scales`). The weights of the scales used are the standard
            ones renormalised to sum to 1, so fewer scales still give a value in [0, 1].

    Gaussian window 11, sigma 1.5; 2x2 average pooling between scales; luminance only at
    the coarsest scale. Negative contrast-structure terms (anticorrelated images) are
    clipped at 0 so the weighted product stays real.

    Returns:
        (N,) float64 array.
    """
    tx = torch.as_tensor(np.asarray(x) if not torch.is_tensor(x) else x, dtype=torch.float32)
    ty = torch.as_tensor(np.asarray(y) if not torch.is_tensor(y) else y, dtype=torch.float32)
    if tx.shape != ty.shape:
        raise ValueError(f"image shapes differ: {tuple(tx.shape)} vs {tuple(ty.shape)}")
    if tx.ndim == 2:
        tx, ty = tx[None, None], ty[None, None]
    elif tx.ndim == 3:
        tx, ty = tx[:, None], ty[:, None]
    height, width = tx.shape[-2:]
    window_size = SSIM_WINDOW
    n_scales = scales if scales is not None else ms_ssim_scales(height, width)
    if n_scales == 0:
        # Smaller than one window: single-scale SSIM with the largest odd window that fits.
        window_size = max(1, min(height, width) - (1 - min(height, width) % 2))
        n_scales = 1
    if min(height, width) // 2 ** (n_scales - 1) < window_size:
        raise ValueError(f"{n_scales} scales do not fit a {height}x{width} image")
    window = _gaussian_window(window_size, SSIM_SIGMA)
    weights = torch.tensor(MS_SSIM_WEIGHTS[:n_scales], dtype=torch.float64)
    weights = weights / weights.sum()
    values = []
    for scale in range(n_scales):
        ssim, cs = _ssim_components(tx, ty, window, data_range)
        values.append(ssim if scale == n_scales - 1 else cs)
        if scale < n_scales - 1:
            tx, ty = F.avg_pool2d(tx, 2), F.avg_pool2d(ty, 2)
    stacked = torch.stack(values, dim=1).double().clamp(min=0.0)
    return torch.prod(stacked ** weights[None, :], dim=1).numpy()


def pair_indices(
    groups: np.ndarray, max_pairs_per_group: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Random distinct pairs (i, j), i != j, within each group of equal `groups` values.

    Groups with one member give no pair. At most `max_pairs_per_group` pairs per group,
    drawn without replacement from all i < j pairs.
    """
    rng = np.random.default_rng(seed)
    groups = np.asarray(groups)
    first, second = [], []
    for value in pd.unique(groups):
        members = np.flatnonzero(groups == value)
        n = len(members)
        if n < 2:
            continue
        total = n * (n - 1) // 2
        take = min(total, max_pairs_per_group)
        if total <= 4 * max_pairs_per_group:
            ii, jj = np.triu_indices(n, k=1)
            chosen = rng.choice(total, size=take, replace=False)
            a, b = ii[chosen], jj[chosen]
        else:
            # Sample with rejection of i == j; duplicates are rare and harmless here.
            a = rng.integers(0, n, size=take)
            b = (a + rng.integers(1, n, size=take)) % n
        first.append(members[a])
        second.append(members[b])
    if not first:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    return np.concatenate(first), np.concatenate(second)


def whole_group_pairs(
    groups: np.ndarray, max_pairs: int | None = None, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, int]:
    """Every pair (i, j), i < j, within each group of equal `groups` values (RoentGen's
    diversity protocol: 4 images per prompt, all 6 pairs); groups of one give none.

    n groups of k members give n * k * (k - 1) / 2 pairs. When that is more than
    `max_pairs`, whole groups are drawn at random (seeded) while their pairs fit, at least
    one, so every group counted keeps all its pairs.

    Returns:
        first, second (positions), and the number of groups the pairs come from.
    """
    groups = np.asarray(groups)
    members = [
        np.sort(idx)
        for idx in pd.Series(np.arange(len(groups))).groupby(groups, sort=False).indices.values()
        if len(idx) >= 2
    ]
    sizes = np.array([len(m) * (len(m) - 1) // 2 for m in members], dtype=np.int64)
    keep = np.arange(len(members))
    if max_pairs is not None and sizes.sum() > max_pairs:
        order = np.random.default_rng(seed).permutation(len(members))
        fits = np.cumsum(sizes[order]) <= max_pairs
        keep = np.sort(order[: max(1, int(fits.sum()))])
    first, second = [], []
    for k in keep:
        ii, jj = np.triu_indices(len(members[k]), k=1)
        first.append(members[k][ii])
        second.append(members[k][jj])
    if not first:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), 0
    return np.concatenate(first), np.concatenate(second), len(keep)


# ---------------------------------------------------------------- nearest neighbours


def normalize_rows(x: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Rows scaled to unit L2 norm (all-zero rows stay zero), float32."""
    t = torch.as_tensor(np.asarray(x) if not torch.is_tensor(x) else x, dtype=torch.float32)
    return F.normalize(t, dim=1, eps=1e-12)


def nearest_neighbours(
    query: np.ndarray | torch.Tensor,
    reference: np.ndarray | torch.Tensor,
    k: int = 1,
    block: int = 4096,
    normalized: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Cosine top-k neighbours of each query row among the reference rows.

    Blocked over both sides so memory stays at `block` x `block` similarities whatever the
    sizes: each query block keeps a running top-k that is merged with every reference
    block's own top-k.

    Returns:
        (similarities, indices), each (n_query, k), best first.
    """
    q = torch.as_tensor(query, dtype=torch.float32) if normalized else normalize_rows(query)
    r = torch.as_tensor(reference, dtype=torch.float32) if normalized else normalize_rows(reference)
    if len(r) == 0:
        raise ValueError("no reference rows")
    k = min(k, len(r))
    sims_out = torch.empty(len(q), k)
    idx_out = torch.empty(len(q), k, dtype=torch.int64)
    with torch.inference_mode():
        for qs in range(0, len(q), block):
            qb = q[qs : qs + block]
            for rs in range(0, len(r), block):
                sims = qb @ r[rs : rs + block].T
                if k == 1:
                    # max is several times cheaper than topk for the common k = 1 audit.
                    v, i = sims.max(dim=1, keepdim=True)
                else:
                    v, i = sims.topk(min(k, sims.shape[1]), dim=1)
                if rs == 0:
                    best_v, best_i = v, i
                    continue
                cat_v = torch.cat([best_v, v], dim=1)
                cat_i = torch.cat([best_i, i + rs], dim=1)
                best_v, pos = cat_v.topk(k, dim=1)
                best_i = torch.gather(cat_i, 1, pos)
            sims_out[qs : qs + block] = best_v
            idx_out[qs : qs + block] = best_i
    return sims_out.numpy(), idx_out.numpy()


def pixel_signature(image: np.ndarray, size: int = 32) -> np.ndarray:
    """An image as a zero-mean, unit-norm vector of its `size` x `size` thumbnail.

    The dot product of two signatures is the Pearson correlation of the thumbnails: 1 for
    copies (also brightness/contrast-shifted ones), insensitive to resolution. A constant
    image gives the zero vector (correlation 0 with everything).
    """
    from PIL import Image

    thumb = np.asarray(
        Image.fromarray(np.asarray(image, dtype=np.uint8)).resize(
            (size, size), Image.Resampling.BOX
        ),
        dtype=np.float32,
    ).ravel()
    thumb = thumb - thumb.mean()
    norm = float(np.linalg.norm(thumb))
    return thumb / norm if norm > 1e-6 else np.zeros_like(thumb)


# ---------------------------------------------------------------- alignment and probes


def youden_threshold(y_true: np.ndarray, scores: np.ndarray) -> float | None:
    """The threshold maximising TPR - FPR (Youden's J) on `y_true` in {0, 1}.

    None when `y_true` has one class (no ROC curve).
    """
    from sklearn.metrics import roc_curve

    y = np.asarray(y_true)
    if len(np.unique(y)) < 2:
        return None
    fpr, tpr, thresholds = roc_curve(y, scores)
    finite = np.isfinite(thresholds)
    j = np.where(finite, tpr - fpr, -np.inf)
    return float(thresholds[int(np.argmax(j))])


def positive_rate(scores: np.ndarray, threshold: float) -> float:
    """Share of `scores` at or above `threshold`; NaN for no scores."""
    s = np.asarray(scores, dtype=np.float64)
    return float((s >= threshold).mean()) if len(s) else float("nan")


def binary_targets(values: np.ndarray) -> np.ndarray:
    """Manifest label values as probe targets: 1 positive, 0 for 0 or NaN, -1 uncertain.

    NaN ("not mentioned") counts as negative, as CheXpert-style labellers intend; uncertain
    rows are left out by the caller (`targets >= 0`).
    """
    v = np.asarray(values, dtype=np.float64)
    out = np.where(v == 1, 1, 0)
    return np.where(v == -1, -1, out)


def linear_probe_auroc(
    train_x: np.ndarray,
    train_y: np.ndarray,
    test_x: np.ndarray,
    test_y: np.ndarray,
    seed: int = 0,
    c: float = 1.0,
) -> tuple[float, str]:
    """AUROC on the test rows of a logistic-regression probe fit on the train rows.

    Features are standardised on the train rows. Returns (AUROC, "") or (NaN, reason)
    when either side has a single class.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if len(np.unique(train_y)) < 2:
        return float("nan"), "one class in train reports"
    if len(np.unique(test_y)) < 2:
        return float("nan"), "one class in held-out reports"
    probe = make_pipeline(
        StandardScaler(), LogisticRegression(C=c, max_iter=2000, random_state=seed)
    )
    probe.fit(train_x, train_y)
    return float(roc_auc_score(test_y, probe.predict_proba(test_x)[:, 1])), ""
