"""The README and docs/ hold only commands the CLI accepts, and the README stays short.

Every `cxraug ...` command line in README.md and docs/*.md (in a code block, joined across
backslash continuations; after `$(which cxraug)` under `accelerate launch`; or in inline code)
is parsed by the CLI's own parser without running it: flags must exist and values must parse.
Placeholders (M, DIR, RUN) are fine as values: no option checks that a path exists at parse
time.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import typer

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
README_MAX_LINES = 300
SHELL_OPERATORS = {">", ">>", "2>&1", "|", "&&", ";", "&"}


def _fenced_lines(text: str) -> list[str]:
    """Lines inside ``` blocks, backslash continuations joined into one line."""
    lines, inside, pending = [], False, ""
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            inside, pending = not inside, ""
            continue
        if not inside:
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        lines.append(pending + line)
        pending = ""
    return lines


def _inline_spans(text: str) -> list[str]:
    """Inline code spans outside ``` blocks."""
    prose = re.sub(r"```.*?```", "", text, flags=re.S)
    return re.findall(r"`([^`\n]+)`", prose)


def _first_alternatives(line: str) -> str:
    """A table cell's `[A\\|B]` and `A\\|B` as their first alternative, brackets dropped."""
    line = re.sub(r"\[([^\[\]]*)\]", lambda m: m.group(1).split("\\|")[0], line)
    return re.sub(r"(\S+?)(?:\\\|\S+)+", r"\1", line)


def command_args(line: str) -> list[str] | None:
    """The arguments after `cxraug` in a command line, or None if the line runs no cxraug."""
    line = line.strip().removeprefix("$ ").removeprefix("/usr/bin/time -v ")
    if "$(which cxraug)" in line:
        line = "cxraug " + line.split("$(which cxraug)", 1)[1]
    if not line.startswith("cxraug "):
        return None
    tokens = shlex.split(_first_alternatives(line), comments=True)[1:]
    for i, token in enumerate(tokens):
        if token in SHELL_OPERATORS:
            return tokens[:i]
    return tokens


def doc_commands() -> list[tuple[str, list[str]]]:
    """(where, args) for every cxraug command line in the README and docs/."""
    found = []
    for page in PAGES:
        text = page.read_text()
        for kind, lines in (("code", _fenced_lines(text)), ("inline", _inline_spans(text))):
            for line in lines:
                args = command_args(line)
                if args:
                    found.append((f"{page.relative_to(ROOT)} ({kind}): {line.strip()}", args))
    return found


def _unparsed(ctx) -> list[str]:
    """What a context left for its subcommand: the command name, then its arguments."""
    protected = getattr(ctx, "_protected_args", None)
    if protected is None:
        protected = getattr(ctx, "protected_args", [])
    return [*protected, *ctx.args]


def parse(args: list[str]) -> bool:
    """Parse `cxraug ARGS` down to its command without running it.

    True when a command was given arguments, False for a bare mention of a command in prose
    (`cxraug train-classifier`), which names it rather than running it. A bad flag or value
    raises (click's usage error, or the CLI's own one-line exit)."""
    from cli import app

    command = typer.main.get_command(app)
    ctx = command.make_context("cxraug", list(args), resilient_parsing=False)
    rest = _unparsed(ctx)
    while hasattr(command, "resolve_command"):  # a group: descend into the subcommand
        if not rest:
            return False
        name, command, rest = command.resolve_command(ctx, rest)
        if not rest and not hasattr(command, "resolve_command"):
            return False
        ctx = command.make_context(name, list(rest), parent=ctx, resilient_parsing=False)
        rest = _unparsed(ctx)
    assert not rest, f"arguments left over: {rest}"
    return True


COMMANDS = doc_commands()


def test_the_docs_hold_commands():
    wheres = [where for where, _ in COMMANDS]
    assert len(COMMANDS) >= 20, wheres
    assert any("$(which cxraug)" in where for where in wheres)
    assert any(where.startswith("docs/") for where in wheres)


@pytest.mark.parametrize(("where", "args"), COMMANDS, ids=[w for w, _ in COMMANDS])
def test_documented_command_parses(where, args, capsys):
    try:
        ran = parse(args)
    except Exception as exc:  # a usage error (exit code 2), or -h printing help (exit code 0)
        if getattr(exc, "exit_code", None) != 0:
            pytest.fail(f"{where}: {type(exc).__name__}: {exc} {capsys.readouterr().err}")
    else:  # a code block runs commands; only prose may name one bare
        assert ran or "(inline)" in where, f"{where}: names a command without its arguments"


@pytest.mark.parametrize(
    "line",
    [
        "cxraug study --preset demo --out runs/demo --no-such-flag",
        "cxraug synthesize --model GEN --prompts-from M --out S --batch-size many",
        "cxraug manifest import mimic-cxr --root DIR --out M --bogus",
        "cxraug no-such-command --out X",
    ],
)
def test_a_bad_command_line_fails_to_parse(line):
    with pytest.raises(Exception) as info:  # click's usage errors, vendored by typer or not
        parse(command_args(line))
    assert getattr(info.value, "exit_code", None) == 2, repr(info.value)


def test_command_lines_are_found_as_written():
    assert command_args("cxraug manifest split M [--fractions 0.8,0.1,0.1] [--seed 0]") == [
        "manifest", "split", "M", "--fractions", "0.8,0.1,0.1", "--seed", "0",
    ]  # fmt: skip
    assert command_args(r"cxraug finetune --base tiny\|DIR [--a\|--b R] --out GEN") == [
        "finetune", "--base", "tiny", "--a", "--out", "GEN",
    ]  # fmt: skip
    line = "accelerate launch --multi_gpu $(which cxraug) synthesize --model G > log 2>&1"
    assert command_args(line) == ["synthesize", "--model", "G"]
    assert command_args("/usr/bin/time -v cxraug study --out D") == ["study", "--out", "D"]
    assert command_args("python benchmarks/coverage.py --studies 400") is None
    joined = _fenced_lines("```bash\ncxraug study \\\n  --out D\n```\n")
    assert joined == ["cxraug study    --out D"]


def test_readme_is_short():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines"


def test_readme_links_into_docs_exist():
    text = (ROOT / "README.md").read_text()
    links = re.findall(r"\]\(((?:docs/|CHANGELOG)[^)#\s]*)", text)
    assert links
    missing = [link for link in links if not (ROOT / link).exists()]
    assert not missing, f"README.md links to missing files: {missing}"
