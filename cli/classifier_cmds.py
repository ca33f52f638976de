"""`cxraug train-classifier`, `cxraug report` and `cxraug study`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from classifier.config import TrainConfig
from cli.app import (
    Overwrite,
    ReportTo,
    Resume,
    RunOverwrite,
    Seed,
    app,
    console,
)

# ---------------------------------------------------------------- classifier, report, study (issue 4)


@app.command("train-classifier")
def train_classifier_cmd(
    real: Annotated[Path, typer.Option("--real", help="Real manifest, split by patient.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Run directory to write.")],
    synthetic: Annotated[
        Path | None, typer.Option("--synthetic", help="Synthetic manifest (needed when --mix > 0).")
    ] = TrainConfig.synthetic,
    mix: Annotated[
        float,
        typer.Option(
            "--mix",
            help="Synthetic fraction of the training set, 0 to 1. 0: real only; 1: synthetic "
            "only (as many images as real train); m in (0, 1): all R real train images plus "
            "round(R*m/(1-m)) synthetic, so 0.5 adds as many synthetic as real. Val/test stay real.",
        ),
    ] = TrainConfig.mix,
    train_size: Annotated[
        int | None,
        typer.Option(
            "--train-size",
            help="Fix the training set size T: round(T*mix) synthetic + the rest real "
            "(drawn with repetition only if too few exist; said in the output).",
        ),
    ] = TrainConfig.train_size,
    backbone: Annotated[
        str, typer.Option("--backbone", help="Any timm model name.")
    ] = TrainConfig.backbone,
    labels: Annotated[
        str | None,
        typer.Option(
            "--labels", help="Comma list (default: labels with 5+ train positives and negatives)."
        ),
    ] = TrainConfig.labels,
    pretrained: Annotated[
        Path | None, typer.Option("--pretrained", help="Local timm weights (.safetensors/.pth).")
    ] = TrainConfig.pretrained,
    init_from: Annotated[
        Path | None,
        typer.Option(
            "--init-from", help="Start from another run's weights (pretrain-then-finetune)."
        ),
    ] = TrainConfig.init_from,
    uncertain: Annotated[
        str, typer.Option("--uncertain", help="-1 labels: ignore | zeros | ones.")
    ] = TrainConfig.uncertain,
    image_size: Annotated[
        int, typer.Option("--image-size", help="Input side, pixels.")
    ] = TrainConfig.image_size,
    epochs: Annotated[int, typer.Option("--epochs")] = TrainConfig.epochs,
    batch_size: Annotated[int, typer.Option("--batch-size")] = TrainConfig.batch_size,
    lr: Annotated[
        float, typer.Option("--lr", help="Peak learning rate (cosine, warmup).")
    ] = TrainConfig.lr,
    optimizer: Annotated[
        str, typer.Option("--optimizer", help="timm optimizer name.")
    ] = TrainConfig.optimizer,
    patience: Annotated[
        int, typer.Option("--patience", help="Early stop after N epochs without val gain; 0 off.")
    ] = TrainConfig.patience,
    seed: Seed = TrainConfig.seed,
    num_workers: Annotated[
        int, typer.Option("--num-workers", help="Loader processes.")
    ] = TrainConfig.num_workers,
    on_bad_image: Annotated[
        str, typer.Option("--on-bad-image", help="Unreadable images: error | skip (counted).")
    ] = TrainConfig.on_bad_image,
    arm: Annotated[
        str | None, typer.Option("--arm", help="Arm name (default: real, synthetic, mix0.5, ...).")
    ] = TrainConfig.arm,
    real_size: Annotated[
        float | None,
        typer.Option(
            "--real-size",
            help="Train on a nested, patient-level, label-stratified subset of the real train "
            "split: N images (>= 1) or a fraction (< 1). Val/test stay whole.",
        ),
    ] = TrainConfig.real_size,
    matched_to: Annotated[
        str | None,
        typer.Option(
            "--matched-to",
            help="Record that this real-only run is the step-matched control of ARM (give it "
            "--train-size equal to ARM's training-set size so it takes as many steps).",
        ),
    ] = TrainConfig.matched_to,
    allow_foreign_synthetic: Annotated[
        bool,
        typer.Option(
            "--allow-foreign-synthetic",
            help="Accept a synthetic set whose prompt and generator patients cannot be checked "
            "against the val/test patients of --real (reports say so).",
        ),
    ] = TrainConfig.allow_foreign_synthetic,
    hflip: Annotated[
        bool, typer.Option("--hflip", help="Random horizontal flips (off: laterality matters).")
    ] = False,
    cache_dir: Annotated[
        Path | None, typer.Option("--cache-dir", help="Memory-mapped image cache (huge sets).")
    ] = TrainConfig.cache_dir,
    resume: Resume = TrainConfig.resume,
    report_to: ReportTo = TrainConfig.report_to,
    overwrite: RunOverwrite = TrainConfig.overwrite,
) -> None:
    """Train a timm classifier on real, synthetic or mixed CXRs; evaluate on real test.

    No horizontal flip by default: laterality matters (heart side, left vs right findings).
    """
    from classifier.config import AugmentConfig
    from classifier.train import train_classifier

    cfg = TrainConfig(
        real=real,
        out=out,
        synthetic=synthetic,
        mix=mix,
        train_size=train_size,
        backbone=backbone,
        labels=tuple(x.strip() for x in labels.split(",") if x.strip()) if labels else None,
        pretrained=pretrained,
        init_from=init_from,
        uncertain=uncertain,
        image_size=image_size,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        optimizer=optimizer,
        patience=patience,
        seed=seed,
        num_workers=num_workers,
        on_bad_image=on_bad_image,
        arm=arm,
        real_size=real_size,
        matched_to=matched_to,
        allow_foreign_synthetic=allow_foreign_synthetic,
        augment=AugmentConfig(hflip=hflip),
        cache_dir=cache_dir,
        resume=resume,
        overwrite=overwrite,
        report_to=report_to,
    )
    train_classifier(cfg, log=console.print)


@app.command("report")
def report_cmd(
    runs: Annotated[
        list[Path],
        typer.Argument(help="Classifier run directories (or folders of them).", show_default=False),
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder for report.*.")],
    synthetic: Annotated[
        Path | None,
        typer.Option(
            "--synthetic", help="Synthetic manifest for the sample grid (default: the runs')."
        ),
    ] = None,
    generator_eval: Annotated[
        Path | None,
        typer.Option("--generator-eval", help="An evaluate-generator folder to include."),
    ] = None,
    baseline: Annotated[
        str, typer.Option("--baseline", help="Arm the deltas are taken against.")
    ] = "real",
    n_boot: Annotated[int, typer.Option("--n-boot", help="Bootstrap resamples.")] = 1000,
    seed: Seed = 0,
    allow_foreign_synthetic: Annotated[
        bool,
        typer.Option(
            "--allow-foreign-synthetic",
            help="Report runs whose synthetic images' patients were never checked (said in the "
            "report's header).",
        ),
    ] = False,
    overwrite: Overwrite = False,
) -> None:
    """AUROC per arm and label over seeds; deltas vs real-only with paired bootstrap CIs.

    Writes report.md, report.csv, report.json and a self-contained report.html (ROC curves,
    synthetic samples). Runs must share one label set and one test set.
    """
    from classifier.report_render import make_report, print_report

    sections = []
    if generator_eval is not None:
        from augmentor.evaluate import generator_section

        sections.append(generator_section(generator_eval))
    report, paths = make_report(
        runs,
        out,
        synthetic,
        baseline,
        n_boot,
        seed,
        sections=sections,
        overwrite=overwrite,
        allow_foreign_synthetic=allow_foreign_synthetic,
    )
    print_report(report, out=console)
    console.print(f"wrote {paths['report.html']} (and report.md, report.csv, report.json)")


@app.command("study")
def study_cmd(
    out: Annotated[Path, typer.Option("--out", "-o", help="Study folder.")],
    preset: Annotated[
        str | None,
        typer.Option(
            "--preset",
            help="demo (phantoms + tiny base; 10.5 min measured on 2 idle CPU cores), paper "
            "(RoentGen's arms and a real-size sweep; planned for about an hour, not yet timed) "
            "or smoke (<1 min).",
        ),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option("--config", help="TOML file overriding the preset (saved as OUT/study.toml)."),
    ] = None,
    resume: Resume = False,
    overwrite: RunOverwrite = False,
) -> None:
    """The augmentation study end to end: data, split, finetune, balanced synthesis,
    classifier arms x seeds, report. With --resume, finished stages are skipped.

    With --resume and no --preset or --config, the folder's saved study.toml is used; a new
    folder without either runs the demo preset.
    """
    from classifier.report_render import print_report
    from manifests.files import check_output_folder
    from study import study

    check_output_folder(out, "--out")
    result = study(out, preset, config, resume, overwrite, log=console.print)
    print_report(
        result.report,
        title=f"study {result.name!r}: AUROC per arm (real test split)",
        out=console,
    )
    console.print(f"report: {result.report_files['report.html']}")
