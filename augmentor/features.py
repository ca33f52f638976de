"""Image features for generator metrics: extractors, batched embedding and an on-disk cache.

An extractor is a timm model read straight from files, never from a hub:

- a cxraug classifier run folder, loaded through its owner `classifier.run`, giving pooled
  backbone features and, from its head, per-label probabilities (the prompt-alignment
  oracle);
- any timm architecture with local weights (`timm_name` + `weights`), features only;
- torchxrayvision's DenseNet-121 with local weights (`augmentor.xrv_features`), features
  only (RoentGen's FID features).
- RadDINO from a local transformers folder (`augmentor.raddino`), features only
  (CheXGenBench's features).

Each image is embedded once: `embed_images` loads the images that are not yet in the cache
(a folder per extractor, keyed by the image's content hash), runs every extractor that
lacks them in batches, and stores the results, so reruns and a second metric over the same
images are free, and an interrupted run keeps what it had finished.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import pandas as pd
import torch
from PIL import Image

from augmentor.metrics import pixel_signature
from augmentor.raddino import RadDinoFeatureExtractor, load_raddino_extractor
from augmentor.xrv_features import XrvFeatureExtractor, load_xrv_extractor
from classifier import run
from manifests.errors import UserError
from manifests.files import atomic_path, file_sha256
from manifests.images import load_image
from manifests.io import Manifest
from manifests.progress import Progress


class Embedder(Protocol):
    """Anything that maps a batch of uint8 grayscale images to named arrays, one row each."""

    key: str

    def __call__(self, images: Sequence[np.ndarray]) -> dict[str, np.ndarray]: ...


@dataclass
class FeatureExtractor:
    """A timm model plus the preprocessing it was trained with.

    Attributes:
        model: the timm model, eval mode.
        name: what it is, for reports (`run:<dir>` or `timm:<name>`).
        key: cache key: digest of the weights and the preprocessing.
        image_size: square input side.
        mean, std: per-channel normalisation of [0, 1] pixels.
        in_chans: 1 (grayscale, cxraug classifiers) or 3 (gray replicated).
        labels: the head's labels for a classifier run, else empty (features only).
    """

    model: torch.nn.Module
    name: str
    key: str
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    in_chans: int = 1
    labels: tuple[str, ...] = ()
    device: str = "cpu"
    feature_dim: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        self.feature_dim = int(getattr(self.model, "num_features", 0))

    def preprocess(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        """uint8 images -> normalised (N, in_chans, S, S) float tensor."""
        size = self.image_size
        batch = np.stack(
            [
                np.asarray(
                    Image.fromarray(np.asarray(im, dtype=np.uint8)).resize(
                        (size, size), Image.Resampling.BILINEAR
                    ),
                    dtype=np.float32,
                )
                if im.shape != (size, size)
                else np.asarray(im, dtype=np.float32)
                for im in images
            ]
        )
        x = torch.from_numpy(batch / 255.0).unsqueeze(1)
        if self.in_chans != 1:
            x = x.repeat(1, self.in_chans, 1, 1)
        mean = torch.tensor(self.mean, dtype=torch.float32).view(1, -1, 1, 1)
        std = torch.tensor(self.std, dtype=torch.float32).view(1, -1, 1, 1)
        return ((x - mean) / std).to(self.device)

    @torch.inference_mode()
    def __call__(self, images: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
        """`features` (pooled, pre-logits) and, for a classifier run, `probs` (sigmoid)."""
        x = self.preprocess(images)
        trunk = self.model.forward_features(x)
        out = {"features": self.model.forward_head(trunk, pre_logits=True).float().cpu().numpy()}
        if self.labels:
            logits = self.model.forward_head(trunk).float()
            out["probs"] = torch.sigmoid(logits).cpu().numpy()
        return out


class PixelEmbedder:
    """Zero-mean, unit-norm `size` x `size` thumbnails (dot product = pixel correlation)."""

    def __init__(self, size: int = 32):
        self.size = size
        self.key = f"pixels{size}"

    def __call__(self, images: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
        return {"pixels": np.stack([pixel_signature(im, self.size) for im in images])}


def mirror_halves(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two symmetric images: the image's left half mirrored onto its right, and vice versa.

    A finding on one side then appears on both sides of one image and on neither side of
    the other, while both still look like a chest (lungs on both sides), so a classifier's
    response to each tells which half holds the finding.
    """
    w = image.shape[1]
    half = w // 2
    left_kept, right_kept = image.copy(), image.copy()
    left_kept[:, w - half :] = image[:, :half][:, ::-1]
    right_kept[:, :half] = image[:, w - half :][:, ::-1]
    return left_kept, right_kept


class HalfMirrorEmbedder:
    """A classifier's probabilities on the two `mirror_halves` images of each input."""

    def __init__(self, extractor: FeatureExtractor):
        if not extractor.labels:
            raise ValueError("HalfMirrorEmbedder needs a classifier run (labelled head)")
        self.extractor = extractor
        self.key = f"{extractor.key}-halves"

    def __call__(self, images: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
        pairs = [mirror_halves(np.asarray(im)) for im in images]
        left = self.extractor([p[0] for p in pairs])["probs"]
        right = self.extractor([p[1] for p in pairs])["probs"]
        return {"probs_image_left": left, "probs_image_right": right}


# ---------------------------------------------------------------- loading extractors


def _default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def check_run_dir(run_dir: Path, flag: str = "--features") -> None:
    """Raise UserError unless `run_dir` is a classifier run with a best model."""
    run.read_config(run_dir, flag, run.MODEL_KEYS)
    if not run.model_path(run_dir).is_file():
        raise UserError(
            f"{flag} {run_dir}: the run has no {run.MODEL_FILE} yet; pass a finished "
            "`cxraug train-classifier` output"
        )


def _extractor(
    kind: str,
    source: str,
    model: torch.nn.Module,
    key_parts: tuple,
    preprocessing: dict,
    device: str,
    labels: tuple[str, ...] = (),
) -> FeatureExtractor:
    """The extractor named `kind:source`, keyed `kind-` and a digest of `kind` and `key_parts`
    (the weights' digest and the preprocessing: cached features are only reused for both)."""
    digest = hashlib.sha256("|".join(str(p) for p in (kind, *key_parts)).encode()).hexdigest()
    name, key = f"{kind}:{source}", f"{kind}-{digest[:16]}"
    return FeatureExtractor(model, name, key, **preprocessing, labels=labels, device=device)


def load_run_extractor(
    run_dir: Path, device: str | None = None, flag: str = "--features"
) -> FeatureExtractor:
    """A cxraug classifier run as an extractor (`classifier.run.load_model`)."""
    run_dir = Path(run_dir)
    check_run_dir(run_dir, flag)
    device = device or _default_device()
    model, config = run.load_model(run_dir, device, flag)
    size, in_chans = int(config["image_size"]), int(config.get("in_chans", 1))
    mean, std = (float(config["mean"]),) * in_chans, (float(config["std"]),) * in_chans
    digest = file_sha256(run.model_path(run_dir))[:16]
    preprocessing = dict(image_size=size, mean=mean, std=std, in_chans=in_chans)
    key = (digest, size, mean, std, in_chans)
    labels = tuple(config["labels"])
    return _extractor("run", str(run_dir), model, key, preprocessing, device, labels)


def load_timm_extractor(
    name: str, weights: Path, image_size: int | None = None, device: str | None = None
) -> FeatureExtractor:
    """Any timm architecture with local weights (e.g. ImageNet weights on disk).

    Uses timm's own pretrained loader with the file as source (`pretrained_cfg_overlay`),
    so classifier heads are dropped and mismatches handled as timm does; nothing is
    downloaded. Grayscale images are replicated to the model's 3 channels and normalised
    with the model's pretrained mean/std.
    """
    import timm

    weights = Path(weights)
    if not weights.is_file():
        raise UserError(f"--weights {weights}: file not found (local weights only, no download)")
    try:
        model = timm.create_model(
            name, pretrained=True, num_classes=0, pretrained_cfg_overlay={"file": str(weights)}
        )
    except RuntimeError as exc:
        raise UserError(f"--features-timm {name}: cannot load {weights} ({exc})") from None
    config = timm.data.resolve_data_config(model=model)
    size = int(image_size or config["input_size"][-1])
    in_chans = int(config["input_size"][0])
    device = device or _default_device()
    model.eval().to(device)
    digest = file_sha256(weights)[:16]
    mean, std = tuple(config["mean"]), tuple(config["std"])
    preprocessing = dict(image_size=size, mean=mean, std=std, in_chans=in_chans)
    return _extractor("timm", name, model, (name, digest, size, mean, std), preprocessing, device)


def load_feature_extractor(
    run_dir: Path | None = None,
    timm_name: str | None = None,
    weights: Path | None = None,
    image_size: int | None = None,
    device: str | None = None,
    xrv_weights: Path | None = None,
    raddino_dir: Path | None = None,
) -> FeatureExtractor | XrvFeatureExtractor | RadDinoFeatureExtractor:
    """A classifier run (`run_dir`), a timm name with local `weights`, torchxrayvision's
    DenseNet-121 with local `xrv_weights`, or a local RadDINO folder; exactly one."""
    if sum(x is not None for x in (run_dir, timm_name, xrv_weights, raddino_dir)) != 1:
        raise UserError(
            "pass exactly one feature extractor: --features RUN (a cxraug classifier run), "
            "--features-timm NAME --weights PATH, --features-xrv PATH (torchxrayvision "
            "DenseNet-121) or --features-raddino DIR (a local RadDINO folder)"
        )
    if run_dir is not None:
        return load_run_extractor(run_dir, device)
    if raddino_dir is not None:
        if weights is not None:
            raise UserError("--weights is for --features-timm; --features-raddino takes a folder")
        return load_raddino_extractor(raddino_dir, device)
    if xrv_weights is not None:
        if weights is not None:
            raise UserError(
                "--weights is for --features-timm; --features-xrv takes its weights file itself"
            )
        return load_xrv_extractor(xrv_weights, device)
    if weights is None:
        raise UserError(f"--features-timm {timm_name}: needs --weights PATH (local weights)")
    return load_timm_extractor(timm_name, weights, image_size, device)


# ---------------------------------------------------------------- the cache


class FeatureCache:
    """Arrays per content hash for one extractor: `<folder>/<key>/` of `.npz` shards.

    `index.parquet` maps each hash to (shard, row). A shard is written first, then the
    index atomically, so a crash leaves at worst an unreferenced shard, never a broken
    index. One writer at a time.
    """

    def __init__(self, folder: Path, key: str):
        self.folder = Path(folder) / key
        self.index_path = self.folder / "index.parquet"
        if self.index_path.is_file():
            self.index = pd.read_parquet(self.index_path)
        else:
            self.index = pd.DataFrame(
                {
                    "sha256": pd.Series(dtype=str),
                    "shard": pd.Series(dtype=str),
                    "row": pd.Series(dtype=np.int64),
                }
            )
        self._position = dict(zip(self.index["sha256"], range(len(self.index)), strict=True))
        self._shards: dict[str, dict[str, np.ndarray]] = {}

    def __contains__(self, sha: str) -> bool:
        return sha in self._position

    def add(self, hashes: Sequence[str], arrays: dict[str, np.ndarray]) -> None:
        """Store one row of each array per hash (new hashes only)."""
        keep = [i for i, h in enumerate(hashes) if h not in self._position]
        if not keep:
            return
        hashes = [hashes[i] for i in keep]
        arrays = {k: np.asarray(v)[keep] for k, v in arrays.items()}
        self.folder.mkdir(parents=True, exist_ok=True)
        shard = f"shard-{uuid.uuid4().hex[:12]}.npz"
        with atomic_path(self.folder / shard) as tmp, open(tmp, "wb") as f:
            np.savez(f, **arrays)
        new = pd.DataFrame({"sha256": list(hashes), "shard": shard, "row": np.arange(len(hashes))})
        index = pd.concat([self.index, new], ignore_index=True)
        with atomic_path(self.index_path, overwrite=True) as tmp:
            index.to_parquet(tmp, index=False)
        self.index = index
        start = len(index) - len(hashes)
        for offset, sha in enumerate(hashes):
            self._position[sha] = start + offset

    def get(self, hashes: Sequence[str], output: str) -> np.ndarray:
        """Rows of `output` for `hashes` (all must be present), in that order."""
        positions = [self._position[h] for h in hashes]
        shards = self.index["shard"].to_numpy()[positions]
        rows = self.index["row"].to_numpy().astype(np.int64)[positions]
        result = None
        for shard in pd.unique(shards):
            if shard not in self._shards:
                with np.load(self.folder / shard) as data:
                    self._shards[shard] = {k: data[k] for k in data.files}
            arrays = self._shards[shard]
            if output not in arrays:
                raise KeyError(f"{self.folder}: no output {output!r} in {shard}")
            where = np.flatnonzero(shards == shard)
            block = arrays[output][rows[where]]
            if result is None:
                result = np.empty((len(hashes), *block.shape[1:]), dtype=block.dtype)
            result[where] = block
        return result if result is not None else np.zeros((0,), dtype=np.float32)

    def outputs(self) -> list[str]:
        """Names of the arrays stored (those of the first shard)."""
        if not len(self.index):
            return []
        with np.load(self.folder / self.index["shard"].iloc[0]) as data:
            return list(data.files)


def image_hashes(manifest: Manifest) -> list[str]:
    """Content hash per row: `image_sha256` where recorded, else the file's SHA-256."""
    paths = manifest.image_paths()
    recorded = (
        manifest.rows["image_sha256"].tolist()
        if "image_sha256" in manifest.rows.columns
        else [None] * len(paths)
    )
    out = []
    for sha, path in zip(recorded, paths, strict=True):
        if isinstance(sha, str) and sha:
            out.append(sha)
        else:
            if not path.is_file():
                raise UserError(f"{path}: image not found")
            out.append(file_sha256(path))
    return out


def _load_many(paths: Sequence[Path], workers: int) -> list[np.ndarray]:
    if workers <= 1 or len(paths) < 2:
        return [load_image(p) for p in paths]
    # PIL decodes outside the GIL, so threads overlap the file reads and decodes.
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(load_image, paths))


def embed_images(
    paths: Sequence[Path],
    hashes: Sequence[str],
    embedders: Sequence[Embedder],
    cache_dir: Path,
    batch_size: int = 64,
    flush_every: int = 2048,
    workers: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> list[dict[str, np.ndarray]]:
    """Every embedder's outputs for every image, computing only what the cache lacks.

    Images are deduplicated by hash and each missing one is read once for all embedders
    that lack it. Results are flushed to the cache every `flush_every` images, so an
    interrupted run resumes where it stopped.

    Returns:
        per embedder, output name (e.g. `features`, `probs`, `pixels`) -> array, one row
        per path.
    """
    if len(paths) != len(hashes):
        raise ValueError("paths and hashes differ in length")
    workers = workers if workers is not None else min(4, os.cpu_count() or 1)
    caches = [FeatureCache(cache_dir, e.key) for e in embedders]
    first_path: dict[str, Path] = {}
    for path, sha in zip(paths, hashes, strict=True):
        first_path.setdefault(sha, Path(path))
    missing = [sha for sha in first_path if any(sha not in c for c in caches)]
    done = len(first_path) - len(missing)
    if progress:
        progress(done)
    bar = Progress(total=len(missing), desc="embed images", unit="img", disable=not missing)
    for start in range(0, len(missing), flush_every):
        chunk = missing[start : start + flush_every]
        pending: list[dict[str, list[np.ndarray]]] = [{} for _ in embedders]
        pending_hashes: list[list[str]] = [[] for _ in embedders]
        for b in range(0, len(chunk), batch_size):
            batch = chunk[b : b + batch_size]
            images = _load_many([first_path[s] for s in batch], workers)
            for e, (embedder, cache) in enumerate(zip(embedders, caches, strict=True)):
                need = [i for i, s in enumerate(batch) if s not in cache]
                if not need:
                    continue
                outputs = embedder([images[i] for i in need])
                for name, array in outputs.items():
                    pending[e].setdefault(name, []).append(array)
                pending_hashes[e].extend(batch[i] for i in need)
            if progress:
                progress(len(batch))
            bar.update(len(batch))
        for e, cache in enumerate(caches):
            if pending_hashes[e]:
                cache.add(pending_hashes[e], {k: np.concatenate(v) for k, v in pending[e].items()})
    bar.close()
    return [
        {name: cache.get(list(hashes), name) for name in cache.outputs()} if len(hashes) else {}
        for cache in caches
    ]


def embed_subset(
    manifest: Manifest,
    hashes: Sequence[str],
    mask: np.ndarray,
    embedder: Embedder,
    cache_dir: Path,
    batch_size: int = 64,
) -> dict[str, np.ndarray]:
    """One embedder's outputs for the rows in `mask` only, NaN elsewhere (rows in manifest order).

    For embedders that cost extra passes (the half-mirror side detector) and concern a few rows.
    """
    idx = np.flatnonzero(mask)
    paths = manifest.image_paths()
    part = embed_images(
        [paths[i] for i in idx], [hashes[i] for i in idx], [embedder], cache_dir, batch_size
    )[0]
    full = {}
    for name, array in part.items():
        full[name] = np.full((len(manifest), *array.shape[1:]), np.nan, dtype=np.float64)
        full[name][idx] = array
    return full
