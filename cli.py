"""The `cxraug` command line: parse, validate, call the library, print. No logic of its own.

User errors (`manifests.UserError`) print as one line on stderr and exit with code 2.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import typing
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any

import click
import typer
from rich.console import Console
from typer.core import TyperGroup

from augmentor.config import (
    FAST_SAMPLER,
    DemographicFilterConfig,
    FinetuneConfig,
    OracleFilterConfig,
    SynthesisConfig,
)
from augmentor.eval_config import GeneratorEvalConfig, ProbeConfig
from classifier.config import ReportConfig, TrainConfig
from classifier.tables import print_frame
from manifests import runfolder
from manifests.config import DemoDataConfig, SplitConfig
from manifests.errors import UserError
from manifests.settings import (
    REPLACE_HELP,
    Option,
    build_config,
    check_finite,
    field_default,
    flag_names,
    options,
)
from study.presets import presets_help

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
Overwrite = Annotated[bool, typer.Option("--overwrite", help=REPLACE_HELP)]
# The run-folder commands (finetune, synthesize, train-classifier, study, evaluate-generator)
# share these two flags and their meaning (manifests.runfolder).
Resume = Annotated[bool, typer.Option("--resume", help=runfolder.RESUME_HELP)]
RunOverwrite = Annotated[bool, typer.Option("--overwrite", help=runfolder.OVERWRITE_HELP)]
FrontalOnly = Annotated[
    bool, typer.Option("--frontal-only", help="Keep PA/AP (frontal) views only.")
]


# ---------------------------------------------------------------- commands from config classes


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _parameter(option: Option) -> inspect.Parameter:
    """The Typer parameter of one config field (manifests.settings.Option)."""
    field, hint, meta = option.field, option.hint, option.field.metadata
    default = field_default(field)
    if default is dataclasses.MISSING:
        default = inspect.Parameter.empty  # a required option
    if meta.get("parse"):  # the flag takes text (`--labels A,B`); the field gets it parsed
        hint, default = str | None, None
    elif typing.get_origin(hint) is tuple and ... in typing.get_args(hint):
        hint = list[typing.get_args(hint)[0]]  # a repeatable flag
    help = meta.get("help", "")
    if meta.get("argument"):
        info = typer.Argument(help=help, show_default=default is not inspect.Parameter.empty)
    else:
        info = typer.Option(*flag_names(field), help=help)
    return inspect.Parameter(
        option.name,
        inspect.Parameter.KEYWORD_ONLY,
        default=default,
        annotation=Annotated[hint, info],
    )


def extra_option(name: str, hint: Any, default: Any, help: str) -> inspect.Parameter:
    """An option of a command that is not a field of its config (`--{name}`)."""
    info = typer.Option(_flag(name), help=help)
    return inspect.Parameter(
        name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=Annotated[hint, info]
    )


CONFIG_COMMANDS: dict[str, type] = {}  # command name -> its config class (config_command)


def config_command(parent: typer.Typer, name: str, cls: type, *extra: inspect.Parameter):
    """Register the decorated function as command `name`, whose options are the fields of
    the config class `cls` (their flags, defaults and help: manifests.settings), then
    `extra`. The function gets the config built from the options (and each extra by name);
    any number that is NaN or infinite is refused first, naming its flag."""
    fields = options(cls)
    flags = {o.name: o.flag for o in fields} | {p.name: _flag(p.name) for p in extra}
    extra_names = [p.name for p in extra]

    def register(run: Callable[..., None]) -> Callable[..., None]:
        def command(**values: Any) -> None:
            check_finite(values, flags)
            extras = {key: values.pop(key) for key in extra_names}
            run(build_config(cls, values), **extras)

        command.__signature__ = inspect.Signature([*map(_parameter, fields), *extra])
        command.__doc__ = run.__doc__
        parent.command(name)(command)
        CONFIG_COMMANDS[name] = cls
        return run

    return register


# ---------------------------------------------------------------- manifests


@config_command(app, "demo-data", DemoDataConfig)
def demo_data(cfg: DemoDataConfig) -> None:
    """Draw the embedded phantom CXR dataset (a demo and test fixture, not clinical data)."""
    from manifests.phantom import write_phantom_dataset

    path = write_phantom_dataset(**asdict(cfg))
    console.print(f"wrote {cfg.n} phantom images and {path}")


@manifest_app.command("summary")
def manifest_summary(
    manifest: ManifestArg,
    age_groups: Annotated[
        str | None,
        typer.Option(
            "--age-groups",
            help="Age-group edges in years for the subgroup tables (default 40,65: <40, "
            "40-64, 65+).",
        ),
    ] = None,
) -> None:
    """Rows per split and source, label prevalence, and positive images (patients) per
    label x subgroup (sex, age group; 'unknown' where the manifest has no value)."""
    from manifests.demographics import parse_age_edges
    from manifests.io import read_manifest
    from manifests.summary import summarize

    edges = parse_age_edges(age_groups)
    summary = summarize(read_manifest(manifest), where=str(manifest), age_edges=edges)
    print_frame(summary.counts, f"{manifest}: images and patients", out=console)
    print_frame(summary.prevalence, "label prevalence (positive / uncertain share)", out=console)
    for group, table in summary.subgroup_tables.items():
        print_frame(table, f"{group}: positive images (patients) per subgroup", out=console)
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


@config_command(manifest_app, "split", SplitConfig)
def manifest_split(cfg: SplitConfig) -> None:
    """Patient-disjoint, label-stratified train/val/test split (keeps official splits)."""
    from manifests.io import read_manifest, write_manifest
    from manifests.splits import parse_fractions, split_by_patient, split_counts

    shares = parse_fractions(cfg.fractions)
    result = split_by_patient(
        read_manifest(cfg.manifest), shares, seed=cfg.seed, keep_official=not cfg.no_official
    )
    target = cfg.out or cfg.manifest
    write_manifest(result, target, overwrite=cfg.overwrite or cfg.out is None)
    print_frame(split_counts(result), f"{target}: split (seed {cfg.seed})", out=console)


# ---------------------------------------------------------------- importers

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
    patients: Annotated[
        Path | None,
        typer.Option(
            "--patients",
            help="MIMIC-IV hosp/patients.csv(.gz): sex (gender) and age at each study "
            "(anchor_age + StudyDate year - anchor_year). Without it sex and age are null.",
        ),
    ] = None,
    admissions: Annotated[
        Path | None,
        typer.Option(
            "--admissions",
            help="MIMIC-IV hosp/admissions.csv(.gz): a `race` column, each patient's most "
            "frequent stated race (ties: the latest admission).",
        ),
    ] = None,
    overwrite: Overwrite = False,
) -> None:
    """MIMIC-CXR-JPG: files/, mimic-cxr-2.0.0-{metadata,chexpert|negbio,split}.csv(.gz);
    demographics from MIMIC-IV (joined on subject_id)."""
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
        patients=patients,
        admissions=admissions,
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


# ---------------------------------------------------------------- generator


@config_command(app, "finetune", FinetuneConfig)
def finetune_cmd(cfg: FinetuneConfig) -> None:
    """Fine-tune a Stable Diffusion base on train CXRs and reports (the RoentGen recipe).

    Runs unchanged under `accelerate launch`.
    """
    from augmentor.finetune import finetune

    finetune(cfg, log=console.print)


FAST_HELP = (
    "Sample with {} {} steps, guidance {:g} instead of RoentGen's defaults "
    "(augmentor.config.FAST_SAMPLER; how it is chosen: benchmarks/bench_samplers.py); "
    "excludes --scheduler, --num-inference-steps and --guidance-scale."
).format(*FAST_SAMPLER)


@config_command(
    app,
    "synthesize",
    SynthesisConfig,
    inspect.Parameter("ctx", inspect.Parameter.KEYWORD_ONLY, annotation=typer.Context),
    extra_option("fast", bool, False, FAST_HELP),
    extra_option(
        "filter_with",
        Path | None,
        None,
        "Quality filter: keep only images this classifier run (oracle) scores as showing "
        "their target label; its score is recorded per row (oracle_prob).",
    ),
    extra_option(
        "min_prob",
        float | None,
        None,
        f"Oracle probability to keep an image (default {OracleFilterConfig.min_prob:g}).",
    ),
    extra_option(
        "filter_demographics",
        Path | None,
        None,
        "Demographic filter: keep only images these sex and age oracles (an "
        "evaluate-generator OUT/demographic_oracle folder) see as the prompt's sex and age.",
    ),
    extra_option(
        "age_tolerance",
        float | None,
        None,
        "Years a predicted age may differ from the prompt's "
        f"(default {DemographicFilterConfig.age_tolerance:g}, RoentGen-v2).",
    ),
)
def synthesize_cmd(
    cfg: SynthesisConfig,
    ctx: typer.Context,
    fast: bool,
    filter_with: Path | None,
    min_prob: float | None,
    filter_demographics: Path | None,
    age_tolerance: float | None,
) -> None:
    """Label-balanced synthetic CXRs prompted by real train reports (runs under accelerate launch)."""
    from augmentor.config import check_synthesis_config

    if fast:  # the benchmarked sampler, unless a sampler flag was given too
        given = [
            o.flag
            for o in options(SynthesisConfig)
            if o.name in ("scheduler", "num_inference_steps", "guidance_scale")
            and ctx.get_parameter_source(o.name).name != "DEFAULT"
        ]
        name, steps, guidance = FAST_SAMPLER
        if given:
            raise UserError(
                f"--fast and {', '.join(given)} exclude each other: --fast sets --scheduler "
                f"{name}, --num-inference-steps {steps} and --guidance-scale {guidance:g}; drop one"
            )
        cfg.scheduler, cfg.num_inference_steps, cfg.guidance_scale = name, steps, guidance
    check_synthesis_config(cfg)  # a typo answers before torch loads
    from augmentor.demographic_filter import demographic_filter_config, synthesize_with_filters
    from augmentor.oracle_filter import oracle_filter_config

    oracle_filter = oracle_filter_config(filter_with, min_prob)
    demographic = demographic_filter_config(filter_demographics, age_tolerance)
    result, kept, judged = synthesize_with_filters(cfg, oracle_filter, demographic)
    if result.is_main_process:
        for note in result.notes:
            console.print(f"note: {note}")
        counts = ", ".join(f"{label}: {n}" for label, n in result.counts.items())
        console.print(
            f"wrote {result.manifest} ({counts}; generated {result.generated}, "
            f"skipped {result.skipped} already done)"
        )
        if len(result.cells):
            print_frame(
                result.cells,
                "images per label x subgroup cell (stated: prompts stating the cell's "
                "demographics, from other patients' reports)",
                out=console,
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
        if judged is not None:
            print_frame(
                judged.counts,
                f"demographic filter ({filter_demographics}, age tolerance "
                f"{judged.age_tolerance:g} y): {judged.n_rejected} rejected, "
                f"{judged.n_unchecked} unchecked",
                out=console,
            )
            console.print(f"kept rows in {judged.manifest}; every row's verdict in {judged.scores}")


# ---------------------------------------------------------------- classifier, report, study


@config_command(app, "train-classifier", TrainConfig)
def train_classifier_cmd(cfg: TrainConfig) -> None:
    """Train a timm classifier on real, synthetic or mixed CXRs; evaluate on real test.

    No horizontal flip by default: laterality matters (heart side, left vs right findings).
    """
    from classifier.train import train_classifier

    train_classifier(cfg, log=console.print)


@config_command(
    app,
    "report",
    ReportConfig,
    extra_option(
        "age_groups",
        str | None,
        None,
        "Age-group edges of the Subgroups section, in years (default 40,65: <40, 40-64, 65+).",
    ),
)
def report_cmd(cfg: ReportConfig, age_groups: str | None = None) -> None:
    """AUROC per arm and label over seeds; deltas vs real-only with paired bootstrap CIs.

    Writes report.md, report.csv, report.json and a self-contained report.html (ROC curves,
    synthetic samples, subgroups: AUROC per sex and age group, underdiagnosis gaps), and
    fairness.csv / fairness_gaps.csv. Runs must share one label set and one test set.
    """
    from classifier.report_render import make_report, print_fairness, print_report
    from manifests.demographics import parse_age_edges

    edges = parse_age_edges(age_groups)
    sections = []
    if cfg.generator_eval is not None:
        from augmentor.eval_folder import generator_section

        sections.append(generator_section(cfg.generator_eval))
    report, paths = make_report(cfg, sections, edges)
    print_report(report, out=console)
    print_fairness(report, out=console)
    console.print(
        f"wrote {paths['report.html']} (and report.md, report.csv, report.json, fairness.csv)"
    )


@app.command("study")
def study_cmd(
    out: Annotated[Path, typer.Option("--out", "-o", help="Study folder.")],
    preset: Annotated[
        str | None,
        typer.Option("--preset", help=f"A ready-made study: {presets_help()}"),
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
    from classifier.report_render import print_fairness, print_report
    from manifests.files import check_output_folder
    from study import study

    check_output_folder(out, "--out")
    result = study(out, preset, config, resume, overwrite, log=console.print)
    print_report(
        result.report,
        title=f"study {result.name!r}: AUROC per arm (real test split)",
        out=console,
    )
    print_fairness(result.report, out=console)
    console.print(f"report: {result.report_files['report.html']}")


# ---------------------------------------------------------------- generator evaluation


@config_command(app, "evaluate-generator", GeneratorEvalConfig)
def evaluate_generator_cmd(cfg: GeneratorEvalConfig) -> None:
    """FID/KID, diversity (MS-SSIM), prompt alignment and fidelity, laterality, memorization."""
    from augmentor.eval_folder import summary_lines
    from augmentor.evaluate import evaluate_generator
    from augmentor.generator_report import display_tables

    result = evaluate_generator(cfg, progress=lambda msg: err_console.print(f"[dim]{msg}[/dim]"))
    for title, table in display_tables(result.tables):
        print_frame(table, title, out=console)
    for line in summary_lines(result.summary, Path(cfg.out)):
        console.print(line)


@config_command(app, "probe-text-encoder", ProbeConfig)
def probe_text_encoder_cmd(cfg: ProbeConfig) -> None:
    """Linear probe per label on held-out reports: base vs fine-tuned text encoder AUROC."""
    from augmentor.eval_folder import probe_path
    from augmentor.probe import display_table, probe_text_encoder

    result = probe_text_encoder(cfg)
    print_frame(
        display_table(result.table),
        "text encoder probe: held-out report AUROC of a linear probe (base vs fine-tuned)",
        out=console,
    )
    for note in result.notes:
        console.print(f"note: {note}")
    if cfg.out is not None:
        console.print(f"wrote {probe_path(Path(cfg.out))}")
