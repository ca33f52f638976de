"""`cxraug study`: the RoentGen augmentation study end to end, resumable stage by stage.

The stages call the same library functions as the individual commands, in the order of
DESIGN.md's flow; there is no second code path:

* data: `manifests.phantom.write_phantom_dataset` (`cxraug demo-data`) or a given real
  manifest, then `manifests.splits.split_by_patient` (`cxraug manifest split`)
  -> `data/manifest.parquet`
* finetune: `augmentor.finetune.finetune` (`cxraug finetune`) -> `generator/`
* synthesize: `augmentor.synthesize.synthesize` (`cxraug synthesize`)
  -> `synthetic/manifest.parquet`
* train: `classifier.train.train_classifier` (`cxraug train-classifier`), per arm and seed
  -> `runs/<arm>-seed<k>/`
* evaluate-generator (optional): `augmentor.evaluate.evaluate_generator`
  (`cxraug evaluate-generator`) -> `generator_eval/`
* report: `classifier.report_render.make_report` (`cxraug report`)
  -> `report/report.{html,md,csv,json}`

Arms: `real` (mix 0), `synthetic` (mix 1: as many synthetic images as real train images),
`mix<m>` for each configured ratio (m = synthetic fraction; 0.5 adds as many synthetic as
real), and `pretrain-finetune` (initialised from a classifier trained on synthetic images
only, then trained on real; by default that is the `synthetic` arm's run of the same seed).

The configuration (`study.config.StudyConfig`, a preset of `study.presets` plus an optional
TOML file) is saved as `study.toml` in the study folder; a re-run with another configuration
is refused. Each finished stage leaves a marker in `stages/` (a classifier run: its
`metrics.json`); a re-run skips it ('skip <stage>'), and an interrupted stage resumes:
fine-tuning from its latest checkpoint, synthesis from its committed shards, a classifier
run from its last epoch; the data and report stages simply run again.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from classifier.arms import Arm
from classifier.config import TrainConfig
from manifests import runfolder
from manifests.errors import UserError
from study.config import (
    ClassifierStageConfig,
    DataConfig,
    GeneratorConfig,
    StudyConfig,
    SynthesisStageConfig,
    check_config,
    config_to_toml,
)
from study.presets import load_study_config

STUDY_FILE = "study.toml"
STAGES_DIR = "stages"
# A study folder: study.toml written first, the report stage's marker last.
STAGES = ("data", "finetune", "synthesize", "train", "evaluate-generator", "report")
FORMAT = runfolder.FolderFormat("study", STUDY_FILE, f"{STAGES_DIR}/report.json")


# ------------------------------------------------------------------------------ deviations


# RoentGen's protocol (arXiv 2211.12737) as this study reproduces it, for the deviation list.
ROENTGEN_PROTOCOL = {
    "resolution (px)": 512,
    "images per optimizer step": 256,
    "text encoder trained": True,
    "sampler": "pndm",
    "sampling steps": 75,
    "guidance scale": 4.0,
}


def roentgen_deviations(cfg: StudyConfig) -> list[str]:
    """Where this study's settings differ from RoentGen's protocol (each a line for the report)."""
    g, s = cfg.generator, cfg.synthesis
    options = g.options or {}
    resolution = options.get("resolution") or (
        cfg.data.phantom_size if g.base == "tiny" and cfg.data.manifest is None else None
    )
    batch = g.batch_size * int(options.get("gradient_accumulation_steps", 1))
    ours = {
        "resolution (px)": resolution or 512,
        "images per optimizer step": batch,
        "text encoder trained": g.train_text_encoder,
        "sampler": s.scheduler,
        "sampling steps": s.num_inference_steps,
        "guidance scale": s.guidance_scale,
    }
    lines = [
        f"{key}: {ours[key]!r} here, {value!r} in RoentGen"
        for key, value in ROENTGEN_PROTOCOL.items()
        if ours[key] != value
    ]
    if g.base == "tiny":
        lines.insert(0, "base: the miniature `tiny` model trained from scratch on CPU, not "
                     "Stable Diffusion 1.x")  # fmt: skip
        if s.film_grain and options.get("film_grain", True) is not False:
            lines.append(
                "film grain: measured on the train images (what tiny's autoencoder drops) "
                "and added to every synthetic image; RoentGen adds none"
            )
    return lines


def deviations_section(cfg: StudyConfig) -> dict[str, str]:
    """The deviation list as a report section ({'md', 'html'})."""
    from html import escape

    lines = roentgen_deviations(cfg)
    title = "Deviations from RoentGen's protocol"
    if not lines:
        text = "None: this study follows RoentGen's fine-tuning and sampling protocol."
        return {"md": f"## {title}\n\n{text}\n", "html": f"<h2>{title}</h2><p>{text}</p>"}
    md = f"## {title}\n\n" + "".join(f"- {line}\n" for line in lines)
    html = (
        f"<h2>{escape(title)}</h2><ul>"
        + "".join(f"<li>{escape(line)}</li>" for line in lines)
        + "</ul>"
    )
    return {"md": md, "html": html}


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


class _Stages:
    """Done markers: `stages/<name>.json` is written once a stage's outputs are complete."""

    def __init__(self, out: Path, log: Callable[[str], None]) -> None:
        self.folder = out / STAGES_DIR
        self.log = log
        self.skipped: list[str] = []
        self.seconds: dict[str, float] = {}

    def done(self, name: str, *outputs: Path) -> bool:
        marker = self.folder / f"{name}.json"
        if marker.is_file() and all(Path(p).exists() for p in outputs):
            self.log(f"skip {name} (done: {marker})")
            self.skipped.append(name)
            return True
        return False

    def finish(self, name: str, start: float, **info) -> None:
        from manifests.files import write_json

        seconds = time.perf_counter() - start
        self.seconds[name] = seconds
        write_json(self.folder / f"{name}.json", {"stage": name, "seconds": seconds, **info})
        self.log(f"done {name} in {seconds:.1f}s")


def _check_same_config(out: Path, cfg: StudyConfig) -> None:
    """Refuse to resume a study folder made with another configuration."""
    saved = out / STUDY_FILE
    if not saved.is_file():
        return
    old = load_study_config(None, saved)
    if asdict(old) != asdict(cfg):
        diff = _first_difference(asdict(old), asdict(cfg))
        raise UserError(
            f"--resume: {out} holds a study made with another configuration ({diff}); use a "
            f"new --out, or the same settings (--config {saved}) to resume it"
        )


def _first_difference(old: dict, new: dict, prefix: str = "") -> str:
    for key in [*old, *(k for k in new if k not in old)]:
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict) and key != "options":
            found = _first_difference(a, b, f"{prefix}{key}.")
            if found:
                return found
        elif a != b:
            return f"{prefix}{key} was {a!r}, now {b!r}"
    return ""


def stage_data(cfg: DataConfig, out: Path, log: Callable[[str], None]) -> Path:
    """The real manifest, split by patient, at `out/manifest.parquet`."""
    from manifests.io import read_manifest, write_manifest
    from manifests.phantom import write_phantom_dataset
    from manifests.splits import split_by_patient, split_counts

    target = out / "manifest.parquet"
    if cfg.manifest is None:
        source = write_phantom_dataset(
            out / "phantom",
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
    write_manifest(split, target, overwrite=True)
    counts = split_counts(split)
    log(
        "split by patient: "
        + ", ".join(
            f"{r.split} {r.images} images / {r.patients} patients" for r in counts.itertuples()
        )
    )
    return target


def stage_finetune(cfg: GeneratorConfig, manifest: Path, out: Path, log) -> Path:
    """Fine-tune the generator on the train split (augmentor.finetune.finetune).

    An interrupted run resumes from its latest checkpoint.
    """
    from augmentor.config import FinetuneConfig
    from augmentor.finetune import finetune

    known = {f.name for f in fields(FinetuneConfig)}
    unknown = sorted(set(cfg.options) - known)
    if unknown:
        raise UserError(
            f"study: generator.options has unknown FinetuneConfig field(s) {', '.join(unknown)}; "
            f"valid: {', '.join(sorted(known))}"
        )
    settings = {
        "manifest": str(manifest),
        "base": cfg.base,
        "out": str(out),
        "max_steps": cfg.max_steps,
        "autoencoder_steps": cfg.autoencoder_steps,
        "batch_size": cfg.batch_size,
        "learning_rate": cfg.learning_rate,
        "train_text_encoder": cfg.train_text_encoder,
        "checkpointing_steps": cfg.checkpointing_steps,
        "seed": cfg.seed,
        **cfg.options,
    }
    settings["resume"] = True  # a fresh folder starts; a cut run continues (manifests.runfolder)
    return Path(finetune(FinetuneConfig(**settings), log=log))


def stage_synthesize(
    cfg: SynthesisStageConfig, generator: Path, prompts: Path, out: Path, log
) -> Path:
    """Label-balanced synthesis (augmentor.synthesize.synthesize); resumes a cut run."""
    from augmentor.config import SynthesisConfig
    from augmentor.synthesize import synthesize
    from augmentor.synthetic_set import manifest_path

    result = synthesize(
        SynthesisConfig(
            model=str(generator),
            prompts_from=str(prompts),
            out=str(out),
            labels=cfg.labels,
            negatives=cfg.negatives,
            seed=cfg.seed,
            scheduler=cfg.scheduler,
            num_inference_steps=cfg.num_inference_steps,
            guidance_scale=cfg.guidance_scale,
            batch_size=cfg.batch_size,
            film_grain=cfg.film_grain,
            resume=True,
        )
    )
    for note in result.notes:
        log(f"note: {note}")
    counts = ", ".join(f"{label}: {n}" for label, n in result.counts.items())
    log(f"synthesized {counts} ({result.skipped} already done)")
    return manifest_path(out)


def stage_evaluate_generator(
    real: Path, synthetic: Path, oracle: Path, out: Path, log: Callable[[str], None]
) -> Path:
    """Generator metrics (augmentor.evaluate.evaluate_generator, cxraug evaluate-generator)."""
    from augmentor.evaluate import GeneratorEvalConfig, evaluate_generator
    from augmentor.generator_report import display_tables

    result = evaluate_generator(
        GeneratorEvalConfig(
            synthetic=synthetic, real=real, out=out, features=oracle, overwrite=True
        ),
        progress=lambda text: log(f"  {text}"),
    )
    for title, table in display_tables(result.tables):
        if "fidelity" in title.lower() and "prompt" in title.lower():
            log(f"{title}\n{table.to_string(index=False)}")
    return out


@dataclass(frozen=True)
class ArmRun:
    """One classifier run of the study: its arm (mix, real size, matched arm) and seed."""

    arm: Arm
    seed: int
    out: Path
    init_from: Path | None = None
    train_size: int | None = None
    report: bool = True  # pretrain-only runs are not arms of the report


def _mixed_size(n_real: int, mix: float) -> int:
    """Training-set size of a mixed arm over `n_real` real images (manifests.mixing's rule)."""
    return n_real + round(n_real * mix / (1 - mix))


def plan_runs(
    cfg: ClassifierStageConfig, out: Path, n_synthetic: int, real_counts: dict | None = None
) -> list[ArmRun]:
    """Arms x seeds, in training order (a pretrain run before the run starting from it).

    `real_counts[(size, seed)]` is the number of real train images a run at `size` gets
    (None: the whole split); it sizes step-matched controls and larger synthetic arms.
    """
    real_counts = real_counts or {}
    runs: list[ArmRun] = []

    def add(arm: Arm, seed: int, **kw) -> ArmRun:
        folder = kw.pop("folder", out / "runs")
        run = ArmRun(arm, seed, folder / f"{arm.name}-seed{seed}", **kw)
        runs.append(run)
        return run

    synthetic_arm = Arm(mix=1.0)
    for seed in cfg.seeds:
        n_real = real_counts.get((None, seed))
        synthetic = out / "runs" / f"{synthetic_arm.name}-seed{seed}"
        for size in [None, *cfg.real_sizes]:
            n_size = real_counts.get((size, seed))
            add(Arm(mix=0.0, real_size=size), seed)
            if size is None and cfg.synthetic_arm:
                add(synthetic_arm, seed)
            for m in sorted(cfg.mixes) if size is not None or cfg.full_size_mixes else ():
                mixed = Arm(mix=m, real_size=size)
                add(mixed, seed)
                if cfg.matched_controls and n_size is not None:
                    add(mixed.control(), seed, train_size=_mixed_size(n_size, m))
        for k in cfg.larger_synthetic:
            if n_real is not None:
                add(Arm(mix=1.0, synthetic_scale=k), seed, train_size=int(round(k * n_real)))
        if cfg.pretrain_finetune:
            pretrain = synthetic
            if cfg.pretrain_all_synthetic or not cfg.synthetic_arm:
                size = n_synthetic if cfg.pretrain_all_synthetic else None
                pretrain = add(
                    Arm(mix=1.0, pretrain=True),
                    seed,
                    folder=out / "pretrain",
                    train_size=size,
                    report=False,
                ).out
            add(Arm(mix=0.0, init_from_run=True), seed, init_from=pretrain)
    return runs


def real_train_counts(cfg: ClassifierStageConfig, real_manifest) -> dict:
    """Real train images per (real size, seed), as `classifier.train` will draw them."""
    from manifests.mixing import subset_real_train

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


def train_config(
    cfg: ClassifierStageConfig, real: Path, synthetic: Path, run: ArmRun
) -> TrainConfig:
    """The TrainConfig of one planned run (its arm's facts are what config.json records)."""
    return TrainConfig(
        real=real,
        out=run.out,
        synthetic=synthetic if run.arm.mix > 0 else None,
        mix=run.arm.mix,
        train_size=run.train_size,
        backbone=cfg.backbone,
        labels=tuple(cfg.labels),
        pretrained=Path(cfg.pretrained) if cfg.pretrained else None,
        init_from=run.init_from,
        real_size=run.arm.real_size,
        matched_to=run.arm.matched_to,
        allow_foreign_synthetic=cfg.allow_foreign_synthetic,
        uncertain=cfg.uncertain,
        image_size=cfg.image_size,
        epochs=cfg.epochs,
        batch_size=cfg.batch_size,
        lr=cfg.lr,
        patience=cfg.patience,
        seed=run.seed,
        num_workers=cfg.num_workers,
        arm=run.arm.name,
        resume=True,  # a fresh folder starts; a cut run continues (manifests.runfolder)
    )


def stage_train(
    cfg: ClassifierStageConfig,
    real: Path,
    synthetic: Path,
    run: ArmRun,
    log: Callable[[str], None],
) -> Path:
    """One classifier run (classifier.train.train_classifier); resumes a cut run."""
    from classifier.train import train_classifier

    train_cfg = train_config(cfg, real, synthetic, run)
    return train_classifier(train_cfg, log=lambda text: log(f"  {text}"))


def run_study(cfg: StudyConfig, out: Path, log: Callable[[str], None] = print) -> StudyResult:
    """Run (or resume) the study in `out`; see the module docstring.

    Args:
        cfg: the configuration (see :func:`load_study_config`).
        out: the study folder.
        log: called with progress lines.

    Returns:
        The report and where everything is.
    """
    from augmentor.synthetic_set import manifest_path
    from classifier.report_render import REPORT_FILES, load_report, make_report
    from classifier.run import is_finished
    from manifests.files import atomic_path
    from manifests.io import read_manifest

    check_config(cfg)
    out = Path(out)
    _check_same_config(out, cfg)
    out.mkdir(parents=True, exist_ok=True)
    if not (out / STUDY_FILE).is_file():
        with atomic_path(out / STUDY_FILE) as tmp:
            tmp.write_text(config_to_toml(cfg))
    log(f"study {cfg.name!r} in {out} (config: {out / STUDY_FILE})")
    stages = _Stages(out, log)

    real = out / "data" / "manifest.parquet"
    if not stages.done("data", real):
        start = time.perf_counter()
        stage_data(cfg.data, out / "data", log)
        stages.finish("data", start)

    generator = out / "generator"
    if not stages.done("finetune", generator):
        start = time.perf_counter()
        log(f"finetune {cfg.generator.base} on the train split -> {generator}")
        stage_finetune(cfg.generator, real, generator, log)
        stages.finish("finetune", start)

    synthetic_dir = out / "synthetic"
    synthetic = manifest_path(synthetic_dir)
    if not stages.done("synthesize", synthetic):
        start = time.perf_counter()
        log(f"synthesize {cfg.synthesis.labels} -> {synthetic_dir}")
        stage_synthesize(cfg.synthesis, generator, real, synthetic_dir, log)
        stages.finish("synthesize", start)

    n_synthetic = len(read_manifest(synthetic, columns=[], validate=False).rows)
    counts = real_train_counts(cfg.classifier, read_manifest(real))
    plan = plan_runs(cfg.classifier, out, n_synthetic, counts)
    train_start = time.perf_counter()
    for run in plan:
        name = f"train {run.out.relative_to(out)}"
        if is_finished(run.out):
            log(f"skip {name} (done)")
            stages.skipped.append(name)
            continue
        start = time.perf_counter()
        log(f"{name}: arm {run.arm.name}, seed {run.seed}")
        stage_train(cfg.classifier, real, synthetic, run, log)
        stages.seconds[name] = time.perf_counter() - start
    runs = [run.out for run in plan if run.report]
    if any(k.startswith("train ") for k in stages.seconds):
        stages.seconds["train"] = time.perf_counter() - train_start

    sections = [deviations_section(cfg)]
    if cfg.report.generator_eval:
        from augmentor.evaluate import GENERATOR_EVAL_FILE, generator_section

        evaluation = out / "generator_eval"
        if not stages.done("evaluate-generator", evaluation / GENERATOR_EVAL_FILE):
            start = time.perf_counter()
            oracle = next(r.out for r in plan if r.arm == Arm())
            log(f"evaluate-generator (features and oracle: {oracle.relative_to(out)})")
            stage_evaluate_generator(real, synthetic, oracle, evaluation, log)
            stages.finish("evaluate-generator", start)
        sections.append(generator_section(evaluation))

    report_dir = out / "report"
    if stages.done("report", report_dir / "report.json", report_dir / "report.html"):
        report = load_report(report_dir)
        files = {name: report_dir / name for name in REPORT_FILES}
    else:
        start = time.perf_counter()
        report, files = make_report(
            runs,
            report_dir,
            synthetic=synthetic,
            n_boot=cfg.report.n_boot,
            seed=cfg.report.seed,
            sections=sections,
            overwrite=True,
            allow_foreign_synthetic=cfg.classifier.allow_foreign_synthetic,
        )
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
    log: Callable[[str], None] = print,
) -> StudyResult:
    """`cxraug study`: decide the folder's state, resolve the configuration, `run_study`.

    `--resume` continues the study in `out` (every finished stage is skipped, a cut stage
    continues); without `preset` and `config` it uses the folder's saved `study.toml`.
    A new folder without `preset` or `config` runs the demo preset.
    """
    out = Path(out)
    state = runfolder.folder_state(out, FORMAT, resume, overwrite)
    saved = out / STUDY_FILE
    if state in (runfolder.RESUME, runfolder.FINISHED) and preset is None and config is None:
        cfg = load_study_config(None, saved)
    else:
        cfg = load_study_config(preset, config)
    check_config(cfg)
    if state in (runfolder.RESUME, runfolder.FINISHED):
        _check_same_config(out, cfg)
    with runfolder.run_folder(out, state, fmt=FORMAT):
        return run_study(cfg, out, log=log)


__all__ = [
    "ArmRun",
    "StudyResult",
    "plan_runs",
    "run_study",
    "study",
]
