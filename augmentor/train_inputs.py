"""What a fine-tune trains from, prepared before its loop (`augmentor.finetune`).

Owns the run's shared context (`Run`), the loaded base (`Base`, `load_base`), the training
rows (`load_train_data`: real train rows with their reports as prompts), the patients a
cxraug generator given as the base was trained on (`base_patients`: refused when they reach
a val or test patient of the manifest, else recorded with the run's own) and the stages
that fill the frozen-input caches, in the order `finetune` calls them:

* The base's autoencoder stays frozen (`tiny`'s is the pretrained one the package ships).
  With `fit_autoencoder` (`tiny` only), `fit_tiny_autoencoder` first fits `tiny`'s
  autoencoder from scratch on the training images (`augmentor.autoencoder.fit_autoencoder`);
  the fit is saved in the run folder and every rank loads that copy.
* `fit_film_grain` measures the grain the frozen autoencoder drops (`augmentor.grain`).
* `cache_posteriors`: each training image is encoded by the autoencoder once; its posterior
  (mean and log-variance) is cached and every step samples from it (`augmentor.latents`).
* `cache_text`: the reports are tokenized; while the text encoder is frozen, each distinct
  report is embedded once.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from augmentor import generator
from augmentor.autoencoder import fit_autoencoder
from augmentor.base import image_channels, load_pipeline
from augmentor.config import FinetuneConfig, resolved_caption_dropout, resolved_film_grain
from augmentor.grain import fit_autoencoder_grain
from augmentor.latents import cache_latents, load_pixels
from manifests import provenance
from manifests.errors import UserError
from manifests.files import file_sha256
from manifests.io import Manifest, read_manifest
from manifests.splits import check_leakage

# -------------------------------------------------------------------------------- the run


@dataclass
class Run:
    """What every phase of one run shares: config, folder, accelerator, log, timings."""

    cfg: FinetuneConfig
    out: Path
    accelerator: Any
    log: Callable[[str], None]
    timings: dict[str, float] = field(default_factory=dict)
    started: float = field(default_factory=time.perf_counter)

    @property
    def main(self) -> bool:
        return self.accelerator.is_main_process

    @property
    def rank(self) -> int:
        return self.accelerator.process_index

    @property
    def world(self) -> int:
        return self.accelerator.num_processes

    @property
    def device(self) -> torch.device:
        return self.accelerator.device

    def say(self, text: str) -> None:
        if self.main:
            self.log(text)

    def announce(self, data: TrainData, base: Base) -> None:
        self.say(
            f"finetune: {len(data.paths)} train images with reports"
            + (f" ({data.dropped_empty} without report dropped)" if data.dropped_empty else "")
            + f", base {self.cfg.base}, {base.resolution}px, {base.channels}-channel "
            f"autoencoder, prediction {base.noise_scheduler.config.prediction_type}, "
            f"{self.world} process(es)"
        )


# ------------------------------------------------------------------------------- the base


@dataclass
class Base:
    """The base pipeline's parts, the training resolution and the noise scheduler."""

    pipe: Any
    vae: Any
    unet: Any
    text_encoder: Any
    tokenizer: Any
    channels: int
    resolution: int
    noise_scheduler: Any
    load_seconds: float


def load_base(cfg: FinetuneConfig) -> Base:
    """Load `--base` and check `--resolution` against it; writes nothing.

    A missing, partial or corrupt base is one UserError naming it.
    """
    from diffusers import DDPMScheduler

    t = time.perf_counter()
    pipe = load_pipeline(
        cfg.base,
        allow_download=cfg.allow_download,
        pretrained_autoencoder=not cfg.fit_autoencoder,
        flag="--base",
    )
    vae, unet = pipe.vae, pipe.unet
    vae_scale = 2 ** (len(vae.config.block_out_channels) - 1)
    default = int(unet.config.sample_size) * vae_scale
    resolution = cfg.resolution or default
    multiple = vae_scale * 2 ** (len(unet.config.block_out_channels) - 1)
    if resolution % multiple:
        raise UserError(
            f"--resolution: {resolution}; this base needs a multiple of {multiple} "
            f"(default {default})"
        )
    return Base(
        pipe=pipe,
        vae=vae,
        unet=unet,
        text_encoder=pipe.text_encoder,
        tokenizer=pipe.tokenizer,
        channels=image_channels(pipe),
        resolution=resolution,
        noise_scheduler=DDPMScheduler.from_config(pipe.scheduler.config),
        load_seconds=time.perf_counter() - t,
    )


# ----------------------------------------------------------------------------------- data


@dataclass
class TrainData:
    """The training rows of a manifest: image paths, prompts, image hashes; the manifest's
    val/test patients; the patients the base generator was trained on (`base_patients`)."""

    manifest: Manifest
    paths: list[Path]
    prompts: list[str]
    shas: list[str | None]
    dropped_empty: int
    held_out: dict[str, str] = field(default_factory=dict)  # val/test patient -> split
    base_patients: list[str] = field(default_factory=list)

    @property
    def patients(self) -> list[str]:
        """The patients whose images and reports train the generator in this run, sorted."""
        return sorted({str(p) for p in self.manifest.rows["patient_id"]})

    @property
    def generator_patients(self) -> list[str]:
        """Everything the finished generator has seen: this run's and its base's patients."""
        return sorted({*self.patients, *self.base_patients})


def _read_manifest(path: Path) -> Manifest:
    try:
        return read_manifest(path)
    except (UnicodeDecodeError, pa.ArrowException) as e:  # e.g. a report that is not UTF-8
        text = str(e).strip().splitlines()
        raise UserError(
            f"{path}: cannot read its rows ({text[0] if text else e.__class__.__name__}); "
            "every text column (e.g. report) must be valid UTF-8"
        ) from None


def load_train_data(manifest_path: Path) -> TrainData:
    """Real train rows with report text (the prompt).

    Refuses a manifest never split by patient (no val or test rows: its test patients would
    train the generator), leakage, empty input and missing image files.
    """
    manifest = _read_manifest(Path(manifest_path))
    check_leakage(manifest, where=str(manifest_path))
    rows = manifest.rows
    real = rows["source"] == "real"
    if not (real & rows["split"].isin(["val", "test"])).any():
        raise UserError(
            f"{manifest_path}: never split by patient (no real val or test rows); split it "
            f"first (cxraug manifest split {manifest_path}) so no evaluation patient trains "
            "the generator"
        )
    train = rows[(rows["split"] == "train") & real]
    if train.empty:
        raise UserError(
            f"{manifest_path}: no real rows with split 'train'; split it first "
            "(cxraug manifest split)"
        )
    try:
        reports = train["report"].astype("string").fillna("").str.strip()
    except (UnicodeDecodeError, pa.ArrowException):  # arrow-backed strings check on use
        raise UserError(
            f"{manifest_path}: column 'report' holds text that is not valid UTF-8; "
            "re-encode the reports as UTF-8"
        ) from None
    keep = reports != ""
    if not keep.any():
        raise UserError(
            f"{manifest_path}: no report text in the {len(train)} train rows (column 'report'); "
            "fine-tuning needs reports as prompts"
        )
    train_manifest = manifest.with_rows(train[keep.to_numpy()])
    paths = train_manifest.image_paths()
    missing = [p for p in paths if not p.is_file()]
    if missing:  # found now, not after the base loaded and the run began
        raise UserError(
            f"{missing[0]}: image not found ({len(missing)} of {len(paths)} train images of "
            f"{manifest_path} missing)"
        )
    shas = (
        [s if isinstance(s, str) and s else None for s in train_manifest.rows["image_sha256"]]
        if "image_sha256" in train_manifest.rows
        else [None] * len(train_manifest)
    )
    return TrainData(
        manifest=train_manifest,
        paths=paths,
        prompts=list(reports[keep]),
        shas=shas,
        dropped_empty=int((~keep).sum()),
        held_out=provenance.held_out_patients(manifest),
    )


def base_patients(cfg: FinetuneConfig, data: TrainData) -> list[str]:
    """The patients a cxraug generator given as `--base` was trained on ([] for `tiny`, a hub
    id or another diffusers folder); refused when any is a val or test patient of
    `--manifest`, whose evaluation it would then leak into."""
    patients = generator.base_training_patients(cfg.base)
    if patients is None:
        return []
    provenance.check_seen(
        data.held_out,
        provenance.SeenPatients.of(patients),
        where=f"--base {cfg.base}",
        source=str(cfg.manifest),
        hint="fine-tune from tiny, a Stable Diffusion base, or a generator trained on this "
        "manifest's train split",
    )
    return patients


def tokenize_prompts(tokenizer, prompts: Sequence[str]) -> tuple[torch.Tensor, int]:
    """Token ids (N, max_length), truncated to the tokenizer's length; also how many were cut."""
    max_length = tokenizer.model_max_length
    ids = tokenizer(
        list(prompts),
        padding="max_length",
        max_length=max_length,
        truncation=True,
        return_tensors="pt",
    ).input_ids
    lengths = [len(x) for x in tokenizer(list(prompts), truncation=False, verbose=False).input_ids]
    return ids, sum(n > max_length for n in lengths)


@torch.no_grad()
def encode_prompts(text_encoder, input_ids: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """Text encoder hidden states for token ids (what the UNet cross-attends to)."""
    device = next(text_encoder.parameters()).device
    out = [
        text_encoder(input_ids[s : s + batch_size].to(device))[0]
        for s in range(0, len(input_ids), batch_size)
    ]
    return torch.cat(out)


# --------------------------------------------------------------------------------- caches


def fit_tiny_autoencoder(run: Run, base: Base, data: TrainData) -> dict | None:
    """With `fit_autoencoder`: fit `tiny`'s autoencoder on the train images, once per run.

    The fit starts from the autoencoder's random initialisation, not the shipped weights.
    The fitted autoencoder is saved in the run folder and every rank loads that copy.
    Either way the autoencoder is then frozen. Returns the fit record (None without a fit).
    """
    cfg = run.cfg
    run.timings["load"] = base.load_seconds
    fit = None
    if cfg.fit_autoencoder:
        vae, fit = generator.load_autoencoder(run.out)
        if vae is None:
            if run.main:
                t = time.perf_counter()
                pixels = load_pixels(data.paths, base.resolution, base.channels)
                result = fit_autoencoder(
                    base.vae.to(run.device),
                    pixels.to(run.device),
                    steps=cfg.autoencoder_steps,
                    batch_size=cfg.autoencoder_batch_size,
                    learning_rate=cfg.autoencoder_learning_rate,
                    seed=cfg.seed,
                    log=run.say,
                    show_progress=cfg.show_progress,
                    checkpoint_dir=generator.autoencoder_fit_dir(run.out),
                    checkpoint_every=cfg.checkpointing_steps,
                )
                fit = asdict(result)
                generator.save_autoencoder(base.vae, run.out, fit)
                run.timings["autoencoder_fit"] = time.perf_counter() - t
            run.accelerator.wait_for_everyone()
            vae, saved = generator.load_autoencoder(run.out)
            fit = fit or saved
        base.vae = vae
    base.vae.requires_grad_(False).eval().to(run.device)
    return fit


GRAIN_FIT_IMAGES = 256


def fit_film_grain(run: Run, base: Base, data: TrainData) -> dict | None:
    """The grain the (frozen) autoencoder drops, on up to 256 train images (`augmentor.grain`).

    Only the main process needs it (it goes into `cxraug.json`); None when off.
    """
    if not (run.main and resolved_film_grain(run.cfg)):
        return None
    t = time.perf_counter()
    paths = data.paths[:GRAIN_FIT_IMAGES]
    pixels = load_pixels(paths, base.resolution, base.channels)
    model = fit_autoencoder_grain(base.vae, pixels)
    run.timings["film_grain_fit"] = time.perf_counter() - t
    run.say(
        f"film grain: std {min(model.std):.4f}-{max(model.std):.4f} (images in [0, 1]) "
        f"that the autoencoder drops, measured on {len(paths)} train images"
    )
    return model.to_dict()


def cache_posteriors(run: Run, base: Base, data: TrainData) -> torch.Tensor:
    """Each train image's autoencoder posterior, encoded once (disk cache shared by ranks).

    Encoded in fixed chunks of rows (`augmentor.latents.cache_latents`), so a fill killed
    and resumed, or split across ranks, gives the same bytes as one uninterrupted fill.
    """
    t = time.perf_counter()
    args = (base.vae, data.paths, base.resolution, base.channels)
    folder = generator.cache_dir(run.out) if run.cfg.cache_latents_on_disk else None
    shas = data.shas
    if folder is not None and run.world > 1:
        # Each rank encodes its share into the disk cache; then all read everything.
        shas = [s or file_sha256(p) for s, p in zip(shas, data.paths, strict=True)]
        cache_latents(*args, folder, shas=shas, share=(run.rank, run.world))
        run.accelerator.wait_for_everyone()
    posteriors = cache_latents(*args, folder, shas=shas)
    run.timings["latent_cache"] = time.perf_counter() - t
    return posteriors


@dataclass
class TextInputs:
    """Token ids of every prompt and, while the text encoder is frozen, their embeddings."""

    input_ids: torch.Tensor
    empty_ids: torch.Tensor
    truncated: int
    caption_dropout: float
    cache: torch.Tensor | None = None  # one row per distinct report, on the CPU
    prompt_index: torch.Tensor | None = None  # row -> its report's row in `cache`
    empty: torch.Tensor | None = None  # the empty prompt's embedding


def cache_text(run: Run, base: Base, data: TrainData) -> TextInputs:
    """Tokenize the reports; with a frozen text encoder, embed each distinct report once."""
    tokenizer, text_encoder = base.tokenizer, base.text_encoder
    input_ids, truncated = tokenize_prompts(tokenizer, data.prompts)
    empty_ids, _ = tokenize_prompts(tokenizer, [""])
    if truncated:
        run.say(
            f"finetune: {truncated} report(s) longer than {tokenizer.model_max_length} tokens truncated"
        )
    text = TextInputs(input_ids, empty_ids, truncated, resolved_caption_dropout(run.cfg))
    text_encoder.to(run.device)
    if run.cfg.train_text_encoder:
        return text
    t = time.perf_counter()
    text_encoder.requires_grad_(False).eval()
    unique, inverse = np.unique(np.asarray(data.prompts, dtype=object), return_inverse=True)
    unique_ids, _ = tokenize_prompts(tokenizer, list(unique))
    # Kept on the CPU (one row per distinct report); each batch moves its rows over.
    text.cache = encode_prompts(text_encoder, unique_ids).cpu()
    text.prompt_index = torch.as_tensor(inverse.reshape(-1), dtype=torch.long)
    text.empty = encode_prompts(text_encoder, empty_ids)[0].cpu()
    run.timings["text_cache"] = time.perf_counter() - t
    return text
