"""The `cxraug` command line: parse, validate, call the library, print. No logic of its own.

User errors (`manifests.UserError`) print as one line on stderr and exit with code 2.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Annotated

import click
import typer
from rich.console import Console
from typer.core import TyperGroup

from augmentor.config import FAST_SAMPLER, FinetuneConfig, OracleFilterConfig, SynthesisConfig
from classifier.config import TrainConfig
from classifier.tables import print_frame
from manifests import runfolder
from manifests.errors import UserError

console = Console(soft_wrap=True)  # never break paths or messages mid-word
err_console = Console(stderr=True, soft_wrap=True)


class _Group(TyperGroup):
    """A click group that turns a UserError anywhere below it into one line and exit 2."""

    def make_context(self, info_name, args, parent=None, **extra):  # noqa: D102
        with _one_line_usage_errors():
            return super().make_context(info_name, args, parent=parent, **extra)

    def invoke(self, ctx: click.Context):  # noqa: D102
        with _one_line_usage_errors():
            try:
                return super().invoke(ctx)
            except UserError as exc:
                click.echo(f"error: {exc}", err=True)
                raise typer.Exit(code=2) from None


try:  # typer >= 0.20 vendors click: its usage errors are its own classes
    from typer._click.exceptions import NoArgsIsHelpError as _TyperNoArgs
    from typer._click.exceptions import UsageError as _TyperUsageError
except ImportError:  # pragma: no cover - typer on plain click
    _TyperNoArgs, _TyperUsageError = click.exceptions.NoArgsIsHelpError, click.UsageError
_NO_ARGS_IS_HELP = (click.exceptions.NoArgsIsHelpError, _TyperNoArgs)
_USAGE_ERRORS = (click.UsageError, _TyperUsageError)


@contextlib.contextmanager
def _one_line_usage_errors():
    """Click's usage errors (a bad flag value, an unknown option) as one line and exit 2,
    like a UserError; a bare command still prints its help."""
    try:
        yield
    except _NO_ARGS_IS_HELP:
        raise
    except _USAGE_ERRORS as exc:
        message = " ".join(exc.format_message().split())
        where = f"{exc.ctx.command_path}: " if exc.ctx is not None else ""
        click.echo(f"error: {where}{message}", err=True)
        raise typer.Exit(code=2) from None


_CONTEXT = {"help_option_names": ["-h", "--help"]}


def _typer(help: str) -> typer.Typer:
    return typer.Typer(
        cls=_Group,
        help=help,
        context_settings=_CONTEXT,
        no_args_is_help=True,
        pretty_exceptions_enable=False,
        rich_markup_mode="rich",
    )


app = _typer("cxraug: synthetic chest X-ray data augmentation (the RoentGen study as a tool).")
manifest_app = _typer("Make, split and inspect Parquet manifests.")
import_app = _typer("Import a dataset on disk into a manifest.")
manifest_app.add_typer(import_app, name="import")
app.add_typer(manifest_app, name="manifest")

# Shared argument aliases.
ManifestArg = Annotated[Path, typer.Argument(help="A manifest (.parquet).", show_default=False)]
OutManifest = Annotated[Path, typer.Option("--out", "-o", help="Output manifest (.parquet).")]
Overwrite = Annotated[bool, typer.Option("--overwrite", help="Replace an existing output.")]
# The run-folder commands (finetune, synthesize, train-classifier, study, evaluate-generator)
# share these two flags and their meaning (manifests.runfolder).
Resume = Annotated[bool, typer.Option("--resume", help=runfolder.RESUME_HELP)]
RunOverwrite = Annotated[bool, typer.Option("--overwrite", help=runfolder.OVERWRITE_HELP)]
Seed = Annotated[int, typer.Option("--seed", help="Random seed (recorded in outputs).")]
LabelSetOpt = Annotated[
    str, typer.Option("--label-set", help="Label columns: chexpert (14, default) or nih (14).")
]
ReportTo = Annotated[
    str,
    typer.Option(
        "--report-to",
        help="Log to tensorboard or wandb (offline) under OUT/logs/, or none.",
    ),
]
FrontalOnly = Annotated[
    bool, typer.Option("--frontal-only", help="Keep PA/AP (frontal) views only.")
]


# ---------------------------------------------------------------- manifests (issue 2)


@app.command("demo-data")
def demo_data(
    out: Annotated[Path, typer.Argument(help="Output folder for PNGs and manifest.parquet.")],
    n: Annotated[int, typer.Option("--n", help="Number of images.")] = 2000,
    size: Annotated[int, typer.Option("--size", help="Image side in pixels.")] = 128,
    patients: Annotated[
        int | None,
        typer.Option("--patients", help="Patients (default: n/3, several studies each)."),
    ] = None,
    seed: Seed = 0,
    overwrite: Overwrite = False,
) -> None:
    """Draw the embedded phantom CXR dataset (a demo and test fixture, not clinical data)."""
    from manifests.phantom import write_phantom_dataset

    path = write_phantom_dataset(
        out, n=n, size=size, seed=seed, patients=patients, overwrite=overwrite
    )
    console.print(f"wrote {n} phantom images and {path}")


@manifest_app.command("summary")
def manifest_summary(manifest: ManifestArg) -> None:
    """Rows per split and source, and label prevalence."""
    from manifests.io import read_manifest
    from manifests.summary import summarize

    summary = summarize(read_manifest(manifest), where=str(manifest))
    print_frame(summary.counts, f"{manifest}: images and patients", out=console)
    print_frame(summary.prevalence, "label prevalence (positive / uncertain share)", out=console)
    if summary.not_labelled:
        console.print(
            f"not labelled by the source ({len(summary.not_labelled)}, all NaN; not counted "
            f"as negative): {', '.join(summary.not_labelled)}"
        )
    for note in summary.notes:
        console.print(f"note: {note}")


@manifest_app.command("export")
def manifest_export(
    manifest: ManifestArg,
    to: Annotated[Path, typer.Option("--to", help="Output folder (must not exist).")],
    format: Annotated[
        str, typer.Option("--format", help="imagefolder: Hugging Face datasets' image folder.")
    ] = "imagefolder",
    generator_eval: Annotated[
        Path | None,
        typer.Option(
            "--generator-eval",
            help="evaluate-generator folder whose memorization audit goes in the card "
            "(default: one found beside the manifest).",
        ),
    ] = None,
    copy: Annotated[
        bool, typer.Option("--copy", help="Copy images (default: hard-link where possible).")
    ] = False,
    overwrite: Overwrite = False,
) -> None:
    """Export as a dataset folder with a dataset card (provenance, counts, licence)."""
    from augmentor.card import synthesis_provenance
    from manifests.export import export_manifest
    from study.folder import generator_eval_for

    provenance = synthesis_provenance(manifest, generator_eval or generator_eval_for(manifest))
    result = export_manifest(manifest, to, format, overwrite, provenance, link=not copy)
    splits = ", ".join(f"{name} {n}" for name, n in result.counts.items())
    console.print(
        f"wrote {result.folder} ({splits}; {result.linked} linked, {result.copied} copied, "
        f"{result.converted} converted to PNG) and its README.md dataset card"
    )
    console.print(f'load: datasets.load_dataset("imagefolder", data_dir="{result.folder}")')


@manifest_app.command("split")
def manifest_split(
    manifest: ManifestArg,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Output manifest (default: update in place).")
    ] = None,
    fractions: Annotated[
        str, typer.Option("--fractions", help="train,val,test shares of patients.")
    ] = "0.8,0.1,0.1",
    seed: Seed = 0,
    no_official: Annotated[
        bool, typer.Option("--no-official", help="Ignore the dataset's official split.")
    ] = False,
    overwrite: Overwrite = False,
) -> None:
    """Patient-disjoint, label-stratified train/val/test split (keeps official splits)."""
    from manifests.io import read_manifest, write_manifest
    from manifests.splits import parse_fractions, split_by_patient, split_counts

    shares = parse_fractions(fractions)
    result = split_by_patient(
        read_manifest(manifest), shares, seed=seed, keep_official=not no_official
    )
    target = out or manifest
    write_manifest(result, target, overwrite=overwrite or out is None)
    print_frame(split_counts(result), f"{target}: split (seed {seed})", out=console)


# ---------------------------------------------------------------- importers (issue 2)

ImportRoot = Annotated[Path, typer.Option("--root", help="The dataset's folder.")]
ImportLabelSet = Annotated[
    str | None,
    typer.Option(
        "--label-set",
        help="chexpert or nih (default: the dataset's own). Labels of the other set map where "
        "names correspond (Effusion = Pleural Effusion); the rest are NaN.",
    ),
]
CheckImages = Annotated[
    bool,
    typer.Option("--check-images", help="Decode every image (slow); default: check they exist."),
]


def _import(kind: str, out: Path, overwrite: bool, **options) -> None:
    """Run one importer, write its manifest, print one summary line and its notes."""
    from manifests.importers import import_dataset, import_summary, manifest_notes

    manifest = import_dataset(kind, out, overwrite=overwrite, **options)
    console.print(f"wrote {out}: {import_summary(manifest)}")
    for note in manifest_notes(manifest):
        console.print(f"note: {note}")


@import_app.command("mimic-cxr")
def import_mimic_cmd(
    root: ImportRoot,
    out: OutManifest,
    reports: Annotated[
        Path | None,
        typer.Option("--reports", help="MIMIC-CXR reports folder (files/pXX/pSUBJECT/sSTUDY.txt)."),
    ] = None,
    labeler: Annotated[
        str, typer.Option("--labeler", help="Label file: chexpert or negbio.")
    ] = "chexpert",
    label_set: ImportLabelSet = None,
    frontal_only: FrontalOnly = False,
    check_images: CheckImages = False,
    overwrite: Overwrite = False,
) -> None:
    """MIMIC-CXR-JPG: files/, mimic-cxr-2.0.0-{metadata,chexpert|negbio,split}.csv(.gz)."""
    _import(
        "mimic-cxr",
        out,
        overwrite,
        root=root,
        reports=reports,
        labeler=labeler,
        label_set=label_set,
        frontal_only=frontal_only,
        check_images=check_images,
    )


@import_app.command("chexpert")
def import_chexpert_cmd(
    root: Annotated[
        Path, typer.Option("--root", help="Folder holding CheXpert-v1.0-small/ (or that folder).")
    ],
    out: OutManifest,
    label_set: ImportLabelSet = None,
    frontal_only: FrontalOnly = False,
    check_images: CheckImages = False,
    overwrite: Overwrite = False,
) -> None:
    """CheXpert: train.csv (no official split) and valid.csv (official test set)."""
    _import(
        "chexpert",
        out,
        overwrite,
        root=root,
        label_set=label_set,
        frontal_only=frontal_only,
        check_images=check_images,
    )


@import_app.command("nih")
def import_nih_cmd(
    root: ImportRoot,
    out: OutManifest,
    csv: Annotated[
        Path | None,
        typer.Option(
            "--csv", help="Data_Entry CSV (default: newest Data_Entry_2017*.csv in root)."
        ),
    ] = None,
    label_set: ImportLabelSet = None,
    frontal_only: FrontalOnly = False,
    check_images: CheckImages = False,
    overwrite: Overwrite = False,
) -> None:
    """NIH ChestX-ray14: Data_Entry_2017*.csv, test_list.txt, images/ or images_0XX/images/."""
    _import(
        "nih",
        out,
        overwrite,
        root=root,
        csv=csv,
        label_set=label_set,
        frontal_only=frontal_only,
        check_images=check_images,
    )


@import_app.command("folder")
def import_folder_cmd(
    root: Annotated[Path, typer.Option("--root", help="Folder the CSV's paths are relative to.")],
    out: OutManifest,
    labels_csv: Annotated[
        Path | None,
        typer.Option(
            "--labels-csv",
            help="CSV: path, optional patient_id, study_id, view, sex, age, report, split, and "
            "one column per label (default: every image under --root, unlabelled).",
        ),
    ] = None,
    label_set: ImportLabelSet = None,
    frontal_only: FrontalOnly = False,
    check_images: CheckImages = False,
    overwrite: Overwrite = False,
) -> None:
    """Any folder of PNG/JPEG/DICOM images with a labels CSV."""
    _import(
        "folder",
        out,
        overwrite,
        root=root,
        labels_csv=labels_csv,
        label_set=label_set,
        frontal_only=frontal_only,
        check_images=check_images,
    )


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
    balance_labels: Annotated[
        list[str] | None,
        typer.Option(
            "--balance-labels",
            help="A label to balance (repeat the flag for more): each epoch draws images "
            "weighted toward rare findings, their sides and lobes (augmentor.balance).",
        ),
    ] = None,
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
        int,
        typer.Option(
            "--autoencoder-steps",
            help="tiny only: autoencoder fitting steps (fewer blur the lung markings).",
        ),
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
            balance_labels=tuple(balance_labels or ()),
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
        from augmentor.eval_folder import generator_section

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
    from augmentor.eval_folder import summary_lines
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
    for line in summary_lines(result.summary, out):
        console.print(line)


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
    from augmentor.eval_folder import probe_path
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
        console.print(f"wrote {probe_path(out)}")
