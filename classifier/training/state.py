"""Training state on disk without pickles: tensors as safetensors, the rest as JSON.

accelerate's `save_state` writes optimizer, scheduler, random and custom states with
`torch.save` (pickle), and `load_state` unpickles some of them with `weights_only=False`:
resuming a tampered checkpoint could run code. cxraug's trainers save and load through
these functions instead (by way of `classifier.training.checkpointer.Checkpointer`); a
checkpoint folder holds only `*.safetensors` and `*.json`, and loading never calls
`torch.load`.

What is saved: model weights, optimizer state, LR-scheduler state, EMA weights, the
process's random states (torch, numpy, Python, and any named `torch.Generator`) per rank,
and a JSON record of the trainer's own counters.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from manifests.errors import UserError
from manifests.files import read_json, write_json

TRAINER_FILE = "trainer_state.json"


def _tensor_tree(obj, prefix: str, tensors: dict[str, torch.Tensor]):
    """Replace tensors in a nested dict/list with {"__tensor__": key}; collect them."""
    if isinstance(obj, torch.Tensor):
        key = prefix
        tensors[key] = obj.detach().cpu().contiguous()
        return {"__tensor__": key}
    if isinstance(obj, Mapping):
        return {str(k): _tensor_tree(v, f"{prefix}.{k}", tensors) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_tensor_tree(v, f"{prefix}.{i}", tensors) for i, v in enumerate(obj)]
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def _untree(obj, tensors: dict[str, torch.Tensor]):
    if isinstance(obj, dict):
        if set(obj) == {"__tensor__"}:
            return tensors[obj["__tensor__"]]
        return {k: _untree(v, tensors) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_untree(v, tensors) for v in obj]
    return obj


def save_tree(folder: Path, name: str, state: dict) -> None:
    """Save a nested state dict as `name.json` (structure) + `name.safetensors` (tensors)."""
    tensors: dict[str, torch.Tensor] = {}
    tree = _tensor_tree(state, name, tensors)
    if tensors:
        save_file(tensors, str(Path(folder) / f"{name}.safetensors"))
    write_json(Path(folder) / f"{name}.json", tree)


def load_tree(folder: Path, name: str) -> dict:
    """Inverse of `save_tree`; UserError naming the file when something is missing."""
    folder = Path(folder)
    tree = read_json(folder / f"{name}.json", "checkpoint state")
    tensor_file = folder / f"{name}.safetensors"
    tensors = load_file(str(tensor_file)) if tensor_file.is_file() else {}
    try:
        return _untree(tree, tensors)
    except KeyError as e:
        raise UserError(f"{tensor_file}: missing tensor {e}; the checkpoint is damaged") from None


def _optimizer_state(optimizer) -> dict:
    state = optimizer.state_dict()
    # JSON keys are strings; remember that the optimizer's state keys are parameter ids.
    return {
        "state": {str(k): v for k, v in state["state"].items()},
        "groups": state["param_groups"],
    }


def _load_optimizer(optimizer, saved: dict) -> None:
    state = {int(k): v for k, v in saved["state"].items()}
    groups = saved["groups"]
    for group in groups:
        if isinstance(group.get("betas"), list):
            group["betas"] = tuple(group["betas"])
    optimizer.load_state_dict({"state": state, "param_groups": groups})


def random_states(generators: Mapping[str, torch.Generator] | None = None) -> dict:
    """This process's random states: torch (CPU and CUDA), numpy, Python, named generators."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": [np_state[0], np_state[1].astype(np.int64).tolist(), *map(_plain, np_state[2:])],
        "python": [py_state[0], list(py_state[1]), py_state[2]],
        "generators": {k: g.get_state() for k, g in (generators or {}).items()},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _plain(x):
    return x.item() if isinstance(x, np.generic) else x


def set_random_states(state: dict, generators: Mapping[str, torch.Generator] | None = None) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    for name, g in (generators or {}).items():
        g.set_state(state["generators"][name])


def save_train_state(
    folder: Path,
    *,
    models: Mapping[str, torch.nn.Module],
    optimizer=None,
    scheduler=None,
    ema=None,
    trainer: dict | None = None,
    rank: int = 0,
    is_main: bool = True,
    generators: Mapping[str, torch.Generator] | None = None,
) -> None:
    """Write one checkpoint into `folder` (every rank calls it; rank 0 writes shared parts)."""
    from safetensors.torch import save_model

    folder = Path(folder)
    save_tree(folder, f"random_states_{rank}", random_states(generators))
    if not is_main:
        return
    for name, model in models.items():
        save_model(model, str(folder / f"{name}.safetensors"))
    if optimizer is not None:
        save_tree(folder, "optimizer", _optimizer_state(optimizer))
    if scheduler is not None:
        save_tree(folder, "scheduler", scheduler.state_dict())
    if ema is not None:
        save_tree(folder, "ema", ema.state_dict())
    write_json(folder / TRAINER_FILE, trainer or {})


def load_train_state(
    folder: Path,
    *,
    models: Mapping[str, torch.nn.Module],
    optimizer=None,
    scheduler=None,
    ema=None,
    rank: int = 0,
    generators: Mapping[str, torch.Generator] | None = None,
) -> dict:
    """Restore what `save_train_state` wrote; returns the trainer record. Never unpickles."""
    from safetensors.torch import load_model

    folder = Path(folder)
    for name, model in models.items():
        path = folder / f"{name}.safetensors"
        if not path.is_file():
            raise UserError(f"{path}: missing; the checkpoint is incomplete")
        load_model(model, str(path))
    if optimizer is not None:
        _load_optimizer(optimizer, load_tree(folder, "optimizer"))
    if scheduler is not None:
        scheduler.load_state_dict(load_tree(folder, "scheduler"))
    if ema is not None:
        ema.load_state_dict(load_tree(folder, "ema"))
    own = folder / f"random_states_{rank}.json"
    states = load_tree(folder, f"random_states_{rank}" if own.is_file() else "random_states_0")
    set_random_states(states, generators)
    return read_json(folder / TRAINER_FILE, "checkpoint trainer state")
