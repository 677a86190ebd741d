"""Image files read right: every PIL mode to 8-bit RGB with its values scaled, or a named refusal.

``PIL.Image.convert("RGB")`` clips wide pixel values instead of scaling them: a 16-bit greyscale PNG (mode
``I;16``, values 0..65535) comes out as 0 or 255, pure black and white. ``to_rgb`` scales 16-bit values to
8 bits (``v / 257``, so 65535 -> 255 and 32896 -> 128), and refuses what has no known range (32-bit float
``F``, 32-bit integers beyond 16 bits) with an ``ImageModeError`` naming the file and the mode.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from .cli_args import UserError

#: 16-bit greyscale modes (PNG, TIFF): scaled to 8 bits
SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N")
#: the largest 16-bit value, and the step from 16 to 8 bits (65535 / 255)
MAX_16, PER_8 = 65535, 257


class ImageModeError(UserError, ValueError):
    """An image whose pixels have no known 8-bit meaning (a float or wide integer mode)."""


def to_rgb(image: Image.Image, where: str | Path = "image") -> Image.Image:
    """``image`` as an 8-bit RGB image: 16-bit greyscale scaled to 8 bits (not clipped), any 8-bit mode converted.

    Mode ``I`` (32-bit integers, how older PIL opens a 16-bit PNG) is scaled as 16-bit when its values lie in
    0..65535. ``where`` names the file in the error.

    Raises:
        ImageModeError: mode ``F`` (floats, no known range), or ``I`` with values outside 0..65535.
    """
    mode = image.mode
    if mode in SIXTEEN_BIT_MODES or mode == "I":
        values = np.asarray(image, dtype=np.int64)
        low, high = (int(values.min()), int(values.max())) if values.size else (0, 0)
        if low < 0 or high > MAX_16:
            raise ImageModeError(
                f"{where}: 32-bit integer pixels (PIL mode {mode}) with values {low}..{high}, outside 16 bits; "
                "save it as an 8-bit or 16-bit PNG or JPEG")
        grey = np.rint(values / PER_8).astype(np.uint8)
        return Image.fromarray(grey).convert("RGB")
    if mode == "F":
        raise ImageModeError(f"{where}: 32-bit float pixels (PIL mode F), whose range is not known; save it as an "
                             "8-bit or 16-bit PNG or JPEG")
    return image if mode == "RGB" else image.convert("RGB")


def open_rgb(path: str | Path) -> Image.Image:
    """The file at ``path`` decoded in full as an 8-bit RGB image (``to_rgb``)."""
    with Image.open(path) as image:
        image.load()
        return to_rgb(image, path)
