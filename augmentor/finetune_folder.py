"""The fine-tune's run folder: the config it records, what a `--resume` must match, its state.

A generator folder (`augmentor.generator` owns its layout) records the run's config in
`checkpoints/config.json` when the run starts, with digests of the manifest and the base;
a `--resume` must match it, except for the settings in `RESUME_FREE`. A finished generator
resumed with a larger `--max-steps` continues.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import asdict
from pathlib import Path

from augmentor import generator
from augmentor.config import FinetuneConfig
from augmentor.train_inputs import Run
from classifier.training.records import jsonable
from manifests import runfolder
from manifests.files import file_sha256, read_json
from manifests.io import manifest_digest

# Settings a --resume may change without changing what is being trained. Paths are free
# (a moved run still resumes); the inputs they name are compared by digest.
RESUME_FREE = {
    "report_to",
    "max_steps",
    "checkpointing_steps",
    "checkpoints_total_limit",
    "resume",
    "overwrite",
    "validation_prompts",
    "validation_steps",
    "validation_inference_steps",
    "validation_guidance_scale",
    "cache_latents_on_disk",
    "mixed_precision",
    "gradient_checkpointing",
    "allow_download",
    "show_progress",
    "out",
    "manifest",
    "base",
}


def decide_folder_state(cfg: FinetuneConfig) -> str:
    """`runfolder.folder_state` for the generator folder; read-only (every rank calls it).

    A finished generator resumed with a larger `--max-steps` than it reached continues.
    """
    out = Path(cfg.out)
    state = runfolder.folder_state(out, generator.FORMAT, cfg.resume, cfg.overwrite)
    if state == runfolder.FINISHED:
        done = generator.read_generator_record(out, flag="--out").get("global_step", 0)
        if int(done) < cfg.max_steps:
            return runfolder.RESUME
    return state


def base_digest(base: str) -> str:
    """What a resume compares the base by: `tiny`, a hub id, or a local folder's content.

    Hashes `model_index.json` and the component folders it names (not checkpoints or caches
    a generator folder used as a base also holds).
    """
    path = Path(base)
    if base == "tiny" or not path.is_dir():
        return base
    index = path / "model_index.json"
    names = [k for k in read_json(index, "pipeline index") if not k.startswith("_")]
    files = [index]
    for name in sorted(names):
        folder = path / name
        if folder.is_dir():
            files += sorted(
                p
                for p in folder.rglob("*")
                if p.is_file() and not any(s.startswith(".") for s in p.relative_to(path).parts)
            )
    digest = hashlib.sha256()
    for f in files:
        digest.update(f"{f.relative_to(path).as_posix()}\0".encode())
        digest.update(bytes.fromhex(file_sha256(f)))
    return digest.hexdigest()[:16]


def run_config(cfg: FinetuneConfig) -> dict:
    """The config as JSON, paths absolute, with the input digests a resume must match."""
    config = jsonable(asdict(cfg))
    config["manifest"] = os.path.abspath(cfg.manifest)
    config["out"] = os.path.abspath(cfg.out)
    if cfg.base != "tiny" and Path(cfg.base).exists():
        config["base"] = os.path.abspath(cfg.base)
    config["manifest_digest"] = manifest_digest(Path(cfg.manifest))
    config["base_digest"] = base_digest(cfg.base)
    return config


def check_resume(state: str, out: Path, config: dict) -> None:
    """Refuse a resume whose settings differ from the ones the run started with."""
    if state != runfolder.RESUME:
        return
    saved = generator.read_run_config(out)
    if saved is not None:
        runfolder.check_resume_config(saved, config, RESUME_FREE, out)


def begin_run(run: Run, state: str, config: dict) -> None:
    """Record the config (marks the folder as a generator); a continued run is unfinished."""
    if run.main:
        if state != runfolder.RESUME or generator.read_run_config(run.out) is None:
            generator.write_run_config(run.out, config)
        generator.clear_finished(run.out)  # re-exported at the end; until then not finished
    run.accelerator.wait_for_everyone()
