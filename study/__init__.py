"""`cxraug study`: the RoentGen augmentation study end to end, resumable stage by stage.

The stages call the same library functions as the individual commands, in the order of
DESIGN.md's flow; there is no second code path:

* data: `manifests.phantom.write_phantom_dataset` (`cxraug demo-data`) or a given real
  manifest, then `manifests.splits.split_by_patient` (`cxraug manifest split`)
  -> `data/manifest.parquet`
* finetune: `augmentor.finetune.finetune` (`cxraug finetune`) -> `generator/`
* synthesize: `augmentor.synthesize.synthesize` (`cxraug synthesize`)
  -> `synthetic/manifest.parquet` (and `synthetic-balanced/`, the same counts balanced over
  label x subgroup cells, when `synthesis.balanced_set` names subgroup columns)
* train: `classifier.train.train_classifier` (`cxraug train-classifier`), per arm and seed
  -> `runs/<arm>-seed<k>/`
* evaluate-generator (optional): `augmentor.evaluate.evaluate_generator`
  (`cxraug evaluate-generator`, with the re-identification audit and, where the real
  manifest has sex and age, demographic fidelity) -> `generator_eval/`
* report: `classifier.report_render.make_report` (`cxraug report`)
  -> `report/report.{html,md,csv,json}`

The arms and seeds trained are planned by `study.planning`; the report's list of deviations
from RoentGen's protocol is `study.deviations`'; the folder's layout, saved configuration
and stage markers are `study.folder`'s.

The configuration (`study.config.StudyConfig`, a preset of `study.presets` plus an optional
TOML file) is saved as `study.toml` in the study folder; a re-run with another configuration
is refused. Each finished stage leaves a marker in `stages/` (a classifier run: its
`metrics.json`); a re-run skips it ('skip <stage>'), and an interrupted stage resumes:
fine-tuning from its latest checkpoint, synthesis from its committed shards, a classifier
run from its last epoch; the data and report stages simply run again. This module runs
the stages.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from classifier.arms import Arm
from classifier.config import TrainConfig
from manifests import runfolder
from manifests.errors import UserError
from manifests.progress import say_to
from study.config import (
    ClassifierStageConfig,
    DataConfig,
    GeneratorConfig,
    StudyConfig,
    SynthesisStageConfig,
    check_config,
)
from study.deviations import deviations_section
from study.folder import (
    DATA_MANIFEST,
    FORMAT,
    ORACLE_MANIFEST,
    ORACLE_PHANTOM_DIR,
    PHANTOM_DIR,
    Stages,
    StudyLayout,
    check_same_config,
    saved_config,
    write_config,
)
from study.generators import (
    finetune_settings,
    plan_generators,
    synthesis_settings,
    synthetic_needed,
)
from study.planning import ORACLE_ARM, ArmRun, plan_runs, real_train_counts
from study.presets import load_study_config

# ------------------------------------------------------------------------------ stages


@dataclass
class StudyResult:
    """What a study produced: the report (classifier.report.Report) and file paths."""

    name: str
    out: Path
    report: object
    report_files: dict[str, Path]
    runs: list[Path]
    skipped: list[str]
    seconds: dict[str, float]


def stage_data(cfg: DataConfig, out: Path, log: Callable[[str], None]) -> Path:
    """The real manifest, split by patient, at `out/manifest.parquet` (`out`: the data folder)."""
    from manifests.io import read_manifest, write_manifest
    from manifests.phantom import write_phantom_dataset
    from manifests.splits import split_by_patient, split_counts

    target = out / DATA_MANIFEST
    if cfg.manifest is None:
        source = write_phantom_dataset(
            out / PHANTOM_DIR,
            n=cfg.phantom_n,
            size=cfg.phantom_size,
            seed=cfg.seed,
            patients=cfg.phantom_patients,
            overwrite=True,
        )
        log(f"drew {cfg.phantom_n} phantom images ({cfg.phantom_size} px) into {source.parent}")
    else:
        source = Path(cfg.manifest)
    manifest = read_manifest(source)
    if len(cfg.fractions) != 3:
        raise UserError(f"study: data.fractions {cfg.fractions} must be 3 shares (train,val,test)")
    if {"train", "val", "test"} <= set(manifest.rows["split"]):
        split = manifest  # already split by the user (cxraug manifest split): keep it
        log(f"{source}: keeping its train/val/test split")
    else:
        split = split_by_patient(manifest, tuple(cfg.fractions), seed=cfg.seed)
    if cfg.has_oracle:
        split, oracle = oracle_split(cfg, split, out)
        write_manifest(oracle, out / ORACLE_MANIFEST, overwrite=True)
        n_oracle = oracle.rows.loc[oracle.rows["split"] == "train", "patient_id"].nunique()
        log(f"fidelity oracle: {n_oracle} patients of its own -> {out / ORACLE_MANIFEST}")
    write_manifest(split, target, overwrite=True)
    counts = split_counts(split)
    log(
        "split by patient: "
        + ", ".join(
            f"{r.split} {r.images} images / {r.patients} patients" for r in counts.itertuples()
        )
    )
    return target


ORACLE_FIRST_PATIENT = 2_000_000  # past the phantom pools of the data and the autoencoder


def oracle_split(cfg: DataConfig, split, out: Path):
    """(the study's manifest, the oracle's): the fidelity oracle's own patients as its
    train split, beside the study's val and test splits. Phantoms: `oracle_images` drawn
    from patients no other draw has; a real manifest: `oracle_fraction` of its train
    patients (seeded), taken out of the study's train split before anything trains."""
    from manifests.io import absolutize, concat_manifests, read_manifest
    from manifests.phantom import write_phantom_dataset

    split = absolutize(split)
    rows = split.rows
    held_out = rows[rows["split"] != "train"]
    if cfg.manifest is None:
        path = write_phantom_dataset(
            out / ORACLE_PHANTOM_DIR,
            n=cfg.oracle_images,
            size=cfg.phantom_size,
            seed=cfg.seed + 1,
            first_patient=ORACLE_FIRST_PATIENT,
            overwrite=True,
        )
        own = absolutize(read_manifest(path))
        own = own.with_rows(own.rows.assign(split="train"))
        return split, concat_manifests([own, split.with_rows(held_out)])
    train = rows[rows["split"] == "train"]
    patients = np.sort(train["patient_id"].astype(str).unique())
    rng = np.random.default_rng([cfg.seed, 11])
    n = max(1, round(cfg.oracle_fraction * len(patients)))
    chosen = set(rng.choice(patients, size=n, replace=False))
    is_oracle = (
        rows["patient_id"].astype(str).isin(chosen).to_numpy()
        & (rows["split"] == "train").to_numpy()
    )
    oracle = split.with_rows(pd.concat([rows[is_oracle], held_out]))
    return split.with_rows(rows[~is_oracle]), oracle


def stage_finetune(cfg: GeneratorConfig, manifest: Path, out: Path, log, **changes) -> Path:
    """Fine-tune a generator on the train split of `manifest` (augmentor.finetune.finetune);
    `changes`: a unit's own settings (`study.generators.finetune_settings`).

    An interrupted run resumes from its latest checkpoint.
    """
    from augmentor.finetune import finetune

    # a fresh folder starts; a cut run continues (manifests.runfolder)
    settings = cfg.with_settings(**changes).command_config(
        manifest=str(manifest), out=str(out), resume=True
    )
    return Path(finetune(settings, log=log))


def stage_synthesize(
    cfg: SynthesisStageConfig, generator: Path, prompts: Path, out: Path, log, **changes
) -> Path:
    """Label-balanced synthesis (augmentor.synthesize.synthesize); resumes a cut run.
    `changes`: a unit's own settings (`study.generators.synthesis_settings`)."""
    from augmentor.synthesize import synthesize
    from augmentor.synthetic_set import manifest_path

    result = synthesize(
        cfg.with_settings(**changes).command_config(
            model=str(generator), prompts_from=str(prompts), out=str(out), resume=True
        )
    )
    for note in result.notes:
        log(f"note: {note}")
    counts = ", ".join(f"{label}: {n}" for label, n in result.counts.items())
    log(f"synthesized {counts} ({result.skipped} already done)")
    return manifest_path(out)


def stage_evaluate_generator(
    real: Path,
    synthetic: Path,
    oracle: Path,
    out: Path,
    log: Callable[[str], None],
    privacy: bool = False,
    demographics: bool = False,
) -> Path:
    """Generator metrics (augmentor.evaluate.evaluate_generator, cxraug evaluate-generator;
    `privacy`: --privacy, `demographics`: --demographics)."""
    from augmentor.eval_config import GeneratorEvalConfig
    from augmentor.evaluate import evaluate_generator
    from augmentor.generator_report import prompt_fidelity_text

    result = evaluate_generator(
        GeneratorEvalConfig(
            synthetic=synthetic,
            real=real,
            out=out,
            features=oracle,
            overwrite=True,
            privacy=privacy,
            demographics=demographics,
        ),
        progress=lambda text: log(f"  {text}"),
    )
    if len(result.tables.get("prompt_fidelity", [])):
        log(prompt_fidelity_text(result.tables["prompt_fidelity"]))
    return out


def has_demographics(manifest) -> bool:
    """The manifest's train split has images of both sexes and ages (what the demographic
    oracles need)."""
    rows = manifest.rows[manifest.rows["split"] == "train"]
    if "sex" not in rows or "age" not in rows:
        return False
    return set(rows["sex"].dropna()) >= {"F", "M"} and bool(rows["age"].notna().any())


def oversample_target(runs: tuple[Path, ...], labels) -> str | None:
    """'LABEL:SHARE,...': the mean positive share per label the finished runs `runs`
    trained on (their config.json), for the labels strictly between 0 and 1."""
    from classifier.run import read_config

    shares = [read_config(path)["train_positive_share"] for path in runs]
    parts = []
    for label in labels:
        share = float(np.mean([s[label] for s in shares]))
        if 0.0 < share < 1.0:
            parts.append(f"{label}:{share:.6f}")
    return ",".join(parts) or None


def train_config(
    cfg: ClassifierStageConfig, real: Path, synthetic: Path | None, run: ArmRun
) -> TrainConfig:
    """The TrainConfig of one planned run: the stage's settings, and what the study sets
    (its arm's facts are what config.json records); `synthetic`: the set of the run's
    generator."""
    return cfg.command_config(
        real=run.real or real,
        out=run.out,
        synthetic=synthetic if run.arm.mix > 0 else None,
        oversample_to=(
            oversample_target(run.balance_from, cfg.value("labels")) if run.balance_from else None
        ),
        mix=run.arm.mix,
        train_size=run.train_size,
        init_from=run.init_from,
        real_size=run.arm.real_size,
        matched_to=run.arm.matched_to,
        seed=run.seed,
        arm=run.arm.name,
        resume=True,  # a fresh folder starts; a cut run continues (manifests.runfolder)
    )


def stage_train(
    cfg: ClassifierStageConfig,
    real: Path,
    synthetic: Path | None,
    run: ArmRun,
    log: Callable[[str], None],
) -> Path:
    """One classifier run (classifier.train.train_classifier); resumes a cut run."""
    from classifier.train import train_classifier

    train_cfg = train_config(cfg, real, synthetic, run)
    return train_classifier(train_cfg, log=lambda text: log(f"  {text}"))


def stage_generator(
    cfg: StudyConfig, layout: StudyLayout, stages: Stages, unit, real_manifest, counts, log
) -> Path:
    """Fine-tune one of the study's generators and draw its synthetic set, and its
    subgroup-balanced set when the study has one (each a stage of its own, skipped when
    done); returns {balanced: the set's manifest}."""
    from augmentor.synthetic_set import manifest_path
    from manifests.io import write_manifest
    from manifests.mixing import subset_real_train

    suffix = f"-{unit.key}" if unit.key else ""
    prompts = layout.real_manifest
    if unit.per_size:
        prompts = layout.subset_manifest(unit)
        if not prompts.is_file():
            prompts.parent.mkdir(parents=True, exist_ok=True)
            subset = subset_real_train(real_manifest, unit.real_size, unit.seed)
            write_manifest(subset, prompts, overwrite=True)
    generator = layout.generator_of(unit)
    if not stages.done(f"finetune{suffix}", generator):
        start = time.perf_counter()
        log(f"finetune {cfg.generator.value('base')} on {unit.describe()} -> {generator}")
        stage_finetune(
            cfg.generator, prompts, generator, log, **finetune_settings(cfg.generator, unit)
        )
        stages.finish(f"finetune{suffix}", start)
    needed = (
        synthetic_needed(cfg.classifier, counts[(unit.real_size, unit.seed)])
        if unit.per_size
        else None
    )
    changes = synthesis_settings(cfg.synthesis, unit, needed)
    sets = {False: manifest_path(layout.synthetic_of(unit))}
    if cfg.synthesis.balanced_set and not unit.per_size:
        sets[True] = manifest_path(layout.synthetic_of(unit, balanced=True))
    for balanced, synthetic in sets.items():
        name = f"synthesize{'-balanced' if balanced else ''}{suffix}"
        if stages.done(name, synthetic):
            continue
        start = time.perf_counter()
        folder = synthetic.parent
        extra = {"balance_by": tuple(cfg.synthesis.balanced_set)} if balanced else {}
        log(f"synthesize {changes.get('labels', cfg.synthesis.value('labels'))} -> {folder}")
        stage_synthesize(cfg.synthesis, generator, prompts, folder, log, **changes, **extra)
        stages.finish(name, start)
    return sets


def check_primary(cfg: StudyConfig, out: Path) -> None:
    """Refuse, before anything runs, a declared primary endpoint naming an arm the study
    does not train (the report would refuse it only at the end)."""
    from classifier.config import parse_comparison

    declared = cfg.report.value("primary")
    if declared is None:
        return
    c = cfg.classifier
    sizes = [None, *c.real_sizes]
    counts = {(size, seed): 1 for size in sizes for seed in c.seeds}  # names only
    units = plan_generators(cfg.generator, c)
    balanced = bool(cfg.synthesis.balanced_set)
    planned = plan_runs(c, out, 1, counts, units, balanced=balanced)
    trained = {run.arm.name for run in planned if run.report}
    for arm in parse_comparison(declared, flag="study: report.primary")[:2]:
        if arm not in trained:
            raise UserError(
                f"study: report.primary {declared!r} names arm {arm!r}, which this study "
                f"does not train; its arms: {', '.join(sorted(trained))}"
            )


def run_study(cfg: StudyConfig, out: Path, log: Callable[[str], None] | None = None) -> StudyResult:
    """Run (or resume) the study in `out`; see the module docstring.

    Args:
        cfg: the configuration (see :func:`load_study_config`).
        out: the study folder.
        log: called with progress lines (default: the `cxraug` logger,
            `manifests.progress.say_to`).

    Returns:
        The report and where everything is.
    """
    from classifier.report_render import REPORT_FILES, load_report, make_report
    from classifier.run import is_finished
    from manifests.io import read_manifest

    check_config(cfg)
    out = Path(out)
    check_primary(cfg, out)
    layout = StudyLayout(out)
    check_same_config(out, cfg)
    out.mkdir(parents=True, exist_ok=True)
    log = say_to(log)
    log(f"study {cfg.name!r} in {out} (config: {write_config(out, cfg)})")
    stages = Stages(out, log)

    real = layout.real_manifest
    if not stages.done("data", real):
        start = time.perf_counter()
        stage_data(cfg.data, layout.data, log)
        stages.finish("data", start)

    real_manifest = read_manifest(real)
    counts = real_train_counts(cfg.classifier, real_manifest)
    units = plan_generators(cfg.generator, cfg.classifier)
    synthetic_sets = {}  # (unit, balanced) -> manifest
    for unit in units:
        sets = stage_generator(cfg, layout, stages, unit, real_manifest, counts, log)
        synthetic_sets.update({(unit, balanced): path for balanced, path in sets.items()})
    synthetic = synthetic_sets[(units[0], False)]

    n_synthetic = len(read_manifest(synthetic, columns=[], validate=False).rows)
    oracle_manifest = layout.oracle_manifest if cfg.data.has_oracle else None
    plan = plan_runs(
        cfg.classifier,
        out,
        n_synthetic,
        counts,
        units,
        oracle_manifest,
        balanced=bool(cfg.synthesis.balanced_set),
    )
    train_start = time.perf_counter()
    for run in plan:
        name = f"train {run.out.relative_to(out)}"
        if is_finished(run.out):
            log(f"skip {name} (done)")
            stages.skipped.append(name)
            continue
        start = time.perf_counter()
        log(f"{name}: arm {run.arm.name}, seed {run.seed}")
        unit_set = synthetic_sets.get((run.generator, run.arm.balanced))
        stage_train(cfg.classifier, real, unit_set, run, log)
        stages.seconds[name] = time.perf_counter() - start
    runs = [run.out for run in plan if run.report]
    if any(k.startswith("train ") for k in stages.seconds):
        stages.seconds["train"] = time.perf_counter() - train_start

    sections = [deviations_section(cfg)]
    if cfg.report.generator_eval:
        from augmentor.eval_folder import GENERATOR_EVAL_FILE, generator_section

        evaluation = layout.generator_eval
        if not stages.done("evaluate-generator", evaluation / GENERATOR_EVAL_FILE):
            start = time.perf_counter()
            oracle = next(r.out for r in plan if r.arm in (ORACLE_ARM, Arm()))
            log(f"evaluate-generator (features and oracle: {oracle.relative_to(out)})")
            stage_evaluate_generator(
                real,
                synthetic,
                oracle,
                evaluation,
                log,
                privacy=cfg.report.privacy_audit,
                demographics=cfg.report.demographic_fidelity and has_demographics(real_manifest),
            )
            stages.finish("evaluate-generator", start)
        sections.append(generator_section(evaluation))

    report_dir = layout.report
    if stages.done("report", report_dir / "report.json", report_dir / "report.html"):
        report = load_report(report_dir)
        files = {name: report_dir / name for name in REPORT_FILES}
    else:
        start = time.perf_counter()
        report_cfg = cfg.report.command_config(
            runs=runs,
            out=report_dir,
            synthetic=synthetic,
            overwrite=True,
            allow_foreign_synthetic=cfg.classifier.value("allow_foreign_synthetic"),
        )
        report, files = make_report(report_cfg, sections)
        stages.finish("report", start)
    return StudyResult(
        name=cfg.name,
        out=out,
        report=report,
        report_files=files,
        runs=runs,
        skipped=stages.skipped,
        seconds=stages.seconds,
    )


def study(
    out: Path,
    preset: str | None = None,
    config: Path | None = None,
    resume: bool = False,
    overwrite: bool = False,
    log: Callable[[str], None] | None = None,
) -> StudyResult:
    """`cxraug study`: decide the folder's state, resolve the configuration, `run_study`.

    `--resume` continues the study in `out` (every finished stage is skipped, a cut stage
    continues); without `preset` and `config` it uses the folder's saved `study.toml`.
    A new folder without `preset` or `config` runs the demo preset.
    """
    out = Path(out)
    state = runfolder.folder_state(out, FORMAT, resume, overwrite)
    if state in (runfolder.RESUME, runfolder.FINISHED) and preset is None and config is None:
        cfg = saved_config(out)
    else:
        cfg = load_study_config(preset, config)
    check_config(cfg)
    check_primary(cfg, out)  # before the folder is claimed
    if state in (runfolder.RESUME, runfolder.FINISHED):
        check_same_config(out, cfg)
    with runfolder.run_folder(out, state, fmt=FORMAT):
        return run_study(cfg, out, log=log)


__all__ = [
    "StudyResult",
    "run_study",
    "stage_data",
    "study",
    "train_config",
]
