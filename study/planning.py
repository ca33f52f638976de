"""The study's classifier runs: which arms, seeds and sizes, in training order.

`plan_runs` turns the classifier section of a study's configuration into runs (an
:class:`ArmRun` each: its `classifier.arms.Arm`, seed, folder and training-set size);
`real_train_counts` counts the real train images each real size gets, which sizes the
step-matched controls and the larger synthetic arms. Arms (names from `classifier.arms`):

* ``real`` (mix 0) and ``synthetic`` (mix 1: as many synthetic images as real train images);
* ``mix<m>`` for each configured ratio (m = synthetic fraction; 0.5 adds as many synthetic
  as real), with a step-matched real-only control ``real-steps-mix<m>`` trained for as many
  optimizer steps (its training-set size is the mixed arm's, `manifests.mixing.plan_mix`);
* the same real, mixed and control arms on nested real subsets (``real-n80``, ...);
* ``synthetic-x<k>``: k times as many synthetic images as real train images;
* ``pretrain-finetune``: initialised from a classifier trained on synthetic images only,
  then trained on real; by default that is the ``synthetic`` arm's run of the same seed,
  else a ``synthetic-pretrain`` run under ``pretrain/`` that is no arm of the report;
* ``real-oversample-mix<m>...`` (`oversample_controls`): a second control per mixed arm,
  as many steps, its real positives drawn to the label balance the mixed arm's runs of the
  same seed realised (read from their config.json when it trains: `balance_from`);
* ``mix<m>-balanced`` (`synthesis.balanced_set`): each mixed arm served by whole-split
  generators again, on their subgroup-balanced sets; it shares the mixed arm's controls;
* ``oracle`` (when the study reserves patients for it): the fidelity oracle, trained on
  those patients alone; no arm of the report.

A run that uses synthetic images is planned once per generator it draws from
(`study.generators.units_for`): with several whole-split replicates, folders
``<arm>-g<r>-seed<k>``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from classifier.arms import Arm
from manifests.mixing import plan_mix, subset_real_train
from study.config import ClassifierStageConfig
from study.folder import StudyLayout
from study.generators import GeneratorUnit, units_for

ORACLE_ARM = Arm().named("oracle")


@dataclass(frozen=True)
class ArmRun:
    """One classifier run of the study: its arm (mix, real size, matched arm) and seed."""

    arm: Arm
    seed: int
    out: Path
    init_from: Path | None = None
    train_size: int | None = None
    report: bool = True  # pretrain-only runs and the oracle are not arms of the report
    generator: GeneratorUnit | None = None  # whose synthetic set it uses (or started from)
    real: Path | None = None  # another real manifest than the study's (the oracle's)
    balance_from: tuple[Path, ...] = ()  # an oversampling control: the runs it matches


def plan_runs(
    cfg: ClassifierStageConfig,
    out: Path,
    n_synthetic: int,
    real_counts: dict | None = None,
    units: list[GeneratorUnit] | None = None,
    oracle: Path | None = None,
    balanced: bool = False,
) -> list[ArmRun]:
    """Arms x seeds (x generators), in training order (a run before any run that starts
    from it or matches its label balance).

    `real_counts[(size, seed)]` is the number of real train images a run at `size` gets
    (None: the whole split); it sizes step-matched controls and larger synthetic arms.
    `units`: the study's generators (default: one); `oracle`: the oracle's manifest, when
    the study trains one (first, on the first seed); `balanced`: every mixed arm that
    whole-split generators serve gets its subgroup-balanced twin.
    """
    layout = StudyLayout(Path(out))
    real_counts = real_counts or {}
    units = units or [GeneratorUnit()]
    runs: list[ArmRun] = []

    def add(arm: Arm, seed: int, unit: GeneratorUnit | None = None, tag=None, **kw) -> ArmRun:
        run = ArmRun(arm, seed, layout.run(arm, seed, tag), generator=unit, **kw)
        runs.append(run)
        return run

    def add_synthetic(arm: Arm, seed: int, **kw) -> list[ArmRun]:
        """`arm`'s runs for `seed`, one per generator it draws from."""
        used = units_for(units, arm.real_size, seed)
        return [add(arm, seed, u, u.replicate if len(used) > 1 else None, **kw) for u in used]

    if oracle is not None:
        add(ORACLE_ARM, cfg.seeds[0], real=oracle, report=False)
    for seed in cfg.seeds:
        n_real = real_counts.get((None, seed))
        for size in [None, *cfg.real_sizes]:
            n_size = real_counts.get((size, seed))
            add(Arm(mix=0.0, real_size=size), seed)
            if size is None and cfg.synthetic_arm:
                add_synthetic(Arm(mix=1.0), seed)
            for m in sorted(cfg.mixes) if size is not None or cfg.full_size_mixes else ():
                mixed = Arm(mix=m, real_size=size)
                mixed_runs = add_synthetic(mixed, seed)
                if balanced and not any(r.generator.per_size for r in mixed_runs):
                    add_synthetic(replace(mixed, balanced=True), seed)
                if n_size is None:
                    continue
                plan = plan_mix(n_size, n_synthetic, m)
                steps = plan.n_real + plan.n_synthetic
                if cfg.matched_controls:
                    add(mixed.control(), seed, train_size=steps)
                if cfg.oversample_controls:
                    balance = tuple(r.out for r in mixed_runs)
                    add(
                        mixed.control(oversample=True), seed, train_size=steps, balance_from=balance
                    )
        for k in cfg.larger_synthetic:
            if n_real is not None:
                add_synthetic(
                    Arm(mix=1.0, synthetic_scale=k), seed, train_size=int(round(k * n_real))
                )
        if cfg.pretrain_finetune:
            if cfg.pretrain_all_synthetic or not cfg.synthetic_arm:
                size = n_synthetic if cfg.pretrain_all_synthetic else None
                arm = Arm(mix=1.0, pretrain=True)
                sources = add_synthetic(arm, seed, train_size=size, report=False)
            else:
                sources = [r for r in runs if r.arm == Arm(mix=1.0) and r.seed == seed]
            for source in sources:
                tag = source.generator.replicate if len(sources) > 1 else None
                add(
                    Arm(mix=0.0, init_from_run=True),
                    seed,
                    source.generator,
                    tag,
                    init_from=source.out,
                )
    return runs


def real_train_counts(cfg: ClassifierStageConfig, real_manifest) -> dict:
    """Real train images per (real size, seed), as `classifier.train` will draw them."""
    rows = real_manifest.rows
    n_all = int(((rows["split"] == "train") & (rows["source"] == "real")).sum())
    counts = {}
    for seed in cfg.seeds:
        counts[(None, seed)] = n_all
        for size in cfg.real_sizes:
            sub = subset_real_train(real_manifest, size, seed).rows
            counts[(size, seed)] = int(
                ((sub["split"] == "train") & (sub["source"] == "real")).sum()
            )
    return counts


__all__ = ["ArmRun", "plan_runs", "real_train_counts"]
