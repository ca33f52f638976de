"""torchxrayvision's DenseNet-121 as a feature extractor for FID/KID, from a local file.

RoentGen (Chambon et al., arXiv 2211.12737) reports FID on the features of a chest X-ray
classifier, torchxrayvision's DenseNet-121 (`densenet121-res224-all`), besides Inception.
`load_xrv_extractor` builds that architecture with `xrv.models.DenseNet(weights=None)` (no
download) and loads a local weights file into its trunk; features are xrv's `features2`:
ReLU, global average pool, 1024 values per image. Images are prepared as torchxrayvision's
README does: 8-bit values scaled to [-1024, 1024] (`xrv.utils.normalize(img, 255)`), a
centre crop on the long side and a resize to 224 px (`XRayCenterCrop`, `XRayResizer`).

torchxrayvision is an optional extra (`pip install -e ".[xrv]"`), imported on first use.
The published weights are pickled whole models, which cxraug never unpickles; convert them
once where they are trusted (`XRV_CONVERT_HINT`).
"""

from __future__ import annotations

import hashlib
import pickle
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from manifests.errors import UserError
from manifests.files import check_safetensors, file_sha256

FLAG = "--features-xrv"
XRV_IMAGE_SIZE = 224
XRV_FEATURE_DIM = 1024
XRV_INSTALL_HINT = 'pip install -e ".[xrv]"'
XRV_CONVERT_HINT = (
    'python -c "import torchxrayvision as xrv, safetensors.torch as st; '
    "m = xrv.models.DenseNet(weights='densenet121-res224-all'); "
    "st.save_file(m.state_dict(), 'xrv-densenet121-all.safetensors')\""
)
# Preprocessing recorded in the cache key: features are reused only for the same recipe.
XRV_PREPROCESSING = "normalize255-centercrop-skimage224"


def import_xrv():
    """torchxrayvision, or a UserError naming the extra to install.

    Its `models` module calls `warnings.filterwarnings("ignore")` on import, which would
    silence every warning of the process; the filters are restored afterwards.
    """
    try:
        with warnings.catch_warnings():
            import torchxrayvision
    except ImportError as exc:
        raise UserError(
            f"{FLAG} needs torchxrayvision, which is not installed ({exc}); "
            f"install it with: {XRV_INSTALL_HINT}"
        ) from None
    return torchxrayvision


def _reason(exc: Exception) -> str:
    """The telling line of a loader's error (torch's weights_only errors start with advice)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    telling = [line for line in lines if line.startswith("Unsupported")] or lines
    return (telling[0] if telling else type(exc).__name__)[:200]


def read_state_dict(path: Path, flag: str = FLAG) -> dict[str, torch.Tensor]:
    """A local weights file as a state dict, never running code from it.

    `.safetensors` files are read as they are; anything else goes through
    `torch.load(weights_only=True)` (a state dict, possibly under a `state_dict` or `model`
    key). A missing, corrupt or pickled-model file is a UserError naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(
            f"{flag}: {path} not found; give a local torchxrayvision DenseNet-121 weights "
            "file (.safetensors, or a .pt/.pth state dict); nothing is downloaded"
        )
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        check_safetensors(path, flag)
        return load_file(str(path))
    try:  # weights_only: a pickle that needs code to load is refused, never run
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "Unsupported global" in str(exc):  # it names a class or function to import
            raise UserError(
                f"{flag}: {path} refused: it is a pickle that needs code to load "
                "(torchxrayvision's release .pt files are whole pickled models); cxraug never "
                f"runs code from weights. Convert it once where you trust it: {XRV_CONVERT_HINT}"
            ) from None
        raise UserError(f"{flag}: {path} is not a torch weights file ({_reason(exc)})") from None
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise UserError(f"{flag}: {path} is not a torch weights file ({_reason(exc)})") from None
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"{flag}: {path} is not a state dict (a mapping of names to tensors)")
    return state


def trunk_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The `features.*` entries of a DenseNet state dict, without the prefix (and without a
    DataParallel `module.` prefix). The classifier head and `op_threshs` are not needed."""
    out = {}
    for name, value in state.items():
        name = name.removeprefix("module.")
        if name.startswith("features."):
            out[name.removeprefix("features.")] = value
    return out


def xrv_transforms(xrv, size: int = XRV_IMAGE_SIZE) -> Callable[[np.ndarray], np.ndarray]:
    """uint8 grayscale (H, W) -> float32 (1, size, size) in [-1024, 1024], with
    torchxrayvision's own functions (its README's recipe)."""
    crop, resize = xrv.datasets.XRayCenterCrop(), xrv.datasets.XRayResizer(size)
    # `xrv.utils.normalize` where it exists, else `xrv.datasets.normalize` (same formula).
    normalize = getattr(xrv.utils, "normalize", None) or xrv.datasets.normalize

    def prepare(image: np.ndarray) -> np.ndarray:
        scaled = normalize(np.asarray(image, dtype=np.uint8), 255)
        return resize(crop(scaled[None, ...]))

    return prepare


@dataclass
class XrvFeatureExtractor:
    """torchxrayvision DenseNet-121 features (1024 per image); no labelled head.

    Attributes:
        model: an `xrv.models.DenseNet`, eval mode.
        name: `xrv:<weights file>`, for reports.
        key: cache key: digest of the weights and the preprocessing.
        prepare: one uint8 image -> (1, 224, 224) float32 in [-1024, 1024].
    """

    model: torch.nn.Module
    name: str
    key: str
    prepare: Callable[[np.ndarray], np.ndarray]
    device: str = "cpu"
    image_size: int = XRV_IMAGE_SIZE
    feature_dim: int = XRV_FEATURE_DIM
    labels: tuple[str, ...] = ()

    def preprocess(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        """uint8 images -> (N, 1, 224, 224) float tensor in [-1024, 1024]."""
        batch = np.stack([self.prepare(im) for im in images]).astype(np.float32)
        return torch.from_numpy(batch).to(self.device)

    @torch.inference_mode()
    def __call__(self, images: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
        """`features`: xrv's `features2` (ReLU, global average pool)."""
        x = self.preprocess(images)
        return {"features": self.model.features2(x).float().cpu().numpy()}


def load_xrv_extractor(weights: Path, device: str | None = None) -> XrvFeatureExtractor:
    """torchxrayvision's DenseNet-121 with the trunk weights of a local file; no download.

    Any DenseNet-121 state dict of torchxrayvision works (`densenet121-res224-all` for
    RoentGen's setup, converted to safetensors); its classifier head is ignored.
    """
    weights = Path(weights)
    state = read_state_dict(weights)
    xrv = import_xrv()
    model = xrv.models.DenseNet(weights=None)  # the architecture only: weights=None never downloads
    trunk = trunk_state(state)
    if not trunk:
        raise UserError(
            f"{FLAG}: {weights} holds no DenseNet trunk ('features.*' tensors); give a "
            "torchxrayvision DenseNet-121 state dict"
        )
    try:
        result = model.features.load_state_dict(trunk, strict=False)
    except RuntimeError as exc:  # shapes differ: another architecture
        lines = [line.strip() for line in str(exc).strip().splitlines()]
        raise UserError(
            f"{FLAG}: {weights} does not fit torchxrayvision's DenseNet-121 ({lines[-1][:200]})"
        ) from None
    if result.missing_keys or result.unexpected_keys:
        raise UserError(
            f"{FLAG}: {weights} does not fit torchxrayvision's DenseNet-121 "
            f"({len(result.missing_keys)} trunk tensors missing, e.g. "
            f"{(result.missing_keys or ['none'])[0]!r}; {len(result.unexpected_keys)} "
            f"unexpected, e.g. {(result.unexpected_keys or ['none'])[0]!r})"
        )
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model.eval().to(device)
    digest = file_sha256(weights)[:16]
    key_text = "|".join(("xrv", digest, str(XRV_IMAGE_SIZE), XRV_PREPROCESSING))
    key = f"xrv-{hashlib.sha256(key_text.encode()).hexdigest()[:16]}"
    return XrvFeatureExtractor(model, f"xrv:{weights}", key, xrv_transforms(xrv), device)
