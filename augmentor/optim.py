"""The generator's optimizer: AdamW, fused where torch has a fused kernel for the device.

torch's default AdamW on CPU updates one parameter tensor at a time (`_single_tensor_adam`,
a dozen small ops per tensor); the fused kernel does the whole update in one pass per
tensor. On `tiny` (about 8.5M parameters, 3.2M of them the text encoder's token embedding)
that is most of the optimizer's share of a fine-tuning step on 2 cores
(`benchmarks/bench_finetune.py` times the whole loop against plain diffusers').
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

_FUSED_DEVICES = ("cpu", "cuda")


def adamw(
    params: Iterable[torch.nn.Parameter], lr: float, weight_decay: float
) -> torch.optim.AdamW:
    """`torch.optim.AdamW`, fused when every parameter is a float tensor on CPU or CUDA."""
    params = list(params)
    fused = bool(params) and all(
        p.device.type in _FUSED_DEVICES and p.is_floating_point() for p in params
    )
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=fused or None)
