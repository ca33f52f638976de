"""`cxraug evaluate-generator` and `cxraug probe-text-encoder`: the generator evaluation."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from classifier.tables import print_frame
from cli.app import (
    Overwrite,
    Resume,
    RunOverwrite,
    Seed,
    app,
    console,
    err_console,
)

# ---------------------------------------------------------------- generator evaluation (issue 5)


@app.command("evaluate-generator")
def evaluate_generator_cmd(
    synthetic: Annotated[
        Path, typer.Option("--synthetic", help="Synthetic manifest (from cxraug synthesize).")
    ],
    real: Annotated[
        Path, typer.Option("--real", help="Real manifest the generator was trained on (split).")
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder (generator_eval.json).")],
    features: Annotated[
        Path | None,
        typer.Option("--features", help="Classifier run (trained on real data) giving features."),
    ] = None,
    features_timm: Annotated[
        str | None, typer.Option("--features-timm", help="Or a timm model name (with --weights).")
    ] = None,
    weights: Annotated[
        Path | None, typer.Option("--weights", help="Local weights for --features-timm.")
    ] = None,
    features_xrv: Annotated[
        Path | None,
        typer.Option(
            "--features-xrv",
            help="Or torchxrayvision DenseNet-121 weights: a local .safetensors file or state "
            "dict (RoentGen's FID features; needs the xrv extra).",
        ),
    ] = None,
    oracle: Annotated[
        Path | None,
        typer.Option("--oracle", help="Classifier run for prompt alignment (default: --features)."),
    ] = None,
    memorization_threshold: Annotated[
        float,
        typer.Option(
            "--memorization-threshold",
            help="Flag a synthetic image whose 32x32 pixel correlation with a train image "
            "(centred on the mean train image) is at least this.",
        ),
    ] = 0.97,
    feature_threshold: Annotated[
        float,
        typer.Option(
            "--feature-threshold",
            help="Flag it too when the centred feature cosine is at least this.",
        ),
    ] = 0.98,
    drop_memorized: Annotated[
        bool,
        typer.Option("--drop-memorized", help="Write the synthetic manifest without flagged rows."),
    ] = False,
    filtered_out: Annotated[
        Path | None,
        typer.Option(
            "--filtered-out",
            help="Where --drop-memorized writes (default: <synthetic>.unmemorized.parquet beside it).",
        ),
    ] = None,
    cache_dir: Annotated[
        Path | None,
        typer.Option(
            "--cache-dir", help="Feature cache by image hash (default: OUT/feature_cache)."
        ),
    ] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Images per forward pass.")] = 64,
    max_real: Annotated[
        int | None, typer.Option("--max-real", help="At most N real images per split (random).")
    ] = None,
    max_pairs: Annotated[int, typer.Option("--max-pairs", help="MS-SSIM pairs per group.")] = 20,
    seed: Seed = 0,
    resume: Resume = False,
    overwrite: RunOverwrite = False,
) -> None:
    """FID/KID, diversity (MS-SSIM), prompt alignment and fidelity, laterality, memorization."""
    from augmentor.evaluate import GeneratorEvalConfig, evaluate_generator
    from augmentor.generator_report import display_tables

    result = evaluate_generator(
        GeneratorEvalConfig(
            synthetic=synthetic,
            real=real,
            out=out,
            features=features,
            features_timm=features_timm,
            weights=weights,
            features_xrv=features_xrv,
            oracle=oracle,
            cache_dir=cache_dir,
            batch_size=batch_size,
            memorization_threshold=memorization_threshold,
            feature_threshold=feature_threshold,
            drop_memorized=drop_memorized,
            filtered_manifest=filtered_out,
            max_pairs=max_pairs,
            max_real=max_real,
            seed=seed,
            resume=resume,
            overwrite=overwrite,
        ),
        progress=lambda msg: err_console.print(f"[dim]{msg}[/dim]"),
    )
    for title, table in display_tables(result.tables):
        print_frame(table, title, out=console)
    memo = result.summary["memorization"]
    console.print(
        f"memorization: {memo['n_flagged']} of {memo['n_synthetic']} synthetic images flagged "
        f"(max pixel r {memo['pixel_correlation_max']:.3f}, max feature cos "
        f"{memo['feature_cosine_max']:.3f})"
    )
    if memo["dropped_manifest"]:
        console.print(f"wrote {memo['dropped_manifest']} without the flagged images")
    for note in result.summary["notes"]:
        console.print(f"note: {note}")
    console.print(f"wrote {out / 'generator_eval.json'}, generator_eval.md, memorization.png")


@app.command("probe-text-encoder")
def probe_text_encoder_cmd(
    base: Annotated[str, typer.Option("--base", help="'tiny' or the base diffusers folder.")],
    finetuned: Annotated[Path, typer.Option("--finetuned", help="Fine-tuned generator directory.")],
    manifest: Annotated[
        Path, typer.Option("--manifest", help="Real manifest with reports, split by patient.")
    ],
    labels: Annotated[
        str | None, typer.Option("--labels", help="Comma list (default: probe-able labels).")
    ] = None,
    pooling: Annotated[
        str, typer.Option("--pooling", help="mean (over tokens) or eos (end-of-text token).")
    ] = "mean",
    out: Annotated[
        Path | None,
        typer.Option(
            "--out", "-o", help="Folder for text_encoder_probe.json (e.g. the eval folder)."
        ),
    ] = None,
    seed: Seed = 0,
    n_boot: Annotated[
        int, typer.Option("--n-boot", help="Bootstrap resamples of held-out patients (CI).")
    ] = 1000,
    overwrite: Overwrite = False,
) -> None:
    """Linear probe per label on held-out reports: base vs fine-tuned text encoder AUROC."""
    from augmentor.probe import ProbeConfig, display_table, probe_text_encoder

    result = probe_text_encoder(
        ProbeConfig(
            base=base,
            finetuned=finetuned,
            manifest=manifest,
            labels=tuple(x.strip() for x in labels.split(",")) if labels else None,
            pooling=pooling,
            out=out,
            seed=seed,
            n_boot=n_boot,
            overwrite=overwrite,
        )
    )
    print_frame(
        display_table(result.table),
        "text encoder probe: held-out report AUROC of a linear probe (base vs fine-tuned)",
        out=console,
    )
    for note in result.notes:
        console.print(f"note: {note}")
    if out is not None:
        console.print(f"wrote {out / 'text_encoder_probe.json'}")
