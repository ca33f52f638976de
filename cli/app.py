"""The shared machinery of the `cxraug` command line: consoles, the click group that prints
user errors as one line, the Typer apps and the argument aliases the commands share.

The commands live in cli.data_cmds, cli.generator_cmds, cli.classifier_cmds and
cli.generator_eval_cmds; importing the `cli` package registers them on `app`.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Annotated

import click
import typer
from rich.console import Console
from typer.core import TyperGroup

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
