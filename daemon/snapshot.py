"""Write frames as PNG images without an imaging library (headless snapshots).

:func:`snapshot` lays out the raw channels and the models' outputs as labelled
tiles: each says what it shows (channel or model, outputs, sampling) and, for
a model output, its trust verdict; an untrusted output is dimmed as in the
viewer. Outputs keep their own sampling (a 2x super-resolved image has 2x the
pixels of the raw tiles). Labels use a small built-in bitmap font (DejaVu Sans
Mono Bold rendered at 11 px, 7x12 cells; DejaVu fonts are free to redistribute).
"""

from __future__ import annotations

import base64
import functools
import struct
import textwrap
import zlib
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .stain_colors import output_names, output_rgb

__all__ = ["autoscale", "composite", "composite_limits", "draw_text", "flow_montage", "labelled",
           "montage", "snapshot", "write_png"]



def autoscale(img: np.ndarray, low: float = 0.5, high: float = 99.8) -> np.ndarray:
    """Percentile contrast stretch to uint8."""
    a = np.asarray(img, np.float32)
    lo, hi = np.percentile(a, [low, high])
    if hi <= lo:
        hi = lo + 1.0
    return (np.clip((a - lo) / (hi - lo), 0, 1) * 255).astype(np.uint8)


def _limits(a: np.ndarray, low: float = 1.0, high: float = 99.7) -> tuple[float, float]:
    sub = a[:: max(1, a.shape[0] // 256), :: max(1, a.shape[1] // 256)]
    lo, hi = np.percentile(sub, [low, high])
    return float(lo), float(hi)


def _stretch(a: np.ndarray, low: float = 1.0, high: float = 99.7) -> np.ndarray:
    lo, hi = _limits(a, low, high)
    return np.clip((a - lo) / max(hi - lo, 1e-9), 0, 1).astype(np.float32)


def composite_limits(channels: np.ndarray) -> list[tuple[float, float]]:
    """Each stain's display range in :func:`composite` (black, full colour), in its units."""
    return [_limits(ch) for ch in channels]


def composite(channels: np.ndarray, names: Sequence[str], base: np.ndarray | None = None,
              alpha: float = 0.7) -> np.ndarray:
    """False-colour RGB float (H, W, 3) in [0, 1] of ``(C, H, W)`` stains named ``names``, each in the colour a
    recording of it has (:func:`~scopecast.daemon.stain_colors.output_rgb`: nuclei blue, membrane red, as napari
    shows them), optionally over a grey ``base``."""
    rgb = np.zeros((*channels.shape[1:], 3), np.float32)
    for ch, color in zip(channels, output_rgb(output_names(names, len(channels))), strict=True):
        rgb += _stretch(ch)[..., None] * np.asarray(color, np.float32)
    np.clip(rgb, 0, 1, out=rgb)
    if base is not None and base.shape == channels.shape[1:]:
        rgb = (1 - alpha) * _stretch(base)[..., None] + alpha * rgb
    return rgb


def montage(tiles: Sequence[np.ndarray], columns: int = 4, gap: int = 4) -> np.ndarray:
    """Arrange uint8 tiles (2-D grey or HxWx3) into one RGB image, padding smaller ones."""
    rgb = [np.repeat(t[..., None], 3, axis=2) if t.ndim == 2 else t for t in tiles]
    h = max(t.shape[0] for t in rgb)
    w = max(t.shape[1] for t in rgb)
    rows = -(-len(rgb) // columns)
    out = np.zeros((rows * (h + gap) - gap, columns * (w + gap) - gap, 3), np.uint8)
    for i, t in enumerate(rgb):
        r, c = divmod(i, columns)
        out[r * (h + gap) : r * (h + gap) + t.shape[0], c * (w + gap) : c * (w + gap) + t.shape[1]] = t
    return out


def write_png(path: str | Path, img: np.ndarray) -> Path:
    """Write a uint8 grey (HxW) or RGB (HxWx3) array as a PNG file."""
    a = np.ascontiguousarray(img)
    if a.dtype != np.uint8:
        raise ValueError(f"write_png needs uint8 data, got {a.dtype}; use autoscale() first")
    if a.ndim == 2:
        color = 0
    elif a.ndim == 3 and a.shape[2] == 3:
        color = 2
    else:
        raise ValueError(f"write_png needs HxW or HxWx3, got shape {a.shape}")
    h, w = a.shape[:2]
    raw = b"".join(b"\x00" + a[y].tobytes() for y in range(h))

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    png = b"\x89PNG\r\n\x1a\n"
    png += chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, color, 0, 0, 0))
    png += chunk(b"IDAT", zlib.compress(raw, 6))
    png += chunk(b"IEND", b"")
    path = Path(path)
    path.write_bytes(png)
    return path


# --------------------------------------------------------------------- labels
_FONT_CHARS = "".join(chr(c) for c in range(32, 127)) + "µ·×→–"
_GLYPH_W, _GLYPH_H = 7, 12
#: characters outside the font that trust reasons and labels use, written with ones inside it
_SUBSTITUTES = str.maketrans({"…": "...", "≤": "<=", "≥": ">=", "²": "^2", "±": "+/-", "σ": "s", "ρ": "rho"})
_FONT_B64 = (
    "AAAAAAAAAAAAAAAAAAAYGBgYGAAYGAAAAAAoKCgAAAAAAAAAAAAUNH4oKPxYUAAAAAAQOFB4PBRUOBAQAADgoOQYINwUHAAA"
    "AAA4MDAQempuPgAAAAAQEBAAAAAAAAAAAAgYEDAwMDAQGAgAACAwEBgYGBgQMCAAAAAQVDg4VBAAAAAAAAAAABAQfBAQAAAA"
    "AAAAAAAAAAAwMCBAAAAAAAAAODgAAAAAAAAAAAAAAAAwMAAAAAAECAgQEBAgIEAAAAA8ZmZuZmZmPAAAAAB4GBgYGBgYfgAA"
    "AAB8BgYMCBAgfgAAAAB8BgY4BgYGfAAAAAAMHDwsTH4MDAAAAAB+YGB8BgYGfAAAAAA8MGB8ZmZmPAAAAAB+BgwMHBgYMAAA"
    "AAA8ZmYYZmZmPAAAAAA8ZmZmPgYMPAAAAAAAADAwAAAwMAAAAAAAADAwAAAwMCBAAAAAAAIecHAeAgAAAAAAAAB+AH4AAAAA"
    "AAAAAEB4Dg54QAAAAAA4WBggMAAwMAAAAAA4RJykpKScRDwAAAAYGDw8JDxmZgAAAAB8ZmZ4ZmZmfAAAAAAcMmBgYGAyHAAA"
    "AAB8ZGZmZmZkfAAAAAB+YGB8YGBgfgAAAAB+YGB8YGBgYAAAAAAcMmBgbmY2HgAAAABmZmZ+ZmZmZgAAAAB+GBgYGBgYfgAA"
    "AAAeBgYGBgZGPAAAAABmbGh4eGxmZgAAAABgYGBgYGBgfgAAAABCZn5+fmZmZgAAAABmdnZ2bm5uZgAAAAA8ZmZmZmZmPAAA"
    "AAB8ZmZmfGBgYAAAAAA8ZmZmZmZmPAQAAAB8ZmZmeGRmYgAAAAA8YmB4HgZGPAAAAAB+GBgYGBgYGAAAAABmZmZmZmZmPAAA"
    "AABmZiQkPDwYGAAAAADGxtbWbGxsbAAAAABmJDwYGDwkZgAAAABmJDw8GBgYGAAAAAB+BgwYEDBgfgAAADgwMDAwMDAwMDgA"
    "AABAICAQEBAICAQAADgYGBgYGBgYGDgAAAAweMwAAAAAAAAAAAAAAAAAAAAAAAAAAGAwAAAAAAAAAAAAAAAAADwGPmZmPgAA"
    "AGBgYHxmZmZmfAAAAAAAAD5wYGBwPgAAAAYGBj5mZmZmPgAAAAAAADxmfmBgPgAAABwwMHwwMDAwMAAAAAAAAD5mZmZmPgY8"
    "AGBgYHxmZmZmZgAAABgYAHgYGBgYfgAAABgYAHgYGBgYGBhwAGBgYGxoeGhsZgAAAPAwMDAwMDAwHAAAAAAAAH5qampqagAA"
    "AAAAAHxmZmZmZgAAAAAAADxmZmZmPAAAAAAAAHxmZmZmfGBgAAAAAD5mZmZmPgYGAAAAAD4wMDAwMAAAAAAAADxieB5GPAAA"
    "AAAwMPwwMDAwPAAAAAAAAGZmZmZmPgAAAAAAAGZmJDw8GAAAAAAAAMbGVGxsbAAAAAAAAGY8GBg8ZgAAAAAAAGYkLDwYGBBw"
    "AAAAAH4GDDBgfgAAAB4YGBgYYBgYGB4AABAQEBAQEBAQEBAQAHgYGBgYBhgYGHgAAAAAAAAAcA4AAAAAAAAAAGZmZmZmemBg"
    "AAAAAAAwMAAAAAAAAAAAAEQoEChEAAAAAAAAAAAI/PwIAAAAAAAAAAAA/gAAAAAA"
)


@functools.cache
def _glyphs() -> dict[str, np.ndarray]:
    rows = np.frombuffer(base64.b64decode("".join(_FONT_B64)), np.uint8).reshape(len(_FONT_CHARS), _GLYPH_H)
    bits = np.unpackbits(rows[..., None], axis=2)[..., :_GLYPH_W].astype(bool)
    return dict(zip(_FONT_CHARS, bits, strict=True))


def draw_text(img: np.ndarray, text: str, x: int, y: int, scale: int = 1,
              color: tuple[int, int, int] = (255, 255, 255)) -> None:
    """Draw one line of ``text`` into an RGB uint8 image (top-left at ``x, y``), clipped to it;
    characters outside the built-in font are drawn as ``?``."""
    glyphs = _glyphs()
    text = text.translate(_SUBSTITUTES)
    gw, gh = _GLYPH_W * scale, _GLYPH_H * scale
    for i, ch in enumerate(text):
        g = glyphs.get(ch, glyphs["?"])
        if scale > 1:
            g = np.kron(g, np.ones((scale, scale), bool)).astype(bool)
        x0 = x + i * gw
        h, w = min(gh, img.shape[0] - y), min(gw, img.shape[1] - x0)
        if h <= 0 or w <= 0:
            break
        img[y : y + h, x0 : x0 + w][g[:h, :w]] = color


def labelled(tile: np.ndarray, lines: Iterable[tuple[str, tuple[int, int, int]]]) -> np.ndarray:
    """``tile`` (grey or RGB uint8) under a dark strip with ``(text, colour)`` lines, each
    wrapped to the tile's width (at most three lines each)."""
    rgb = np.repeat(tile[..., None], 3, axis=2) if tile.ndim == 2 else tile
    scale = 2 if rgb.shape[1] >= 512 else 1  # legible on full-size frames
    fit = max(4, (rgb.shape[1] - 6) // (_GLYPH_W * scale))
    wrapped = [(part, color) for text, color in lines
               for part in (textwrap.wrap(text, fit, break_long_words=True) or [""])[:3]]
    step = (_GLYPH_H + 2) * scale
    strip = np.full((len(wrapped) * step + 4, rgb.shape[1], 3), 24, np.uint8)
    for i, (text, color) in enumerate(wrapped):
        draw_text(strip, text, 3, 2 + i * step, scale, color)
    return np.concatenate([strip, rgb], axis=0)


def flow_montage(rows: Sequence[Sequence[np.ndarray]], gap: int = 6) -> np.ndarray:
    """RGB tiles left to right in rows, each at its own size (no resampling), rows top to bottom."""
    rows = [[np.repeat(t[..., None], 3, axis=2) if t.ndim == 2 else t for t in r] for r in rows if r]
    heights = [max(t.shape[0] for t in r) for r in rows]
    widths = [sum(t.shape[1] for t in r) + gap * (len(r) - 1) for r in rows]
    out = np.zeros((sum(heights) + gap * (len(rows) - 1), max(widths), 3), np.uint8)
    y = 0
    for r, h in zip(rows, heights, strict=True):
        x = 0
        for t in r:
            out[y : y + t.shape[0], x : x + t.shape[1]] = t
            x += t.shape[1] + gap
        y += h + gap
    return out


def _verdict(header: dict[str, Any]) -> tuple[str, tuple[int, int, int]]:
    trust = header.get("trust") or {"ok": False, "reasons": ["no trust verdict"]}
    if trust.get("ok"):
        return f"trusted (score {float(trust.get('score') or 0):.2f})", (110, 230, 120)
    return "NOT TRUSTED: " + "; ".join(trust.get("reasons") or ["untrusted"]), (255, 110, 110)


def snapshot(frames: dict[str, np.ndarray], results: Iterable[tuple[dict[str, Any], np.ndarray]],
             cycle: Sequence[str] | None = None, columns: int = 4) -> np.ndarray:
    """The headless demo's picture: raw channels (in ``cycle`` order) in rows of ``columns``,
    then each model output at its own sampling, every tile labelled (outputs with their trust)."""
    names = [c for c in (cycle or frames) if c in frames]
    raw = [labelled(autoscale(frames[c]), [(f"raw · {c} · {frames[c].shape[1]}x{frames[c].shape[0]} px",
                                            (230, 230, 230))]) for c in names]
    rows = [raw[i : i + columns] for i in range(0, len(raw), columns)]
    outputs = []
    for header, data in results:
        names = list(header.get("channels") or [])
        keep = [i for i, n in enumerate(names) if not n.endswith(":std")]  # uncertainty maps are not stains
        if len(keep) < len(names):
            data, names = data[keep], [names[i] for i in keep]
        if header.get("task") == "virtual-staining" and data.shape[0] > 1:
            tile = (composite(data, names) * 255).astype(np.uint8)
        else:  # one output (a super-resolved membrane) in its stain's colour too, as the viewer draws it
            color = np.asarray(output_rgb(output_names(names, 1))[0], np.float32)
            tile = (autoscale(data[0])[..., None] * color).astype(np.uint8)
        ok = bool((header.get("trust") or {}).get("ok"))
        if not ok:
            tile = (tile * 0.35).astype(np.uint8)  # dimmed, as in the viewer: not a confident image
        px = header.get("pixel_size_um")
        sampling = f"x{header.get('scale_factor', 1)}, {px:.3g} µm/px" if px else f"x{header.get('scale_factor', 1)}"
        outputs.append(labelled(tile, [
            (f"{header.get('model', 'model')} · {', '.join(names)} · {sampling}",
             (230, 230, 230)),
            _verdict(header)]))
    return flow_montage([*rows, outputs])
