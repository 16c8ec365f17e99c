"""Write frames as PNG images without an imaging library (headless snapshots)."""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

__all__ = ["autoscale", "composite", "montage", "write_png"]

#: false colours of successive stain channels (nuclei blue, membrane green, ...)
STAIN_COLORS = [(0.2, 0.5, 1.0), (0.1, 1.0, 0.3), (1.0, 0.2, 0.8), (1.0, 0.7, 0.1)]


def autoscale(img: np.ndarray, low: float = 0.5, high: float = 99.8) -> np.ndarray:
    """Percentile contrast stretch to uint8."""
    a = np.asarray(img, np.float32)
    lo, hi = np.percentile(a, [low, high])
    if hi <= lo:
        hi = lo + 1.0
    return (np.clip((a - lo) / (hi - lo), 0, 1) * 255).astype(np.uint8)


def _stretch(a: np.ndarray, low: float = 1.0, high: float = 99.7) -> np.ndarray:
    sub = a[:: max(1, a.shape[0] // 256), :: max(1, a.shape[1] // 256)]
    lo, hi = np.percentile(sub, [low, high])
    return np.clip((a - lo) / max(hi - lo, 1e-9), 0, 1).astype(np.float32)


def composite(channels: np.ndarray, base: np.ndarray | None = None, alpha: float = 0.7) -> np.ndarray:
    """False-colour RGB float (H, W, 3) in [0, 1] of ``(C, H, W)`` stains, optionally over a grey ``base``."""
    rgb = np.zeros((*channels.shape[1:], 3), np.float32)
    for c, ch in enumerate(channels):
        rgb += _stretch(ch)[..., None] * np.asarray(STAIN_COLORS[c % len(STAIN_COLORS)], np.float32)
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
