"""Structure: each command's options are its config dataclass's fields (flag, default, help
in one place; a new field is a flag and a study key with no other edit), every float flag
refuses NaN and infinity, every long command shares the run-folder flags and their
behaviour, and imports point one way without cycles."""

from __future__ import annotations

import ast
import dataclasses
import os
import shutil
import subprocess
import sys
import typing
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

import cli
from augmentor.config import FinetuneConfig, OracleFilterConfig, SynthesisConfig
from augmentor.eval_config import GeneratorEvalConfig, ProbeConfig
from classifier.config import ReportConfig, TrainConfig
from cli import app
from manifests import runfolder
from manifests.config import DemoDataConfig, SplitConfig
from manifests.settings import field_default, options

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()
RUN_COMMANDS = ("finetune", "synthesize", "train-classifier", "study", "evaluate-generator")


def _command(name: str):
    return typer.main.get_command(app).commands[name]


# Every command whose options are a config class's fields (cli.config_command), by its
# words on the command line.
CONFIG_COMMANDS = {
    ("demo-data",): DemoDataConfig,
    ("manifest", "split"): SplitConfig,
    ("finetune",): FinetuneConfig,
    ("synthesize",): SynthesisConfig,
    ("train-classifier",): TrainConfig,
    ("report",): ReportConfig,
    ("evaluate-generator",): GeneratorEvalConfig,
    ("probe-text-encoder",): ProbeConfig,
}
# Options that are not config fields, by design.
EXTRA_OPTIONS = {
    ("synthesize",): {"fast", "filter_with", "min_prob", "filter_demographics", "age_tolerance"},
    ("report",): {"age_groups"},
}


def _click(words: tuple[str, ...]):
    command = typer.main.get_command(app)
    for word in words:
        command = command.commands[word]
    return command


def test_the_table_lists_every_config_command():
    assert {words[-1]: cls for words, cls in CONFIG_COMMANDS.items()} == cli.CONFIG_COMMANDS


@pytest.mark.parametrize("words", CONFIG_COMMANDS, ids=" ".join)
def test_each_option_is_a_config_field_with_its_default_and_help(words):
    """An option per field (nested configs' fields too), its default and help the field's;
    nothing else but the command's declared extras."""
    expected = {o.name: o for o in options(CONFIG_COMMANDS[words])}
    params = {p.name: p for p in _click(words).params if p.name != "help"}
    assert set(params) - set(expected) == EXTRA_OPTIONS.get(words, set())
    assert set(expected) <= set(params), set(expected) - set(params)
    for name, option in expected.items():
        param, field = params[name], option.field
        default = field_default(field)
        if default is dataclasses.MISSING:
            assert param.required, name
            continue
        assert not param.required, name
        if field.metadata.get("parse"):  # text parsed into the field: no text means the default
            assert param.default is None and field.metadata["parse"](None) == default, name
        else:
            assert param.default == default, (words, name)
        assert param.help == field.metadata["help"], (words, name)
        if param.param_type_name != "argument":
            assert option.flag in param.opts, (words, name, param.opts)


def test_synthesize_min_prob_help_names_the_oracle_filter_default():
    help_text = next(p.help for p in _click(("synthesize",)).params if p.name == "min_prob")
    assert f"default {OracleFilterConfig.min_prob:g}" in help_text


def _required_args(cls) -> list[str]:
    """A placeholder for every required field (nothing runs: the checks answer first)."""
    args = []
    for option in options(cls):
        if field_default(option.field) is dataclasses.MISSING:
            argument = option.field.metadata.get("argument")
            args += ["x"] if argument else [option.flag, "x"]
    return args


def _float_options():
    for words, cls in CONFIG_COMMANDS.items():
        for option in options(cls):
            if float in (option.hint, *typing.get_args(option.hint)):
                yield words, cls, option


FLOAT_OPTIONS = list(_float_options())


@pytest.mark.parametrize("bad", ["nan", "inf", "-inf"])
@pytest.mark.parametrize(
    ("words", "cls", "option"),
    FLOAT_OPTIONS,
    ids=[f"{' '.join(w)} {o.flag}" for w, _, o in FLOAT_OPTIONS],
)
def test_every_float_flag_refuses_nan_and_infinity(words, cls, option, bad, tmp_path):
    args = [*words, *_required_args(cls), option.flag, bad]
    result = runner.invoke(app, args)
    assert result.exit_code == 2, (args, result.output)
    assert (
        result.output.strip() == f"error: {option.flag}: {float(bad)}; it must be a finite number"
    )


def test_the_cli_builds_each_config_from_its_options(monkeypatch):
    """The options reach the config: parsed lists, repeatable flags, nested fields."""
    import classifier.train

    seen = []
    monkeypatch.setattr(classifier.train, "train_classifier", lambda cfg, log: seen.append(cfg))
    args = ["train-classifier", "--real", "r.parquet", "-o", "run", "--labels", "A, B"]
    args += ["--hflip", "--lr", "0.01", "--uncertain", "zeros"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    (cfg,) = seen
    assert cfg.real == Path("r.parquet") and cfg.out == Path("run")
    assert cfg.labels == ("A", "B") and cfg.lr == 0.01 and cfg.uncertain == "zeros"
    assert cfg.augment.hflip and cfg.augment.rotate_deg == 10.0  # a nested field, and the rest
    assert cfg.epochs == TrainConfig.epochs and cfg.n_boot == TrainConfig.n_boot

    import augmentor.finetune

    monkeypatch.setattr(augmentor.finetune, "finetune", lambda cfg, log: seen.append(cfg))
    args = ["finetune", "-m", "m.parquet", "--base", "tiny", "-o", "gen"]
    args += ["--balance-labels", "A", "--balance-labels", "B", "--no-disk-cache"]
    assert runner.invoke(app, args).exit_code == 0
    cfg = seen[-1]
    assert cfg.balance_labels == ("A", "B") and cfg.validation_prompts == ()
    assert not cfg.cache_latents_on_disk and cfg.film_grain is None


# A field added to TrainConfig, and nothing else edited: the CLI and the study take it.
THROWAWAY = """
import sys, types
from pathlib import Path

fake = types.ModuleType("classifier.train")  # records the config instead of training
fake.seen = []
fake.train_classifier = lambda cfg, log=None: fake.seen.append(cfg)
sys.modules["classifier.train"] = fake

from typer.testing import CliRunner
from cli import app
from classifier.arms import Arm
from study import ArmRun, stage_train
from study.config import config_to_toml
from study.presets import load_study_config

runner = CliRunner()
help_text = runner.invoke(app, ["train-classifier", "-h"], env={"COLUMNS": "200"}).output
assert "--throwaway" in help_text and "A throwaway setting." in help_text, help_text
result = runner.invoke(app, ["train-classifier", "--real", "r", "-o", "o", "--throwaway", "3"])
assert result.exit_code == 0, result.output
assert fake.seen[-1].throwaway == 3
runner.invoke(app, ["train-classifier", "--real", "r", "-o", "o"])
assert fake.seen[-1].throwaway == 7

Path("mine.toml").write_text("[classifier]\\nthrowaway = 4\\n")
cfg = load_study_config("smoke", Path("mine.toml"))
assert "throwaway = 4" in config_to_toml(cfg)
stage_train(cfg.classifier, Path("r"), Path("s"), ArmRun(Arm(), 0, Path("run")), print)
assert fake.seen[-1].throwaway == 4 and fake.seen[-1].backbone == "test_resnet"
print("ok")
"""


def test_a_new_train_config_field_is_a_cli_option_and_a_study_key(tmp_path):
    """Copy the code, add one field to TrainConfig (and edit nothing else): train-classifier
    shows and takes the flag, and a study TOML sets it for every classifier run."""
    for name in ("cli.py", "study", "augmentor", "classifier", "manifests"):
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(source, tmp_path / name)
    config = tmp_path / "classifier" / "config.py"
    text = config.read_text()
    anchor = "    eval_batch_size: int = setting("
    assert text.count(anchor) == 1
    field = '    throwaway: int = setting(7, help="A throwaway setting.")\n'
    config.write_text(text.replace(anchor, field + anchor))
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    proc = subprocess.run(
        [sys.executable, "-c", THROWAWAY], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stdout + proc.stderr


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


def test_library_messages_go_to_the_callers_log_or_the_cxraug_logger(capsys, caplog):
    """One convention: a given `log` callable gets the lines; else the `cxraug` logger."""
    import logging

    from manifests.progress import LOGGER, say_to, show_messages

    got = []
    say_to(got.append)("to the caller")
    assert got == ["to the caller"]
    with caplog.at_level(logging.INFO, logger="cxraug"):
        say_to()("to the logger")
    assert [r.getMessage() for r in caplog.records] == ["to the logger"]
    handlers, propagate = list(LOGGER.handlers), LOGGER.propagate
    try:
        show_messages()
        say_to()("a plain line")
        assert capsys.readouterr().out == "a plain line\n"
    finally:
        LOGGER.handlers[:], LOGGER.propagate = handlers, propagate
