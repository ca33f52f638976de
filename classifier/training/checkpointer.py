"""`Checkpointer`: one run's checkpoints, for both trainers (in the spirit of timm's
`CheckpointSaver`: the loop only calls `save(step, trainer)` and `update_best(score, step)`).

It owns the protocol: every rank writes its share of checkpoint `step` into one scratch
folder (`manifests.runfolder` names it), the main process marks it complete and renames it
to `checkpoints/checkpoint-STEP`, keeping the newest `keep`; a run killed at any moment
resumes from a whole checkpoint. What a checkpoint holds is `classifier.training.state`'s
safetensors + JSON (weights, optimizer, LR schedule, EMA, every random state, the trainer's
counters); nothing is unpickled on resume. accelerate's `save_state`/`load_state` are not
used: they pickle custom state and write in place.

With `save_best`, it also keeps the best model: `update_best` calls it (main process) when a
score beats the best so far; the best score and its step travel in each checkpoint.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from pathlib import Path

import torch

from classifier.training.state import load_train_state, save_train_state
from manifests import runfolder


class Checkpointer:
    """Save, resume and rotate the checkpoints of the run in `out`; keep its best model.

    Args:
        out: the run folder (checkpoints go to `out/checkpoints/`).
        accelerator: the run's Accelerator (ranks, barriers).
        models: name -> (unwrapped) module whose weights a checkpoint holds.
        optimizer, scheduler, ema: saved and restored when given (each has a state dict).
        generators: name -> this rank's `torch.Generator`s to save with the random states.
        keep: how many checkpoints to keep (None: all).
        save_best: writes the best model (called on the main process by `update_best`).
        unit: what a step counts (`step`, `epoch`); names the best step in the record.
        min_delta: how much a score must beat the best to count as better.
    """

    def __init__(
        self,
        out: Path,
        accelerator,
        models: Mapping[str, torch.nn.Module],
        *,
        optimizer=None,
        scheduler=None,
        ema=None,
        generators: Mapping[str, torch.Generator] | None = None,
        keep: int | None = None,
        save_best: Callable[[], None] | None = None,
        unit: str = "step",
        min_delta: float = 1e-6,
    ) -> None:
        self.out = Path(out)
        self.accelerator = accelerator
        self.models = dict(models)
        self.optimizer, self.scheduler, self.ema = optimizer, scheduler, ema
        self.generators = dict(generators or {})
        self.keep = keep
        self.save_best = save_best
        self.unit = unit
        self.min_delta = min_delta
        self.best_score = -math.inf
        self.best_step = -1

    # ------------------------------------------------------------------ best model

    def update_best(self, score: float, step: int) -> bool:
        """Record `score` at `step`; when it beats the best, save the best model. Improved?"""
        if not score > self.best_score + self.min_delta:
            return False
        self.best_score, self.best_step = score, step
        if self.save_best is not None and self.accelerator.is_main_process:
            self.save_best()
        return True

    def _best_record(self) -> dict:
        if self.save_best is None:
            return {}
        return {"best_score": self.best_score, f"best_{self.unit}": self.best_step}

    # ------------------------------------------------------------------ save and resume

    def save(self, step: int, trainer: dict) -> Path:
        """Write checkpoint `step` (every rank calls it) with the trainer's JSON record."""
        acc = self.accelerator
        if acc.is_main_process:
            runfolder.checkpoint_scratch(self.out, step)  # empty, made before anyone writes
        acc.wait_for_everyone()
        save_train_state(
            runfolder.checkpoint_scratch_dir(self.out, step),
            models=self.models,
            optimizer=self.optimizer,
            scheduler=self.scheduler,
            ema=self.ema,
            trainer={**trainer, **self._best_record()},
            rank=acc.process_index,
            is_main=acc.is_main_process,
            generators=self.generators,
        )
        acc.wait_for_everyone()
        if acc.is_main_process:
            runfolder.commit_checkpoint(
                self.out, runfolder.checkpoint_scratch_dir(self.out, step), step, self.keep
            )
        acc.wait_for_everyone()
        return runfolder.checkpoint_dir(self.out, step)

    def latest(self) -> Path | None:
        """The newest complete checkpoint, or None."""
        return runfolder.latest_checkpoint(self.out)

    def resume(self) -> tuple[Path, dict] | None:
        """Restore the newest complete checkpoint: its path and the trainer's record.

        Restores weights, optimizer, LR schedule, EMA, the best score and every random state,
        so the run continues bit-identically. None when there is no checkpoint yet.
        """
        latest = self.latest()
        if latest is None:
            return None
        trainer = load_train_state(
            latest,
            models=self.models,
            optimizer=self.optimizer,
            scheduler=self.scheduler,
            ema=self.ema,
            rank=self.accelerator.process_index,
            generators=self.generators,
        )
        if self.save_best is not None:
            self.best_score = float(trainer.pop("best_score"))
            self.best_step = int(trainer.pop(f"best_{self.unit}"))
        return latest, trainer


__all__ = ["Checkpointer"]
