"""The generator folder: its file names, reader and writer (nobody else spells them).

`cxraug finetune` writes a generator folder; `synthesize`, `evaluate-generator` and `study`
read it, all through this module. It holds:

* the diffusers pipeline (``model_index.json``, ``unet/``, ``vae/``, ``text_encoder/``,
  ``tokenizer/``, ``scheduler/``; safetensors), which plain
  ``diffusers.StableDiffusionPipeline.from_pretrained(dir)`` loads;
* ``lora/``: the LoRA adapters alone (diffusers format) when trained with LoRA;
* ``training_patients.json``: the patients whose images and reports trained it (a generator
  fine-tuned from a cxraug generator: both runs' patients), sorted, and the SHA-256 of that
  list (`manifests.provenance.patients_digest`), so consumers can refuse a generator that
  saw their val or test patients;
* ``cxraug.json``: the run record (config, step, manifest digest, timings); written last,
  so its presence means the run finished;
* while training: ``checkpoints/config.json`` (written when the run starts; a ``--resume``
  must match it), ``checkpoints/autoencoder/`` (the fitted `tiny` autoencoder),
  ``checkpoints/checkpoint-N/`` (`classifier.training.checkpointer`),
  ``cache/`` (cached autoencoder posteriors) and ``validation/`` (sample grids).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path

from manifests.errors import UserError
from manifests.files import atomic_path, read_json, scratch_dir, write_json
from manifests.provenance import patients_digest
from manifests.runfolder import CHECKPOINTS_DIR, FolderFormat

RECORD_FILE = "cxraug.json"
CONFIG_FILE = f"{CHECKPOINTS_DIR}/config.json"
AUTOENCODER_DIR = f"{CHECKPOINTS_DIR}/autoencoder"
CACHE_DIR = "cache"
VALIDATION_DIR = "validation"
LORA_DIR = "lora"
PATIENTS_FILE = "training_patients.json"
KIND = "cxraug.generator"
FORMAT = FolderFormat(kind="generator", started_file=CONFIG_FILE, done_file=RECORD_FILE)


# ------------------------------------------------------------------------------ paths


def config_path(out: Path) -> Path:
    return Path(out) / CONFIG_FILE


def autoencoder_fit_dir(out: Path) -> Path:
    """The autoencoder fit's latest checkpoint while it runs (`augmentor.autoencoder`)."""
    return Path(out) / CHECKPOINTS_DIR / "autoencoder-fit"


def autoencoder_dir(out: Path) -> Path:
    return Path(out) / AUTOENCODER_DIR


def cache_dir(out: Path) -> Path:
    return Path(out) / CACHE_DIR


def validation_dir(out: Path) -> Path:
    return Path(out) / VALIDATION_DIR


def is_finished(out: Path) -> bool:
    return FORMAT.is_done(Path(out))


# ------------------------------------------------------------------------------ records


def write_run_config(out: Path, config: dict) -> None:
    """`checkpoints/config.json`: written when a run starts; marks the folder as a generator."""
    write_json(config_path(out), config)


def read_run_config(out: Path) -> dict | None:
    """The config a run started with, or None when the folder has none yet."""
    path = config_path(out)
    return read_json(path, "generator run config") if path.is_file() else None


def write_generator_record(out: Path, record: dict) -> None:
    """`cxraug.json`; call it last: its presence marks the generator finished."""
    write_json(Path(out) / RECORD_FILE, {"kind": KIND, **record})


def read_generator_record(out: Path, flag: str = "--model") -> dict:
    """A finished generator's record (`cxraug.json`); UserError naming the folder otherwise."""
    out = Path(out)
    path = out / RECORD_FILE
    if not path.is_file():
        what = "not found" if not out.exists() else f"no {RECORD_FILE}"
        hint = (
            "finish it with cxraug finetune --resume"
            if config_path(out).is_file()
            else "pass a folder written by cxraug finetune"
        )
        raise UserError(f"{flag} {out}: not a finished cxraug generator ({what}); {hint}")
    return read_json(path, "generator record")


def generator_record_or_none(out: Path) -> dict | None:
    """`cxraug.json` of a cxraug generator; None for any other pipeline folder."""
    path = Path(out) / RECORD_FILE
    return read_json(path, "generator record") if path.is_file() else None


def clear_finished(out: Path) -> None:
    """Remove `cxraug.json` before training on (a finished run continued to more steps)."""
    (Path(out) / RECORD_FILE).unlink(missing_ok=True)


def write_training_patients(out: Path, patients: Sequence[str]) -> str:
    """Record the patients that trained the generator; returns their digest
    (`manifests.provenance.patients_digest`, which synthetic manifests record too)."""
    ids = sorted({str(p) for p in patients})
    digest = patients_digest(ids)
    write_json(
        Path(out) / PATIENTS_FILE, {"patients": ids, "n_patients": len(ids), "digest": digest}
    )
    return digest


def training_patients(out: Path, flag: str = "--model") -> list[str]:
    """The sorted patient ids whose images and reports trained the generator in `out`.

    UserError naming the folder when the file is missing, corrupt or does not match its
    digest (a generator made elsewhere, or by a cxraug older than this record).
    """
    path = Path(out) / PATIENTS_FILE
    if not path.is_file():
        raise UserError(
            f"{flag} {out}: no {PATIENTS_FILE}; its training patients cannot be checked "
            "(a generator made elsewhere or by an older cxraug)"
        )
    data = read_json(path, "generator training patients")
    patients = data.get("patients")
    if not isinstance(patients, list) or not all(isinstance(p, str) for p in patients):
        raise UserError(f"{path}: no list of patient ids; the file is corrupt")
    if data.get("digest") != patients_digest(patients):
        raise UserError(f"{path}: the patient list does not match its digest; the file is corrupt")
    return sorted(patients)


def base_training_patients(base: str) -> list[str] | None:
    """The training patients of a cxraug generator given as `--base`; None for `tiny`, a hub
    id or any other diffusers folder (trained on none of the user's patients).

    A cxraug generator folder without its patient record is refused (`training_patients`).
    """
    path = Path(base)
    if base == "tiny" or not path.is_dir():
        return None
    if not any((path / name).is_file() for name in (RECORD_FILE, CONFIG_FILE, PATIENTS_FILE)):
        return None
    return training_patients(path, flag="--base")


# ------------------------------------------------------------------------------ pipeline


def build_pipeline(base_pipe, unet, text_encoder, vae):
    """A plain `StableDiffusionPipeline` from trained parts and the base's tokenizer/scheduler."""
    from diffusers import StableDiffusionPipeline

    return StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=base_pipe.tokenizer,
        unet=unet,
        scheduler=base_pipe.scheduler.__class__.from_config(base_pipe.scheduler.config),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def export_pipeline(pipe, out: Path, lora: dict | None = None) -> None:
    """Save the pipeline into `out` (safetensors), component by component, via scratch.

    `lora`: keyword arguments of `StableDiffusionPipeline.save_lora_weights` (the adapters),
    saved to `lora/`.
    """
    from diffusers import StableDiffusionPipeline

    out = Path(out)
    tmp = scratch_dir(out / "pipeline")
    shutil.rmtree(tmp, ignore_errors=True)
    pipe.save_pretrained(tmp, safe_serialization=True)
    if lora:
        StableDiffusionPipeline.save_lora_weights(tmp / LORA_DIR, safe_serialization=True, **lora)
    for item in sorted(tmp.iterdir()):
        target = out / item.name
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        elif target.exists() or target.is_symlink():
            target.unlink()
        os.replace(item, target)
    tmp.rmdir()


def save_autoencoder(vae, out: Path, fit_record: dict) -> Path:
    """Save the fitted `tiny` autoencoder (and its fit record) under scratch, then rename."""
    final = autoencoder_dir(out)
    tmp = scratch_dir(final)
    shutil.rmtree(tmp, ignore_errors=True)
    vae.save_pretrained(tmp, safe_serialization=True)
    write_json(tmp / "fit.json", fit_record)
    os.replace(tmp, final)
    fit_state = autoencoder_fit_dir(out)
    for folder in (fit_state, fit_state.with_name(fit_state.name + ".old")):
        shutil.rmtree(folder, ignore_errors=True)
    return final


def load_autoencoder(out: Path):
    """The fitted autoencoder saved by `save_autoencoder` (None if none yet) and its fit record."""
    from diffusers import AutoencoderKL

    folder = autoencoder_dir(out)
    if not (folder / "config.json").is_file():
        return None, None
    try:
        vae = AutoencoderKL.from_pretrained(folder, use_safetensors=True)
    except (OSError, ValueError) as e:
        raise UserError(
            f"{folder}: cannot load the fitted autoencoder ({_first_line(e)})"
        ) from None
    fit = folder / "fit.json"
    return vae, (read_json(fit, "autoencoder fit record") if fit.is_file() else None)


def write_validation_grid(out: Path, step: int, grid, prompts: Sequence[str]) -> Path:
    """Save one validation grid (uint8 array) as `validation/step-NNNNNNN.png`."""
    from manifests.images import save_png

    folder = validation_dir(out)
    folder.mkdir(parents=True, exist_ok=True)
    listed = folder / "prompts.txt"
    if not listed.exists():
        with atomic_path(listed) as tmp:
            tmp.write_text("\n".join(prompts) + "\n")
    path = folder / f"step-{step:07d}.png"
    with atomic_path(path, overwrite=True) as tmp:
        save_png(grid, tmp)
    return path


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else error.__class__.__name__


__all__ = [
    "AUTOENCODER_DIR",
    "CACHE_DIR",
    "CONFIG_FILE",
    "FORMAT",
    "KIND",
    "LORA_DIR",
    "PATIENTS_FILE",
    "RECORD_FILE",
    "VALIDATION_DIR",
    "autoencoder_dir",
    "autoencoder_fit_dir",
    "base_training_patients",
    "build_pipeline",
    "cache_dir",
    "clear_finished",
    "config_path",
    "export_pipeline",
    "is_finished",
    "load_autoencoder",
    "generator_record_or_none",
    "read_generator_record",
    "read_run_config",
    "save_autoencoder",
    "training_patients",
    "validation_dir",
    "write_generator_record",
    "write_run_config",
    "write_training_patients",
    "write_validation_grid",
]
