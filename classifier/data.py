"""Classifier data: labels -> targets, a decode-once uint8 image cache, batched augmentation.

Why this shape: chest X-rays are decoded (PNG/JPEG/DICOM, often 2-3k pixels) far more
slowly than a small CNN trains on them at 224 px. Each image is therefore decoded and
resized exactly once into a ``uint8`` array ``(N, 1, S, S)`` (in memory, or a memory-mapped
``.npy`` for sets larger than RAM), and every epoch only indexes that array. Augmentation
runs on whole batches of tensors on the training device (one `affine_grid`/`grid_sample`
call), so the loader is a memory copy and never the bottleneck.

Augmentations are the ones used for CXR classifiers: small rotation (±10°), scale and
translation, brightness and contrast. There is no horizontal flip by default: laterality
matters on a chest radiograph (the heart lies left, a left effusion is not a right one).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from classifier.config import BAD_IMAGE_POLICIES, UNCERTAIN_POLICIES, AugmentConfig, check_choice
from manifests.errors import UserError
from manifests.images import load_image
from manifests.io import Manifest
from manifests.schema import resolve_label


def label_targets(values: np.ndarray, uncertain: str = "ignore") -> tuple[np.ndarray, np.ndarray]:
    """Training targets and loss mask from raw manifest label values (1, 0, -1, NaN).

    `uncertain` is the policy for -1: `ignore` masks it out of the loss, `zeros` counts it
    negative, `ones` positive (CheXpert's U-Ignore / U-Zeros / U-Ones). NaN (not mentioned)
    is always masked out.

    Returns:
        `(targets, mask)`, both float32 of the input's shape.
    """
    check_choice(uncertain, UNCERTAIN_POLICIES, "--uncertain")
    values = np.asarray(values, dtype=np.float32)
    targets = np.where(values == 1, 1.0, 0.0).astype(np.float32)
    mask = np.isin(values, (0.0, 1.0)).astype(np.float32)
    if uncertain != "ignore":
        is_uncertain = values == -1
        targets[is_uncertain] = 1.0 if uncertain == "ones" else 0.0
        mask[is_uncertain] = 1.0
    return targets, mask


def resolve_labels(
    manifest: Manifest,
    names: Sequence[str] | None,
    uncertain: str = "ignore",
    min_count: int = 5,
) -> tuple[str, ...]:
    """The labels to train on.

    Given `names` (any spelling `resolve_label` accepts), those labels; otherwise every label
    of the manifest whose real train rows hold at least `min_count` positives and
    `min_count` negatives after the uncertain policy.
    """
    if names:
        resolved = {resolve_label(n, manifest.labels, "--labels") for n in names}
        return tuple(label for label in manifest.labels if label in resolved)  # manifest order
    rows = manifest.rows[manifest.rows["split"] == "train"]
    targets, mask = label_targets(rows[list(manifest.labels)].to_numpy(np.float32), uncertain)
    positives = ((targets == 1) & (mask == 1)).sum(axis=0)
    negatives = ((targets == 0) & (mask == 1)).sum(axis=0)
    chosen = tuple(
        label
        for label, p, n in zip(manifest.labels, positives, negatives, strict=True)
        if p >= min_count and n >= min_count
    )
    if not chosen:
        counts = ", ".join(
            f"{label} {int(p)}/{int(n)}"
            for label, p, n in zip(manifest.labels, positives, negatives, strict=True)
        )
        raise UserError(
            f"--labels: no label has {min_count}+ positives and negatives in train "
            f"(positives/negatives: {counts}); pass --labels explicitly"
        )
    return chosen


# ------------------------------------------------------------------------------ image cache


def decode_resized(path: Path, size: int) -> np.ndarray:
    """One image as uint8 ``(size, size)``: decoded with `load_image`, resized (antialiased)."""
    array = load_image(path)
    if array.shape != (size, size):
        img = Image.fromarray(array, mode="L").resize((size, size), Image.Resampling.BILINEAR)
        array = np.asarray(img)
    return array


@dataclass
class ImageCache:
    """Decoded images of one split.

    Attributes:
        images: uint8 ``(N, 1, S, S)`` of the readable images (a memory map when cached on disk).
        keep: indices into the input paths of the images in `images` (bad ones left out).
        bad: paths that could not be read (skipped).
    """

    images: np.ndarray
    keep: np.ndarray
    bad: list[str]


def _cache_key(paths: Sequence[Path], size: int) -> str:
    digest = hashlib.sha256(f"{size}\n".encode())
    for p in paths:
        digest.update(os.fsencode(p) + b"\n")
        try:
            st = os.stat(p)
            digest.update(f"{st.st_size}:{st.st_mtime_ns}\n".encode())
        except OSError:
            digest.update(b"missing\n")
    return digest.hexdigest()[:20]


def decode_images(
    paths: Sequence[Path],
    size: int,
    on_bad_image: str = "error",
    num_threads: int = 4,
    cache_dir: Path | None = None,
    progress: Callable[[int], None] | None = None,
) -> ImageCache:
    """Decode and resize every image once (threads: Pillow releases the GIL while decoding).

    Args:
        paths: image files.
        size: output side in pixels (images are resized to a square, as CXR classifiers do).
        on_bad_image: `error` raises a UserError naming the first unreadable file; `skip` leaves
            it out and lists it in `ImageCache.bad`.
        num_threads: decoding threads.
        cache_dir: if set, the array is a memory-mapped ``.npy`` there, keyed by the paths,
            file sizes and mtimes, and reused by later runs (for sets larger than RAM).
        progress: called with the number of images done, now and then.
    """
    check_choice(on_bad_image, BAD_IMAGE_POLICIES, "--on-bad-image")
    paths = [Path(p) for p in paths]
    n = len(paths)
    target: Path | None = None
    if cache_dir is not None:
        cache_dir = Path(cache_dir)
        key = _cache_key(paths, size)
        target = cache_dir / f"images-{size}-{key}.npy"
        meta_path = target.with_suffix(".json")
        if target.is_file() and meta_path.is_file():
            meta = json.loads(meta_path.read_text())
            if meta["bad"] and on_bad_image == "error":
                raise UserError(f"{meta['bad'][0]}: corrupt or unreadable image (cached)")
            images = np.load(target, mmap_mode="r")
            return ImageCache(images, np.asarray(meta["keep"], dtype=np.int64), meta["bad"])
        cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp.npy")
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(n, 1, size, size))
    else:
        out = np.empty((n, 1, size, size), dtype=np.uint8)

    ok = np.ones(n, dtype=bool)
    bad: list[str] = []

    def work(i: int) -> None:
        try:
            out[i, 0] = decode_resized(paths[i], size)
        except UserError:
            if on_bad_image == "error":
                raise
            ok[i] = False

    with ThreadPoolExecutor(max_workers=max(1, num_threads)) as pool:
        for done, _ in enumerate(pool.map(work, range(n)), start=1):
            if progress is not None and (done % 256 == 0 or done == n):
                progress(done)
    keep = np.flatnonzero(ok)
    bad = [str(paths[i]) for i in np.flatnonzero(~ok)]
    if target is not None:
        out.flush()
        del out
        compact = np.load(tmp, mmap_mode="r")
        if len(keep) < n:  # rewrite without the bad rows (rare)
            tmp2 = tmp.with_name(tmp.name + ".2.npy")
            np.save(tmp2, np.asarray(compact[keep]))
            del compact
            os.replace(tmp2, tmp)
        else:
            del compact
        os.replace(tmp, target)
        target.with_suffix(".json").write_text(json.dumps({"keep": keep.tolist(), "bad": bad}))
        return ImageCache(np.load(target, mmap_mode="r"), keep, bad)
    return ImageCache(out[keep] if len(keep) < n else out, keep, bad)


# ------------------------------------------------------------------------------ dataset, loader


class CachedImages(torch.utils.data.Dataset):
    """Images (uint8 ``(N, 1, S, S)``) with targets and loss mask; fetches whole batches.

    `__getitems__` (used by DataLoader's batched fetch) indexes the array once per batch
    instead of once per image.
    """

    def __init__(
        self,
        images: np.ndarray,
        targets: np.ndarray,
        mask: np.ndarray,
        positions: np.ndarray | None = None,
    ):
        """`positions[i]` is the row of `images` that sample `i` shows (default: row `i`), so
        several splits, or repeated rows of a mix, share one decoded array."""
        self.positions = (
            np.arange(len(images), dtype=np.int64)
            if positions is None
            else np.asarray(positions, dtype=np.int64)
        )
        if not (len(self.positions) == len(targets) == len(mask)):
            raise ValueError("positions, targets and mask differ in length")
        self.images = images
        self.targets = torch.as_tensor(np.asarray(targets, dtype=np.float32))
        self.mask = torch.as_tensor(np.asarray(mask, dtype=np.float32))

    def __len__(self) -> int:
        return len(self.positions)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return self.__getitems__([index])

    def __getitems__(self, indices: Sequence[int]) -> dict[str, torch.Tensor]:
        idx = np.asarray(indices, dtype=np.int64)
        rows = self.positions[idx]
        order = np.argsort(rows)  # sorted reads are kinder to a memory map
        images = np.empty((len(idx), *self.images.shape[1:]), dtype=np.uint8)
        images[order] = self.images[rows[order]]
        index = torch.as_tensor(idx)
        return {
            "image": torch.from_numpy(images),
            "target": self.targets[index],
            "mask": self.mask[index],
            "index": index,
        }


def _batch_collate(batch):
    # `__getitems__` already returns a batch; a single-index fetch is also a batch of one.
    return batch


def make_loader(
    dataset: CachedImages,
    batch_size: int,
    shuffle: bool,
    num_workers: int = 0,
    pin_memory: bool = False,
    drop_last: bool = False,
    seed: int = 0,
) -> torch.utils.data.DataLoader:
    """A DataLoader that fetches whole batches from a `CachedImages`."""
    generator = torch.Generator().manual_seed(seed)
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        num_workers=num_workers,
        pin_memory=pin_memory,
        drop_last=drop_last,
        collate_fn=_batch_collate,
        generator=generator,
        persistent_workers=num_workers > 0,
    )


# ------------------------------------------------------------------------------ augmentation


def augment_batch(
    images: torch.Tensor, cfg: AugmentConfig, generator: torch.Generator
) -> torch.Tensor:
    """Randomly transform a uint8 batch ``(B, 1, H, W)``; float in [0, 1] on its device.

    Parameters are drawn on the CPU from `generator` (deterministic on any device), then the
    whole batch is warped with one `affine_grid` + `grid_sample` call.
    """
    b = images.shape[0]
    device = images.device
    x = images.float().div_(255.0)

    def uniform(lo: float, hi: float) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(b, generator=generator)

    angle = torch.deg2rad(uniform(-cfg.rotate_deg, cfg.rotate_deg))
    scale = uniform(*cfg.scale)
    shift = (
        uniform(-2 * cfg.translate, 2 * cfg.translate),
        uniform(-2 * cfg.translate, 2 * cfg.translate),
    )
    flip = (
        torch.where(torch.rand(b, generator=generator) < 0.5, -1.0, 1.0)
        if cfg.hflip
        else torch.ones(b)
    )
    bright = uniform(-cfg.brightness, cfg.brightness)
    contrast = uniform(1 - cfg.contrast, 1 + cfg.contrast)

    # theta maps output coordinates to input ones: dividing by scale zooms in for scale > 1.
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack(
        [
            torch.stack([cos * flip, -sin, shift[0]], dim=1),
            torch.stack([sin * flip, cos, shift[1]], dim=1),
        ],
        dim=1,
    ).to(device=device, dtype=x.dtype)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    contrast = contrast.to(device).view(b, 1, 1, 1)
    bright = bright.to(device).view(b, 1, 1, 1)
    return ((x - mean) * contrast + mean + bright).clamp_(0.0, 1.0)


def normalize(x: torch.Tensor, mean: float, std: float) -> torch.Tensor:
    """``(x - mean) / std`` for float images in [0, 1]."""
    return (x - mean) / std


def to_model_input(images: np.ndarray | torch.Tensor, mean: float, std: float) -> torch.Tensor:
    """uint8 images ``(B, 1, S, S)`` (or ``(B, S, S)``) -> normalised float model input."""
    x = torch.as_tensor(np.asarray(images)) if isinstance(images, np.ndarray) else images
    if x.ndim == 3:
        x = x.unsqueeze(1)
    return normalize(x.float() / 255.0, mean, std)
