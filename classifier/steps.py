"""What each run's training realised: optimizer steps, epochs, and the epoch it was scored at.

A run's metrics.json records its history (one record per epoch, with the optimizer steps
taken so far, `num_updates`), the epochs it ran and its best validation epoch (0-based
`best_epoch`), whose weights the test set scores. :func:`run_steps` reads them;
:func:`check_matched_steps` refuses a step-matched control (`classifier.arms`) whose realised
optimizer steps differ from its mixed arm's: it exists to rule out "more steps", which it
only does when it took as many.
"""

from __future__ import annotations

from collections.abc import Sequence

from classifier.arms import Arm
from classifier.runset import Run
from manifests.errors import UserError

STEP_FIELDS = ("optimizer_steps", "epochs_run", "scored_epoch", "steps_at_scored_epoch")


def run_steps(metrics: dict) -> dict[str, int | None]:
    """A run's realised training from its metrics.json; None where it was not recorded.

    Returns:
        `optimizer_steps` (all it took), `epochs_run`, `scored_epoch` (1-based: the best
        validation epoch, whose weights are scored) and `steps_at_scored_epoch`.
    """
    history = [h for h in metrics.get("history") or [] if isinstance(h, dict)]
    steps = history[-1].get("num_updates") if history else None
    best = metrics.get("best_epoch")
    best = int(best) if best is not None and int(best) >= 0 else None
    at_best = next((h.get("num_updates") for h in history if h.get("epoch") == best), None)
    epochs = metrics.get("epochs_run")
    return {
        "optimizer_steps": None if steps is None else int(steps),
        "epochs_run": None if epochs is None else int(epochs),
        "scored_epoch": None if best is None else best + 1,
        "steps_at_scored_epoch": None if at_best is None else int(at_best),
    }


def check_matched_steps(runs: Sequence[Run]) -> list[str]:
    """Refuse a step-matched control that took another number of optimizer steps than its
    mixed arm (the run of the same seed; without one, each of the arm's runs).

    Returns:
        Notes for the report where a step count was not recorded (unchecked).

    Raises:
        UserError: one line naming the control run, both step counts and the fix.
    """
    by_arm: dict[str, list[Run]] = {}
    for run in runs:
        by_arm.setdefault(run.arm, []).append(run)
    notes = []
    for control in runs:
        target = Arm.from_config(control.config, control.arm).matched_to
        if not target or str(target) not in by_arm:
            continue
        arm_runs = by_arm[str(target)]
        partners = [r for r in arm_runs if r.seed == control.seed] or arm_runs
        mine = run_steps(control.metrics)["optimizer_steps"]
        for partner in partners:
            theirs = run_steps(partner.metrics)["optimizer_steps"]
            if mine is None or theirs is None:
                notes.append(
                    f"step-matched control {control.arm!r}: optimizer steps not recorded for "
                    f"seed {control.seed}, so the match with {target!r} is unchecked"
                )
            elif mine != theirs:
                raise UserError(
                    f"{control.path}: the step-matched control {control.arm!r} (seed "
                    f"{control.seed}) took {mine} optimizer steps, its arm {target!r} (seed "
                    f"{partner.seed}) took {theirs}; train the control with --train-size equal "
                    "to the arm's training-set size, the same --epochs and --batch-size, and "
                    "--patience 0"
                )
    return list(dict.fromkeys(notes))


__all__ = ["STEP_FIELDS", "check_matched_steps", "run_steps"]
