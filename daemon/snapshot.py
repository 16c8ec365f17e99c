"""Write frames as PNG images without an imaging library (headless snapshots)."""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

__all__ = ["autoscale", "montage", "write_png"]


def autoscale(img: np.ndarray, low: float = 0.5, high: float = 99.8) -> np.ndarray:
    """Percentile contrast stretch to uint8."""
    a = np.asarray(img, np.float32)
    lo, hi = np.percentile(a, [low, high])
    if hi <= lo:
        hi = lo + 1.0
    return (np.clip((a - lo) / (hi - lo), 0, 1) * 255).astype(np.uint8)


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
