"""LoRA adapters for fine-tuning: where they go, adding them, saving and merging them.

`augmentor.finetune` adds adapters (peft) to the UNet and, with `--train-text-encoder`, the
text encoder; at export it saves them in diffusers' LoRA format (`DIR/lora/`) and merges them
into the weights, so the generator folder is a plain pipeline.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

UNET_LORA_TARGETS = ("to_k", "to_q", "to_v", "to_out.0")
TEXT_LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "out_proj")


def add_lora(model: torch.nn.Module, rank: int, targets: Sequence[str]) -> None:
    """LoRA adapters (peft) on `targets`; only they train. Gaussian init, alpha = rank.

    `inject_adapter_in_model` works alike on the diffusers UNet and the transformers text
    encoder (whose own `add_adapter` wants a newer peft in transformers 5).
    """
    from peft import LoraConfig, inject_adapter_in_model

    config = LoraConfig(
        r=rank, lora_alpha=rank, init_lora_weights="gaussian", target_modules=list(targets)
    )
    model.requires_grad_(False)
    inject_adapter_in_model(config, model, adapter_name="default")
    model.peft_config = {"default": config}  # what peft's state-dict helpers read
    for name, param in model.named_parameters():
        param.requires_grad_("lora_" in name)


def lora_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The adapter weights in diffusers' LoRA format."""
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft.utils import get_peft_model_state_dict

    return convert_state_dict_to_diffusers(get_peft_model_state_dict(model))


def merge_lora_(model: torch.nn.Module) -> torch.nn.Module:
    """Fold LoRA into the base weights and drop the adapter layers (plain model again)."""
    from diffusers.utils import recurse_remove_peft_layers
    from peft.tuners.tuners_utils import BaseTunerLayer

    for module in model.modules():
        if isinstance(module, BaseTunerLayer):
            module.merge()
    recurse_remove_peft_layers(model)
    if hasattr(model, "peft_config"):
        del model.peft_config
    if hasattr(model, "_hf_peft_config_loaded"):
        # transformers saves adapters only while this is set.
        model._hf_peft_config_loaded = False
    return model
