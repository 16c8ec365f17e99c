"""Training data: gathered with the daemon's dual-modality capture, read back from OME-Zarr.

:func:`gather` drives a running daemon through its control socket exactly as
a lab would: ``capture_pairs`` at fields of view spread over two *separate*
slide regions, one for training and one for validation (never neighbouring
frames of one region). Virtual-staining pairs are the label-free cycle with
the fluorescence channels; super-resolution pairs are a widefield
fluorescence frame with the STED detector's ground truth of the same field.
Before capturing, :func:`calibrate_camera` measures the camera as a lab would
(dark frames, photon transfer, an over-exposed frame) and the index records it.

:func:`load_pairs` reads those recordings into arrays (numpy only; no torch);
:func:`calibrate` measures, from the training split, what the package will
carry: the calibrated normalization, the training input distribution the
engine's input guards compare with, and the outputs' physical range.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .manifest import CameraCalibration, ChannelStats, InputStats, Normalization, OutputRange

__all__ = [
    "BLANK", "DOMAIN", "REGIONS", "TASKS", "Calibration", "PairSet", "calibrate", "calibrate_camera",
    "check_new_dataset", "field_plan", "gather", "load_pairs", "region_positions",
]

_log = logging.getLogger("scopecast.gather")

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


#: The sample kind of an empty field (its targets are the camera's dark level: zero signal).
BLANK = "blank"

#: The validated domain of each task: what ``gather`` samples by default (``--samples`` etc.) and what
#: the model card states. Morphologies listed under ``held_out`` are never gathered for training.
#: Exposures (ms) are drawn per field, uniformly in log; ``target_exposure_ms`` fixes the fluorescence
#: targets of virtual staining (the output units), chosen so that no ground-truth pixel reaches the full
#: well (peak rates measured on the simulator at 10x: Nuclei <= 590 ADU/ms in mitotic cells,
#: Membrane <= 95 ADU/ms; full well at 15100 ADU); :func:`load_pairs` expresses them in counts at the
#: task's reference exposure (100 ms, as before), so outputs keep their units. Super-resolution targets are taken with the same
#: exposure as the input (STED counts scale with it; peak <= 540 ADU/ms on 'membranes').
DOMAIN: dict[str, dict[str, Any]] = {
    "virtual-staining": {
        "train": ["cells", "epithelium", "sparse", "mitotic", "debris"],
        "held_out": ["fibroblasts", "clusters"],
        "blank_fraction": 0.08,
        "exposure_ms": (5.0, 15.0),  # label-free (bright-field reaches the full well at ~18 ms)
        "target_exposure_ms": {"Nuclei": 20.0, "Membrane": 100.0},
        "defocus_um": 2.0,  # |z - focal plane| <= this (depth of field of 10x/0.25: ~±4 µm)
        "objectives": ["10x"],
    },
    "super-resolution": {
        "train": ["cells", "epithelium", "sparse", "mitotic", "debris", "membranes"],
        "held_out": ["fibroblasts", "clusters", "filaments"],
        "blank_fraction": 0.05,
        "exposure_ms": (5.0, 25.0),  # widefield and STED alike
        "target_exposure_ms": {},
        "defocus_um": 2.0,
        "objectives": ["10x"],
    },
}


def field_plan(task: str, region: str, n: int, seed: int, samples: list[str] | None = None,
               blank_fraction: float | None = None, exposure_ms: tuple[float, float] | None = None,
               defocus_um: float | None = None) -> list[dict[str, Any]]:
    """One dict per field: sample kind, stage x/y/z, label-free and fluorescence exposures.

    Kinds take turns (so every morphology gets ``n / len(samples)`` fields), a
    ``blank_fraction`` of the fields are empty slides; exposures are drawn
    log-uniformly in ``exposure_ms`` and the focus uniformly within ``±defocus_um``.
    """
    dom = DOMAIN[task]
    samples = list(samples if samples is not None else dom["train"])
    bf = dom["blank_fraction"] if blank_fraction is None else blank_fraction
    lo, hi = exposure_ms or dom["exposure_ms"]
    dz = dom["defocus_um"] if defocus_um is None else defocus_um
    rng = np.random.default_rng(seed)
    n_blank = int(round(bf * n)) if BLANK not in samples else 0
    kinds = [samples[i % len(samples)] for i in range(n - n_blank)] + [BLANK] * n_blank
    pos = region_positions(region, n, seed)
    out = []
    for kind, (x, y) in zip(kinds, pos, strict=True):
        e = float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
        z = float(rng.uniform(-dz, dz)) if dz > 0 else 0.0
        out.append({"kind": kind, "x": x, "y": y, "z": round(z, 3), "exposure_ms": round(e, 3)})
    return out


def region_positions(region: str, n: int, seed: int) -> list[tuple[float, float]]:
    """``n`` random field centres in ``region``, at least one field apart."""
    (x0, x1), (y0, y1) = REGIONS[region]
    rng = np.random.default_rng(seed)
    xs = rng.uniform(x0, x1, n)
    ys = rng.uniform(y0, y1, n)
    return [(float(round(x, 1)), float(round(y, 1))) for x, y in zip(xs, ys, strict=True)]


def check_new_dataset(out: str | Path, overwrite: bool = False) -> None:
    """``FileExistsError`` where ``out`` already holds a dataset (``dataset.json``) and not ``overwrite``: a
    new gather would replace its index, and the recordings it listed would be listed nowhere."""
    index = Path(out) / "dataset.json"
    if index.exists() and not overwrite:
        raise FileExistsError(f"{index} exists (a gathered dataset); pass overwrite=True (--overwrite) to "
                              "replace its index, or give another --out")


def gather(control_address: str, task: str, out: str | Path, n_train: int, n_val: int, seed: int = 0,
           exposure_ms: float = 10.0, samples: list[str] | None = None, set_sample: Any = None,
           plan: dict[str, Any] | None = None, overwrite: bool = False,
           slide: str | None = None) -> dict[str, Any]:
    """Capture training and validation pairs with a running daemon; returns the dataset index. Refused
    (``FileExistsError``, before any capture) where ``out`` holds a dataset and not ``overwrite``.

    The index (``dataset.json`` in ``out``) lists the recordings of each split;
    the recordings themselves stay where the daemon wrote them (those inside
    ``out`` are listed relative to it, so the folder can be moved or copied whole).

    With ``samples`` (sample kinds of the simulated slide; ``set_sample(kind)``
    puts that specimen on the stage) every field is its own capture with its own
    sample kind, focus and exposures (:func:`field_plan`; ``plan`` overrides its
    keyword arguments), and the index lists, per field, what was set and the
    fraction of ground-truth pixels at the detector's full well (which should be 0).
    Without ``samples`` the fields come from whatever slide is on the stage, at
    one focus and ``exposure_ms`` (the original behaviour); ``slide``, where the
    caller knows it, is that slide's sample kind, recorded as the index's
    ``sample`` (every field's kind; unknown kinds read as ``"?"``).
    """
    from scopecast.daemon.control import ControlClient
    from scopecast.daemon.progress import Progress, wait_job

    spec = TASKS[task]
    out = Path(out)
    check_new_dataset(out, overwrite)
    out.mkdir(parents=True, exist_ok=True)
    index: dict[str, Any] = {"task": task, "seed": seed, "regions": REGIONS, "splits": {}}
    if samples is not None:
        if set_sample is None:
            raise ValueError("gathering several sample kinds needs a way to change the specimen (set_sample); "
                             "run gather on the in-process simulator (no --control)")
        with ControlClient(control_address, timeout_s=120) as c:
            info = c.request("describe")
            set_sample(samples[0])
            index["camera"] = calibrate_camera(c, exposure_ms)
            index["samples"] = list(samples)
            index["plan"] = dict(plan or {})
            progress = Progress(f"gather {task}", n_train + n_val, "fields", _log)
            for split, n, s in (("train", n_train, seed), ("val", n_val, seed + 1000)):
                fields = field_plan(task, split, n, s, samples, **(plan or {}))
                index["splits"][split] = _gather_fields(c, task, fields, set_sample, index["camera"], progress)
            progress.finish()
            index["scope"] = {k: info[k] for k in ("pixel_size_um", "image_shape", "channels")}
        _write_index(out, index)
        return index
    with ControlClient(control_address, timeout_s=120) as c:
        info = c.request("describe")
        index["camera"] = calibrate_camera(c, exposure_ms)
        for split, n, s in (("train", n_train, seed), ("val", n_val, seed + 1000)):
            if n <= 0:  # no capture: capture_pairs without positions takes one at the current position
                index["splits"][split] = {"recordings": [], "fields": 0}
                continue
            job = c.request("capture_pairs", label_free=spec["label_free"], fluorescence=spec["fluorescence"],
                            positions=region_positions(split, n, s), exposure_ms=exposure_ms)
            progress = Progress(f"gather {task} {split} ({n} fields)", job.get("total"), "frames", _log)
            done = wait_job(c, job["id"], 3600.0, progress)
            if done["status"] == "failed":
                raise RuntimeError(f"pairs job {job['id']} failed: {done['error']}")
            index["splits"][split] = {"recordings": [done["path"]], "fields": n}
        index["scope"] = {k: info[k] for k in ("pixel_size_um", "image_shape", "channels")}
    if slide:
        index["sample"] = slide
    _write_index(out, index)
    return index


def _write_index(out: Path, index: dict[str, Any]) -> None:
    """``out/dataset.json``, recordings inside ``out`` relative to it (:func:`load_pairs` resolves them)."""
    root = out.resolve()

    def portable(path: str | None) -> str | None:
        if path is None:
            return None
        p = Path(path).resolve()
        return str(p.relative_to(root)) if p.is_relative_to(root) else str(p)

    on_disk = {**index, "splits": {k: {**v, "recordings": [portable(r) for r in v["recordings"]]}
                                   for k, v in index["splits"].items()}}
    (out / "dataset.json").write_text(json.dumps(on_disk, indent=2))


def _gather_fields(c: Any, task: str, fields: list[dict[str, Any]], set_sample: Any,
                   camera: dict[str, Any], progress: Any = None) -> dict[str, Any]:
    """Capture ``fields`` (from :func:`field_plan`) one by one, grouped by sample kind;
    each captured field advances ``progress`` (a :class:`~scopecast.daemon.progress.Progress`)."""
    spec = TASKS[task]
    targets = DOMAIN[task]["target_exposure_ms"]
    full = camera.get("saturation_adu")
    recs: list[str | None] = [None] * len(fields)
    for kind in dict.fromkeys(f["kind"] for f in fields):
        set_sample(kind)
        for i, f in enumerate(fields):
            if f["kind"] != kind:
                continue
            e = f["exposure_ms"]
            f["target_exposure_ms"] = {}
            fluo = []
            for ch in spec["fluorescence"]:
                te = targets.get(ch["name"], e) if ch.get("detector") is None and spec["label_free"] else e
                fluo.append({**ch, "exposure_ms": te})
                f["target_exposure_ms"][ch["name"] + (f"@{ch['detector']}" if ch.get("detector") else "")] = te
            c.request("move_stage", z=f["z"])
            job = c.request("capture_pairs", label_free=[{"name": n, "exposure_ms": e} for n in spec["label_free"]],
                            fluorescence=fluo, positions=[(f["x"], f["y"])], exposure_ms=e)
            done = c.wait(job["id"], timeout_s=600)
            recs[i] = done["path"]
            if progress is not None:
                progress.update(note=f"{kind}")
    c.request("move_stage", z=0.0)
    split = {"recordings": recs, "fields": len(fields), "field_info": fields}
    if full:  # how much of the ground truth sits at the full well (it must not)
        from scopecast.daemon.recorder import open_recording

        for f, r in zip(fields, recs, strict=True):
            rec = open_recording(r)
            f["target_clipped"] = {}
            for s in rec.series:
                det = s.attrs["scopecast"]["detector"]
                for h in s.frames:
                    key = h.channel if det == "Camera" else f"{h.channel}@{det}"
                    if key in spec["targets"]:
                        f["target_clipped"][key] = float(np.mean(s.plane(h) >= full))
    return split


def calibrate_camera(client: Any, exposure_ms: float = 10.0, channel: str = "BF") -> dict[str, Any]:
    """Measure the main camera through the control socket: what a lab does with a new camera.

    Offset and read noise from two dark frames (LED array off, ``Clear``); gain by
    photon transfer from two frames of ``channel`` (temporal variance =
    gain × signal + read noise²; the difference of two frames cancels the
    specimen); the clip level from a frame exposed 64× longer (pixels piled up
    at one maximum value). What cannot be measured on this microscope is
    ``None`` and ``source`` says why.
    """
    info = client.request("describe")
    cam: dict[str, Any] = {"offset_adu": None, "read_noise_adu": None, "gain_adu_per_e": None,
                           "saturation_adu": None}
    notes = []
    if channel not in info.get("channels", {}) or "Clear" not in info.get("patterns", []):
        return {**cam, "source": f"not measured: this microscope has no {channel!r} channel or LED-off pattern"}

    def pair(**kw: Any) -> tuple[np.ndarray, np.ndarray]:
        a, b = (client.snap(exposure_ms=exposure_ms, **kw)[1].astype(np.float64) for _ in range(2))
        return a, b

    client.request("set_channel", channel=channel)  # transmitted light path, fluorescence closed
    client.request("set_pattern", pattern="Clear")
    d1, d2 = pair(channel="")
    offset = float((d1.mean() + d2.mean()) / 2)
    read = float(np.std(d1 - d2) / np.sqrt(2))
    cam.update(offset_adu=offset, read_noise_adu=read)
    client.request("set_channel", channel=channel)
    a, b = pair(channel=channel)
    signal = float((a.mean() + b.mean()) / 2) - offset
    var_t = float(np.var(a - b) / 2)
    if signal > 10 * max(read, 1.0) and var_t > read**2:
        cam["gain_adu_per_e"] = (var_t - read**2) / signal
    else:
        notes.append(f"gain not measured ({channel} signal {signal:.3g} ADU too low)")
    _, over = client.snap(channel=channel, exposure_ms=exposure_ms * 64)
    top = int(over.max())
    if np.count_nonzero(over == top) > 1e-3 * over.size and top > offset + 10 * max(read, 1.0):
        cam["saturation_adu"] = float(top)
    else:
        notes.append(f"clip level not reached at {exposure_ms * 64:g} ms")
    return {**cam, "source": "; ".join(["dark frames, photon transfer and an over-exposed "
                                        f"{channel} frame at gather time", *notes])}


@dataclass
class PairSet:
    """Input and target stacks of one split (raw camera counts, float32)."""

    inputs: np.ndarray  # (N, C_in, H, W)
    targets: np.ndarray  # (N, C_out, s·H, s·W)
    positions: list[tuple[float, float]]
    pixel_size_um: float
    camera: dict[str, Any] | None = None  # the camera calibration recorded by :func:`gather`
    fields: list[dict[str, Any]] | None = None  # per field: sample kind, focus, exposures (multi-sample gathers)
    sample: str | None = None  # without ``fields``: the one slide's sample kind, where the gather knew it

    def select(self, keep: np.ndarray | list[bool]) -> PairSet:
        """The fields where ``keep`` is true."""
        k = np.asarray(keep, bool)
        return PairSet(self.inputs[k], self.targets[k], [p for p, m in zip(self.positions, k, strict=True) if m],
                       self.pixel_size_um, self.camera,
                       None if self.fields is None else [f for f, m in zip(self.fields, k, strict=True) if m],
                       self.sample)

    @property
    def kinds(self) -> list[str]:
        """Each field's sample kind; ``"?"`` where the dataset does not say."""
        return [f.get("kind", "?") for f in self.fields] if self.fields else [self.sample or "?"] * len(self.inputs)


def load_pairs(dataset: str | Path, split: str) -> PairSet:
    """Read one split of a gathered dataset (``dataset.json`` or its folder)."""
    from scopecast.daemon.recorder import open_recording

    path = Path(dataset)
    index_file = path / "dataset.json" if path.is_dir() else path
    index = json.loads(index_file.read_text())
    spec = TASKS[index["task"]]
    xs, ys, pos, px, info = [], [], [], 0.0, []
    field_info = index["splits"][split].get("field_info")
    for ri, rec_path in enumerate(index["splits"][split]["recordings"]):
        rec = open_recording(index_file.parent / rec_path)  # relative to the index (an absolute path stays)
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
            x = [frames[c][0].plane(frames[c][1]) for c in spec["inputs"]]
            y = [frames[c][0].plane(frames[c][1]) for c in spec["targets"]]
            xs.append(np.stack(x).astype(np.float32))
            y = np.stack(y).astype(np.float32)
            if field_info and spec["label_free"]:
                y = _to_reference_exposure(y, spec, field_info[ri], index.get("camera") or {})
            ys.append(y)
            h0 = frames[spec["inputs"][0]][1]
            pos.append((h0.stage_x_um, h0.stage_y_um))
            px = h0.pixel_size_um
            info.append(field_info[ri] if field_info else {"kind": "?"})
    if not xs:
        empty = index["splits"][split].get("fields") == 0
        raise ValueError(f"no complete pairs in split {split!r} of {dataset}"
                         + (f" (it was gathered with --{split} 0)" if empty else ""))
    return PairSet(np.stack(xs), np.stack(ys), pos, px, index.get("camera"), info if field_info else None,
                   index.get("sample"))


def _to_reference_exposure(y: np.ndarray, spec: dict[str, Any], field: dict[str, Any], camera: dict[str, Any]
                           ) -> np.ndarray:
    """Virtual-staining targets taken at a shorter exposure (so that they are not clipped), in the units of
    the task's reference exposure (``TASKS``: 100 ms): counts above the camera offset × reference / actual.
    The model's outputs thus stay "fluorescence counts at 100 ms", whatever exposure kept the truth unclipped."""
    ref = {c["name"]: c["exposure_ms"] for c in spec["fluorescence"] if c.get("detector") is None}
    got = field.get("target_exposure_ms", {})
    off = float(camera.get("offset_adu") or 0.0)
    for c, name in enumerate(spec["targets"]):
        if name in ref and name in got and got[name] != ref[name]:
            y[c] = (y[c] - off) * np.float32(ref[name] / got[name]) + np.float32(off)
    return y


#: The output range is the training targets' min/max widened by this fraction of the channel's 1-99.8th
#: percentile span on both sides: the truth's floor is the camera offset exactly (the camera cannot count
#: fewer than zero electrons), and a regression's answer on an empty background scatters by a few ADU
#: around it; that jitter is not "beyond the physical range" (2 % of the span is ~10x that jitter, and far
#: below any stained structure).
OUTPUT_RANGE_MARGIN = 0.02


def output_range(targets: np.ndarray) -> OutputRange:
    """The package's ``output_range`` from training targets ``(N, C, H, W)`` (see :data:`OUTPUT_RANGE_MARGIN`)."""
    lo, hi = targets.min(axis=(0, 2, 3)).astype(np.float64), targets.max(axis=(0, 2, 3)).astype(np.float64)
    p1, p99 = np.percentile(targets, [1, 99.8], axis=(0, 2, 3))
    margin = OUTPUT_RANGE_MARGIN * np.maximum(p99 - p1, 0.0)
    return OutputRange(min=[float(v) for v in lo - margin], max=[float(v) for v in hi + margin])


@dataclass
class Calibration:
    """What training measures for the package: normalization, input distribution, camera, output range."""

    normalization: Normalization
    input_stats: InputStats
    output_range: OutputRange
    camera: CameraCalibration

    def manifest_fields(self) -> dict[str, Any]:
        """The manifest fields, as JSON-ready dicts (a checkpoint stores them so)."""
        return {"input_stats": self.input_stats.model_dump(), "output_range": self.output_range.model_dump(),
                "camera": self.camera.model_dump()}


def _as_counts(frame: np.ndarray) -> np.ndarray:
    """A recorded frame as the camera delivered it (uint16) when it holds whole counts, so the
    guard figures are measured exactly as the engine measures a live frame."""
    if frame.dtype != np.uint16 and frame.min() >= 0 and frame.max() <= 65535 and np.all(frame == np.round(frame)):
        return frame.astype(np.uint16)
    return frame


def exposure_range(*pairs: PairSet) -> tuple[float, float] | None:
    """[min, max] exposure of the input frames of the fields of ``pairs`` (ms); None when a set does not say
    (gathered without per-field plans)."""
    e = [float(f["exposure_ms"]) for p in pairs for f in (p.fields or [{}] * len(p.inputs)) if "exposure_ms" in f]
    if not e or len(e) != sum(len(p.inputs) for p in pairs):
        return None
    return min(e), max(e)


def channel_stats(stacks: list[np.ndarray], offset: float, camera: CameraCalibration | None, p_low: float,
                  p_high: float) -> ChannelStats:
    """One channel's training statistics: the guard figures (:func:`~scopecast.daemon.inference.guards.measure`)
    of every field in ``stacks`` (arrays of fields, raw counts) as [min, median, max] ranges; ``p_low``/``p_high``
    are the normalization's exact percentiles, recorded beside them."""
    from scopecast.daemon.inference.guards import measure

    figs = [measure(_as_counts(f), offset, camera) for stack in stacks for f in stack]

    def rng(key: str) -> tuple[float, float, float] | None:
        v = np.array([f[key] for f in figs], np.float64)
        v = v[np.isfinite(v)]  # focus: NaN without structure above the noise; kurtosis: NaN on a flat field
        return (float(v.min()), float(np.median(v)), float(v.max())) if v.size else None

    sig, con = rng("signal"), rng("contrast")
    if sig is None or con is None:
        raise ValueError("no training field with a finite signal to take statistics from")
    return ChannelStats(signal=sig, contrast=con, snr_min=float(min(f["snr"] for f in figs)), peak=rng("peak"),
                        saturated_max=float(max(f["saturated"] for f in figs)), p_low=p_low, p_high=p_high,
                        focus=rng("focus"), kurtosis=rng("kurtosis"), extent=rng("extent"))


def calibrate(pairs: PairSet, inputs: list[str], low: float = 1.0, high: float = 99.8,
              camera: CameraCalibration | dict[str, Any] | None = None) -> Calibration:
    """Measure the package's calibration from the training split (never from validation).

    - camera: ``camera``, else what :func:`gather` recorded, else the offset
      estimated as the lowest 0.1th percentile of the training inputs;
    - normalization ``calibrated``: per channel ``offset`` = camera offset and
      ``scale`` = the exact ``high`` percentile of all training pixels of the
      channel minus the offset;
    - ``input_stats``: per channel, the guard figures (:func:`~scopecast.daemon.inference.guards.measure`)
      of every training field, as [min, median, max] ranges;
    - ``output_range``: min/max of the training targets per output channel (output units), widened by
      :data:`OUTPUT_RANGE_MARGIN` of the channel's range (:func:`output_range`).
    """
    if len(inputs) != pairs.inputs.shape[1]:
        raise ValueError(f"{len(inputs)} input names for {pairs.inputs.shape[1]} input channels")
    cam = camera if camera is not None else pairs.camera
    if isinstance(cam, dict):
        cam = CameraCalibration(**cam) if cam.get("offset_adu") is not None else None
    if cam is None:
        est = min(float(np.percentile(pairs.inputs[:, c], 0.1)) for c in range(len(inputs)))
        cam = CameraCalibration(offset_adu=est, source="estimated: lowest 0.1th percentile of the training "
                                                       "inputs (the dataset records no dark frame)")
    offset = float(cam.offset_adu)
    channels, scale = {}, []
    for c, name in enumerate(inputs):
        p_low, p_high = (float(v) for v in np.percentile(pairs.inputs[:, c], [low, high]))
        if not p_high > offset:
            raise ValueError(f"training channel {name!r}: its {high} percentile ({p_high:.6g}) is not above the "
                             f"camera offset ({offset:.6g}); it holds no signal to normalize")
        scale.append(p_high - offset)
        channels[name] = channel_stats([pairs.inputs[:, c]], offset, cam, p_low, p_high)
    t = pairs.targets
    return Calibration(
        normalization=Normalization(kind="calibrated", low=low, high=high, offset=[offset] * len(inputs),
                                    scale=scale),
        input_stats=InputStats(fields=len(pairs.inputs), percentiles=(low, high), channels=channels,
                               exposure_ms=exposure_range(pairs)),
        output_range=output_range(t),
        camera=cam,
    )
