"""RadDINO (a DINOv2 ViT trained on chest X-rays) as a feature extractor, from a local folder.

CheXGenBench (arXiv 2505.10496) reports FID, KID and precision/recall/density/coverage on
the features of `microsoft/rad-dino`. That model is published as a transformers DINOv2
folder: `config.json`, `model.safetensors` and `preprocessor_config.json` (a
`BitImageProcessor`: resize the short side to 518 px, bicubic; centre crop 518 x 518;
scale to [0, 1]; normalise with the folder's mean and std). `load_raddino_extractor` reads
such a folder with `Dinov2Model.from_pretrained(local_files_only=True)` and the folder's
own image processor; nothing is ever downloaded.

Images: cxraug's uint8 grayscale images are replicated to 3 channels (what
`convert("RGB")` gives a grayscale image) and handed to the image processor as they are.
Features: `pooler_output`, the CLS token of the last layer after the final layer norm
(hidden_size values, 768 for rad-dino), the embedding rad-dino's model card and
CheXGenBench use.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from manifests.errors import UserError
from manifests.files import file_sha256

FLAG = "--features-raddino"
RADDINO_FILES = ("config.json", "model.safetensors", "preprocessor_config.json")
RADDINO_OUTPUT = "pooler_output"  # last-layer CLS token after the final layer norm


@dataclass
class RadDinoFeatureExtractor:
    """A DINOv2 model and its image processor; features only, no labelled head.

    Attributes:
        model: a transformers `Dinov2Model`, eval mode.
        processor: the folder's image processor (resize, crop, scale, normalise).
        name: `raddino:<folder>`, for reports.
        key: cache key: digest of the weights, the processor's settings and the output used.
    """

    model: torch.nn.Module
    processor: object
    name: str
    key: str
    device: str = "cpu"
    feature_dim: int = 0
    labels: tuple[str, ...] = ()

    def preprocess(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        """uint8 grayscale images -> (N, 3, S, S) float tensor, as the image processor makes it."""
        rgb = [np.repeat(np.asarray(im, dtype=np.uint8)[..., None], 3, axis=2) for im in images]
        batch = self.processor(images=rgb, return_tensors="pt")["pixel_values"]
        return batch.to(self.device)

    @torch.inference_mode()
    def __call__(self, images: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
        """`features`: the model's `pooler_output` (normalised CLS token)."""
        out = self.model(pixel_values=self.preprocess(images))
        return {"features": getattr(out, RADDINO_OUTPUT).float().cpu().numpy()}


def check_raddino_dir(folder: Path) -> None:
    """UserError unless `folder` holds the files of a transformers DINOv2 model folder."""
    folder = Path(folder)
    missing = [name for name in RADDINO_FILES if not (folder / name).is_file()]
    if missing:
        what = "not a folder" if not folder.is_dir() else f"missing {', '.join(missing)}"
        raise UserError(
            f"{FLAG} {folder}: {what}; give a local RadDINO folder (as microsoft/rad-dino is "
            f"published: {', '.join(RADDINO_FILES)}); nothing is downloaded"
        )


def load_raddino_extractor(folder: Path, device: str | None = None) -> RadDinoFeatureExtractor:
    """A local RadDINO folder as a feature extractor; never downloads.

    The folder's weights and image processor are read with `local_files_only=True`; the
    slow (PIL) image processor is used, as rad-dino's model card does, so the features do
    not change with torchvision's resizing.
    """
    import transformers
    from transformers import AutoImageProcessor, Dinov2Model

    folder = Path(folder)
    check_raddino_dir(folder)
    # The PIL image processor: `backend="pil"` from transformers 5, `use_fast=False` before.
    major = int(transformers.__version__.split(".")[0])
    pil = {"backend": "pil"} if major >= 5 else {"use_fast": False}
    try:
        model = Dinov2Model.from_pretrained(folder, local_files_only=True)
        processor = AutoImageProcessor.from_pretrained(folder, local_files_only=True, **pil)
    except (OSError, ValueError, KeyError) as exc:
        reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise UserError(f"{FLAG} {folder}: cannot load a DINOv2 model ({reason})") from None
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model.eval().to(device)
    settings = json.dumps(processor.to_dict(), sort_keys=True, default=str)
    key_text = "|".join(
        ("raddino", file_sha256(folder / "model.safetensors")[:16], settings, RADDINO_OUTPUT)
    )
    key = f"raddino-{hashlib.sha256(key_text.encode()).hexdigest()[:16]}"
    return RadDinoFeatureExtractor(
        model,
        processor,
        f"raddino:{folder}",
        key,
        device,
        feature_dim=int(model.config.hidden_size),
    )
