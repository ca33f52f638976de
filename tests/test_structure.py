"""Structure: defaults live in the config dataclasses, every long command shares the
run-folder flags and their behaviour, and imports point one way without cycles."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from augmentor.config import FinetuneConfig, OracleFilterConfig, SynthesisConfig
from classifier.config import TrainConfig
from cli import app
from manifests import runfolder

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()
RUN_COMMANDS = ("finetune", "synthesize", "train-classifier", "study", "evaluate-generator")


def _command(name: str):
    return typer.main.get_command(app).commands[name]


@pytest.mark.parametrize(
    ("command", "config"),
    [
        ("finetune", FinetuneConfig),
        ("synthesize", SynthesisConfig),
        ("train-classifier", TrainConfig),
    ],
)
def test_cli_defaults_are_the_dataclass_defaults(command, config):
    fields = {f.name: f for f in dataclasses.fields(config)}
    checked = 0
    for param in _command(command).params:
        field = fields.get(param.name)
        if field is None or field.default is dataclasses.MISSING or param.required:
            continue
        assert param.default == field.default, (command, param.name)
        checked += 1
    assert checked >= 8, f"{command}: only {checked} defaults compared"
    if command == "synthesize":
        help_text = next(p.help for p in _command(command).params if p.name == "min_prob")
        assert f"default {OracleFilterConfig.min_prob:g}" in help_text


def test_every_run_folder_command_shares_resume_and_overwrite():
    for name in RUN_COMMANDS:
        params = {p.name: p for p in _command(name).params}
        assert params["resume"].help == runfolder.RESUME_HELP, name
        assert params["overwrite"].help == runfolder.OVERWRITE_HELP, name
        assert params["resume"].is_flag and params["overwrite"].is_flag, name


def _args(command: str, tmp_path: Path, phantom_manifest: Path, generator: Path, run: Path):
    common = {
        "finetune": ["--manifest", phantom_manifest, "--base", "tiny"],
        "synthesize": [
            "--model", generator, "--prompts-from", phantom_manifest, "--labels", "pneumothorax:1"
        ],
        "train-classifier": ["--real", phantom_manifest, "--backbone", "test_resnet"],
        "study": ["--preset", "smoke"],
        "evaluate-generator": ["--synthetic", phantom_manifest, "--real", phantom_manifest,
                               "--features", run],
    }[command]  # fmt: skip
    return [command, *map(str, common)]


def test_foreign_and_scratch_folders_behave_the_same_in_every_command(
    tmp_path, phantom_manifest, tiny_generator_dir
):
    run = tmp_path / "run"  # a stand-in classifier run: evaluate-generator checks it later
    run.mkdir()
    for command in RUN_COMMANDS:
        args = _args(command, tmp_path, phantom_manifest, tiny_generator_dir, run)
        foreign = tmp_path / f"foreign-{command}"
        foreign.mkdir()
        (foreign / "keep.txt").write_text("mine")
        for extra in ([], ["--resume"], ["--overwrite"]):
            result = runner.invoke(app, [*args, "--out", str(foreign), *extra])
            assert result.exit_code == 2, (command, extra, result.output)
            line = result.output.strip()
            assert len(line.splitlines()) == 1 and line.startswith("error: --out "), line
            assert "not a" in line or "is not empty" in line, (command, extra, line)
            assert sorted(p.name for p in foreign.iterdir()) == ["keep.txt"]
        both = runner.invoke(app, [*args, "--out", str(foreign), "--resume", "--overwrite"])
        assert both.exit_code == 2 and "exclude each other" in both.output, command


def test_scratch_only_folder_counts_as_fresh(tmp_path):
    fmt = runfolder.FolderFormat("thing", "config.json", "done.json")
    out = tmp_path / "out"
    (out / "checkpoints" / ".tmp-checkpoint-3").mkdir(parents=True)
    (out / ".config.json.abc.tmp").write_text("half")
    (out / runfolder.LOCK_FILE).write_text('{"pid": -1, "host": "x"}')
    assert runfolder.folder_state(out, fmt, resume=False, overwrite=False) == runfolder.FRESH
    assert runfolder.folder_state(out, fmt, resume=True, overwrite=False) == runfolder.FRESH
    (out / "config.json").write_text("{}")
    assert runfolder.folder_state(out, fmt, resume=True, overwrite=False) == runfolder.RESUME
    (out / "done.json").write_text("{}")
    assert runfolder.folder_state(out, fmt, resume=True, overwrite=False) == runfolder.FINISHED
    with pytest.raises(runfolder.UserError, match="finished thing; pass --resume to keep it"):
        runfolder.folder_state(out, fmt, resume=False, overwrite=False)


# ------------------------------------------------------------------------------ imports

LAYERS = ["cli", "study", "augmentor", "classifier", "manifests"]  # each imports only later ones


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """Every first-party module a file imports, at the top or deferred inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
    return {m for m in found if m.split(".")[0] in LAYERS}


def _graph() -> dict[str, set[str]]:
    files = [ROOT / "cli.py"]
    for package in ("study", "augmentor", "classifier", "manifests"):
        files += sorted((ROOT / package).rglob("*.py"))
    modules = {_module_name(f): f for f in files}
    graph = {}
    for name, path in modules.items():
        graph[name] = {m for m in _imports(path) if m in modules and m != name}
    return graph


def test_imports_point_one_way():
    for module, targets in _graph().items():
        layer = LAYERS.index(module.split(".")[0])
        for target in targets:
            assert LAYERS.index(target.split(".")[0]) >= layer, f"{module} imports {target}"


def test_no_import_cycles_deferred_or_not():
    graph = _graph()
    state: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in graph[node]:
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt) :] + [nxt] if nxt in stack else [node, nxt]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = 2

    for node in graph:
        if node not in state:
            visit(node, [node])
