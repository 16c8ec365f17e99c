"""Training data: gathered with the daemon's dual-modality capture, read back from OME-Zarr.

:func:`gather` drives a running daemon through its control socket exactly as
a lab would: ``capture_pairs`` at fields of view spread over two *separate*
slide regions, one for training and one for validation (never neighbouring
frames of one region). Virtual-staining pairs are the label-free cycle with
the fluorescence channels; super-resolution pairs are a widefield
fluorescence frame with the STED detector's ground truth of the same field.

:func:`load_pairs` reads those recordings into arrays (numpy only; no torch).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["REGIONS", "TASKS", "PairSet", "gather", "load_pairs", "region_positions"]

#: Slide regions (x range, y range, µm): training and validation never overlap.
REGIONS: dict[str, tuple[tuple[float, float], tuple[float, float]]] = {
    "train": ((-20000.0, -2000.0), (-20000.0, 20000.0)),
    "val": ((2000.0, 20000.0), (-20000.0, 20000.0)),
}

TASKS: dict[str, dict[str, Any]] = {
    "virtual-staining": {
        "label_free": ["DPC-Left", "DPC-Right", "DPC-Top", "DPC-Bottom", "BF", "DF"],
        "fluorescence": [{"name": "Nuclei", "exposure_ms": 100.0}, {"name": "Membrane", "exposure_ms": 100.0}],
        "inputs": ["DPC-Left", "DPC-Right", "DPC-Top", "DPC-Bottom", "BF", "DF"],
        "targets": ["Nuclei", "Membrane"],
        "outputs": ["nuclei", "membrane"],
    },
    "super-resolution": {
        "label_free": [],
        "fluorescence": [{"name": "Membrane", "exposure_ms": 100.0},
                         {"name": "Membrane", "exposure_ms": 100.0, "detector": "STED"}],
        "inputs": ["Membrane"],
        "targets": ["Membrane@STED"],
        "outputs": ["membrane-sr"],
    },
}


def region_positions(region: str, n: int, seed: int) -> list[tuple[float, float]]:
    """``n`` random field centres in ``region``, at least one field apart."""
    (x0, x1), (y0, y1) = REGIONS[region]
    rng = np.random.default_rng(seed)
    xs = rng.uniform(x0, x1, n)
    ys = rng.uniform(y0, y1, n)
    return [(float(round(x, 1)), float(round(y, 1))) for x, y in zip(xs, ys, strict=True)]


def gather(control_address: str, task: str, out: str | Path, n_train: int, n_val: int, seed: int = 0,
           exposure_ms: float = 10.0) -> dict[str, Any]:
    """Capture training and validation pairs with a running daemon; returns the dataset index.

    The index (``dataset.json`` in ``out``) lists the recordings of each split;
    the recordings themselves stay where the daemon wrote them.
    """
    from scopecast.daemon.control import ControlClient

    spec = TASKS[task]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    index: dict[str, Any] = {"task": task, "seed": seed, "regions": REGIONS, "splits": {}}
    with ControlClient(control_address, timeout_s=120) as c:
        info = c.request("describe")
        for split, n, s in (("train", n_train, seed), ("val", n_val, seed + 1000)):
            job = c.request("capture_pairs", label_free=spec["label_free"], fluorescence=spec["fluorescence"],
                            positions=region_positions(split, n, s), exposure_ms=exposure_ms)
            done = c.wait(job["id"], timeout_s=3600)
            index["splits"][split] = {"recordings": [done["path"]], "fields": n}
        index["scope"] = {k: info[k] for k in ("pixel_size_um", "image_shape", "channels")}
    (out / "dataset.json").write_text(json.dumps(index, indent=2))
    return index


@dataclass
class PairSet:
    """Input and target stacks of one split (raw camera counts, float32)."""

    inputs: np.ndarray  # (N, C_in, H, W)
    targets: np.ndarray  # (N, C_out, s·H, s·W)
    positions: list[tuple[float, float]]
    pixel_size_um: float


def load_pairs(dataset: str | Path, split: str) -> PairSet:
    """Read one split of a gathered dataset (``dataset.json`` or its folder)."""
    from scopecast.daemon.recorder import open_recording

    path = Path(dataset)
    index = json.loads((path / "dataset.json" if path.is_dir() else path).read_text())
    spec = TASKS[index["task"]]
    xs, ys, pos, px = [], [], [], 0.0
    for rec_path in index["splits"][split]["recordings"]:
        rec = open_recording(rec_path)
        by_pos: dict[int, dict[str, Any]] = {}
        for s in rec.series:
            det = s.attrs["scopecast"]["detector"]
            for h in s.frames:
                key = h.channel if det == "Camera" else f"{h.channel}@{det}"
                by_pos.setdefault(h.position_index, {})[key] = (s, h)
        for p in sorted(by_pos):
            frames = by_pos[p]
            if not all(c in frames for c in spec["inputs"] + spec["targets"]):
                continue
            x = [frames[c][0].image(frames[c][1].channel) for c in spec["inputs"]]
            y = [frames[c][0].image(frames[c][1].channel) for c in spec["targets"]]
            xs.append(np.stack(x).astype(np.float32))
            ys.append(np.stack(y).astype(np.float32))
            h0 = frames[spec["inputs"][0]][1]
            pos.append((h0.stage_x_um, h0.stage_y_um))
            px = h0.pixel_size_um
    if not xs:
        raise ValueError(f"no complete pairs in split {split!r} of {dataset}")
    return PairSet(np.stack(xs), np.stack(ys), pos, px)
