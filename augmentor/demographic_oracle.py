"""The demographic oracles: who a chest X-ray looks like (sex and age), and their folder.

One small timm network with two outputs is trained on a real manifest's train images:
output 0 is the logit of female sex (binary cross-entropy on rows whose `sex` is 'F' or
'M'), output 1 the age standardised by the train mean and standard deviation (L1, the
error the reports quote, on rows with an age). A row missing one of the two trains the
other head only. Images are decoded and resized once (`classifier.data.decode_images`),
batches augmented as the classifier's are (`classifier.data.augment_batch`, no flip), and
training runs a fixed number of steps from a seed; no epoch is chosen, so no val or test
patient plays a part.

The oracles judge synthetic images (`augmentor.demographic_fidelity`,
`evaluate-generator --demographics`) and reject those whose apparent sex or age disagrees
with their prompt (`augmentor.demographic_filter`, `synthesize --filter-demographics`).
The filter chooses which images train a classifier, so what the oracle saw enters the
synthetic set's provenance: its folder records the patients of its training images.

The folder (this module owns its names; nobody else spells them):

* ``model.safetensors``: the weights;
* ``training_patients.json``: what they saw (`manifests.provenance.SeenPatients`: the
  patients of the train images it used, no validation patients);
* ``config.json``: the settings, the input size and normalisation, the age scale, the
  manifest it trained on, its counts and final losses; written last, so its presence means
  the oracle is complete.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from PIL import Image

from classifier.config import AugmentConfig
from classifier.data import augment_batch, decode_images, normalize
from classifier.models import build_model, model_normalization
from manifests.demographics import SEXES, known_sex
from manifests.errors import UserError
from manifests.files import atomic_path, read_json, write_json
from manifests.io import Manifest
from manifests.provenance import SeenPatients

ORACLE_SCHEMA = "cxraug.demographic_oracle/1"
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
PATIENTS_FILE = "training_patients.json"
MIN_PER_SEX = 2  # train images of each sex the sex head needs
MIN_AGES = 2  # train images with an age the age head needs (a spread to standardise by)


@dataclass(frozen=True)
class DemographicSettings:
    """How the oracles are built and trained (all of it goes into their key).

    Attributes:
        backbone: timm model name (1 input channel, 2 outputs).
        image_size: side the images are resized to.
        steps: optimizer steps.
        batch_size: images per step.
        lr: AdamW's learning rate.
        max_images: at most this many train images (a random subset beyond it).
        seed: initialisation, subset, batches and augmentation.
    """

    backbone: str = "resnet18"
    image_size: int = 64
    steps: int = 300
    batch_size: int = 32
    lr: float = 1e-3
    max_images: int = 20000
    seed: int = 0


@dataclass
class DemographicOracle:
    """A trained pair of oracles: the network, its config and what it saw.

    Attributes:
        model: the timm network (eval mode): logits of female sex, standardised age.
        config: `config.json` (settings, normalisation, age scale, counts).
        seen: the patients whose images trained it.
        digest: SHA-256 of its weights (the key of its predictions in the feature cache).
        folder: where it was saved, if it was.
    """

    model: torch.nn.Module
    config: dict
    seen: SeenPatients
    digest: str
    folder: Path | None = None


# ---------------------------------------------------------------- training data


def training_rows(manifest: Manifest, where: str) -> pd.DataFrame:
    """The real train rows that teach the oracles something (a known sex or age).

    One UserError naming `where` and what is missing when the train split cannot train
    both heads: images of each sex and images with an age.
    """
    rows = manifest.rows
    train = rows[(rows["source"] == "real") & (rows["split"] == "train")]
    sex = pd.Series(
        known_sex(train["sex"]) if "sex" in train else [None] * len(train), index=train.index
    )
    age = (
        pd.to_numeric(train["age"], errors="coerce")
        if "age" in train
        else pd.Series(np.nan, index=train.index)
    )
    counts = {s: int((sex == s).sum()) for s in SEXES}
    missing = [f"sex {s} ({counts[s]} images)" for s in SEXES if counts[s] < MIN_PER_SEX]
    if int(age.notna().sum()) < MIN_AGES:
        missing.append(f"age ({int(age.notna().sum())} images)")
    if missing:
        raise UserError(
            f"{where}: the real train split ({len(train)} images) lacks known "
            f"{', '.join(missing)}; the demographic oracles need at least {MIN_PER_SEX} train "
            f"images of each sex and {MIN_AGES} with an age (columns sex 'F'/'M' and age)"
        )
    keep = sex.notna() | age.notna()
    return train[keep].assign(sex=sex[keep], age=age[keep])


def training_key(settings: DemographicSettings, rows: pd.DataFrame, hashes: Sequence[str]) -> str:
    """SHA-256 over the settings and the train images (hash, patient, sex, age), sorted."""
    items = sorted(
        zip(
            map(str, hashes),
            rows["patient_id"].astype(str),
            rows["sex"].astype(str),
            rows["age"].astype(str),
            strict=True,
        )
    )
    text = json.dumps({"settings": asdict(settings), "images": items}, sort_keys=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _subset(rows: pd.DataFrame, max_images: int, seed: int) -> np.ndarray:
    """Positions of at most `max_images` rows (a seeded random subset, in row order)."""
    if len(rows) <= max_images:
        return np.arange(len(rows))
    rng = np.random.default_rng([seed, 41])
    return np.sort(rng.choice(len(rows), max_images, replace=False))


def _check_settings(settings: DemographicSettings) -> None:
    for name, least in (("image_size", 16), ("steps", 1), ("batch_size", 1), ("max_images", 1)):
        if getattr(settings, name) < least:
            raise UserError(
                f"demographic oracle {name}: {getattr(settings, name)}; at least {least}"
            )


# ---------------------------------------------------------------- training


def fit_demographic_oracle(
    manifest: Manifest,
    settings: DemographicSettings = DemographicSettings(),
    device: str = "cpu",
    where: str = "--real",
    hashes: Sequence[str] | None = None,
    say: Callable[[str], None] = lambda _: None,
) -> DemographicOracle:
    """Train the sex and age oracles on the real train images of `manifest`.

    Args:
        manifest: a real manifest split by patient (its train rows are used).
        settings: network, size, steps, seed.
        device: torch device.
        where: the flag or file named in errors.
        hashes: content hash per manifest row, for the key (default: the image paths).
        say: progress lines.

    Returns:
        the oracle (not saved; `save_demographic_oracle`).
    """
    _check_settings(settings)
    rows = _used_rows(manifest, settings, where)
    all_paths = manifest.image_paths()
    paths = [all_paths[i] for i in rows.index]
    row_hashes = _row_hashes(rows, hashes)
    say(f"demographic oracles: decoding {len(rows)} train images at {settings.image_size} px")
    images = decode_images(paths, settings.image_size).images
    sex = rows["sex"].to_numpy(dtype=object)
    female = torch.tensor([1.0 if s == "F" else 0.0 for s in sex])
    sex_mask = torch.tensor([1.0 if s in SEXES else 0.0 for s in sex])
    ages = rows["age"].to_numpy(dtype=np.float64)
    age_mean, age_std = float(np.nanmean(ages)), float(np.nanstd(ages)) or 1.0
    age_z = torch.tensor(np.nan_to_num((ages - age_mean) / age_std), dtype=torch.float32)
    age_mask = torch.tensor(~np.isnan(ages), dtype=torch.float32)

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(settings.seed)
        model = build_model(settings.backbone, 2)
    mean, std = model_normalization(model)
    model = model.to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=settings.lr)
    rng = np.random.default_rng([settings.seed, 43])
    gen = torch.Generator().manual_seed(settings.seed)
    augment = AugmentConfig()
    per_step = min(settings.batch_size, len(rows))
    sex_losses, age_losses = [], []
    say(f"demographic oracles: training {settings.backbone} for {settings.steps} steps")
    for step in range(settings.steps):
        idx = np.sort(rng.choice(len(rows), per_step, replace=False))
        x = augment_batch(torch.from_numpy(np.asarray(images[idx])).to(device), augment, gen)
        out = model(normalize(x, mean, std))
        t = torch.as_tensor(idx)
        sex_loss = _masked(
            F.binary_cross_entropy_with_logits(out[:, 0], female[t].to(device), reduction="none"),
            sex_mask[t].to(device),
        )
        age_loss = _masked((out[:, 1] - age_z[t].to(device)).abs(), age_mask[t].to(device))
        loss = sex_loss + age_loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        sex_losses.append(float(sex_loss.detach()))
        age_losses.append(float(age_loss.detach()) * age_std)
        if (step + 1) % 100 == 0:
            say(
                f"demographic oracles: step {step + 1}/{settings.steps}, sex BCE "
                f"{np.mean(sex_losses[-20:]):.3f}, age MAE {np.mean(age_losses[-20:]):.1f} y"
            )
    patients = sorted(set(rows["patient_id"].astype(str)))
    config = {
        "schema": ORACLE_SCHEMA,
        "settings": asdict(settings),
        "key": training_key(settings, rows, row_hashes),
        "backbone": settings.backbone,
        "image_size": settings.image_size,
        "mean": mean,
        "std": std,
        "outputs": ["logit of female sex", "age standardised by age_mean, age_std"],
        "age_mean": age_mean,
        "age_std": age_std,
        "n_train_images": int(len(rows)),
        "n_train_patients": len(patients),
        "n_sex": {s: int((sex == s).sum()) for s in SEXES},
        "n_age": int((~np.isnan(ages)).sum()),
        "final_sex_bce": float(np.mean(sex_losses[-20:])),
        "final_age_mae": float(np.mean(age_losses[-20:])),
    }
    model = model.eval()
    return DemographicOracle(model, config, SeenPatients.of(patients), _weights_digest(model))


def _masked(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of `values` where `mask` is 1 (0 when nothing is)."""
    return (values * mask).sum() / mask.sum().clamp(min=1.0)


def _used_rows(manifest: Manifest, settings: DemographicSettings, where: str) -> pd.DataFrame:
    """The train rows the oracles learn from (index: row positions in `manifest`)."""
    rows = training_rows(manifest.with_rows(manifest.rows), where)  # a 0..n-1 index
    return rows.iloc[_subset(rows, settings.max_images, settings.seed)]


def _row_hashes(rows: pd.DataFrame, hashes: Sequence[str] | None) -> list[str]:
    """Each used row's content hash (its image path when no hashes are given)."""
    if hashes is None:
        return [str(p) for p in rows["image_path"]]
    return [hashes[i] for i in rows.index]


def _weights_digest(model: torch.nn.Module) -> str:
    digest = hashlib.sha256()
    for name, value in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(value.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


# ---------------------------------------------------------------- the folder


def is_demographic_oracle(folder: Path) -> bool:
    """Whether `folder` holds a complete oracle (its config.json is written last)."""
    return (Path(folder) / CONFIG_FILE).is_file()


def save_demographic_oracle(oracle: DemographicOracle, folder: Path) -> Path:
    """Write the oracle into `folder` (weights, patients, then config.json); returns it."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in oracle.model.state_dict().items()}
    with atomic_path(folder / WEIGHTS_FILE, overwrite=True) as tmp:
        save_file(state, str(tmp))
    write_json(folder / PATIENTS_FILE, oracle.seen.to_dict())
    write_json(folder / CONFIG_FILE, oracle.config)
    oracle.folder = folder
    return folder


def read_oracle_config(folder: Path, flag: str) -> dict:
    """An oracle folder's config.json; one UserError naming `flag` when it is not one."""
    folder = Path(folder)
    if not is_demographic_oracle(folder):
        what = "not found" if not folder.exists() else f"no {CONFIG_FILE}"
        raise UserError(
            f"{flag} {folder}: not a demographic oracle folder ({what}); pass the "
            "demographic_oracle folder of cxraug evaluate-generator --demographics"
        )
    config = read_json(folder / CONFIG_FILE, "demographic oracle config")
    if config.get("schema") != ORACLE_SCHEMA:
        raise UserError(
            f"{flag} {folder}: {CONFIG_FILE} is not a demographic oracle's "
            f"(schema {config.get('schema')!r}, expected {ORACLE_SCHEMA})"
        )
    return config


def oracle_seen(folder: Path, flag: str) -> SeenPatients:
    """The patients whose images trained the oracle in `folder`."""
    read_oracle_config(folder, flag)
    path = Path(folder) / PATIENTS_FILE
    if not path.is_file():
        raise UserError(f"{flag} {folder}: no {PATIENTS_FILE}; what trained it cannot be checked")
    return SeenPatients.from_dict(read_json(path, "demographic oracle patients"), str(path))


def load_demographic_oracle(folder: Path, device: str = "cpu", flag: str = "--oracle"):
    """The oracle saved in `folder` (eval mode on `device`)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder = Path(folder)
    config = read_oracle_config(folder, flag)
    seen = oracle_seen(folder, flag)
    model = build_model(str(config["backbone"]), 2)
    try:
        model.load_state_dict(load_file(str(folder / WEIGHTS_FILE)))
    except (SafetensorError, OSError, RuntimeError) as e:
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise UserError(f"{flag} {folder / WEIGHTS_FILE}: unreadable weights ({first})") from None
    model = model.to(device).eval()
    return DemographicOracle(model, config, seen, _weights_digest(model), folder)


def load_or_train_oracle(
    manifest: Manifest,
    folder: Path,
    settings: DemographicSettings,
    hashes: Sequence[str] | None = None,
    device: str = "cpu",
    where: str = "--real",
    say: Callable[[str], None] = lambda _: None,
) -> DemographicOracle:
    """The oracle in `folder` when it was trained with these settings on these train
    images (same key); else one trained now and saved there."""
    if is_demographic_oracle(folder):
        rows = _used_rows(manifest, settings, where)
        key = training_key(settings, rows, _row_hashes(rows, hashes))
        if read_oracle_config(folder, where).get("key") == key:
            say(f"demographic oracles: reusing {folder}")
            return load_demographic_oracle(folder, device, where)
    oracle = fit_demographic_oracle(manifest, settings, device, where, hashes, say)
    save_demographic_oracle(oracle, folder)
    return load_demographic_oracle(folder, device, where)


# ---------------------------------------------------------------- predictions


class DemographicEmbedder:
    """The oracle as a feature-cache embedder: outputs `female_prob` and `age` (years)."""

    def __init__(self, oracle: DemographicOracle, device: str = "cpu"):
        self.model = oracle.model.to(device).eval()
        self.key = f"demographic-{oracle.digest[:16]}"
        self.size = int(oracle.config["image_size"])
        self.mean, self.std = float(oracle.config["mean"]), float(oracle.config["std"])
        self.age_mean = float(oracle.config["age_mean"])
        self.age_std = float(oracle.config["age_std"])
        self.device = device

    @torch.inference_mode()
    def __call__(self, images: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
        batch = np.stack([_resized(im, self.size) for im in images])[:, None]
        x = normalize(torch.from_numpy(batch).float().div(255.0), self.mean, self.std)
        out = self.model(x.to(self.device)).float().cpu()
        return {
            "female_prob": torch.sigmoid(out[:, 0]).numpy(),
            "age": (out[:, 1] * self.age_std + self.age_mean).numpy(),
        }


def _resized(image: np.ndarray, size: int) -> np.ndarray:
    """The resize the oracles trained with (`classifier.data.decode_resized`: PIL bilinear)."""
    image = np.asarray(image, dtype=np.uint8)
    if image.shape == (size, size):
        return image
    resized = Image.fromarray(image, mode="L").resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(resized)


def predict_demographics(
    oracle: DemographicOracle,
    paths: Sequence[Path],
    hashes: Sequence[str],
    cache_dir: Path,
    batch_size: int = 64,
    device: str = "cpu",
) -> pd.DataFrame:
    """Per image: `pred_female_prob`, `pred_sex` ('F' at 0.5 or above, else 'M') and
    `pred_age` (years), through the feature cache (by image hash)."""
    from augmentor.features import embed_images

    if not len(paths):
        return pd.DataFrame({"pred_female_prob": [], "pred_sex": [], "pred_age": []})
    out = embed_images(paths, hashes, [DemographicEmbedder(oracle, device)], cache_dir, batch_size)
    prob = out[0]["female_prob"].astype(np.float64)
    return pd.DataFrame(
        {
            "pred_female_prob": prob,
            "pred_sex": np.where(prob >= 0.5, "F", "M").astype(object),
            "pred_age": out[0]["age"].astype(np.float64),
        }
    )


__all__ = [
    "CONFIG_FILE",
    "ORACLE_SCHEMA",
    "PATIENTS_FILE",
    "WEIGHTS_FILE",
    "DemographicEmbedder",
    "DemographicOracle",
    "DemographicSettings",
    "fit_demographic_oracle",
    "is_demographic_oracle",
    "load_demographic_oracle",
    "load_or_train_oracle",
    "oracle_seen",
    "predict_demographics",
    "read_oracle_config",
    "save_demographic_oracle",
    "training_key",
    "training_rows",
]
