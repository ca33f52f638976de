"""Patient verification for the re-identification audit: the model, its scores, its threshold.

A small convolutional embedding is trained contrastively on the real train split: two
images of one patient from different studies are a positive pair, images of the other
patients in the batch negatives (InfoNCE). The score of two images is the cosine of their
embeddings; the score of an image against a patient is the highest score over that
patient's images (`patient_scores`). The threshold comes from real val patients, whom the
model never saw: the score at which at most `false_match_rate` of (image, other val
patient) pairs match (`verification_threshold`).

Training is deterministic in its seed (CPU) and takes a few hundred steps; the weights are
stored under the evaluation's cache folder by a key over the settings and the train images
(`load_or_fit_reid`), so a rerun over the same train split reuses them, and the
embeddings go through the feature cache like every other extractor's (`ReidEmbedder`).
The audit that uses it is `augmentor.privacy`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file, save_file

from manifests.errors import UserError
from manifests.files import atomic_path, write_json
from manifests.images import load_image

REID_DIR = "reid"  # under the cache folder: one sub-folder per model key
WEIGHTS_FILE = "model.safetensors"
RECORD_FILE = "reid.json"


@dataclass(frozen=True)
class ReidSettings:
    """How the verification model is built and trained (all of it goes into its key).

    Attributes:
        image_size: side the images are resized to.
        steps: optimizer steps.
        batch_patients: patients per batch (two images of each, from different studies).
        dim: embedding size.
        lr: Adam's learning rate. At 2e-3 the loss sat at chance for the first 100-200
            steps on a phantom train split of 16 patients, how long depending on the seed;
            at 5e-4 it falls from the first steps at every seed tried, and after 200 steps
            is lower than 2e-3's (`benchmarks/privacy_memorization.py`; docs/privacy.md).
        temperature: InfoNCE temperature.
        seed: initialisation, batches and augmentation.
    """

    image_size: int = 64
    steps: int = 300
    batch_patients: int = 16
    dim: int = 64
    lr: float = 5e-4
    temperature: float = 0.2
    seed: int = 0


# ---------------------------------------------------------------- model


class ReidNet(torch.nn.Module):
    """Four strided conv blocks, a 4x4 pooled map (where anatomy lies matters) and a linear
    head, on the image minus the mean train image (`centre`, a buffer saved with the
    weights): chest films share one layout, and what tells patients apart is how each
    departs from it. GroupNorm, so a batch of any size behaves the same in training and
    scoring."""

    def __init__(self, dim: int = 64, image_size: int = 64):
        super().__init__()

        def block(c_in: int, c_out: int) -> list[torch.nn.Module]:
            return [
                torch.nn.Conv2d(c_in, c_out, 3, stride=2, padding=1),
                torch.nn.GroupNorm(4, c_out),
                torch.nn.ReLU(),
            ]

        self.register_buffer("centre", torch.zeros(1, 1, image_size, image_size))
        self.net = torch.nn.Sequential(
            *block(1, 16),
            *block(16, 32),
            *block(32, 64),
            *block(64, 64),
            torch.nn.AdaptiveAvgPool2d(4),
            torch.nn.Flatten(),
            torch.nn.Linear(64 * 16, dim),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x - self.centre)


def build_reid_model(dim: int = 64, image_size: int = 64) -> ReidNet:
    """An untrained verification network (initialised from torch's global generator)."""
    return ReidNet(dim, image_size)


def preprocess(images: Sequence[np.ndarray], size: int) -> torch.Tensor:
    """uint8 images -> (N, 1, size, size), each standardised to zero mean and unit variance
    (exposure and contrast vary between studies of one patient; they say nothing of who)."""
    batch = np.stack([_resized(im, size) for im in images]).astype(np.float32)
    mean = batch.mean(axis=(1, 2), keepdims=True)
    std = batch.std(axis=(1, 2), keepdims=True)
    return torch.from_numpy((batch - mean) / (std + 1e-6)).unsqueeze(1)


def _resized(image: np.ndarray, size: int) -> np.ndarray:
    image = np.asarray(image, dtype=np.uint8)
    if image.shape == (size, size):
        return image
    return np.asarray(Image.fromarray(image).resize((size, size), Image.Resampling.BILINEAR))


def embed(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Unit-norm embeddings (their dot product is the cosine score)."""
    return F.normalize(model(x), dim=1)


class ReidEmbedder:
    """The verification model as a feature-cache embedder: output `reid` (unit-norm rows)."""

    def __init__(self, model: torch.nn.Module, key: str, image_size: int, device: str = "cpu"):
        self.model = model.to(device).eval()
        self.key = f"reid-{key[:16]}"
        self.image_size = image_size
        self.device = device

    @torch.inference_mode()
    def __call__(self, images: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
        x = preprocess(images, self.image_size).to(self.device)
        return {"reid": embed(self.model, x).float().cpu().numpy()}


# ---------------------------------------------------------------- training


def pair_patients(patients: np.ndarray, studies: np.ndarray) -> dict[str, list[np.ndarray]]:
    """Patients with images from two or more studies: patient -> row indices per study."""
    out: dict[str, list[np.ndarray]] = {}
    for patient, rows in _groups(patients).items():
        by_study = list(_groups(studies[rows]).values())
        if len(by_study) >= 2:
            out[patient] = [rows[s] for s in by_study]
    return out


def _groups(values: Sequence) -> dict[str, np.ndarray]:
    """Value -> the row indices holding it (ascending), by one sort."""
    values = np.asarray(values).astype(str)
    order = np.argsort(values, kind="stable")
    uniques, starts = np.unique(values[order], return_index=True)
    ends = np.append(starts[1:], len(values))
    return {str(u): order[a:b] for u, a, b in zip(uniques, starts, ends, strict=True)}


def _gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """`x` (N, 1, H, W) blurred by a separable Gaussian of `sigma` px (edges replicated)."""
    radius = max(1, round(2 * sigma))
    taps = torch.arange(-radius, radius + 1, dtype=x.dtype)
    kernel = torch.exp(-(taps**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    x = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode="replicate"), kernel.view(1, 1, 1, -1))
    return F.conv2d(F.pad(x, (0, 0, radius, radius), mode="replicate"), kernel.view(1, 1, -1, 1))


def _augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Blur, small shifts, gain, offset and noise: what differs between two films of one
    chest, and between a film and a generator's redrawing of it.

    The blur (a random mix of the image and its 1 px Gaussian blur at 64 px, scaled with
    the size) is for the redrawing: a generator's images are smoother than films (its
    autoencoder drops grain and fine texture), and without it a tiny generator's near-copies
    of a train film (centred pixel correlation 0.8-0.9) often scored below the threshold
    against their own patient (`benchmarks/privacy_memorization.py`).
    """
    n, _, size, _ = x.shape
    mix = torch.rand(n, 1, 1, 1, generator=gen)
    x = (1 - mix) * x + mix * _gaussian_blur(x, size / 64)
    pad = max(1, size // 16)
    padded = F.pad(x, (pad, pad, pad, pad), mode="replicate")
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
    x = torch.stack([padded[i, :, dy[i] : dy[i] + size, dx[i] : dx[i] + size] for i in range(n)])
    gain = 1 + 0.1 * torch.randn(n, 1, 1, 1, generator=gen)
    offset = 0.1 * torch.randn(n, 1, 1, 1, generator=gen)
    return x * gain + offset + 0.05 * torch.randn(x.shape, generator=gen)


def fit_reid(
    paths: Sequence[Path],
    patients: np.ndarray,
    studies: np.ndarray,
    settings: ReidSettings,
    device: str = "cpu",
    say: Callable[[str], None] = lambda _: None,
) -> tuple[torch.nn.Module, list[float]]:
    """Train the verification model on same-patient, different-study pairs of `paths`.

    Each step draws `batch_patients` distinct patients (all of them when fewer), two of
    each one's studies and an image of each; InfoNCE makes each image find its partner
    among the batch's other-patient images, both ways.

    Returns:
        the model (eval mode) and the loss of every step.
    """
    pairable = pair_patients(np.asarray(patients), np.asarray(studies))
    if len(pairable) < 2:
        raise UserError(
            f"--privacy: {len(pairable)} real train patient(s) with images from two or more "
            "studies; the verification model needs at least 2 (same-patient pairs)"
        )
    names = sorted(pairable)
    rng = np.random.default_rng([settings.seed, 17])
    gen = torch.Generator().manual_seed(settings.seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(settings.seed)
        model = build_reid_model(settings.dim, settings.image_size)
    cache: dict[int, np.ndarray] = {}

    def image(i: int) -> np.ndarray:
        if i not in cache:  # resized once: a few thousand small images at most
            cache[i] = _resized(load_image(paths[i]), settings.image_size)
        return cache[i]

    # The mean of (at most 512) train images, each standardised as the model sees them.
    sample = rng.choice(len(paths), min(len(paths), 512), replace=False)
    model.centre.copy_(preprocess([image(int(i)) for i in sample], settings.image_size).mean(0))
    model = model.to(device).train()
    opt = torch.optim.Adam(model.parameters(), lr=settings.lr)

    per_batch = min(settings.batch_patients, len(names))
    losses = []
    for step in range(settings.steps):
        chosen = rng.choice(len(names), per_batch, replace=False)
        first, second = [], []
        for p in chosen:
            groups = pairable[names[p]]
            a, b = rng.choice(len(groups), 2, replace=False)
            first.append(int(rng.choice(groups[a])))
            second.append(int(rng.choice(groups[b])))
        x = preprocess([image(i) for i in first + second], settings.image_size)
        z = embed(model, _augment(x, gen).to(device))
        logits = z[:per_batch] @ z[per_batch:].T / settings.temperature
        target = torch.arange(per_batch, device=device)
        loss = (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        if (step + 1) % 100 == 0:
            say(f"verification model: step {step + 1}/{settings.steps}, loss {loss:.3f}")
    return model.eval(), losses


def reid_key(settings: ReidSettings, hashes: Sequence[str], patients, studies) -> str:
    """SHA-256 over the settings and the train images (hash, patient, study), sorted."""
    rows = sorted(zip(map(str, hashes), map(str, patients), map(str, studies), strict=True))
    text = json.dumps({"settings": asdict(settings), "images": rows}, sort_keys=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def load_or_fit_reid(
    paths: Sequence[Path],
    hashes: Sequence[str],
    patients: np.ndarray,
    studies: np.ndarray,
    settings: ReidSettings,
    cache_dir: Path,
    device: str = "cpu",
    say: Callable[[str], None] = lambda _: None,
) -> tuple[ReidEmbedder, dict]:
    """The verification model of these train images: read from `cache_dir/reid/<key>/`
    when one was trained there with the same settings, else trained and saved there.

    Returns:
        the embedder and its record (settings, key, folder, train counts, final loss).
    """
    key = reid_key(settings, hashes, patients, studies)
    folder = Path(cache_dir) / REID_DIR / key[:16]
    weights, record_path = folder / WEIGHTS_FILE, folder / RECORD_FILE
    model = build_reid_model(settings.dim, settings.image_size)
    if weights.is_file() and record_path.is_file():
        say(f"verification model: reusing {folder}")
        model.load_state_dict(load_file(str(weights)))
        record = json.loads(record_path.read_text())
    else:
        say(f"verification model: training {settings.steps} steps on {len(paths)} train images")
        model, losses = fit_reid(paths, patients, studies, settings, "cpu", say)
        with atomic_path(weights, overwrite=True) as tmp:
            save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp))
        record = {
            "settings": asdict(settings),
            "key": key,
            "n_train_images": len(paths),
            "n_train_patients": int(len(set(map(str, patients)))),
            "n_pair_patients": len(pair_patients(np.asarray(patients), np.asarray(studies))),
            "final_loss": float(np.mean(losses[-20:])),
        }
        write_json(record_path, record, overwrite=True)
    record = {**record, "folder": str(folder)}
    return ReidEmbedder(model, key, settings.image_size, device), record


# ---------------------------------------------------------------- scores and threshold


def _max_cosine(query: np.ndarray, ref: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per query row: the highest dot product with a `ref` row and that row's index
    (in chunks: a query block times every reference stays under ~64 MB)."""
    best = np.full(len(query), -np.inf)
    arg = np.zeros(len(query), dtype=np.int64)
    if not len(ref):
        return np.full(len(query), np.nan), arg
    step = max(1, 2**24 // max(1, len(ref)))
    for start in range(0, len(query), step):
        sims = query[start : start + step] @ ref.T
        arg[start : start + step] = sims.argmax(axis=1)
        best[start : start + step] = sims.max(axis=1)
    return best, arg


def patient_scores(
    query: np.ndarray,
    targets: Sequence[str | None],
    ref: np.ndarray,
    ref_patients: np.ndarray,
    query_studies: Sequence[str] | None = None,
    ref_studies: np.ndarray | None = None,
) -> np.ndarray:
    """Score of each query image against one patient: the highest cosine over that
    patient's reference images (NaN where the patient has none, or no target is given).

    With `query_studies` and `ref_studies`, reference images of the query's own study
    are left out (an image scored against the other studies of its own patient).
    """
    out = np.full(len(query), np.nan)
    rows_of = _groups(ref_patients)
    named = np.flatnonzero([t is not None for t in targets])
    for patient, at in _groups([str(targets[i]) for i in named]).items():
        refs = rows_of.get(patient)
        if refs is None:
            continue
        queries = named[at]
        sims = query[queries] @ ref[refs].T
        if query_studies is not None and ref_studies is not None:
            own = np.asarray(query_studies).astype(str)[queries][:, None]
            sims = np.where(
                own == np.asarray(ref_studies).astype(str)[refs][None, :], -np.inf, sims
            )
        best = sims.max(axis=1) if sims.shape[1] else np.full(len(queries), -np.inf)
        out[queries] = np.where(np.isfinite(best), best, np.nan)
    return out


def nearest_patient(
    query: np.ndarray, ref: np.ndarray, ref_patients: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Each query image's highest cosine over every reference image, and whose image it is."""
    best, arg = _max_cosine(query, ref)
    return best, np.asarray(ref_patients).astype(str)[arg]


def heldout_pairs(
    emb: np.ndarray, patients: np.ndarray, studies: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(image, patient) scores among held-out patients: each image against its own patient's
    other studies (same-patient pairs) and against every other patient (different-patient
    pairs)."""
    patients = np.asarray(patients).astype(str)
    same = patient_scores(emb, patients, emb, patients, studies, np.asarray(studies))
    others = sorted(set(patients))
    different = [
        patient_scores(emb[patients != p], [p] * int((patients != p).sum()), emb, patients)
        for p in others
    ]
    diff = np.concatenate(different) if different else np.zeros(0)
    return same[np.isfinite(same)], diff[np.isfinite(diff)]


def verification_threshold(different: np.ndarray, false_match_rate: float) -> float:
    """The lowest score of `different` such that at most `false_match_rate` of them lie
    strictly above it (a match is a score above the threshold). With fewer than
    1 / `false_match_rate` pairs that is their maximum: the rate then cannot be resolved
    below 1 / n, and the threshold is the strictest the pairs support."""
    if not 0 < false_match_rate < 1:
        raise UserError(f"--false-match-rate: {false_match_rate}; valid: between 0 and 1")
    scores = np.sort(np.asarray(different, dtype=np.float64))[::-1]
    if not len(scores):
        raise UserError(
            "--privacy: no different-patient pairs among real val images; the threshold "
            "needs val images of at least 2 patients"
        )
    allowed = int(np.floor(false_match_rate * len(scores)))
    return float(scores[min(allowed, len(scores) - 1)])


__all__ = [
    "ReidEmbedder",
    "ReidSettings",
    "ReidNet",
    "build_reid_model",
    "fit_reid",
    "heldout_pairs",
    "load_or_fit_reid",
    "nearest_patient",
    "pair_patients",
    "patient_scores",
    "preprocess",
    "reid_key",
    "verification_threshold",
]
