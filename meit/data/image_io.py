"""ECG image input/output: robust loading, conversion to tensors, and scan/photo artefacts.

`load_ecg_image` accepts what people actually have (RGBA screenshots, greyscale scans,
palette GIFs, CMYK PDFs exported as TIFF, 16-bit scans, any size), converts it to an RGB
float tensor with a logged notice naming the file and the change, and fails with an
`ImageError` naming the file when it is not a readable image.

The artefacts (registry `ARTEFACTS`) degrade a rendered page like a scan or a photo; each
takes a strength in [0, 1] and a seeded generator, so the same seed gives the same image.
"""

from __future__ import annotations

import io
import logging
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageChops, ImageFilter

from meit.util.registry import Registry

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
"""File name endings read as ECG images (by `meit.report` and the image branch); anything else is a WFDB record."""

logger = logging.getLogger(__name__)


class ImageError(ValueError):
    """An image file that cannot be used; `str()` is "{path}: {problem}".

    Args:
        path: the file.
        problem: what is wrong, in words.
    """

    def __init__(self, path: str | Path, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = Path(path)
        self.problem = problem


# ----------------------------------------------------------------------------------- loading


def load_ecg_image(path: str | Path, size: tuple[int, int] | None = None, quiet: bool = False) -> torch.Tensor:
    """Loads an ECG image as a float tensor (3, H, W) in [0, 1].

    Modes other than RGB (RGBA/LA/P with transparency are composited on white; L, 1, CMYK,
    16-bit and float greyscale) are converted, and an image not of `size` is resized, each
    with a logged notice naming the file and the change.

    Args:
        path: the image file (PNG, JPEG, TIFF, BMP, GIF, WebP, ... whatever PIL reads).
        size: (H, W) of the result; None keeps the file's size.
        quiet: log the notices at DEBUG instead of WARNING (for dataset loops over known files).

    Raises:
        FileNotFoundError: the file does not exist (the message names it).
        ImageError: the file is not an image, is truncated or corrupt, or is too large to decode.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such image file")
    try:
        with Image.open(path) as img:
            img.load()
            rgb = to_rgb(img, name=str(path), quiet=quiet)
    except Image.DecompressionBombError as err:
        raise ImageError(path, f"image too large to decode safely ({err})") from err
    except (OSError, SyntaxError, ValueError) as err:  # PIL: UnidentifiedImageError, truncated data, bad headers
        raise ImageError(path, f"not a readable image ({type(err).__name__}: {err})") from err
    return pil_to_tensor(rgb, size, name=str(path), quiet=quiet)


def to_rgb(img: Image.Image, name: str = "<image>", quiet: bool = False) -> Image.Image:
    """Converts any PIL mode to RGB, logging the conversion (transparent areas become white paper)."""
    if img.mode == "RGB":
        return img
    mode = img.mode
    if mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        out = Image.new("RGB", rgba.size, (255, 255, 255))
        out.paste(rgba, mask=rgba.getchannel("A"))
    elif img.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        out = _high_depth_to_rgb(img)
    else:  # L, 1, P, CMYK, YCbCr, LAB, HSV
        out = img.convert("RGB")
    _notice(name, f"converted mode {mode} to RGB", quiet)
    return out


def _high_depth_to_rgb(img: Image.Image) -> Image.Image:
    """16-bit / 32-bit / float greyscale, scaled by its own range (min..max -> 0..255)."""
    arr = np.asarray(img, dtype=np.float64)
    lo, hi = float(np.nanmin(arr)), float(np.nanmax(arr))
    scaled = np.zeros_like(arr) if hi <= lo else (arr - lo) / (hi - lo) * 255.0
    return Image.fromarray(np.nan_to_num(scaled).round().astype(np.uint8), mode="L").convert("RGB")


def pil_to_tensor(img: Image.Image, size: tuple[int, int] | None = None, name: str = "<image>",
                  quiet: bool = True) -> torch.Tensor:
    """An RGB PIL image as a float (3, H, W) tensor in [0, 1], resized to `size` = (H, W) if given."""
    img = to_rgb(img, name=name, quiet=quiet)
    if size is not None and (img.height, img.width) != tuple(size):
        _notice(name, f"resized from {img.height}x{img.width} to {size[0]}x{size[1]} (HxW)", quiet)
        img = img.resize((size[1], size[0]), Image.Resampling.BILINEAR, reducing_gap=2.0)
    arr = np.asarray(img, dtype=np.uint8)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).float().div_(255.0)


def _notice(name: str, change: str, quiet: bool) -> None:
    logger.log(logging.DEBUG if quiet else logging.WARNING, "%s: %s", name, change)


# --------------------------------------------------------------------------------- artefacts

Artefact = Callable[[Image.Image, float, np.random.Generator, float], Image.Image]
ARTEFACTS: Registry[Artefact] = Registry("artefact")

# The physical order artefacts are applied in: the paper first, then the camera, then the file.
ARTEFACT_ORDER = ("crease", "wrinkle", "colour_temperature", "perspective", "rotation", "blur", "noise", "jpeg",
                  "grayscale")


def apply_artefacts(img: Image.Image, artefacts: Sequence[tuple[str, float]], seed: int, scale: float = 1.0,
                    random_strength: bool = False) -> Image.Image:
    """Applies (name, strength) artefacts in `ARTEFACT_ORDER`; each gets its own generator from (seed, name).

    Args:
        img: an RGB page.
        artefacts: (name, strength) pairs, strength in [0, 1]; strength 0 leaves the image alone.
        seed: the image's seed.
        scale: pixel scale relative to 100 dpi (blur radii and fold widths grow with it).
        random_strength: use a strength drawn uniformly in [0, strength] (seeded) instead.
    """
    given = dict(artefacts)
    for name in given:
        ARTEFACTS.get(name)  # unknown names fail listing the choices
    for name in ARTEFACT_ORDER:
        if name not in given:
            continue
        rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
        strength = given[name] * rng.random() if random_strength else given[name]
        if strength > 0:
            img = ARTEFACTS.get(name)(img, strength, rng, scale)
    return img


@ARTEFACTS.register("rotation")
def rotation(img: Image.Image, strength: float, rng: np.random.Generator, scale: float) -> Image.Image:
    """Rotates the page by up to 4 degrees (times strength), filling corners with paper colour."""
    angle = 4.0 * strength * rng.uniform(0.3, 1.0) * rng.choice([-1.0, 1.0])
    return img.rotate(angle, resample=Image.Resampling.BILINEAR, fillcolor=img.getpixel((0, 0)))


@ARTEFACTS.register("noise")
def noise(img: Image.Image, strength: float, rng: np.random.Generator, scale: float) -> Image.Image:
    """Additive Gaussian sensor noise (luminance, the same on all channels), sigma up to 20 grey levels."""
    arr = np.asarray(img).astype(np.int16)
    grain = rng.standard_normal(arr.shape[:2], dtype=np.float32) * (20.0 * strength)
    return Image.fromarray(np.clip(arr + np.rint(grain).astype(np.int16)[..., None], 0, 255).astype(np.uint8))


@ARTEFACTS.register("blur")
def blur(img: Image.Image, strength: float, rng: np.random.Generator, scale: float) -> Image.Image:
    """Gaussian blur (out-of-focus scan), radius up to 1.5 px at 100 dpi."""
    return img.filter(ImageFilter.GaussianBlur(radius=1.5 * strength * scale * rng.uniform(0.7, 1.0)))


@ARTEFACTS.register("crease")
def crease(img: Image.Image, strength: float, rng: np.random.Generator, scale: float) -> Image.Image:
    """One to three straight folds (horizontal or vertical): dark shading bands across the page."""
    w, h = img.size
    rows, cols = np.ones(h, dtype=np.float32), np.ones(w, dtype=np.float32)
    for _ in range(int(rng.integers(1, 4))):
        profile, size = (rows, h) if rng.random() < 0.5 else (cols, w)
        centre = size * rng.choice([1 / 3, 1 / 2, 2 / 3]) + rng.normal(0, 0.03 * size)
        d = (np.arange(size) - centre) / (rng.uniform(3.0, 8.0) * scale)
        profile *= 1.0 - 0.35 * strength * (np.exp(-(d**2)) + 0.4 * np.exp(-((d - 2.0) ** 2) / 4.0))
    return _shade(img, rows[:, None] * cols[None, :])


@ARTEFACTS.register("wrinkle")
def wrinkle(img: Image.Image, strength: float, rng: np.random.Generator, scale: float) -> Image.Image:
    """Crumpled paper: smooth random shading at two scales plus a few thin random-direction ridges."""
    w, h = img.size
    lw, lh = max(8, w // 4), max(8, h // 4)  # the field is smooth: compute it at quarter resolution
    field = np.zeros((lh, lw), dtype=np.float32)
    for cells in (4, 14):
        coarse = rng.standard_normal((cells, max(2, round(cells * w / h)))).astype(np.float32)
        field += np.asarray(Image.fromarray(coarse, mode="F").resize((lw, lh), Image.Resampling.BICUBIC)) / cells**0.5
    yy, xx = np.mgrid[0:lh, 0:lw].astype(np.float32)
    for _ in range(int(rng.integers(2, 6))):
        theta, offset = rng.uniform(0, np.pi), rng.uniform(-0.5, 0.5) * (lw + lh) / 2
        dist = (xx - lw / 2) * np.cos(theta) + (yy - lh / 2) * np.sin(theta) - offset
        field -= 1.5 * np.exp(-((dist / max(0.75, 0.5 * scale)) ** 2))
    field = (field - field.max()) / max(float(field.max() - field.min()), 1e-6)  # in [-1, 0]
    factor = Image.fromarray(1.0 + 0.3 * strength * field, mode="F").resize((w, h), Image.Resampling.BILINEAR)
    return _shade(img, np.asarray(factor))


def _shade(img: Image.Image, factor: np.ndarray) -> Image.Image:
    """Multiplies every channel by `factor` (H, W) in [0, 1]."""
    mask = Image.fromarray(np.clip(factor * 255.0, 0, 255).astype(np.uint8), mode="L")
    return ImageChops.multiply(img, Image.merge("RGB", (mask, mask, mask)))


@ARTEFACTS.register("colour_temperature")
def colour_temperature(img: Image.Image, strength: float, rng: np.random.Generator, scale: float) -> Image.Image:
    """Warm (yellowish) or cool (bluish) white balance: per-channel gains up to 22 %."""
    shift = strength * rng.uniform(0.5, 1.0) * rng.choice([-1.0, 1.0])
    gains = (1.0, 1.0 - 0.06 * abs(shift), 1.0 - 0.22 * shift) if shift > 0 else (1.0 + 0.22 * shift, 1.0, 1.0)
    lut = [min(255, round(v * g)) for g in gains for v in range(256)]
    return img.point(lut)


@ARTEFACTS.register("jpeg")
def jpeg(img: Image.Image, strength: float, rng: np.random.Generator, scale: float) -> Image.Image:
    """JPEG round trip at quality 95 (strength ~0) down to 10 (strength 1)."""
    buffer = io.BytesIO()
    img.save(buffer, format="JPEG", quality=int(round(95 - 85 * strength)))
    buffer.seek(0)
    with Image.open(buffer) as out:
        return out.convert("RGB")


@ARTEFACTS.register("perspective")
def perspective(img: Image.Image, strength: float, rng: np.random.Generator, scale: float) -> Image.Image:
    """A photographed page: each corner moves inwards by up to 6 % of the size, a desk shows around it."""
    w, h = img.size
    src = np.array([(0, 0), (w, 0), (w, h), (0, h)], dtype=np.float64)
    inward = np.array([(1, 1), (-1, 1), (-1, -1), (1, -1)], dtype=np.float64)
    dst = src + inward * rng.uniform(0.2, 1.0, size=(4, 2)) * 0.06 * strength * np.array([w, h])
    desk = tuple(int(v) for v in rng.integers(50, 160) + np.array([12, 0, -12]) * rng.uniform(0, 1))
    coeffs = _perspective_coeffs(dst, src)
    return img.transform((w, h), Image.Transform.PERSPECTIVE, coeffs, Image.Resampling.BILINEAR, fillcolor=desk)


def _perspective_coeffs(out_pts: np.ndarray, in_pts: np.ndarray) -> tuple[float, ...]:
    """PIL PERSPECTIVE coefficients mapping output points to input points (4 correspondences)."""
    rows, rhs = [], []
    for (x, y), (u, v) in zip(out_pts, in_pts, strict=True):
        rows.append([x, y, 1, 0, 0, 0, -u * x, -u * y])
        rows.append([0, 0, 0, x, y, 1, -v * x, -v * y])
        rhs.extend([u, v])
    return tuple(np.linalg.solve(np.array(rows), np.array(rhs)).tolist())


@ARTEFACTS.register("grayscale")
def grayscale(img: Image.Image, strength: float, rng: np.random.Generator, scale: float) -> Image.Image:
    """Blends towards the luminance image (strength 1: fully grey)."""
    return Image.blend(img, img.convert("L").convert("RGB"), strength)
