"""Paper-like 12-lead ECG images (PULSE / ECGInstruct style) from (12, T) signals in mV.

A page shows 3 rows x 4 columns of 2.5 s windows (I, aVR, V1, V4 / II, aVL, V2, V5 /
III, aVF, V3, V6; column c shows t in [2.5c, 2.5(c+1)) as real printers do) and a full
10 s lead-II rhythm strip, at 25 mm/s and 10 mm/mV on a 1 mm / 5 mm grid, with a 1 mV,
200 ms calibration pulse at the start of each row and lead labels. Drawing uses numpy and
PIL only: the grid is a cached palette image, the traces are drawn supersampled into an
ink mask (anti-aliasing) and pasted in one go. Optional, seeded artefacts imitate scans and
photos (registry `ARTEFACTS`, defined in `meit.data.image_io`). `digitise` samples the trace
back through the same `PageLayout`, so tests check that the page draws what it claims.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import math
import multiprocessing
import os
import re
import time
import zlib
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageChops, ImageDraw, ImageFont

from meit.data.image_io import ARTEFACT_ORDER, ARTEFACTS, apply_artefacts, pil_to_tensor
from meit.data.records import STANDARD_LEADS
from meit.data.sources import open_source

logger = logging.getLogger(__name__)

ROW_LEADS = (("I", "aVR", "V1", "V4"), ("II", "aVL", "V2", "V5"), ("III", "aVF", "V3", "V6"))
RHYTHM_LEAD = "II"
MM_PER_S = 25.0
WINDOW_S = 2.5
PAGE_S = 10.0
CALIBRATION_MM = 10.0  # width of the calibration-pulse area left of the traces
LETTER_LANDSCAPE_MM = (279.4, 215.9)
_INCH_MM = 25.4
SignalTransform = Callable[[np.ndarray, np.random.Generator], np.ndarray]


@dataclasses.dataclass(frozen=True)
class RenderConfig:
    """How a page is drawn. Frozen and hashable, so layouts and grids are cached per config.

    Attributes:
        dpi: resolution in pixels per inch; 100 gives 1100x850 px for letter landscape.
        page_size_mm: page (width, height) in mm; must hold 10 s at 25 mm/s plus margins.
        mm_per_mv: vertical gain (10 mm/mV is the standard).
        grid_colour: "red", "random" (a random hue per image, seeded) or an (r, g, b) tuple
            for the major lines; minor lines are the same hue, lighter.
        black_and_white: grey grid and black ink on white paper (a photocopy-like page).
        trace_width_mm: thickness of the ECG trace.
        supersample: traces are drawn at this multiple of the resolution and reduced
            (anti-aliasing); 1 disables it.
        show_labels: print the lead names on the page.
        separators: draw short vertical ticks between the 2.5 s columns.
        clip_traces: clip each trace to its row band; by default large deflections run into the
            neighbouring rows, as on real printouts (no amplitude is lost).
        artefacts: (name, strength) pairs, strength in [0, 1]; also accepts a dict or names
            like "blur" / "blur=0.3" (strength `default_strength`). Applied in the physical
            order `ARTEFACT_ORDER` whatever the order given.
        default_strength: strength of artefacts given by name only.
        random_strength: draw each artefact's strength per image uniformly in [0, strength]
            (augmentation) instead of using it as is.
    """

    dpi: int = 100
    page_size_mm: tuple[float, float] = LETTER_LANDSCAPE_MM
    mm_per_mv: float = 10.0
    grid_colour: str | tuple[int, int, int] = "red"
    black_and_white: bool = False
    trace_width_mm: float = 0.35
    supersample: int = 2
    show_labels: bool = True
    separators: bool = True
    clip_traces: bool = False
    artefacts: Any = ()
    default_strength: float = 0.5
    random_strength: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "artefacts", parse_artefacts(self.artefacts, self.default_strength))
        object.__setattr__(self, "page_size_mm", tuple(float(v) for v in self.page_size_mm))
        if isinstance(self.grid_colour, list):
            object.__setattr__(self, "grid_colour", tuple(self.grid_colour))
        if not isinstance(self.grid_colour, tuple) and self.grid_colour not in ("red", "random"):
            raise ValueError(f"grid_colour must be 'red', 'random' or an (r, g, b) tuple, got {self.grid_colour!r}")
        if self.dpi < 30 or self.supersample < 1 or self.mm_per_mv <= 0:
            raise ValueError(f"need dpi >= 30, supersample >= 1, mm_per_mv > 0; got {self}")


def parse_artefacts(spec: Any, default_strength: float = 0.5) -> tuple[tuple[str, float], ...]:
    """Normalises an artefact spec to ((name, strength), ...) in the physical order.

    Args:
        spec: a dict name -> strength, a sequence of names / "name=strength" strings /
            (name, strength) pairs, or a single such string.
        default_strength: the strength of names given without one.

    Raises:
        ValueError: an unknown name (listing the choices) or a strength outside [0, 1].
    """
    items = spec.items() if isinstance(spec, dict) else ([spec] if isinstance(spec, str) else list(spec))
    strengths: dict[str, float] = {}
    for item in items:
        if isinstance(item, str):
            name, _, value = item.partition("=")
            name, strength = name.strip(), float(value) if value else default_strength
        else:
            name, strength = item[0], float(item[1])
        ARTEFACTS.get(name)  # fails listing the choices
        if not 0.0 <= strength <= 1.0:
            raise ValueError(f"artefact {name!r}: strength must be in [0, 1], got {strength}")
        strengths[name] = strength
    return tuple((name, strengths[name]) for name in ARTEFACT_ORDER if name in strengths)


@dataclasses.dataclass(frozen=True)
class Panel:
    """One trace window on the page, in pixel coordinates (pixel (i, j) covers [i, i+1) x [j, j+1)).

    Attributes:
        name: the lead name, or "II_rhythm" for the rhythm strip.
        lead: index of the lead in `STANDARD_LEADS`.
        t0: time (s) drawn at x0; t1: the window's end (exclusive).
        x0: x of t0; x1: x of t1.
        top: upper edge of the row band; bottom: its lower edge (bands do not overlap).
        baseline: y of 0 mV.
        label_box: (left, top, right, bottom) pixels reserved for the lead label.
    """

    name: str
    lead: int
    t0: float
    t1: float
    x0: float
    x1: float
    top: float
    bottom: float
    baseline: float
    label_box: tuple[int, int, int, int]


@dataclasses.dataclass(frozen=True)
class PageLayout:
    """Geometry of a page: size, scale and the 13 panels (12 leads + the rhythm strip).

    Attributes:
        width: page width in px; height: page height in px.
        px_per_mm: pixels per mm (dpi / 25.4).
        mm_per_mv: vertical gain.
        panels: the 12 lead panels (row by row) then the rhythm strip.
        calibration_x: x where each row's calibration pulse starts; the pulse sits on the row's baseline.
        row_baselines: y of 0 mV for each of the 4 rows.
        grid_origin: (x, y) of one major grid crossing (trace start, first baseline).
    """

    width: int
    height: int
    px_per_mm: float
    mm_per_mv: float
    panels: tuple[Panel, ...]
    calibration_x: float
    row_baselines: tuple[float, ...]
    grid_origin: tuple[float, float]

    @property
    def px_per_s(self) -> float:
        """Horizontal scale: pixels per second at 25 mm/s."""
        return MM_PER_S * self.px_per_mm

    @property
    def px_per_mv(self) -> float:
        """Vertical scale: pixels per mV."""
        return self.mm_per_mv * self.px_per_mm

    def panel(self, name: str) -> Panel:
        """The panel called `name` (a lead name or "II_rhythm")."""
        return next(p for p in self.panels if p.name == name)


def page_layout(cfg: RenderConfig | None = None) -> PageLayout:
    """The page geometry for `cfg` (cached): rows 50 mm apart (5 mm multiples), baselines on major lines.

    Raises:
        ValueError: the page cannot hold 10 s at 25 mm/s plus the calibration area, or 4 rows.
    """
    return _page_layout(cfg or RenderConfig())


@functools.lru_cache(maxsize=16)
def _page_layout(cfg: RenderConfig) -> PageLayout:
    page_w_mm, page_h_mm = cfg.page_size_mm
    trace_mm = PAGE_S * MM_PER_S
    if page_w_mm < trace_mm + CALIBRATION_MM + 4.0:
        raise ValueError(f"page width {page_w_mm} mm cannot hold {trace_mm + CALIBRATION_MM + 4} mm of traces")
    top_mm, bottom_mm = 10.0, 5.0
    pitch_mm = math.floor((page_h_mm - top_mm - bottom_mm) / 4 / 5.0) * 5.0
    if pitch_mm < 20.0:
        raise ValueError(f"page height {page_h_mm} mm leaves {pitch_mm} mm per row; need at least 20 mm")
    ppm = cfg.dpi / _INCH_MM
    x0_mm = (page_w_mm - trace_mm - CALIBRATION_MM) / 2 + CALIBRATION_MM
    panels = []
    bands = [(top_mm + r * pitch_mm, top_mm + (r + 1) * pitch_mm) for r in range(4)]
    baselines = [top + 0.6 * pitch_mm for top, _ in bands]
    rows = [*(list(enumerate(row)) for row in ROW_LEADS), [(0, "II_rhythm")]]
    for r, row in enumerate(rows):
        for c, name in row:
            t0 = c * WINDOW_S
            t1 = PAGE_S if name == "II_rhythm" else t0 + WINDOW_S
            x0 = (x0_mm + t0 * MM_PER_S) * ppm
            label = (round(x0 + 1.0 * ppm), round((bands[r][0] + 1.0) * ppm), round(x0 + 14 * ppm),
                     round((bands[r][0] + 6.0) * ppm))
            panels.append(Panel(name=name, lead=STANDARD_LEADS.index(name.removesuffix("_rhythm")), t0=t0, t1=t1,
                                x0=x0, x1=(x0_mm + t1 * MM_PER_S) * ppm, top=bands[r][0] * ppm,
                                bottom=bands[r][1] * ppm, baseline=baselines[r] * ppm, label_box=label))
    return PageLayout(width=round(page_w_mm * ppm), height=round(page_h_mm * ppm), px_per_mm=ppm,
                      mm_per_mv=cfg.mm_per_mv, panels=tuple(panels), calibration_x=(x0_mm - CALIBRATION_MM) * ppm,
                      row_baselines=tuple(b * ppm for b in baselines), grid_origin=(x0_mm * ppm, baselines[0] * ppm))


# ---------------------------------------------------------------------------------------- drawing


@functools.lru_cache(maxsize=16)
def _grid_indices(cfg: RenderConfig) -> Image.Image:
    """A palette image: 0 paper, 1 minor line, 2 major line (major wins at crossings)."""
    layout = page_layout(cfg)
    ppm, (ox, oy) = layout.px_per_mm, layout.grid_origin
    idx = np.zeros((layout.height, layout.width), dtype=np.uint8)
    major_w = max(1, round(0.2 * ppm))
    for axis, origin, size in ((1, ox, layout.width), (0, oy, layout.height)):
        k = np.arange(math.floor(-origin / ppm), math.ceil((size - origin) / ppm) + 1)
        pos = np.floor(origin + k * ppm).astype(int)
        for value, sel, width in ((1, k % 5 != 0, 1), (2, k % 5 == 0, major_w)):
            cols = (pos[sel][:, None] + np.arange(width)[None, :]).ravel()
            cols = cols[(cols >= 0) & (cols < size)]
            if axis == 1:
                idx[:, cols] = np.maximum(idx[:, cols], value)
            else:
                idx[cols, :] = np.maximum(idx[cols, :], value)
    return Image.fromarray(idx, mode="P")


def _page_colours(cfg: RenderConfig, rng: np.random.Generator) -> tuple[list[tuple[int, int, int]], tuple[int, ...]]:
    """(paper, minor, major) colours and the ink colour for one image."""
    if cfg.black_and_white:
        return [(255, 255, 255), (228, 228, 228), (202, 202, 202)], (0, 0, 0)
    paper = (255, 255, 255)
    if cfg.grid_colour == "red":
        major = (235, 120, 120)
    elif cfg.grid_colour == "random":
        paper = tuple(int(v) for v in 255 - rng.integers(0, 12, size=3))
        hue = rng.random()
        major = _hue_colour(hue, lightness=0.45 + 0.2 * rng.random())
    else:
        major = tuple(int(v) for v in cfg.grid_colour)
    minor = tuple(round(p + 0.55 * (m - p)) for p, m in zip(paper, major, strict=True))
    return [paper, minor, major], (0, 0, 0)


def _hue_colour(hue: float, lightness: float) -> tuple[int, int, int]:
    """A saturated colour of `hue` in [0, 1), blended towards white by `lightness`."""
    rgb = np.clip(np.abs(((hue * 6 + np.array([0.0, 4.0, 2.0])) % 6) - 3) - 1, 0, 1)
    return tuple(int(round(255 * (lightness + (1 - lightness) * c))) for c in rgb)


@functools.lru_cache(maxsize=16)
def _static_ink(cfg: RenderConfig) -> Image.Image:
    """The ink that does not depend on the signal: calibration pulses, labels, separators (L mask)."""
    layout, s = page_layout(cfg), cfg.supersample
    ppm = layout.px_per_mm
    mask = Image.new("L", (layout.width * s, layout.height * s), 0)
    draw = ImageDraw.Draw(mask)
    width = _trace_px(cfg, ppm)
    pulse_mv_px = cfg.mm_per_mv * ppm
    for base in layout.row_baselines:
        x = layout.calibration_x + np.array([0, 2.5, 2.5, 7.5, 7.5, 10.0]) * ppm
        y = base - np.array([0, 0, 1, 1, 0, 0]) * pulse_mv_px
        draw.line(_coords(x, y, s), fill=255, width=width)
    if cfg.show_labels:
        font = ImageFont.load_default(size=max(6, round(3.5 * ppm * s)))
        for p in layout.panels:
            draw.text((p.label_box[0] * s, p.label_box[1] * s), p.name.replace("_rhythm", ""), fill=255, font=font)
    if cfg.separators:
        for p in layout.panels:
            if p.t0 > 0:
                x = np.array([p.x0, p.x0])
                draw.line(_coords(x, p.baseline + np.array([-2.5, 2.5]) * ppm, s), fill=255, width=width)
    return mask.reduce(s) if s > 1 else mask


def _trace_px(cfg: RenderConfig, ppm: float) -> int:
    """Trace width in supersampled pixels; at least one full output pixel is always solid ink."""
    s = cfg.supersample
    return max(s + 1 if s > 1 else 1, round(cfg.trace_width_mm * ppm * s))


def _coords(x: np.ndarray, y: np.ndarray, s: int) -> list[float]:
    """Continuous page coordinates -> PIL coordinates at supersample `s` (PIL inks pixel floor(v) for v)."""
    return np.column_stack((x * s, y * s)).ravel().tolist()


def _draw_traces(draw: ImageDraw.ImageDraw, signal: np.ndarray, fs: float, layout: PageLayout, s: int,
                 width: int, clip: bool) -> None:
    """Draws every panel's window of `signal`, broken at NaN; clipped to the row band if `clip`, else to the page."""
    n = signal.shape[1]
    for p in layout.panels:
        i0, i1 = math.ceil(p.t0 * fs - 1e-9), min(n, math.ceil(p.t1 * fs - 1e-9))
        if i1 - i0 < 2:
            continue
        t = np.arange(i0, i1) / fs
        x = p.x0 + (t - p.t0) * layout.px_per_s
        low, high = (p.top, p.bottom - 1) if clip else (-width, layout.height + width)
        y = np.clip(p.baseline - signal[p.lead, i0:i1] * layout.px_per_mv, low, high)
        finite = np.isfinite(y)
        if finite.all():
            draw.line(_coords(x, y, s), fill=255, width=width)
            continue
        edges = np.flatnonzero(np.diff(np.concatenate(([0], finite.astype(np.int8), [0]))))
        for a, b in zip(edges[::2], edges[1::2], strict=True):
            if b - a >= 2:
                draw.line(_coords(x[a:b], y[a:b], s), fill=255, width=width)


def _check_signal(signal: np.ndarray, fs: float) -> np.ndarray:
    signal = np.asarray(signal, dtype=np.float32)
    if signal.ndim != 2 or signal.shape[0] != len(STANDARD_LEADS):
        raise ValueError(f"expected a (12, T) signal in the order {', '.join(STANDARD_LEADS)}; "
                         f"got shape {signal.shape}")
    if not fs > 0:
        raise ValueError(f"sampling rate must be positive, got {fs}")
    return signal


def render_pil(signal: np.ndarray, fs: float, cfg: RenderConfig | None = None, seed: int = 0) -> Image.Image:
    """Renders a (12, T) signal in mV sampled at `fs` Hz as an RGB PIL image (the first 10 s are shown).

    Args:
        signal: float array (12, T), leads in `STANDARD_LEADS` order; NaN samples leave gaps.
        fs: sampling rate in Hz.
        cfg: page and artefact settings (default: clean 1100x850 page at 100 dpi).
        seed: seeds the random grid colour and the artefacts; same seed, same image.
    """
    cfg = cfg or RenderConfig()
    signal = _check_signal(signal, fs)
    layout, s = page_layout(cfg), cfg.supersample
    rng = np.random.default_rng([seed, 0x9E3779B9])
    (paper, minor, major), ink = _page_colours(cfg, rng)
    page = _grid_indices(cfg).copy()
    page.putpalette([*paper, *minor, *major])
    page = page.convert("RGB")
    mask = Image.new("L", (layout.width * s, layout.height * s), 0)
    _draw_traces(ImageDraw.Draw(mask), signal, fs, layout, s, _trace_px(cfg, layout.px_per_mm),
                 cfg.clip_traces)
    mask = ImageChops.lighter(mask.reduce(s) if s > 1 else mask, _static_ink(cfg))
    page.paste(ink, mask=mask)
    return apply_artefacts(page, cfg.artefacts, seed, scale=cfg.dpi / 100.0, random_strength=cfg.random_strength)


def render(signal: np.ndarray, fs: float, cfg: RenderConfig | None = None, seed: int = 0) -> np.ndarray:
    """Like `render_pil`, as a uint8 (H, W, 3) array."""
    return np.asarray(render_pil(signal, fs, cfg, seed))


def item_seed(seed: int, key: str | int) -> int:
    """A stable per-item seed from a run seed and an item key (record id or batch index)."""
    return zlib.crc32(f"{seed}:{key}".encode()) & 0x7FFFFFFF


def render_batch(signals: np.ndarray, fs: float, cfg: RenderConfig | None = None, seed: int = 0) -> np.ndarray:
    """Renders a (B, 12, T) batch (array or tensor) to uint8 (B, H, W, 3); item b uses `item_seed(seed, b)`."""
    signals = signals.detach().cpu().numpy() if hasattr(signals, "detach") else np.asarray(signals)
    if signals.ndim != 3:
        raise ValueError(f"expected a (B, 12, T) batch, got shape {signals.shape}")
    return np.stack([render(sig, fs, cfg, item_seed(seed, b)) for b, sig in enumerate(signals)])


class ImageTransform:
    """Dataset transform: renders an item's ECG on the fly as a float (3, H, W) tensor in [0, 1].

    Args:
        fs: sampling rate of the signals.
        cfg: render settings.
        size: (H, W) of the returned tensor; None keeps the page size.
        seed: run seed; an item's image is seeded by (seed, item id) when the item is a dict.
        signal_transform: applied to the (12, T) numpy signal before rendering (e.g. SNR noise),
            called as `signal_transform(signal, rng)` with a generator seeded like the image.
    """

    def __init__(self, fs: float, cfg: RenderConfig | None = None, size: tuple[int, int] | None = None,
                 seed: int = 0, signal_transform: SignalTransform | None = None) -> None:
        self.fs, self.cfg, self.size, self.seed = fs, cfg or RenderConfig(), size, seed
        self.signal_transform = signal_transform
        self._count = 0

    def __call__(self, item: Any) -> Any:
        """Maps a dict item {"id", "ecg", ...} to a copy with "image" added, or a bare signal to its image."""
        if isinstance(item, dict):
            return {**item, "image": self.image(item["ecg"], item_seed(self.seed, item["id"]))}
        self._count += 1
        return self.image(item, item_seed(self.seed, self._count))

    def image(self, ecg: Any, seed: int) -> Any:
        """The float (3, H, W) image tensor of one (12, T) signal."""
        signal = ecg.detach().cpu().numpy() if hasattr(ecg, "detach") else np.asarray(ecg)
        if self.signal_transform is not None:
            signal = self.signal_transform(signal, np.random.default_rng(seed))
        return pil_to_tensor(render_pil(signal, self.fs, self.cfg, seed), self.size)


# ------------------------------------------------------------------------------- digitising


def digitise(image: Image.Image | np.ndarray, layout: PageLayout, threshold: float = 60.0,
             edge_px: int = 2) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Samples the trace back from a clean page: per pixel column, the darkness-weighted centroid of the ink.

    Ink is neutral and dark while the grid is coloured or light, so a pixel's darkness is
    255 - max(R, G, B); pixels darker than `threshold` count (the grid, <= 55 in every colour
    mode, does not). Lead labels and `edge_px` columns at each panel edge (separator ticks)
    are left out. Meant for clean renders: artefacts such as grayscale make the grid dark.

    Args:
        image: an RGB page (PIL image or (H, W, 3) uint8 array) drawn with `layout`.
        layout: the geometry it was drawn with (`page_layout(cfg)`).
        threshold: darkness (0..255) above which a pixel is ink.
        edge_px: columns skipped at each panel edge.

    Returns:
        panel name -> (times in s, values in mV), one sample per pixel column; NaN where a column has no ink.
    """
    darkness = 255.0 - np.asarray(image)[..., :3].max(axis=2).astype(np.float32)
    weight = np.where(darkness > threshold, darkness, 0.0).astype(np.float32)
    for p in layout.panels:
        left, top, right, bottom = p.label_box
        weight[top:bottom, left:right] = 0.0
    out = {}
    for p in layout.panels:
        xs = np.arange(math.ceil(p.x0) + edge_px, math.floor(p.x1) - edge_px)
        ys = np.arange(math.ceil(p.top), math.floor(p.bottom))
        w = weight[ys[0] : ys[-1] + 1, xs[0] : xs[-1] + 1]
        total = w.sum(axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            centre = (w * (ys[:, None] + 0.5)).sum(axis=0) / total
        mv = np.where(total > 0, (p.baseline - centre) / layout.px_per_mv, np.nan)
        out[p.name] = (p.t0 + (xs + 0.5 - p.x0) / layout.px_per_s, mv)
    return out


# ----------------------------------------------------------------------------- datasets, CLI

_WORKER: dict[str, Any] = {}


def _safe_name(record_id: str) -> str:
    """A record id as a file name (path separators and odd characters become '_')."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", str(record_id)).strip(".") or "record"


def _init_worker(source: Any, out_dir: Path, cfg: RenderConfig, seed: int, overwrite: bool) -> None:
    _WORKER.update(source=source, out_dir=out_dir, cfg=cfg, seed=seed, overwrite=overwrite)


def _render_one(record: Any) -> tuple[str, str]:
    """Renders one record to `{out_dir}/{record_id}.png`; returns (record_id, status or skip reason)."""
    source, cfg, seed = _WORKER["source"], _WORKER["cfg"], _WORKER["seed"]
    path = _WORKER["out_dir"] / f"{_safe_name(record.record_id)}.png"
    if path.exists() and not _WORKER["overwrite"]:
        return record.record_id, "exists"
    try:
        signal = source.read_signal(record, int(round(PAGE_S * source.sampling_rate)))
    except ValueError as err:  # RecordError is a ValueError with a short .reason
        logger.warning("skipping %s", err)
        return record.record_id, getattr(err, "reason", "unreadable")
    img = render_pil(signal, source.sampling_rate, cfg, item_seed(seed, record.record_id))
    tmp = path.with_suffix(".tmp.png")
    img.save(tmp, compress_level=3)
    tmp.replace(path)
    return record.record_id, "rendered"


def render_dataset(source: Any, records: Sequence[Any], out_dir: str | Path, cfg: RenderConfig | None = None,
                   workers: int | None = None, seed: int = 0, overwrite: bool = False) -> dict[str, Any]:
    """Renders records of a `meit.data.sources` Source to PNG files named by record id, in a process pool.

    Resumable: existing files are kept unless `overwrite`. Unreadable records are skipped and counted
    by their `RecordError.reason`. Each image is seeded by (seed, record id), so the result does not
    depend on the number of workers.

    Args:
        source: a Source (`.sampling_rate`, `.read_signal(record, n_samples)`).
        records: the records to render (`.record_id`).
        out_dir: output directory (created).
        cfg: render settings.
        workers: processes; None uses every CPU, 1 renders in this process.
        seed: run seed.
        overwrite: re-render existing files.

    Returns:
        {"rendered", "existing", "skipped" (reason -> count), "seconds", "images_per_s", "out_dir"}.
    """
    cfg, out = cfg or RenderConfig(), Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    workers = max(1, min(workers or os.cpu_count() or 1, len(records) or 1))
    start, statuses = time.perf_counter(), Counter()
    init = (source, out, cfg, seed, overwrite)
    if workers == 1:
        _init_worker(*init)
        statuses.update(status for _, status in map(_render_one, records))
    else:
        method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context(method), initializer=_init_worker,
                                 initargs=init) as pool:
            statuses.update(status for _, status in pool.map(_render_one, records, chunksize=8))
    seconds = time.perf_counter() - start
    rendered, existing = statuses.pop("rendered", 0), statuses.pop("exists", 0)
    return {"rendered": rendered, "existing": existing, "skipped": dict(statuses), "seconds": round(seconds, 3),
            "images_per_s": round(rendered / seconds, 2) if seconds > 0 else 0.0, "out_dir": str(out)}


def render_command(args: Any) -> None:
    """`python -m meit.data render`: renders a dataset's records as PNG files named by record id."""
    source = open_source(args.dataset, args.root, args.sampling_rate)
    records = list(source.records)[: args.limit] if args.limit is not None else list(source.records)
    cfg = RenderConfig(dpi=args.dpi, artefacts=tuple(args.artefacts or ()))
    summary = render_dataset(source, records, args.out, cfg, workers=args.workers, seed=args.seed)
    settings = {**dataclasses.asdict(cfg), "seed": args.seed, "dataset": args.dataset, "root": str(args.root),
                "sampling_rate": source.sampling_rate}
    (Path(args.out) / "render.json").write_text(json.dumps({"config": settings, "summary": summary}, indent=2))
    skipped = ", ".join(f"{k}: {v}" for k, v in sorted(summary["skipped"].items())) or "none"
    print(f"rendered {summary['rendered']} images ({summary['existing']} already there, skipped {skipped}) "
          f"to {summary['out_dir']} in {summary['seconds']:.1f} s ({summary['images_per_s']} images/s)")


# ------------------------------------------------------------------------------- benchmark


def example_signal(fs: float = 500.0, seconds: float = PAGE_S, heart_rate: float = 72.0, seed: int = 0) -> np.ndarray:
    """A plausible (12, T) ECG in mV: sum-of-Gaussians P-QRS-T waves of a 3-D heart vector on the 12 lead axes."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(round(seconds * fs))) / fs
    # wave: (offset s, width s, heart vector (x left, y inferior, z anterior) in mV)
    waves = [(-0.16, 0.025, (0.10, 0.15, 0.02)), (-0.025, 0.008, (-0.05, -0.05, 0.15)),
             (0.0, 0.011, (0.9, 0.8, -0.4)), (0.03, 0.010, (-0.15, -0.2, -0.6)), (0.26, 0.05, (0.25, 0.25, 0.15))]
    limb = np.deg2rad([0, 60, 120, -150, -30, 90])
    chest = np.deg2rad([120, 95, 75, 60, 30, 0])
    axes = np.concatenate([np.stack([np.cos(limb), np.sin(limb), 0 * limb], 1),
                           np.stack([np.cos(chest), 0.3 + 0 * chest, np.sin(chest)], 1)])
    beats = np.arange(0.35, seconds + 0.5, 60.0 / heart_rate) + rng.normal(0, 0.01, size=1)
    vec = np.zeros((3, t.size))
    for beat in beats:
        for offset, width, v in waves:
            vec += np.outer(v, np.exp(-0.5 * ((t - beat - offset) / width) ** 2))
    signal = axes @ vec + 0.03 * np.sin(2 * np.pi * 0.2 * t + rng.uniform(0, 6.28))
    return (signal + rng.normal(0, 0.005, signal.shape)).astype(np.float32)


def benchmark(n: int = 100, cfg: RenderConfig | None = None, fs: float = 500.0, workers: int = 1) -> dict[str, Any]:
    """Times rendering `n` pages (1100x850 at 100 dpi by default) of `example_signal`s.

    Args:
        n: images to render.
        cfg: render settings (default: a clean page).
        fs: sampling rate of the test signals.
        workers: processes rendering in parallel (1: this process, the figure per core).

    Returns:
        {"n", "workers", "height", "width", "seconds", "images_per_s", "ms_per_image", "artefacts"}.
    """
    cfg = cfg or RenderConfig()
    signals = [example_signal(fs, seed=i % 8) for i in range(min(n, 8))]
    render(signals[0], fs, cfg)  # warm the layout / grid caches
    start = time.perf_counter()
    if workers == 1:
        shape = [render(signals[i % len(signals)], fs, cfg, seed=i).shape for i in range(n)][-1]
    else:
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool:
            shape = list(pool.map(_bench_one, [(signals[i % len(signals)], fs, cfg, i) for i in range(n)],
                                  chunksize=max(1, n // (4 * workers))))[-1]
    seconds = time.perf_counter() - start
    return {"n": n, "workers": workers, "height": shape[0], "width": shape[1], "seconds": round(seconds, 3),
            "images_per_s": round(n / seconds, 1), "ms_per_image": round(1000 * seconds / n, 2),
            "artefacts": [name for name, _ in cfg.artefacts]}


def _bench_one(job: tuple[np.ndarray, float, RenderConfig, int]) -> tuple[int, ...]:
    return render(*job).shape
