"""Image loading for every stage: PNG/JPEG, and DICOM when pydicom is installed.

Everything is returned as a 2-D uint8 grayscale array, upright: an EXIF orientation (phone
photos, some PACS JPEG exports) is applied. A 16-bit PNG is scaled by its full bit depth
(0-65535 to 0-255), the same for every image, so intensities compare across a series.
DICOM goes through the modality and VOI LUT (window) and MONOCHROME1 is inverted, so bone
is bright as in PNG exports.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from manifests.errors import UserError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
DICOM_SUFFIXES = (".dcm", ".dicom")


SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I")  # how Pillow opens 16-bit grayscale


def _full_depth_to_uint8(array: np.ndarray) -> np.ndarray:
    """16-bit values as 8-bit by the full bit depth: 65535 -> 255 in every image."""
    scaled = np.clip(array.astype(np.float64), 0, 65535) * (255.0 / 65535.0)
    return np.round(scaled).astype(np.uint8)


def _to_uint8(array: np.ndarray) -> np.ndarray:
    array = array.astype(np.float64)
    lo, hi = float(np.min(array)), float(np.max(array))
    if hi <= lo:
        return np.zeros(array.shape, dtype=np.uint8)
    return np.round((array - lo) * (255.0 / (hi - lo))).astype(np.uint8)


def load_dicom(path: Path) -> np.ndarray:
    """A DICOM image as uint8 grayscale, VOI LUT applied and MONOCHROME1 inverted."""
    try:
        import pydicom
        from pydicom.pixels import apply_modality_lut, apply_voi_lut
    except ImportError:  # pragma: no cover - pydicom is a dependency, but stay explicit
        raise UserError(f"{path}: reading DICOM needs pydicom (pip install pydicom)") from None
    try:
        ds = pydicom.dcmread(path)
        pixels = ds.pixel_array
    except Exception as exc:  # pydicom raises many types for corrupt files
        raise UserError(f"{path}: unreadable DICOM ({exc})") from None
    if pixels.ndim == 3 and pixels.shape[-1] in (3, 4):
        pixels = pixels[..., :3].mean(axis=-1)
    elif pixels.ndim != 2:
        raise UserError(f"{path}: DICOM has {pixels.ndim}-D pixel data; expected one 2-D frame")
    data = apply_modality_lut(pixels, ds)
    data = apply_voi_lut(data, ds, index=0)
    out = _to_uint8(data)
    if str(getattr(ds, "PhotometricInterpretation", "")).upper() == "MONOCHROME1":
        out = 255 - out
    return out


def load_image(path: Path) -> np.ndarray:
    """An image file as a 2-D uint8 array; a missing or corrupt file is a UserError."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: image not found")
    if path.suffix.lower() in DICOM_SUFFIXES:
        return load_dicom(path)
    try:
        with Image.open(path) as img:
            img.load()
            ImageOps.exif_transpose(img, in_place=True)  # no copy when already upright
            if img.mode in SIXTEEN_BIT_MODES:
                return _full_depth_to_uint8(np.asarray(img))
            if img.mode == "F":  # floats have no fixed range (not PNG or JPEG)
                return _to_uint8(np.asarray(img))
            return np.asarray(img.convert("L"))
    except (
        UnidentifiedImageError,
        Image.DecompressionBombError,  # a header claiming e.g. 50000 x 50000 pixels
        OSError,
        SyntaxError,
        ValueError,
    ) as exc:
        raise UserError(f"{path}: corrupt or unreadable image ({exc})") from None


def check_image(path: Path) -> None:
    """Raise UserError if `path` is not a readable image (cheap: header + decode)."""
    load_image(path)


def save_png(array: np.ndarray, path: Path) -> None:
    """Write a 2-D uint8 array as an 8-bit grayscale PNG."""
    Image.fromarray(np.asarray(array, dtype=np.uint8), mode="L").save(path, format="PNG")
