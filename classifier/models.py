"""The classifier's model: a timm backbone with one logit per label, built, checked and
initialised (from local pretrained weights or another run's weights).

`build_model` makes a 1-channel timm backbone; `check_backbone` and `check_pretrained_file`
refuse what would not load (one line each); `model_normalization` gives the input
normalisation; `load_init_weights` starts a run from another run's weights (`--init-from`).
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import timm
import torch

from classifier.run import (
    load_state_dict,
    model_path,
    read_config,
)
from manifests.errors import UserError
from manifests.files import check_safetensors


def check_backbone(backbone: str) -> None:
    """Refuse a name timm does not know, suggesting close ones."""
    if not timm.is_model(backbone):
        close = timm.list_models(f"*{backbone.split('.')[0][:12]}*")[:8]
        hint = f"; close names: {', '.join(close)}" if close else ""
        raise UserError(f"--backbone: {backbone!r} is not a timm model{hint}")


def check_pretrained_file(path: Path) -> None:
    """Refuse a missing `--pretrained` file or a corrupt safetensors one (header read only)."""
    if not path.is_file():
        raise UserError(
            f"--pretrained: {path} not found; give a local timm weights file "
            "(.safetensors or .pth); nothing is downloaded"
        )
    if path.suffix == ".safetensors":
        check_safetensors(path, "--pretrained")
        return
    try:  # weights_only: a pickle that needs code to load is refused, never run
        torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise UserError(
            f"--pretrained: {path} refused: it is a pickle that needs code to load (torch "
            "weights_only loading blocked it); cxraug never runs code from weights. Convert "
            "it to .safetensors where you trust it"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise UserError(f"--pretrained: {path} is not a torch weights file ({first})") from None


def build_model(backbone: str, num_labels: int, pretrained: Path | None = None) -> torch.nn.Module:
    """A timm model with 1 input channel and `num_labels` outputs; never touches a hub.

    `pretrained` is a local weights file (safetensors, or a .pth/.bin state dict, possibly
    under a `state_dict`/`model` key) loaded through timm's own `load_pretrained`, which
    sums the first convolution over RGB for 1 channel and drops a classifier of another size.
    """
    check_backbone(backbone)
    if pretrained is None:
        return timm.create_model(backbone, num_classes=num_labels, in_chans=1, pretrained=False)
    path = Path(pretrained)
    check_pretrained_file(path)
    try:
        # source=None keeps timm from preferring the hub; `file` makes it load this file.
        return timm.create_model(
            backbone,
            num_classes=num_labels,
            in_chans=1,
            pretrained=True,
            pretrained_cfg_overlay={"file": str(path), "source": None},
        )
    except (RuntimeError, KeyError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0][:300]
        raise UserError(
            f"--pretrained: {path} does not fit backbone {backbone!r} ({first})"
        ) from None


def model_normalization(model: torch.nn.Module) -> tuple[float, float]:
    """Single-channel mean/std from timm's data config (RGB values averaged)."""
    data_cfg = timm.data.resolve_data_config(model=model)
    return float(np.mean(data_cfg["mean"])), float(np.mean(data_cfg["std"]))


def _classifier_prefix(model: torch.nn.Module) -> str:
    name = (getattr(model, "pretrained_cfg", None) or {}).get("classifier", "")
    return name if isinstance(name, str) else name[0]


def load_init_weights(model: torch.nn.Module, run_dir: Path, labels: tuple[str, ...]) -> str:
    """Initialise `model` from another run's best weights (pretrain-then-finetune).

    The backbone must match. The classifier head is kept when the labels match, else it
    stays freshly initialised. Returns a one-line description.
    """
    run_dir = Path(run_dir)
    config = read_config(run_dir, flag="--init-from")
    weights = model_path(run_dir)
    if not weights.is_file():
        raise UserError(f"--init-from: {weights} not found; the run has no best model yet")
    backbone = getattr(model, "pretrained_cfg", {}).get("architecture")
    if config["backbone"].split(".")[0] != backbone:
        raise UserError(
            f"--init-from: {run_dir} trained backbone {config['backbone']!r}, this run uses "
            f"{backbone!r}; they must match"
        )
    state = load_state_dict(run_dir)
    if tuple(config["labels"]) == tuple(labels):
        model.load_state_dict(state)
        return f"initialised from {run_dir} (backbone and head)"
    head = _classifier_prefix(model)
    state = {k: v for k, v in state.items() if not (head and k.startswith(head + "."))}
    missing, unexpected = model.load_state_dict(state, strict=False)
    stray = [k for k in missing if not k.startswith(head + ".")] + list(unexpected)
    if stray:
        raise UserError(f"--init-from: {weights} does not fit this model ({stray[0]} ...)")
    return f"initialised backbone from {run_dir}; new head for labels {', '.join(labels)}"
