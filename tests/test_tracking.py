"""`--report-to tensorboard` on train-classifier and finetune: the event files read back."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from classifier.training.tracking import TRACKING_DIR, check_report_to
from cli import app
from manifests.errors import UserError

pytest.importorskip("tensorboard")
runner = CliRunner()


def _events(logs: Path) -> tuple[dict[str, list[tuple[int, float]]], dict[str, list[int]]]:
    """Every scalar (tag -> [(step, value)]) and image (tag -> [step]) under `logs`."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    scalars: dict[str, list[tuple[int, float]]] = {}
    images: dict[str, list[int]] = {}
    files = sorted(logs.rglob("events.out.tfevents.*"))
    assert files, f"no event file under {logs}"
    for path in files:
        acc = EventAccumulator(str(path), size_guidance={"scalars": 0, "images": 0})
        acc.Reload()
        tags = acc.Tags()
        for tag in tags["scalars"]:
            scalars.setdefault(tag, []).extend((e.step, e.value) for e in acc.Scalars(tag))
        for tag in tags["images"]:
            images.setdefault(tag, []).extend(e.step for e in acc.Images(tag))
    return scalars, images


def test_train_classifier_reports_to_tensorboard(phantom_manifest, tmp_path):
    out = tmp_path / "run"
    args = ["train-classifier", "--real", str(phantom_manifest), "--out", str(out)]
    args += ["--backbone", "test_resnet", "--labels", "Support Devices,Pleural Effusion"]
    args += ["--image-size", "32", "--epochs", "2", "--batch-size", "8", "--patience", "0"]
    result = runner.invoke(app, [*args, "--report-to", "tensorboard"])
    assert result.exit_code == 0, result.output
    scalars, _ = _events(out / TRACKING_DIR)
    for tag in ("train/loss", "train/lr", "train/images_per_s", "val/loss", "val/macro_auroc"):
        assert [step for step, _ in scalars[tag]] == [0, 1], tag
    assert all(v > 0 for _, v in scalars["train/loss"])
    assert all(0 <= v <= 1 for _, v in scalars["val/macro_auroc"])


def test_finetune_reports_loss_lr_rate_and_validation_grids(phantom_manifest, tmp_path):
    from augmentor.finetune import finetune
    from tests.test_finetune import _cfg  # the fine-tune tests' seconds-long tiny config

    out = tmp_path / "gen"
    finetune(
        _cfg(
            phantom_manifest,
            out,
            validation_prompts=("Large right pleural effusion.", "No acute process."),
            validation_steps=1,
            validation_inference_steps=2,
            report_to="tensorboard",
        )
    )
    scalars, images = _events(out / TRACKING_DIR)
    for tag in ("train/loss", "train/lr", "train/images_per_s"):
        assert [step for step, _ in scalars[tag]] == [1, 2], tag
    assert images["validation/grid"] == [1, 2]


def test_report_to_refuses_unknown_and_missing_trackers(monkeypatch):
    import importlib.util

    with pytest.raises(UserError, match="valid: none, tensorboard, wandb"):
        check_report_to("mlflow")
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a)
    )
    with pytest.raises(UserError, match="wandb package is not installed"):
        check_report_to("wandb")
    assert check_report_to("none") == "none"
