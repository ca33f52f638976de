"""`cxraug finetune` and `cxraug synthesize`: the generator."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from augmentor.config import FAST_SAMPLER, FinetuneConfig, OracleFilterConfig, SynthesisConfig
from classifier.tables import print_frame
from cli.app import (
    ReportTo,
    Resume,
    RunOverwrite,
    Seed,
    app,
    console,
)
from manifests.errors import UserError

# ---------------------------------------------------------------- generator (issue 3)


@app.command("finetune")
def finetune_cmd(
    manifest: Annotated[
        Path, typer.Option("--manifest", "-m", help="Split manifest; its real train rows train.")
    ],
    base: Annotated[
        str,
        typer.Option(
            "--base", help="'tiny', a local diffusers SD folder, or a hub id (--allow-download)."
        ),
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output generator folder.")],
    allow_download: Annotated[
        bool, typer.Option("--allow-download", help="Let --base be fetched from the hub.")
    ] = FinetuneConfig.allow_download,
    resolution: Annotated[
        int | None, typer.Option("--resolution", help="Image side (default: the base's).")
    ] = FinetuneConfig.resolution,
    train_text_encoder: Annotated[
        bool,
        typer.Option("--train-text-encoder", help="Train the text encoder too (RoentGen's best)."),
    ] = FinetuneConfig.train_text_encoder,
    lora_rank: Annotated[
        int | None, typer.Option("--lora-rank", help="Train LoRA adapters of this rank instead.")
    ] = FinetuneConfig.lora_rank,
    learning_rate: Annotated[
        float | None,
        typer.Option("--learning-rate", help="Default: 5e-5 (RoentGen), 1e-4 LoRA, 5e-4 tiny."),
    ] = FinetuneConfig.learning_rate,
    lr_scheduler: Annotated[
        str,
        typer.Option("--lr-scheduler", help="constant, constant_with_warmup, linear, cosine, ..."),
    ] = FinetuneConfig.lr_scheduler,
    lr_warmup_steps: Annotated[
        int, typer.Option("--lr-warmup-steps")
    ] = FinetuneConfig.lr_warmup_steps,
    batch_size: Annotated[
        int, typer.Option("--batch-size", help="Images per process per step.")
    ] = FinetuneConfig.batch_size,
    gradient_accumulation_steps: Annotated[
        int, typer.Option("--gradient-accumulation-steps")
    ] = FinetuneConfig.gradient_accumulation_steps,
    max_steps: Annotated[
        int, typer.Option("--max-steps", help="Optimizer steps in all.")
    ] = FinetuneConfig.max_steps,
    ema: Annotated[
        bool, typer.Option("--ema", help="Keep and save EMA weights.")
    ] = FinetuneConfig.ema,
    ema_decay: Annotated[float, typer.Option("--ema-decay")] = FinetuneConfig.ema_decay,
    gradient_checkpointing: Annotated[
        bool, typer.Option("--gradient-checkpointing")
    ] = FinetuneConfig.gradient_checkpointing,
    mixed_precision: Annotated[
        str | None,
        typer.Option(
            "--mixed-precision", help="no, fp16 or bf16 (default: accelerate's, else no)."
        ),
    ] = FinetuneConfig.mixed_precision,
    snr_gamma: Annotated[
        float | None, typer.Option("--snr-gamma", help="Min-SNR loss weighting (5 is usual).")
    ] = FinetuneConfig.snr_gamma,
    noise_offset: Annotated[float, typer.Option("--noise-offset")] = FinetuneConfig.noise_offset,
    caption_dropout: Annotated[
        float | None,
        typer.Option("--caption-dropout", help="Empty-prompt share (default 0.1 tiny, else 0)."),
    ] = FinetuneConfig.caption_dropout,
    film_grain: Annotated[
        bool | None,
        typer.Option(
            "--film-grain/--no-film-grain",
            help="Measure the grain the autoencoder drops, for synthesize to add back "
            "(default: on from tiny, else off).",
        ),
    ] = FinetuneConfig.film_grain,
    seed: Seed = FinetuneConfig.seed,
    checkpointing_steps: Annotated[
        int, typer.Option("--checkpointing-steps")
    ] = FinetuneConfig.checkpointing_steps,
    checkpoints_total_limit: Annotated[
        int | None, typer.Option("--checkpoints-total-limit", help="Keep the last K checkpoints.")
    ] = FinetuneConfig.checkpoints_total_limit,
    resume: Resume = FinetuneConfig.resume,
    validation_prompts: Annotated[
        list[str] | None,
        typer.Option("--validation-prompts", help="A fixed prompt (repeat the flag for more)."),
    ] = None,
    validation_steps: Annotated[
        int, typer.Option("--validation-steps")
    ] = FinetuneConfig.validation_steps,
    autoencoder_steps: Annotated[
        int, typer.Option("--autoencoder-steps", help="tiny only: autoencoder fitting steps.")
    ] = FinetuneConfig.autoencoder_steps,
    no_disk_cache: Annotated[
        bool, typer.Option("--no-disk-cache", help="Keep the latent cache in memory only.")
    ] = False,
    report_to: ReportTo = FinetuneConfig.report_to,
    overwrite: RunOverwrite = FinetuneConfig.overwrite,
) -> None:
    """Fine-tune a Stable Diffusion base on train CXRs and reports (the RoentGen recipe).

    Runs unchanged under `accelerate launch`.
    """
    from augmentor.finetune import finetune

    finetune(
        FinetuneConfig(
            manifest=str(manifest),
            base=base,
            out=str(out),
            allow_download=allow_download,
            resolution=resolution,
            train_text_encoder=train_text_encoder,
            lora_rank=lora_rank,
            learning_rate=learning_rate,
            lr_scheduler=lr_scheduler,
            lr_warmup_steps=lr_warmup_steps,
            batch_size=batch_size,
            gradient_accumulation_steps=gradient_accumulation_steps,
            max_steps=max_steps,
            ema=ema,
            ema_decay=ema_decay,
            gradient_checkpointing=gradient_checkpointing,
            mixed_precision=mixed_precision,
            snr_gamma=snr_gamma,
            noise_offset=noise_offset,
            caption_dropout=caption_dropout,
            film_grain=film_grain,
            seed=seed,
            checkpointing_steps=checkpointing_steps,
            checkpoints_total_limit=checkpoints_total_limit,
            resume=resume,
            overwrite=overwrite,
            validation_prompts=tuple(validation_prompts or ()),
            validation_steps=validation_steps,
            autoencoder_steps=autoencoder_steps,
            cache_latents_on_disk=not no_disk_cache,
            report_to=report_to,
        ),
        log=console.print,
    )


@app.command("synthesize")
def synthesize_cmd(
    ctx: typer.Context,
    model: Annotated[
        Path, typer.Option("--model", help="Generator directory (diffusers pipeline folder).")
    ],
    labels: Annotated[
        str,
        typer.Option(
            "--labels",
            help="LABEL:COUNT,... e.g. pneumothorax:5000,pleural_effusion:5000 "
            "(at most 10,000,000 images per run).",
        ),
    ],
    prompts_from: Annotated[
        Path,
        typer.Option("--prompts-from", help="Manifest whose train-split reports are the prompts."),
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder.")],
    negatives: Annotated[
        int, typer.Option("--negatives", help="Extra images from 'No Finding' reports.")
    ] = SynthesisConfig.negatives,
    images_per_prompt: Annotated[
        int,
        typer.Option(
            "--images-per-prompt",
            help="Images per drawn prompt, each with its own seed (RoentGen's MS-SSIM "
            "diversity: 4); label counts stay exact.",
        ),
    ] = SynthesisConfig.images_per_prompt,
    seed: Seed = SynthesisConfig.seed,
    scheduler: Annotated[
        str,
        typer.Option(
            "--scheduler", help="pndm, ddim, ddpm, dpm++, euler, euler-a, heun, lms, unipc."
        ),
    ] = SynthesisConfig.scheduler,
    num_inference_steps: Annotated[
        int, typer.Option("--num-inference-steps", help="Denoising steps (RoentGen: 75).")
    ] = SynthesisConfig.num_inference_steps,
    guidance_scale: Annotated[
        float,
        typer.Option(
            "--guidance-scale",
            help="Classifier-free guidance (4: RoentGen's fidelity/alignment trade-off).",
        ),
    ] = SynthesisConfig.guidance_scale,
    fast: Annotated[
        bool,
        typer.Option(
            "--fast",
            help="Sample with {} {} steps, guidance {:g} instead of RoentGen's defaults "
            "(augmentor.config.FAST_SAMPLER; how it is chosen: benchmarks/bench_samplers.py); "
            "excludes --scheduler, --num-inference-steps and --guidance-scale.".format(
                *FAST_SAMPLER
            ),
        ),
    ] = False,
    negative_prompt: Annotated[
        str | None, typer.Option("--negative-prompt", help="Optional negative prompt.")
    ] = SynthesisConfig.negative_prompt,
    batch_size: Annotated[
        int, typer.Option("--batch-size", help="Images per call.")
    ] = SynthesisConfig.batch_size,
    shard_every: Annotated[
        int, typer.Option("--shard-every", help="Batches per committed Parquet shard.")
    ] = SynthesisConfig.shard_every,
    precision: Annotated[
        str, typer.Option("--precision", help="fp32, fp16 or bf16.")
    ] = SynthesisConfig.precision,
    film_grain: Annotated[
        bool,
        typer.Option(
            "--film-grain/--no-film-grain",
            help="Add the film grain the generator measured at fine-tuning (if it has one).",
        ),
    ] = SynthesisConfig.film_grain,
    resume: Resume = SynthesisConfig.resume,
    overwrite: RunOverwrite = SynthesisConfig.overwrite,
    filter_with: Annotated[
        Path | None,
        typer.Option(
            "--filter-with",
            help="Quality filter: keep only images this classifier run (oracle) scores as "
            "showing their target label; its score is recorded per row (oracle_prob).",
        ),
    ] = None,
    min_prob: Annotated[
        float | None,
        typer.Option(
            "--min-prob",
            help=f"Oracle probability to keep an image (default {OracleFilterConfig.min_prob:g}).",
        ),
    ] = None,
) -> None:
    """Label-balanced synthetic CXRs prompted by real train reports (runs under accelerate launch)."""
    from augmentor.label_spec import split_label_counts

    split_label_counts(labels, negatives)  # a typo answers before torch loads
    if fast:  # the benchmarked sampler, unless a sampler flag was given too
        flags = {
            "--scheduler": "scheduler",
            "--num-inference-steps": "num_inference_steps",
            "--guidance-scale": "guidance_scale",
        }
        given = [f for f, p in flags.items() if ctx.get_parameter_source(p).name != "DEFAULT"]
        name, steps, guidance = FAST_SAMPLER
        if given:
            raise UserError(
                f"--fast and {', '.join(given)} exclude each other: --fast sets --scheduler "
                f"{name}, --num-inference-steps {steps} and --guidance-scale {guidance:g}; drop one"
            )
        scheduler, num_inference_steps, guidance_scale = name, steps, guidance
    from augmentor.oracle_filter import oracle_filter_config, synthesize_and_filter

    oracle_filter = oracle_filter_config(filter_with, min_prob)
    result, kept = synthesize_and_filter(
        SynthesisConfig(
            model=str(model),
            prompts_from=str(prompts_from),
            out=str(out),
            labels=labels,
            negatives=negatives,
            images_per_prompt=images_per_prompt,
            seed=seed,
            scheduler=scheduler,
            num_inference_steps=num_inference_steps,
            guidance_scale=guidance_scale,
            negative_prompt=negative_prompt,
            batch_size=batch_size,
            shard_every=shard_every,
            precision=precision,
            film_grain=film_grain,
            resume=resume,
            overwrite=overwrite,
        ),
        oracle_filter,
    )
    if result.is_main_process:
        for note in result.notes:
            console.print(f"note: {note}")
        counts = ", ".join(f"{label}: {n}" for label, n in result.counts.items())
        console.print(
            f"wrote {result.manifest} ({counts}; generated {result.generated}, "
            f"skipped {result.skipped} already done)"
        )
        if kept is not None:
            print_frame(
                kept.counts,
                f"oracle filter ({filter_with}, min prob {kept.min_prob})",
                out=console,
            )
            if len(kept.rejected):
                print_frame(
                    kept.rejected, "rejected by the oracle (images stay on disk)", out=console
                )
            console.print(f"kept rows in {kept.manifest}; every row's score in {kept.scores}")
