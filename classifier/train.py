"""Train a timm classifier on real, synthetic or mixed chest X-rays; evaluate on real test.

Reads top to bottom as a training script does: config, output folder, accelerator, data
(`classifier.run_data`), model, optimizer and schedule, loop (validate, keep the best, stop
early, checkpoint), test evaluation. It runs in one process or under ``accelerate launch``
(DDP); mixed precision is on by default on a GPU.

A run directory holds:

* ``config.json``: everything needed to rebuild the model and redo the run (timm name,
  labels, input size, normalisation, uncertain policy, mix, train size, seed, arm, real
  and synthetic train image counts, manifest digests, init-from, augmentation).
* ``model.safetensors``: the weights of the best validation epoch.
* ``metrics.json`` and ``predictions.parquet``: the test evaluation (see `evaluate.py`);
  ``metrics.json`` is written last, so its presence means the run is finished.
* ``val_predictions.parquet``: the scored weights' predictions on the real val rows (where
  the fairness report fixes its thresholds).
* ``checkpoints/checkpoint-N/``: the training state after epoch N, for ``--resume``
  (safetensors + JSON, never pickles).

The folder format is owned by `classifier.run`; its lifecycle (fresh / resume / finished /
overwrite, lock, scratch) by `manifests.runfolder`. The accelerator, the checkpoints (save,
resume, the best model) and tracking come from the training toolkit `finetune` shares
(`classifier.training`).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import timm
import torch
import torch.nn.functional as F

from classifier.config import TrainConfig, check_train_config, default_arm
from classifier.data import augment_batch, make_loader, normalize
from classifier.evaluate import finish_evaluation, macro_auroc, predict, predictions_frame
from classifier.models import (
    build_model,
    check_backbone,
    check_pretrained_file,
    load_init_weights,
    model_normalization,
)
from classifier.run import FORMAT as RUN_FORMAT
from classifier.run import (
    load_state_dict,
    model_path,
    read_config,
    save_model,
    write_config,
    write_seen_patients,
    write_val_predictions,
)
from classifier.run_data import RunData, prepare_data, split_dataset
from classifier.training.accelerator import build_accelerator
from classifier.training.checkpointer import Checkpointer
from classifier.training.records import jsonable
from classifier.training.tracking import CLASSIFIER_SCALARS, start_tracking
from manifests import runfolder
from manifests.io import manifest_digest
from manifests.mixing import positive_rates
from manifests.progress import say_to

CONFIG_VERSION = 1

# Fields that may differ between a run and its --resume without changing the result.
_RESUME_FREE = {
    "resume",
    "overwrite",
    "out",  # a run folder moved or copied elsewhere still resumes
    "real",  # inputs are matched by content digest, not by path
    "synthetic",
    "init_from",
    "pretrained",
    "num_workers",
    "cache_dir",
    "eval_batch_size",
    "mixed_precision",
    "report_to",
}


# ------------------------------------------------------------------------------ model


# ------------------------------------------------------------------------------ run folder


def decide_folder_state(cfg: TrainConfig) -> str:
    """Every check a run makes before anything is written, then the folder's state.

    Flags, backbone, `--pretrained` file, then `runfolder.folder_state` (fresh / resume /
    finished / overwrite) for the run folder; read-only, so every rank calls it.
    """
    check_train_config(cfg)
    check_backbone(cfg.backbone)
    if cfg.pretrained is not None:
        check_pretrained_file(Path(cfg.pretrained))
    return runfolder.folder_state(Path(cfg.out), RUN_FORMAT, cfg.resume, cfg.overwrite)


def run_config(cfg: TrainConfig, data: RunData, mean: float, std: float) -> dict:
    """config.json: the TrainConfig plus resolved labels, normalisation, counts, digests."""
    config = jsonable(asdict(cfg))
    for key in ("real", "out", "synthetic", "pretrained", "init_from", "cache_dir"):
        if config[key] is not None:  # absolute: a run folder is readable from anywhere
            config[key] = os.path.abspath(config[key])
    config.update(
        {
            "config_version": CONFIG_VERSION,
            "labels": list(data.labels),
            "arm": cfg.arm or default_arm(cfg.mix, cfg.init_from),
            "mean": mean,
            "std": std,
            "in_chans": 1,
            "n_real_train": int((data.train["source"] == "real").sum()),
            "synthetic_provenance": data.synthetic_provenance,
            "init_from_provenance": data.init_from_provenance,
            "n_synthetic_train": int((data.train["source"] == "synthetic").sum()),
            # each label's positive share in the training set (what an oversampling
            # control matches; a mixed arm's synthetic rows raise it)
            "train_positive_share": positive_rates(data.train, data.labels),
            "n_val": len(data.val),
            "n_test": len(data.test),
            "mix_plan": jsonable(asdict(data.plan))
            | {
                "real_repeated": data.plan.real_repeated,
                "synthetic_repeated": data.plan.synthetic_repeated,
            },
            "real_digest": manifest_digest(Path(cfg.real)),
            "synthetic_digest": (
                manifest_digest(Path(cfg.synthetic))
                if cfg.synthetic is not None and cfg.mix > 0
                else None
            ),
            "init_from_digest": (
                manifest_digest(model_path(Path(cfg.init_from))) if cfg.init_from else None
            ),
            # the generator behind the run it started from (its synthetic set's digest)
            "init_from_synthetic_digest": (
                read_config(Path(cfg.init_from)).get("synthetic_digest") if cfg.init_from else None
            ),
            "timm_version": timm.__version__,
            "torch_version": torch.__version__,
        }
    )
    return config


# ------------------------------------------------------------------------------ loop


class TrainerState:
    """Epoch counter, early-stopping count and history; saved as JSON in each checkpoint
    (the best score and epoch travel with it, kept by the `Checkpointer`)."""

    def __init__(self) -> None:
        self.epoch = 0  # epochs finished
        self.num_updates = 0
        self.bad_epochs = 0
        self.stopped = False
        self.history: list[dict] = []

    def state_dict(self) -> dict:
        return dict(self.__dict__)

    def load_state_dict(self, state: dict) -> None:
        self.__dict__.update(state)


def _masked_bce(logits: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    loss = F.binary_cross_entropy_with_logits(logits.float(), target, reduction="none")
    return (loss * mask).sum() / mask.sum().clamp(min=1.0)


def train_one_epoch(
    model,
    loader,
    optimizer,
    scheduler,
    accelerator,
    cfg: TrainConfig,
    state: TrainerState,
    mean: float,
    std: float,
) -> dict:
    """One pass over the training set; returns loss, images/s and time spent waiting on data."""
    model.train()
    generator = torch.Generator().manual_seed(
        cfg.seed * 1_000_003 + state.epoch * 1009 + accelerator.process_index
    )
    total_loss, images, wait = torch.zeros((), device=accelerator.device), 0, 0.0
    start = tick = time.perf_counter()
    for batch in loader:
        wait += time.perf_counter() - tick
        x = normalize(augment_batch(batch["image"], cfg.augment, generator), mean, std)
        logits = model(x)
        loss = _masked_bce(logits, batch["target"], batch["mask"])
        accelerator.backward(loss)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        state.num_updates += 1
        scheduler.step_update(num_updates=state.num_updates)
        total_loss += loss.detach() * len(x)  # summed on device: no sync per step
        images += len(x)
        tick = time.perf_counter()
    if accelerator.device.type == "cuda":
        torch.cuda.synchronize()  # count the queued GPU work in this epoch's time
    seconds = time.perf_counter() - start
    images_all = images * accelerator.num_processes
    return {
        "train_loss": float(total_loss) / max(1, images),
        "train_images": images_all,
        "processes": accelerator.num_processes,
        "train_seconds": seconds,
        "train_images_per_s": images_all / seconds if seconds > 0 else math.nan,
        "loader_wait_s": wait,
        "lr": optimizer.param_groups[0]["lr"],
    }


@torch.no_grad()
def validate(model, loader, accelerator, labels, val_rows: pd.DataFrame, mean, std) -> dict:
    """Val loss (masked, training policy) and macro AUROC on the raw 0/1 val labels.

    Outputs are gathered from every process (`gather_for_metrics` drops the samples DDP
    pads the last batch with) and scored once on the whole val set.
    """
    model.eval()
    logits_all, target_all, mask_all, index_all = [], [], [], []
    for batch in loader:
        x = normalize(batch["image"].float() / 255.0, mean, std)
        logits = model(x).float()
        gathered = accelerator.gather_for_metrics(
            (logits, batch["target"], batch["mask"], batch["index"])
        )
        for store, value in zip(
            (logits_all, target_all, mask_all, index_all), gathered, strict=True
        ):
            store.append(value.cpu())
    logits, target = torch.cat(logits_all), torch.cat(target_all)
    mask, idx = torch.cat(mask_all), torch.cat(index_all).numpy()
    truth = val_rows[list(labels)].to_numpy(np.float64)[idx]
    return {
        "val_loss": float(_masked_bce(logits, target, mask)),
        "val_macro_auroc": macro_auroc(truth, torch.sigmoid(logits).numpy()),
    }


@dataclass
class TrainingSession:
    """A run set up and ready to train: what `train_classifier` loops over.

    `start_training` builds it (data, model, optimizer, schedule, checkpointer, resumed
    state); `train_epoch`, `validate_epoch`, `end_epoch` and `finish` are the loop's steps.
    The benchmark drives the same object epoch by epoch.
    """

    cfg: TrainConfig
    out: Path
    accelerator: object
    data: RunData
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: object
    train_loader: torch.utils.data.DataLoader
    val_loader: torch.utils.data.DataLoader
    state: TrainerState
    checkpointer: Checkpointer
    config: dict
    mean: float
    std: float
    say: Callable[[str], None]

    def train_epoch(self) -> dict:
        """One training epoch at `state.epoch` (seeded order and augmentation)."""
        self.train_loader.set_epoch(self.state.epoch)
        return train_one_epoch(
            self.model,
            self.train_loader,
            self.optimizer,
            self.scheduler,
            self.accelerator,
            self.cfg,
            self.state,
            self.mean,
            self.std,
        )

    def validate_epoch(self) -> dict:
        return validate(
            self.model,
            self.val_loader,
            self.accelerator,
            self.data.labels,
            self.data.val,
            self.mean,
            self.std,
        )

    def end_epoch(self, record: dict) -> None:
        """Keep the best model, count epochs without improvement, checkpoint."""
        cfg, state = self.cfg, self.state
        # Select on val macro AUROC; a val set with one class everywhere has none: use loss.
        auroc = record["val_macro_auroc"]
        score = auroc if math.isfinite(auroc) else -record["val_loss"]
        record["monitor"] = "val_macro_auroc" if math.isfinite(auroc) else "-val_loss"
        improved = self.checkpointer.update_best(score, state.epoch)
        state.bad_epochs = 0 if improved else state.bad_epochs + 1
        state.epoch += 1
        if cfg.patience and state.bad_epochs >= cfg.patience:
            state.stopped = True
        record["num_updates"] = state.num_updates  # optimizer steps so far (step-matched arms)
        state.history.append(record)
        self.say(
            f"epoch {record['epoch']}: loss {record['train_loss']:.4f}, val loss "
            f"{record['val_loss']:.4f}, val macro AUROC {auroc:.4f}, "
            f"{record['train_images_per_s']:.0f} img/s" + (" (best)" if improved else "")
        )
        self.checkpointer.save(state.epoch, state.state_dict())
        if state.stopped:
            self.say(f"early stop: no val improvement for {cfg.patience} epochs")

    def finish(self) -> None:
        """Score the best weights on real val and test; write predictions and metrics."""
        acc, data, cfg, state = self.accelerator, self.data, self.cfg, self.state
        acc.wait_for_everyone()
        if acc.is_main_process:
            best = acc.unwrap_model(self.model)
            best.load_state_dict(load_state_dict(self.out))
            # The scored weights' val predictions: the fairness report fixes its decision
            # thresholds on them, never on test.
            val_probs = predict(
                best,
                data.images[data.val["_pos"].to_numpy()],
                self.mean,
                self.std,
                cfg.eval_batch_size,
                acc.device,
            )
            write_val_predictions(self.out, predictions_frame(data.val, data.labels, val_probs))
            probs = predict(
                best,
                data.images[data.test["_pos"].to_numpy()],
                self.mean,
                self.std,
                cfg.eval_batch_size,
                acc.device,
            )
            extra = {
                "arm": self.config["arm"],
                "mix": cfg.mix,
                "seed": cfg.seed,
                "backbone": cfg.backbone,
                "train_size": cfg.train_size,
                "n_real_train": self.config["n_real_train"],
                "n_synthetic_train": self.config["n_synthetic_train"],
                "real_size": cfg.real_size,
                "matched_to": cfg.matched_to,
                "synthetic_provenance": self.config["synthetic_provenance"],
                "init_from": self.config["init_from"],
                "bad_images": data.bad,
                "best_epoch": self.checkpointer.best_step,
                "best_val_score": self.checkpointer.best_score,
                "epochs_run": state.epoch,
                "history": state.history,
                "cache_seconds": data.cache_seconds,
            }
            metrics = finish_evaluation(
                data.test, data.labels, probs, self.out, cfg.n_boot, cfg.seed, extra
            )
            macro = metrics["macro_auroc"]
            self.say(
                f"test macro AUROC {macro if macro is not None else float('nan'):.4f} "
                f"({len(data.test)} images); wrote {self.out}"
            )
        acc.wait_for_everyone()
        acc.end_training()


def start_training(
    cfg: TrainConfig,
    accelerator,
    state_name: str,
    log: Callable[[str], None] | None = None,
) -> TrainingSession:
    """Decode data, build model/optimizer/schedule, restore the state of a resumed run.

    Args:
        cfg: the run, already checked (`decide_folder_state`).
        accelerator: the run's (`classifier.training.accelerator.build_accelerator`).
        state_name: the folder state `decide_folder_state` gave (fresh, resume, overwrite);
            `train_classifier` holds the folder in it (`runfolder.run_folder`).
        log: called with progress lines on the main process (default: this module's logger).
    """
    out = Path(cfg.out)

    def say(text: str) -> None:
        if accelerator.is_main_process:
            say_to(log)(text)

    # ---- data, model (the global generators were seeded from cfg.seed with the accelerator)
    data = prepare_data(cfg, say)
    model = build_model(cfg.backbone, len(data.labels), cfg.pretrained)
    if cfg.init_from is not None:
        say(load_init_weights(model, Path(cfg.init_from), data.labels))
    mean, std = model_normalization(model)
    config = run_config(cfg, data, mean, std)
    if state_name == runfolder.RESUME:
        saved = read_config(out, flag="--resume")
        free = _RESUME_FREE | {k for k in config if k.endswith("_version")}
        runfolder.check_resume_config(saved, config, free, out)
    elif accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        write_config(out, config)
    if accelerator.is_main_process and data.seen is not None:
        write_seen_patients(out, data.seen)
    accelerator.wait_for_everyone()

    train_set = split_dataset(data, data.train, cfg.uncertain)
    val_set = split_dataset(data, data.val, cfg.uncertain)
    batch_size = min(cfg.batch_size, len(train_set))
    pin = torch.cuda.is_available()
    train_loader = make_loader(
        train_set,
        batch_size,
        shuffle=True,
        num_workers=cfg.num_workers,
        pin_memory=pin,
        # a last batch of one image breaks batch norm; dropping a partial batch is harmless
        drop_last=len(train_set) > batch_size,
        seed=cfg.seed,
    )
    val_loader = make_loader(val_set, cfg.eval_batch_size, shuffle=False, pin_memory=pin)

    # ---- optimizer and schedule (per-update cosine with warmup)
    from timm.optim import create_optimizer_v2
    from timm.scheduler import create_scheduler_v2

    optimizer = create_optimizer_v2(
        model, opt=cfg.optimizer, lr=cfg.lr, weight_decay=cfg.weight_decay
    )
    model, optimizer, train_loader, val_loader = accelerator.prepare(
        model, optimizer, train_loader, val_loader
    )
    scheduler, _ = create_scheduler_v2(
        optimizer,
        sched="cosine",
        num_epochs=cfg.epochs,
        warmup_epochs=min(cfg.warmup_epochs, cfg.epochs - 1),
        warmup_lr=cfg.lr * 0.01,
        min_lr=cfg.min_lr,
        step_on_epochs=False,
        updates_per_epoch=len(train_loader),
    )
    state = TrainerState()
    unwrapped = accelerator.unwrap_model(model)
    checkpointer = Checkpointer(
        out,
        accelerator,
        {"model": unwrapped},
        optimizer=optimizer,
        scheduler=scheduler,
        keep=1,
        save_best=lambda: save_model(unwrapped, out),
        unit="epoch",
    )
    resumed = checkpointer.resume() if state_name == runfolder.RESUME else None
    if resumed is not None:
        latest, trainer = resumed
        state.load_state_dict(trainer)
        say(f"resumed from {latest} (epoch {state.epoch} of {cfg.epochs})")
    elif state_name == runfolder.RESUME:
        say(f"{out}: no finished epoch to resume; starting at epoch 0")
    return TrainingSession(
        cfg=cfg,
        out=out,
        accelerator=accelerator,
        data=data,
        model=model,
        optimizer=optimizer,
        scheduler=scheduler,
        train_loader=train_loader,
        val_loader=val_loader,
        state=state,
        checkpointer=checkpointer,
        config=config,
        mean=mean,
        std=std,
        say=say,
    )


def train_classifier(cfg: TrainConfig, log: Callable[[str], None] | None = None) -> Path:
    """Train (or resume) one classifier run and evaluate it on the real test split.

    Args:
        cfg: the run (see TrainConfig).
        log: called with progress lines (default: this module's logger); main process only.

    Returns:
        The run directory (`classifier.run`: config.json, model.safetensors, metrics.json,
        predictions.parquet). A finished run is returned as is with `cfg.resume`.
    """
    out = Path(cfg.out)
    state_name = decide_folder_state(cfg)  # read-only: every rank decides before anyone writes
    if state_name == runfolder.FINISHED:
        say_to(log)(f"{out}: already finished; nothing to do")
        return out
    accelerator = build_accelerator(cfg.mixed_precision, cfg.seed)
    accelerator.wait_for_everyone()  # every process decided the state before anyone writes
    with runfolder.run_folder(out, state_name, accelerator.is_main_process, fmt=RUN_FORMAT):
        session = start_training(cfg, accelerator, state_name, log)
        tracker = start_tracking(cfg.report_to, session.out, session.config, accelerator)
        while session.state.epoch < cfg.epochs and not session.state.stopped:
            record = {"epoch": session.state.epoch}
            record.update(session.train_epoch())
            record.update(session.validate_epoch())
            session.end_epoch(record)
            tracker.log(record, step=record["epoch"], names=CLASSIFIER_SCALARS)
        session.finish()
        tracker.end()
    return session.out
