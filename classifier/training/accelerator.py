"""The one Accelerator both trainers build: which device, which mixed precision, which seeds.

One rule for each, so `finetune` and `train-classifier` (and `synthesize`, for its device)
agree:

* Device: the CPU when `ACCELERATE_USE_CPU` says so or there is no GPU (CUDA or MPS);
  several CPU processes only form a (gloo) process group when the Accelerator is told
  `cpu=True` (`cpu_only`).
* Mixed precision (`resolve_mixed_precision`): an explicit `no`, `fp16` or `bf16` is used
  as given; `auto` and None defer to `accelerate launch` (`ACCELERATE_MIXED_PRECISION`)
  when it set one, else `auto` takes bf16 (fp16 where bf16 is unsupported) on a CUDA GPU
  and full precision elsewhere, and None full precision. fp16 on a CPU is refused.
* Seeds: every library's global generators (torch, numpy, Python) start from the run seed
  (accelerate's `set_seed`), and accelerate's seedable sampler orders data loaders by it.
  Anything that needs its own stream takes a `torch.Generator` seeded from the run seed.
"""

from __future__ import annotations

import os

import torch

from manifests.errors import UserError


def cpu_only() -> bool:
    """Whether processes run on CPU: `ACCELERATE_USE_CPU` says so, or there is no GPU.

    `accelerate launch --cpu` starts one process; several CPU processes come from
    `ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes N` (torchrun).
    Accelerate only forms a CPU (gloo) process group when told `cpu=True`, so callers pass
    this to `Accelerator`/`PartialState` rather than let each process run alone.
    """
    from accelerate.utils import parse_flag_from_env

    if parse_flag_from_env("ACCELERATE_USE_CPU"):
        return True
    return not (torch.cuda.is_available() or torch.backends.mps.is_available())


def resolve_mixed_precision(requested: str | None, cpu: bool) -> str | None:
    """What to pass as the Accelerator's `mixed_precision` (see the module docstring).

    Args:
        requested: `auto`, None, `no`, `fp16` or `bf16` (the trainer's flag).
        cpu: whether the run is on the CPU (`cpu_only`).

    Returns:
        `no`, `fp16` or `bf16`; None lets accelerate read `ACCELERATE_MIXED_PRECISION`.
    """
    launched = os.environ.get("ACCELERATE_MIXED_PRECISION") or None
    if requested in (None, "auto") and launched:
        resolved = None
    elif requested == "auto":
        gpu = not cpu and torch.cuda.is_available()
        resolved = ("bf16" if torch.cuda.is_bf16_supported() else "fp16") if gpu else "no"
    else:
        resolved = requested or "no"
    if cpu and (resolved or launched) == "fp16":
        where = "--mixed-precision fp16" if resolved else "ACCELERATE_MIXED_PRECISION=fp16"
        raise UserError(f"{where} needs a GPU; use bf16 or no on a CPU")
    return resolved


def build_accelerator(mixed_precision: str | None, seed: int, gradient_accumulation_steps: int = 1):
    """The run's `accelerate.Accelerator`, with the global generators seeded from `seed`.

    Args:
        mixed_precision: the trainer's `--mixed-precision` (`resolve_mixed_precision`).
        seed: the run seed (global generators, the data loaders' seedable sampler).
        gradient_accumulation_steps: micro-batches per optimizer step.
    """
    from accelerate import Accelerator
    from accelerate.utils import DataLoaderConfiguration, set_seed

    cpu = cpu_only()
    accelerator = Accelerator(
        cpu=cpu,
        mixed_precision=resolve_mixed_precision(mixed_precision, cpu),
        gradient_accumulation_steps=gradient_accumulation_steps,
        dataloader_config=DataLoaderConfiguration(
            use_seedable_sampler=True,
            data_seed=seed,
            non_blocking=torch.cuda.is_available(),  # loaders pin batches on GPU machines
        ),
    )
    set_seed(seed)
    return accelerator


__all__ = ["build_accelerator", "cpu_only", "resolve_mixed_precision"]
