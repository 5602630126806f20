"""SynDigits: printed digits rendered offline, in the style of street-view house numbers.

Ganin & Lempitsky (2015) trained on rendered "Syn Numbers" as a stand-in for SVHN (Netzer et al.
2011); this module renders the same kind of images with nothing but installed files: the ~20
font faces bundled in matplotlib (DejaVu Sans / Serif / Mono, STIX General, Computer Modern) and
scikit-learn's two sample photographs. Two styles:

- ``"syn"``: a coloured digit on a 32x32 patch of a photo tinted towards a random colour, with
  neighbouring distractor digits cut by the frame (as house numbers are), a rotation of up to 12
  degrees, jitter of size and position, Gaussian blur (sigma up to 1 pixel) and pixel noise;
- ``"plain"``: a white digit on black, centred, rotated up to 8 degrees, no distractors, blur or
  noise.

Every image is drawn from its own generator seeded by (seed, style, index), so a call is
deterministic and the first k images do not depend on n. Results are cached on disk as uint8.
"""

from __future__ import annotations

import functools
import os

import numpy as np
import torch

from .._optional import require
from ._base import Dataset
from .cache import cache_dir as _cache_dir
from .cache import cache_key, load_cached, save_cached

__all__ = ["SYNDIGITS_FONTS", "SYNDIGITS_STYLES", "make_syndigits"]

# the faces bundled in matplotlib (mpl-data/fonts/ttf) that have the ten digit glyphs
SYNDIGITS_FONTS = (
    "DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSans-Oblique.ttf", "DejaVuSans-BoldOblique.ttf",
    "DejaVuSansMono.ttf", "DejaVuSansMono-Bold.ttf", "DejaVuSansMono-Oblique.ttf", "DejaVuSansMono-BoldOblique.ttf",
    "DejaVuSerif.ttf", "DejaVuSerif-Bold.ttf", "DejaVuSerif-Italic.ttf", "DejaVuSerif-BoldItalic.ttf",
    "STIXGeneral.ttf", "STIXGeneralBol.ttf", "STIXGeneralItalic.ttf", "STIXGeneralBolIta.ttf",
    "cmr10.ttf", "cmb10.ttf", "cmss10.ttf", "cmti10.ttf", "cmtt10.ttf", "cmmi10.ttf",
)  # fmt: skip
SYNDIGITS_STYLES = ("syn", "plain")
_VERSION = 1  # bump when the rendering changes: it is part of the cache key
_SUPER = 2  # render at twice the size, then downsample (anti-aliasing of rotated glyphs)


def _font_file(name: str) -> str:
    matplotlib = require("matplotlib", "data", "make_syndigits (it renders matplotlib's bundled fonts)")
    path = os.path.join(matplotlib.get_data_path(), "fonts", "ttf", name)
    if not os.path.exists(path):
        raise FileNotFoundError(f"matplotlib's bundled font {name!r} is missing at {path}")
    return path


@functools.lru_cache(maxsize=2048)
def _font(index: int, px: int):
    ImageFont = require("PIL.ImageFont", "data", "make_syndigits")
    return ImageFont.truetype(_font_file(SYNDIGITS_FONTS[index]), px)


@functools.lru_cache(maxsize=1)
def _photos() -> tuple[np.ndarray, ...]:
    from sklearn.datasets import load_sample_images

    return tuple(np.asarray(im, dtype=np.float32) / 255.0 for im in load_sample_images().images)


def _glyph_mask(rng: np.random.Generator, digit: int, font: int, side: int, style: str) -> np.ndarray:
    """(side, side) float32 in [0, 1]: the digit (and for 'syn' its neighbours) drawn at _SUPER
    times the size, rotated, downsampled."""
    from PIL import Image, ImageDraw

    big = side * _SUPER
    scale = rng.uniform(0.7, 1.05) if style == "syn" else rng.uniform(0.7, 0.95)
    px = round(big * float(scale))
    f = _font(font, px)
    width = big * 4
    canvas = Image.new("L", (width, big), 0)
    draw = ImageDraw.Draw(canvas)
    cx = width / 2 + rng.uniform(-0.08, 0.08) * big
    cy = big / 2 + rng.uniform(-0.06, 0.06) * big

    def put(ch: str, x_left_ink: float | None = None, x_right_ink: float | None = None) -> tuple[float, float]:
        x0, y0, x1, y1 = f.getbbox(ch)
        if x_left_ink is not None:
            ox = x_left_ink - x0
        elif x_right_ink is not None:
            ox = x_right_ink - x1
        else:
            ox = cx - (x0 + x1) / 2
        oy = cy - (y0 + y1) / 2
        draw.text((ox, oy), ch, fill=255, font=f)
        return ox + x0, ox + x1

    left, right = put(str(digit))
    if style == "syn":
        gap = rng.uniform(0.02, 0.12) * big
        if rng.random() < 0.6:
            put(str(int(rng.integers(10))), x_right_ink=left - gap)
        if rng.random() < 0.6:
            put(str(int(rng.integers(10))), x_left_ink=right + gap)
    angle = rng.uniform(-12, 12) if style == "syn" else rng.uniform(-8, 8)
    canvas = canvas.rotate(angle, resample=Image.BICUBIC, center=(width / 2, big / 2))
    x0 = (width - big) // 2
    canvas = canvas.crop((x0, 0, x0 + big, big)).resize((side, side), Image.BOX)
    return np.asarray(canvas, dtype=np.float32) / 255.0


def _background(rng: np.random.Generator, side: int) -> np.ndarray:
    """(side, side, 3) float32: a random patch of a sample photo, resized, tinted to a colour."""
    from PIL import Image

    photos = _photos()
    im = photos[int(rng.integers(len(photos)))]
    h, w = im.shape[:2]
    c = int(rng.integers(side, 4 * side))
    y, x = int(rng.integers(h - c)), int(rng.integers(w - c))
    patch = Image.fromarray((im[y : y + c, x : x + c] * 255).astype(np.uint8)).resize((side, side), Image.BILINEAR)
    patch = np.asarray(patch, dtype=np.float32) / 255.0
    t = rng.uniform(0.0, 0.7)
    return (1 - t) * patch + t * rng.uniform(0, 1, size=3).astype(np.float32)


def _luminance(rgb: np.ndarray) -> np.ndarray:
    return rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32)


def _render(rng: np.random.Generator, digit: int, style: str, side: int) -> tuple[np.ndarray, int]:
    """One image (side, side, 3) uint8 and its font index."""
    from scipy.ndimage import gaussian_filter

    font = int(rng.integers(len(SYNDIGITS_FONTS)))
    mask = _glyph_mask(rng, digit, font, side, style)[..., None]
    if style == "plain":
        img = mask.repeat(3, 2)
    else:
        bg = _background(rng, side)
        lum_bg = float(_luminance(bg).mean())
        for _ in range(20):  # a colour that stands out from the background
            col = rng.uniform(0, 1, size=3).astype(np.float32)
            if abs(float(_luminance(col)) - lum_bg) >= 0.3:
                break
        else:
            col = np.full(3, 0.0 if lum_bg > 0.5 else 1.0, dtype=np.float32)
        img = bg * (1 - mask) + col * mask
        sigma = rng.uniform(0.0, 1.0)
        if sigma > 0.2:
            img = gaussian_filter(img, sigma=(sigma, sigma, 0))
        img = img + rng.normal(0, rng.uniform(0.0, 0.06), size=img.shape).astype(np.float32)
    return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8), font


def make_syndigits(
    n: int,
    digits=range(10),
    style: str = "syn",
    seed: int = 0,
    *,
    size: int = 32,
    cache_dir: str | os.PathLike | None = None,
    cache: bool = True,
    return_meta: bool = False,
):
    """n printed digits, balanced over `digits` (image i shows digits[i % len(digits)]).

    style: 'syn' (coloured on photo patches, distractors, rotation, blur, noise) or 'plain'
    (white on black). Deterministic per (n, digits, style, seed, size). With cache=True the
    images are kept in `cache_dir` (default $TLKERNELS_CACHE or ~/.cache/tlkernels) as
    syndigits-<hash>.npz, written atomically, and read back on the next call.

    Returns a Dataset with X (n, 3, size, size) float32 in [0, 1] (quantised to 1/255) and y (n,)
    int64 the digits (not renumbered); with return_meta=True also {'font': (n,) int64 indices
    into SYNDIGITS_FONTS}.
    """
    if not (isinstance(n, (int, np.integer)) and n > 0):
        raise ValueError(f"n must be a positive int, got {n!r}")
    if style not in SYNDIGITS_STYLES:
        raise ValueError(f"style must be one of {SYNDIGITS_STYLES}, got {style!r}")
    digits = [int(d) for d in digits]
    if not digits or any(d < 0 or d > 9 for d in digits):
        raise ValueError(f"digits must be a non-empty collection of digits 0-9, got {digits!r}")
    if not (isinstance(size, int) and size >= 8):
        raise ValueError(f"size must be an int >= 8, got {size!r}")
    params = {
        "n": int(n),
        "digits": digits,
        "style": style,
        "seed": int(seed),
        "size": size,
        "v": _VERSION,
    }
    directory = key = None
    arrays = None
    if cache:
        directory, key = _cache_dir(cache_dir), cache_key("syndigits", params)
        arrays = load_cached(directory, key)
        if arrays is not None and arrays.get("X", np.empty(0)).shape != (
            n,
            size,
            size,
            3,
        ):
            arrays = None
    if arrays is None:
        X = np.empty((n, size, size, 3), dtype=np.uint8)
        y = np.empty(n, dtype=np.int64)
        font = np.empty(n, dtype=np.int64)
        style_id = SYNDIGITS_STYLES.index(style)
        for i in range(n):
            rng = np.random.default_rng([int(seed), style_id, i])
            y[i] = digits[i % len(digits)]
            X[i], font[i] = _render(rng, int(y[i]), style, size)
        arrays = {"X": X, "y": y, "font": font}
        if cache:
            save_cached(directory, key, arrays)
    data = Dataset(
        torch.from_numpy(arrays["X"]).permute(0, 3, 1, 2).float().div_(255.0).contiguous(),
        torch.from_numpy(arrays["y"].astype(np.int64)),
    )
    return (data, {"font": torch.from_numpy(arrays["font"].astype(np.int64))}) if return_meta else data
