"""Fine-tune a Stable Diffusion base on chest X-rays and their reports (the RoentGen recipe).

`finetune` reads as its table of contents, in the order of diffusers'
`examples/text_to_image/train_text_to_image.py`: check the config, decide the output
folder's state, load the data and the base, then (holding the folder) fit the autoencoder,
cache posteriors and text, set up what trains, the optimizer, resume, train, export. The
differences are for speed and safety:

* Each training image is encoded by the autoencoder once; its posterior (mean and
  log-variance) is cached and every step samples from it (`augmentor.latents`). Report
  embeddings are cached too while the text encoder is frozen. These frozen-input stages,
  the training rows and the base live in `augmentor.train_inputs`.
* The autoencoder stays frozen, `tiny`'s (pretrained, shipped with the package) as a real
  base's; only with `fit_autoencoder` does a first stage fit `tiny`'s on the training
  images (`augmentor.autoencoder.fit_autoencoder`).
* Everything a run can refuse (flags, manifest, base, resolution) is checked before the
  output folder is touched; a fresh run that fails later is put back as found
  (`manifests.runfolder`).
* Checkpoints (`DIR/checkpoints/checkpoint-STEP`) hold safetensors and JSON only
  (`classifier.training.checkpointer`; nothing is unpickled on `--resume`), are written under a
  scratch name and renamed, so a run killed at any moment resumes from a whole one, and
  resume bit-identically.
* The result is a generator folder (`augmentor.generator`): a plain diffusers pipeline
  (safetensors; EMA weights with `ema`; LoRA merged into the weights, adapters also kept in
  `DIR/lora/`; `augmentor.lora`), the training patients (with a cxraug generator as the
  base, its patients too), and `DIR/cxraug.json`, written last.

Runs unchanged in one process or under `accelerate launch` (DDP): every rank trains on its
share of each batch, only the main process writes, and noise seeds are offset per rank.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from augmentor import generator
from augmentor.balance import balanced_weights, weighted_batches
from augmentor.config import FinetuneConfig, check_finetune_config, resolved_learning_rate
from augmentor.finetune_folder import begin_run, check_resume, decide_folder_state, run_config
from augmentor.latents import sample_latents
from augmentor.lora import (
    TEXT_LORA_TARGETS,
    UNET_LORA_TARGETS,
    add_lora,
    lora_state_dict,
    merge_lora_,
)
from augmentor.optim import adamw
from augmentor.train_inputs import (
    Base,
    Run,
    TextInputs,
    TrainData,
    base_patients,
    cache_posteriors,
    cache_text,
    fit_film_grain,
    fit_tiny_autoencoder,
    load_base,
    load_train_data,
)
from augmentor.validation import run_validation
from classifier.training.accelerator import build_accelerator
from classifier.training.checkpointer import Checkpointer
from classifier.training.records import jsonable
from classifier.training.tracking import start_tracking
from manifests import runfolder
from manifests.errors import UserError
from manifests.progress import progress, quiet_library_bars, say_to

# --------------------------------------------------------------------------------- data


def epoch_batches(n: int, batch: int, world: int, epoch: int, seed: int) -> torch.Tensor:
    """This epoch's order as (micro-batches, world, batch) row indices.

    The same on every rank (seeded by run seed and epoch), so rank r takes [:, r] and no
    two ranks see the same rows in a step; wraps around to fill the last micro-batch.
    """
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))
    per = batch * world
    steps = math.ceil(n / per)
    order = order.repeat(math.ceil(steps * per / n))[: steps * per]
    return order.view(steps, world, batch)


# ------------------------------------------------------------------------ loss and models


def diffusion_loss(
    unet,
    noise_scheduler,
    latents: torch.Tensor,
    encoder_hidden_states: torch.Tensor,
    generator: torch.Generator | None = None,
    snr_gamma: float | None = None,
    noise_offset: float = 0.0,
) -> torch.Tensor:
    """The denoising loss of diffusers' text-to-image recipe for one batch.

    The target follows the base's `prediction_type` (epsilon for SD 1.x, v_prediction for
    SD 2.x 768); Min-SNR weighting (`snr_gamma`) and noise offset as in diffusers.
    """
    from diffusers.training_utils import compute_snr

    bsz, device = latents.shape[0], latents.device
    noise = torch.randn(latents.shape, generator=generator, device=device, dtype=latents.dtype)
    if noise_offset:
        noise = noise + noise_offset * torch.randn(
            (bsz, latents.shape[1], 1, 1), generator=generator, device=device, dtype=latents.dtype
        )
    timesteps = torch.randint(
        0, noise_scheduler.config.num_train_timesteps, (bsz,), generator=generator, device=device
    ).long()
    noisy = noise_scheduler.add_noise(latents, noise, timesteps)
    prediction_type = noise_scheduler.config.prediction_type
    if prediction_type == "epsilon":
        target = noise
    elif prediction_type == "v_prediction":
        target = noise_scheduler.get_velocity(latents, noise, timesteps)
    else:
        raise UserError(
            f"scheduler prediction_type {prediction_type!r} is not supported; "
            "valid: epsilon, v_prediction"
        )
    pred = unet(noisy, timesteps, encoder_hidden_states, return_dict=False)[0]
    if snr_gamma is None:
        return F.mse_loss(pred.float(), target.float(), reduction="mean")
    snr = compute_snr(noise_scheduler, timesteps)
    weights = torch.stack([snr, snr_gamma * torch.ones_like(timesteps)], dim=1).min(dim=1)[0]
    weights = weights / snr if prediction_type == "epsilon" else weights / (snr + 1)
    loss = F.mse_loss(pred.float(), target.float(), reduction="none")
    return (loss.mean(dim=list(range(1, loss.ndim))) * weights).mean()


class TrainerState:
    """Step counters, timings and the per-rank noise generator; saved in each checkpoint."""

    def __init__(self, generator: torch.Generator) -> None:
        self.generator = generator  # saved with the random states (per rank)
        self.global_step = 0
        self.micro_step = 0
        self.train_seconds = 0.0
        self.losses: list[list[float]] = []  # [step, mean loss over the logging window]
        self.resumed_from: list[int] = []

    def state_dict(self) -> dict:
        return {
            "global_step": self.global_step,
            "micro_step": self.micro_step,
            "train_seconds": self.train_seconds,
            "losses": self.losses,
            "resumed_from": self.resumed_from,
        }

    def load_state_dict(self, state: dict) -> None:
        self.global_step = int(state["global_step"])
        self.micro_step = int(state["micro_step"])
        self.train_seconds = float(state["train_seconds"])
        self.losses = [list(x) for x in state["losses"]]
        self.resumed_from = list(state["resumed_from"])


# --------------------------------------------------------------------------------- run


def finetune(cfg: FinetuneConfig, log: Callable[[str], None] | None = None) -> Path:
    """Fine-tune `cfg.base` on the train split of `cfg.manifest`; return the output folder.

    The folder (`augmentor.generator`) loads with plain
    `StableDiffusionPipeline.from_pretrained(out)`.
    """
    check_finetune_config(cfg)
    quiet_library_bars()
    out = Path(cfg.out)
    state_name = decide_folder_state(cfg)  # read-only: every rank decides before anyone writes
    if state_name == runfolder.FINISHED:
        say_to(log)(f"{out}: already fine-tuned to step {cfg.max_steps}; nothing to do")
        return out
    accelerator = build_accelerator(cfg.mixed_precision, cfg.seed, cfg.gradient_accumulation_steps)
    run = Run(cfg, out, accelerator, say_to(log))
    run.accelerator.wait_for_everyone()  # every rank decided the state before anyone writes
    data = load_train_data(Path(cfg.manifest))
    data.base_patients = base_patients(cfg, data)
    weights = (
        balanced_weights(data.manifest.rows, cfg.balance_labels) if cfg.balance_labels else None
    )
    base = load_base(cfg)
    config = run_config(cfg)
    check_resume(state_name, out, config)
    with runfolder.run_folder(out, state_name, main=run.main):
        begin_run(run, state_name, config)
        run.announce(data, base)  # once the folder is held: a refusal is the only line
        fit = fit_tiny_autoencoder(run, base, data)
        grain = fit_film_grain(run, base, data)
        posteriors = cache_posteriors(run, base, data)
        text = cache_text(run, base, data)
        models, params = set_up_trainables(run, base)
        training = make_optimizer(run, base, models, params)
        state, checkpointer = resume_training(run, training, state_name)
        session = train_loop(run, base, posteriors, text, training, state, checkpointer, weights)
        export_generator(run, base, data, text, training, state, fit, config, session, grain)
    run.accelerator.end_training()
    return out


# ------------------------------------------------------------------------ what trains


def set_up_trainables(run: Run, base: Base) -> tuple[list[torch.nn.Module], list]:
    """UNet (and text encoder) in full, or LoRA adapters on them; returns models, parameters."""
    cfg, unet, text_encoder = run.cfg, base.unet, base.text_encoder
    torch.manual_seed(cfg.seed)  # LoRA init; identical on every rank (DDP also broadcasts)
    if cfg.lora_rank:
        add_lora(unet, cfg.lora_rank, UNET_LORA_TARGETS)
        if cfg.train_text_encoder:
            add_lora(text_encoder, cfg.lora_rank, TEXT_LORA_TARGETS)
    else:
        unet.requires_grad_(True)
        text_encoder.requires_grad_(cfg.train_text_encoder)
    if cfg.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
        if cfg.train_text_encoder:
            text_encoder.gradient_checkpointing_enable()
    unet.train().to(run.device)
    if cfg.train_text_encoder:
        text_encoder.train()
    models = [unet, text_encoder] if cfg.train_text_encoder else [unet]
    return models, [p for m in models for p in m.parameters() if p.requires_grad]


@dataclass
class Training:
    """The prepared models, optimizer, LR schedule and EMA of one run."""

    unet: Any
    text_encoder: Any
    params: list
    optimizer: Any
    lr_scheduler: Any
    ema: Any
    learning_rate: float
    trains_text_encoder: bool

    def checkpointed(self, accelerator) -> dict[str, torch.nn.Module]:
        """The models whose weights a checkpoint holds (the trained ones)."""
        models = {"unet": accelerator.unwrap_model(self.unet)}
        if self.trains_text_encoder:
            models["text_encoder"] = accelerator.unwrap_model(self.text_encoder)
        return models


def make_optimizer(run: Run, base: Base, models: list[torch.nn.Module], params: list) -> Training:
    """AdamW, the LR schedule (counted per process, as accelerate steps it), optional EMA."""
    from diffusers.optimization import get_scheduler

    cfg, world = run.cfg, run.world
    lr = resolved_learning_rate(cfg)
    optimizer = adamw(params, lr=lr, weight_decay=cfg.adam_weight_decay)
    lr_scheduler = get_scheduler(
        cfg.lr_scheduler,
        optimizer=optimizer,
        num_warmup_steps=cfg.lr_warmup_steps * world,
        num_training_steps=cfg.max_steps * world,
    )
    ema = None
    if cfg.ema:
        from diffusers.training_utils import EMAModel

        ema = EMAModel(params, decay=cfg.ema_decay)
        ema.to(run.device)
    prepared = run.accelerator.prepare(*models, optimizer, lr_scheduler)
    models_p, optimizer, lr_scheduler = list(prepared[: len(models)]), prepared[-2], prepared[-1]
    return Training(
        unet=models_p[0],
        text_encoder=models_p[1] if cfg.train_text_encoder else base.text_encoder,
        params=params,
        optimizer=optimizer,
        lr_scheduler=lr_scheduler,
        ema=ema,
        learning_rate=lr,
        trains_text_encoder=cfg.train_text_encoder,
    )


# ------------------------------------------------------------------------ resume and loop


def resume_training(
    run: Run, training: Training, state_name: str
) -> tuple[TrainerState, Checkpointer]:
    """The trainer state, fresh or restored from the latest checkpoint, and its checkpointer.

    Restores weights, optimizer, LR schedule, EMA, counters and every random state (nothing
    is unpickled), so a resumed run continues bit-identically.
    """
    acc = run.accelerator
    gen_device = "cpu" if run.device.type == "cpu" else run.device
    state = TrainerState(torch.Generator(device=gen_device).manual_seed(run.cfg.seed + run.rank))
    checkpointer = Checkpointer(
        run.out,
        acc,
        training.checkpointed(acc),
        optimizer=training.optimizer,
        scheduler=training.lr_scheduler,
        ema=training.ema,
        generators={"noise": state.generator},
        keep=run.cfg.checkpoints_total_limit,
    )
    resumed = checkpointer.resume() if state_name == runfolder.RESUME else None
    if resumed is not None:
        latest, trainer = resumed
        if training.ema is not None:
            training.ema.to(run.device)
        state.load_state_dict(trainer)
        acc.step = state.micro_step  # gradient accumulation counts on from here
        state.resumed_from.append(state.global_step)
        run.say(f"finetune: resumed from {latest.name} (step {state.global_step})")
    elif state_name == runfolder.RESUME:
        run.say(f"{run.out}: no complete checkpoint yet; starting from step 0")
    elif run.cfg.resume:
        run.say("finetune: nothing to resume yet; starting a new run")
    return state, checkpointer


def train_loop(
    run: Run,
    base: Base,
    posteriors: torch.Tensor,
    text: TextInputs,
    training: Training,
    state: TrainerState,
    checkpointer: Checkpointer,
    weights: np.ndarray | None = None,
) -> dict[str, float]:
    """Train to `max_steps`: validation grids and checkpoints on their schedules.

    `weights`: per training row, how often each epoch draws it (`augmentor.balance`); None
    for a plain shuffle that shows every row once an epoch.

    Returns this session's image count and training seconds (without validation and saving).
    """
    cfg, acc, device = run.cfg, run.accelerator, run.device
    noise = state.generator
    gen_device = noise.device
    scaling = float(base.vae.config.scaling_factor)
    unet_p, text_encoder_p, params = training.unet, training.text_encoder, training.params
    models_p = [unet_p, text_encoder_p] if cfg.train_text_encoder else [unet_p]
    optimizer, lr_scheduler, ema = training.optimizer, training.lr_scheduler, training.ema
    n = len(posteriors)
    per_epoch = math.ceil(n / (cfg.batch_size * run.world))
    images_per_micro = cfg.batch_size * run.world
    log_every = max(1, cfg.max_steps // 200)
    window: list[float] = []
    start_step = state.global_step
    train_before = state.train_seconds
    bar = progress(
        total=cfg.max_steps,
        initial=state.global_step,
        desc="finetune",
        disable=not (run.main and cfg.show_progress),
    )
    tracker = start_tracking(cfg.report_to, run.out, asdict(cfg), acc)
    session_start = time.perf_counter()
    val_seconds = 0.0
    order, order_epoch = None, -1
    while state.global_step < cfg.max_steps:
        epoch, position = divmod(state.micro_step, per_epoch)
        if epoch != order_epoch:
            order = (
                epoch_batches(n, cfg.batch_size, run.world, epoch, cfg.seed)
                if weights is None
                else weighted_batches(weights, cfg.batch_size, run.world, epoch, cfg.seed)
            )
            order_epoch = epoch
        idx = order[position, run.rank]
        with acc.accumulate(*models_p):
            latents = sample_latents(posteriors[idx].to(device), scaling, noise)
            drop = torch.rand(len(idx), generator=noise, device=gen_device) < text.caption_dropout
            drop = drop.cpu()
            if text.cache is not None:
                hidden = text.cache[text.prompt_index[idx]].clone()
                hidden[drop] = text.empty
                hidden = hidden.to(device)
            else:
                ids = text.input_ids[idx].clone()
                ids[drop] = text.empty_ids[0]
                hidden = text_encoder_p(ids.to(device), return_dict=False)[0]
            with acc.autocast():
                loss = diffusion_loss(
                    unet_p,
                    base.noise_scheduler,
                    latents,
                    hidden,
                    noise,
                    snr_gamma=cfg.snr_gamma,
                    noise_offset=cfg.noise_offset,
                )
            acc.backward(loss)
            if acc.sync_gradients and cfg.max_grad_norm:
                acc.clip_grad_norm_(params, cfg.max_grad_norm)
            optimizer.step()
            lr_scheduler.step()
            optimizer.zero_grad(set_to_none=True)
        state.micro_step += 1
        window.append(float(acc.gather(loss.detach()[None]).mean()))
        if not acc.sync_gradients:
            continue
        state.global_step += 1
        if ema is not None:
            ema.step(params)
        elapsed = time.perf_counter() - session_start - val_seconds
        rate = (state.micro_step - start_step * cfg.gradient_accumulation_steps) * images_per_micro
        bar.update(1)
        bar.set_postfix(loss=f"{window[-1]:.4f}", img_s=f"{rate / max(elapsed, 1e-9):.1f}")
        tracker.log(
            {
                "train/loss": window[-1],
                "train/lr": lr_scheduler.get_last_lr()[0],
                "train/images_per_s": rate / max(elapsed, 1e-9),
            },
            step=state.global_step,
        )
        if state.global_step % log_every == 0 or state.global_step == cfg.max_steps:
            state.losses.append([state.global_step, float(np.mean(window))])
            window = []
        state.train_seconds = train_before + elapsed
        last = state.global_step == cfg.max_steps
        if cfg.validation_prompts and (state.global_step % cfg.validation_steps == 0 or last):
            tv = time.perf_counter()
            if run.main:
                grid = _with_ema(
                    ema,
                    params,
                    lambda: run_validation(
                        generator.build_pipeline(
                            base.pipe,
                            acc.unwrap_model(unet_p),
                            acc.unwrap_model(text_encoder_p),
                            base.vae,
                        ),
                        cfg,
                        base.resolution,
                        state.global_step,
                        run.out,
                    ),
                )
                tracker.log_image("validation/grid", grid, state.global_step)
            acc.wait_for_everyone()
            val_seconds += time.perf_counter() - tv
        if state.global_step % cfg.checkpointing_steps == 0 or last:
            tc = time.perf_counter()
            checkpointer.save(state.global_step, state.state_dict())
            val_seconds += time.perf_counter() - tc
    bar.close()
    tracker.end()
    images = (state.micro_step - start_step * cfg.gradient_accumulation_steps) * images_per_micro
    seconds = time.perf_counter() - session_start - val_seconds
    run.timings["train_this_session"] = seconds
    return {"images": images, "seconds": seconds}


# ------------------------------------------------------------------------------ export


def export_generator(
    run: Run,
    base: Base,
    data: TrainData,
    text: TextInputs,
    training: Training,
    state: TrainerState,
    fit: dict | None,
    config: dict,
    session: dict[str, float],
    grain: dict | None = None,
) -> None:
    """Write the generator folder: pipeline (EMA weights, LoRA merged), patients, record last."""
    acc = run.accelerator
    acc.wait_for_everyone()
    if run.main:
        unet = acc.unwrap_model(training.unet)
        text_encoder = acc.unwrap_model(training.text_encoder)
        if training.ema is not None:
            training.ema.copy_to(training.params)
        lora = None
        if run.cfg.lora_rank:
            lora = {"unet_lora_layers": lora_state_dict(unet)}
            if run.cfg.train_text_encoder:
                lora["text_encoder_lora_layers"] = lora_state_dict(text_encoder)
            merge_lora_(unet)
            if run.cfg.train_text_encoder:
                merge_lora_(text_encoder)
        t = time.perf_counter()
        final = generator.build_pipeline(base.pipe, unet.float(), text_encoder.float(), base.vae)
        generator.export_pipeline(final.to("cpu"), run.out, lora)
        patients_digest = generator.write_training_patients(run.out, data.generator_patients)
        run.timings["export"] = time.perf_counter() - t
        run.timings["total_this_session"] = time.perf_counter() - run.started
        record = generator_record(run, base, data, text, training, state, fit, config, session)
        record["training_patients_digest"] = patients_digest
        record["film_grain"] = grain
        generator.write_generator_record(run.out, jsonable(record))  # last: marks it finished
        run.say(
            f"finetune: step {state.global_step}/{run.cfg.max_steps}, "
            f"{record['images_per_second']:.1f} images/s; wrote {run.out}"
        )
    acc.wait_for_everyone()


def generator_record(run: Run, *parts) -> dict:
    """`cxraug.json`: the config, what was trained on, how, how fast, and the loss curve."""
    base, data, text, training, state, fit, config, session = parts  # as export_generator's
    import diffusers
    import transformers

    return {
        "config": config,
        "global_step": state.global_step,
        "resumed_from": state.resumed_from,
        "manifest_digest": config["manifest_digest"],
        "base": config["base"],
        "resolution": base.resolution,
        "image_channels": base.channels,
        "prediction_type": base.noise_scheduler.config.prediction_type,
        "learning_rate": training.learning_rate,
        "caption_dropout": text.caption_dropout,
        "n_train_images": len(data.paths),
        "n_training_patients": len(data.patients),
        "n_base_training_patients": len(data.base_patients),
        "n_dropped_without_report": data.dropped_empty,
        "n_prompts_truncated": text.truncated,
        "num_processes": run.world,
        "images_per_second": session["images"] / max(session["seconds"], 1e-9),
        "train_seconds": state.train_seconds,
        "timings": run.timings,
        "autoencoder_fit": fit,
        "latent_scaling_factor": float(base.vae.config.scaling_factor),
        "losses": state.losses,
        "ema": run.cfg.ema,
        "lora_rank": run.cfg.lora_rank,
        "train_text_encoder": run.cfg.train_text_encoder,
        "versions": {
            "torch": torch.__version__,
            "diffusers": diffusers.__version__,
            "transformers": transformers.__version__,
        },
    }


def _with_ema(ema, params, fn):
    """Run `fn` with the EMA weights swapped in (validation shows what will be saved)."""
    if ema is None:
        return fn()
    ema.store(params)
    ema.copy_to(params)
    try:
        return fn()
    finally:
        ema.restore(params)
