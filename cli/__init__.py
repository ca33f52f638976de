"""The `cxraug` command line: parse, validate, call the library, print. No logic of its own.

User errors (`manifests.UserError`) print as one line on stderr and exit with code 2.
"""

from cli.app import app

# The command modules register their commands on `app` as they are imported, and
# `cxraug --help` lists commands in that order: keep it. (They are imported here, not at the
# bottom of cli.app, so that no import cycle arises.)
# isort: off
from cli import data_cmds, generator_cmds, classifier_cmds, generator_eval_cmds  # noqa: F401
# isort: on

__all__ = ["app"]
