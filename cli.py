"""The `cxraug` command line: parse, validate, call the library, print. No logic of its own.

User errors (`manifests.UserError`) print as one line on stderr and exit with code 2.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import click
import typer
from rich.console import Console
from rich.table import Table
from typer.core import TyperGroup

from manifests.errors import UserError

console = Console()
err_console = Console(stderr=True)


class _Group(TyperGroup):
    """A click group that turns a UserError anywhere below it into one line and exit 2."""

    def invoke(self, ctx: click.Context):  # noqa: D102
        try:
            return super().invoke(ctx)
        except UserError as exc:
            click.echo(f"error: {exc}", err=True)
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
Seed = Annotated[int, typer.Option("--seed", help="Random seed (recorded in outputs).")]
LabelSetOpt = Annotated[
    str, typer.Option("--label-set", help="Label columns: chexpert (14, default) or nih (14).")
]
FrontalOnly = Annotated[
    bool, typer.Option("--frontal-only", help="Keep PA/AP (frontal) views only.")
]


def _print_frame(frame, title: str) -> None:
    table = Table(title=title)
    for column in frame.columns:
        table.add_column(
            str(column), justify="right" if frame[column].dtype.kind in "fiu" else "left"
        )
    for _, row in frame.iterrows():
        table.add_row(*[f"{v:.3f}" if isinstance(v, float) else str(v) for v in row])
    console.print(table)


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

    summary = summarize(read_manifest(manifest))
    _print_frame(summary.counts, f"{manifest}: images and patients")
    _print_frame(summary.prevalence, "label prevalence (positive / uncertain share)")
    for note in summary.notes:
        console.print(f"note: {note}")


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
    _print_frame(split_counts(result), f"{target}: split (seed {seed})")


# ---------------------------------------------------------------- importers (issue 2)


# ---------------------------------------------------------------- generator (issue 3)


# ---------------------------------------------------------------- classifier, report, study (issue 4)


# ---------------------------------------------------------------- generator evaluation (issue 5)
