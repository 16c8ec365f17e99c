"""One inference worker: a bundle of frames in, one result out.

The input guards (:mod:`.guards`) check the bundle first; a bundle that
fails a hard check (saturated, empty, flat, under-exposed) is not inferred:
its result carries a blank image at the output's background level.
Otherwise ``preprocess`` stacks the bundle's frames in the model's channel
order and normalizes them as the package says (a bundle of several frames
on a second thread, while the guards check it: the stage ``preprocess`` is
then what is left of it once they are done); ``infer`` runs the runtime
over tiles; ``postprocess`` maps the output to physical units, refuses
non-finite values and clips to the package's physical range. Every result
header carries the ``trust`` verdict. Each step is timed for the latency
figures.

With ``uncertainty=n`` (2, 4 or 8; default 0: off) the worker also runs the
model on ``n − 1`` mirrored/rotated copies of the bundle (:mod:`.uncertainty`)
and publishes the per-pixel standard deviation across the ``n`` answers as one
extra channel per output, named ``<output>:std`` (physical units; zeros for a
withheld bundle), and its summary as ``trust.uncertainty``. The published image
is still the model's answer to the bundle itself; the copies' time counts as
inference.

The **uncertainty check** (on by default: ``uncertainty_budget=0.025``, which
with the guards keeps the monitor within 5 % of the accurate models' inference
time; the live tiers' monitor: README, "Monitor overhead") turns that
spread into a verdict within the monitor's budget: a credit of
``uncertainty_budget`` × the model passes this worker runs pays for the check's
``tta − 1`` extra passes on the first bundle of a new scene (stage position,
pixel size, exposure, acquisition: :class:`.uncertainty.Scene`) and, with credit
to spare, re-checks; the verdict carries to the later bundles of the scene.
A statistic above the package's validated threshold (``validated.uncertainty``:
per training morphology; ``uncertainty_morphology`` picks one, else the largest)
makes ``trust.ok`` false with an ``uncertainty:`` reason; a package without
thresholds gets the statistic reported, not judged. With ``uncertainty=n`` ≥ the
check's copies the check is free and runs on every bundle.

The **consistency check** (:mod:`.consistency`; super-resolution packages
with ``validated.consistency``) blurs the output back through the widefield
optics and compares it with the input frame, under a credit of its own
(:data:`.consistency.BUDGET_SHARE` × ``uncertainty_budget``, on top of it: one
knob for the monitor's checks, 0 turns both off); it costs a small fraction of
a model pass, so a new scene is judged within a few bundles. Its verdict is
carried and dropped with the scene (the same scene rule); a figure above the
validated threshold makes ``trust.ok`` false with an ``inconsistent with the
input:`` reason.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..frames import now_ns
from scopecast.models.manifest import normalize

from .consistency import BUDGET_SHARE as CONSISTENCY_SHARE, ConsistencyCheck
from .guards import GuardVerdict, InputGuard, OutputGuard, trust
from .package import ModelPackage, PackageError
from .runtimes import InferenceRuntime
from .tiling import ModelShapeError, plan_tiles, run_tiled
from .uncertainty import DIHEDRAL, UNCERTAINTY_CHOICES, UncertaintyCheck, channel_order, statistic, summary, tta_stds

__all__ = ["BundleMismatch", "InferenceWorker", "NonFiniteOutput", "Result", "StreamFrame", "normalize"]

#: The warm-up also runs a frame about this small (the smallest odd multiple of the manifest's ``multiple`` at
#: least this size): a frame below the tile runs whole, padded only to the ``multiple``, so a ``multiple``
#: smaller than the network's (or a model with a fixed input size) fails on it, as it would on every such frame.
SMALL_FRAME = 48


class BundleMismatch(ValueError):
    """The bundle does not carry what the model needs."""


class NonFiniteOutput(RuntimeError):
    """The model produced NaN or Inf."""


@dataclass
class StreamFrame:
    """A frame as received from the stream (header dict + pixels)."""

    header: dict[str, Any]
    data: np.ndarray
    t_received_ns: int = 0


@dataclass
class Result:
    header: dict[str, Any]
    data: np.ndarray  # float32 (C, H, W)


def _ns(v: Any) -> int:
    """A timestamp from a frame header; 0 when the header holds something else (a result never fails on it)."""
    return v if isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 1 << 63 else 0


def _num(v: Any) -> float:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) and np.isfinite(v) else 0.0


def _ceiling_adu(header: dict[str, Any]) -> float:
    """The level at which the frame's detector clips, from the header's ``extra.bit_depth`` (0: not said)."""
    extra = header.get("extra")
    depth = _num(extra.get("bit_depth")) if isinstance(extra, dict) else 0.0
    return 2.0 ** int(depth) - 1 if 0 < depth <= 64 else 0.0


def _source_place(header: dict[str, Any]) -> dict[str, Any]:
    """Where a bundle's frames were recorded (its last frame's header): ``series`` and ``index`` ``{"t", "z"}``
    (the plane of a scan's z-stack this result is; no ``c``: the result holds every input channel); ``""`` and
    ``{}`` for frames not recorded."""
    index = header.get("index") or {}
    return {"series": str(header.get("series") or ""), "index": {k: int(index[k]) for k in ("t", "z") if k in index}}


def _stage_position(header: dict[str, Any]) -> tuple[float | None, float | None, float | None]:
    """A frame's stage position (µm; None for an axis its header does not give)."""
    def axis(a: str) -> float | None:
        v = header.get(f"stage_{a}_um")
        return _num(v) if v is not None else None
    return axis("x"), axis("y"), axis("z")


class InferenceWorker:
    """Runs one model package on bundles (not thread-safe: one per thread)."""

    def __init__(self, package: ModelPackage, runtime: InferenceRuntime, worker_id: int = 0, batch: int = 4,
                 uncertainty: int = 0, uncertainty_budget: float = 0.025,
                 uncertainty_morphology: str | None = None) -> None:
        if uncertainty not in UNCERTAINTY_CHOICES:
            raise ValueError(f"uncertainty must be one of {UNCERTAINTY_CHOICES} dihedral copies (0: off), "
                             f"got {uncertainty}")
        if uncertainty and any(channel_order(package.manifest.inputs, t) is None for t in DIHEDRAL[:uncertainty]):
            raise ValueError(f"uncertainty {uncertainty} needs 90° rotations, which turn the DPC inputs' left/right "
                             "into top/bottom in a sense the package does not record; use 2 or 4")
        self.uncertainty = uncertainty
        self.package = package
        self.m = package.manifest
        self.runtime = runtime
        self.worker_id = worker_id
        self.batch = batch
        self.results = 0
        self.guard = InputGuard.from_manifest(self.m)
        self.output_guard = OutputGuard(self.m)
        self._input: np.ndarray | None = None  # reused input buffer
        self._beside: ThreadPoolExecutor | None = None  # the worker's second thread (:meth:`_normalize_beside`)
        val = self.m.validated.uncertainty if self.m.validated is not None else None
        default_tta = 2
        self.check_uncertainty = UncertaintyCheck(val, uncertainty_budget, uncertainty_morphology, default_tta)
        if uncertainty_budget and any(channel_order(self.m.inputs, t) is None
                                      for t in DIHEDRAL[:self.check_uncertainty.tta]):
            raise ValueError(f"the package's uncertainty check needs {self.check_uncertainty.tta} dihedral copies, "
                             "which the DPC inputs cannot take (90° rotations)")
        self.check_consistency = ConsistencyCheck(self.m.validated.consistency if self.m.validated else None,
                                                  self.m.camera, self.m.scale_factor, len(self.m.inputs),
                                                  len(self.m.outputs), uncertainty_morphology,
                                                  CONSISTENCY_SHARE * uncertainty_budget)

    def _normalize_beside(self, ordered: list[StreamFrame]) -> Future[np.ndarray] | None:
        """Start :meth:`preprocess` on the worker's second thread, to run while the guards check the bundle,
        on the core the model's threads leave idle between passes (numpy releases the GIL in its loops); one
        thread, so bundles are normalized in order into the one reused buffer. Bundles of several frames only
        (None for one frame: it normalizes in ~0.2 ms at 512², less than the guards lose to the second thread,
        measured in a paced super-resolution live cycle: guards +0.3 ms, normalization −0.1 ms; six frames
        of virtual staining: guards and normalization 3.0 → 2.3 ms)."""
        if len(ordered) < 2:
            return None
        if self._beside is None:
            self._beside = ThreadPoolExecutor(1, thread_name_prefix=f"worker-{self.worker_id}-normalize")
        return self._beside.submit(self.preprocess, ordered)

    def warm_up(self, shape: tuple[int, int]) -> float:
        """Run once on zeros of a frame ``shape`` (allocations, kernel selection); returns ms.

        Also checks the model against its manifest (input channels, output channels, scale factor, and on a
        small frame the size ``multiple``: :data:`SMALL_FRAME`), so a package whose manifest does not describe
        its model is refused when it is loaded (:class:`PackageError` naming the field), not on every bundle,
        and never serves cropped or misplaced images."""
        t0 = now_ns()
        self._warm_run(shape)
        m = self.m
        k = -(-SMALL_FRAME // m.multiple) | 1  # an odd number of multiples: halved, it leaves a remainder
        if k * m.multiple < min(m.tile, *shape):
            try:
                self._warm_run((k * m.multiple,) * 2)
            except PackageError as e:
                raise PackageError(f"{e}; frames below the tile ({m.tile}) run whole, padded to a multiple of "
                                   f"{m.multiple} (the manifest's multiple): is it smaller than the model needs, "
                                   "or is the model's input size fixed?") from None
        return (now_ns() - t0) / 1e6

    def _warm_run(self, shape: tuple[int, int]) -> None:
        """:meth:`warm_up`'s run on zeros of a frame ``shape``; :class:`PackageError` naming what failed."""
        x = np.zeros((len(self.m.inputs), *shape), np.float32)
        try:
            y = run_tiled(x, plan_tiles(shape, self.m.tile, self.m.halo, self.m.multiple), self.runtime.run,
                          self.m.scale_factor, self.batch)
        except ModelShapeError as e:
            raise PackageError(f"{self.package.path}: {e}") from None
        except Exception as e:  # noqa: BLE001 - e.g. ONNX Runtime refusing the input's channel count
            raise PackageError(f"{self.package.path}: the model failed on an input of the manifest's shape "
                               f"({len(self.m.inputs)} channels {self.m.inputs}, {shape[0]}×{shape[1]}): "
                               f"{type(e).__name__}: {str(e).strip()}") from None
        if y.shape[0] != len(self.m.outputs):
            raise PackageError(f"{self.package.path}: the model produces {y.shape[0]} output channels; the "
                               f"manifest's outputs are {len(self.m.outputs)} ({self.m.outputs})")

    def order(self, frames: list[StreamFrame]) -> list[StreamFrame]:
        """The bundle's frames in model input order; raises :class:`BundleMismatch`."""
        by_channel = {f.header["channel"]: f for f in frames}
        missing = [c for c in self.m.inputs if c not in by_channel]
        if missing:
            raise BundleMismatch(
                f"model {self.m.name!r} needs channels {self.m.inputs}; bundle "
                f"{frames[0].header.get('bundle_id')} of {frames[0].header.get('acquisition_id')} "
                f"has {sorted(by_channel)} (missing {missing})"
            )
        ordered = [by_channel[c] for c in self.m.inputs]
        shapes = {tuple(f.data.shape) for f in ordered}
        if len(shapes) != 1:
            raise BundleMismatch(f"model {self.m.name!r}: input frames differ in shape {sorted(shapes)}")
        return ordered

    def preprocess(self, ordered: list[StreamFrame]) -> np.ndarray:
        self._input = normalize([f.data for f in ordered], self.m.normalization, self._input)
        return self._input

    def infer(self, x: np.ndarray) -> np.ndarray:
        plan = plan_tiles(x.shape[1:], self.m.tile, self.m.halo, self.m.multiple)
        out = run_tiled(x, plan, self.runtime.run, self.m.scale_factor, self.batch)
        expected = len(self.m.outputs)
        if out.shape[0] != expected:
            raise BundleMismatch(f"model {self.m.name!r} produced {out.shape[0]} channels, manifest says {expected}")
        return out

    def postprocess(self, y: np.ndarray, out: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Physical units, in place or into ``out`` (``y``'s shape: e.g. a slot of the shared-memory result
        ring, written by the scaling pass itself), and each channel's ``[min, max]`` in them (``(C, 2)``; the
        output guard's first look at the range). Raises :class:`NonFiniteOutput` (:meth:`process` then clips
        to the physical range): NaN and Inf propagate into the extremes, so they are the finite check too, one
        pass each."""
        lo, hi = y.min(axis=(1, 2)), y.max(axis=(1, 2))
        if not (np.isfinite(lo).all() and np.isfinite(hi).all()):
            bad = int(np.size(y) - np.count_nonzero(np.isfinite(y)))
            raise NonFiniteOutput(f"model {self.m.name!r} produced {bad} NaN/Inf values")
        s = self.m.output_scaling
        dest = y if out is None else out
        if s is None and out is not None:
            np.copyto(out, y)
        if s is not None:
            scale, offset = np.asarray(s.scale, np.float32), np.asarray(s.offset, np.float32)
            np.multiply(y, scale[:, None, None], out=dest)
            dest += offset[:, None, None]
            # the same float32 operations as on the pixels, so these are exactly the scaled extremes (a
            # negative scale swaps them)
            lo, hi = lo * scale + offset, hi * scale + offset
            lo, hi = np.minimum(lo, hi), np.maximum(lo, hi)
        return dest, np.stack([lo, hi], axis=1)

    @property
    def channels(self) -> list[str]:
        """The result's channels: the outputs, then (with uncertainty) one ``<output>:std`` each."""
        return list(self.m.outputs) + ([f"{o}:std" for o in self.m.outputs] if self.uncertainty else [])

    def _std(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Per-pixel TTA standard deviation in physical units (``y``: the raw answer to ``x``, not yet scaled)."""
        return self._stds(x, y, (self.uncertainty,))[self.uncertainty]

    def _stds(self, x: np.ndarray, y: np.ndarray, ns: tuple[int, ...], raw: bool = False) -> dict[int, np.ndarray]:
        """:meth:`_std` for several copy counts from one pass (``raw``: in model units, not scaled)."""
        stds = tta_stds(x, self.infer, ns, identity=y, inputs=list(self.m.inputs))
        s = self.m.output_scaling
        if s is not None and not raw:
            for std in stds.values():
                std *= np.abs(np.asarray(s.scale, np.float32))[:, None, None]
        return stds

    def _uncertainty(self, x: np.ndarray, y: np.ndarray, header: dict[str, Any]) -> tuple[np.ndarray | None, Any]:
        """The per-pixel map (``uncertainty=n``; physical units) and/or the check's statistic on this bundle;
        returns ``(map or None, map summary or None)``."""
        chk = self.check_uncertainty
        shape = (x.shape[1], x.shape[2])
        due = chk.due(header, shape, inferred=True)
        free = self.uncertainty >= chk.tta and chk.enabled  # the map's copies include the check's
        ns = tuple(sorted({*((self.uncertainty,) if self.uncertainty else ()), *((chk.tta,) if due or free else ())}))
        if not ns:
            return None, None
        t0 = now_ns()
        stds = self._stds(x, y, ns, raw=True)
        if due or free:
            chk.record(statistic(stds[chk.tta], y, chk.kind), header, shape, spent=not free,
                       ms=(now_ns() - t0) / 1e6)
        if not self.uncertainty:
            return None, None
        std = stds[self.uncertainty]
        s = self.m.output_scaling
        if s is not None:
            std = std * np.abs(np.asarray(s.scale, np.float32))[:, None, None]
        unc = {**summary(std, list(self.m.outputs), None if s is None else list(s.scale), self.uncertainty),
               "ms": round((now_ns() - t0) / 1e6, 2)}
        return std, unc

    def check(self, ordered: list[StreamFrame]) -> GuardVerdict:
        """The input guards' verdict on a bundle (frames in model order, raw counts)."""
        return self.guard.check([f.data for f in ordered], [_num(f.header.get("pixel_size_um")) for f in ordered],
                                [_num(f.header.get("exposure_ms")) for f in ordered],
                                [_stage_position(f.header) for f in ordered],
                                [_ceiling_adu(f.header) for f in ordered])

    def process(self, frames: list[StreamFrame], t_dequeued_ns: int | None = None,
                out: Callable[[tuple[int, int, int]], np.ndarray] | None = None) -> Result:
        """Bundle -> :class:`Result` with per-stage timestamps and the ``trust`` verdict.

        ``out``: called with the result's shape once it is known, returns the float32 array to write the
        result into (the engine's shared-memory ring); ``Result.data`` is then that array."""
        t_deq = t_dequeued_ns or now_ns()
        dest: np.ndarray | None = None
        ordered = self.order(frames)
        pending = self._normalize_beside(ordered)
        verdict = self.check(ordered)
        t_chk = now_ns()
        std = unc = None
        h0 = max(ordered, key=lambda f: _ns(f.header.get("t_acquired_ns"))).header
        if verdict.withhold:  # nothing the model could honestly answer: a blank result saying why
            if pending is not None:
                pending.result()
            h, w = ordered[0].data.shape
            sf = self.m.scale_factor
            y = self.output_guard.blank((len(self.m.outputs), h * sf, w * sf))
            if out is not None:
                dest = out((len(self.channels), *y.shape[1:]))
                dest[:len(y)] = y
                y = dest[:len(y)]
            t_pre = t_model = t_inf = now_ns()
            out_fig, out_reasons, out_margin = {**self.output_guard.apply(y)[0], "withheld": True}, [], 1.0
            if self.uncertainty:
                std = np.zeros_like(y)
            self.check_uncertainty.due(h0, (h, w), inferred=False)
        else:
            x = pending.result() if pending is not None else self.preprocess(ordered)
            t_pre = now_ns()
            y = self.infer(x)
            t_model = now_ns()
            std, unc = self._uncertainty(x, y, h0)
            t_inf = now_ns()
            dest = None if out is None else out((len(self.channels), *y.shape[1:]))
            y, extremes = self.postprocess(y, None if dest is None else dest[:len(y)])
            out_fig, out_reasons, out_margin = self.output_guard.apply(y, extremes)
        work = ordered[0].data.size / 1e6
        if self.check_consistency.due(self.check_uncertainty.scene_changed, work, inferred=not verdict.withhold):
            ms = self.check_consistency.run([f.data for f in ordered], y, _num(h0.get("pixel_size_um")) or None,
                                            h0.get("bundle_id"))
            self.check_consistency.pay(ms / max((t_model - t_pre) / 1e6, 1e-3), work)
        if std is not None:
            if dest is None:
                y = np.concatenate([y, std])
            else:  # y is the first channels of dest
                dest[len(y):] = std
                y = dest
        t_post = now_ns()
        self.results += 1
        header = {
            "version": h0.get("version", 1),
            "kind": "result",
            "model": self.m.name,
            "model_sha256": self.m.sha256,  # the package (its FP32 model_file), whatever precision runs
            "precision": self.package.precision,
            "weights_sha256": self.package.weights_sha256,  # the file that computed this result
            "task": self.m.task,
            "runtime": self.runtime.name,
            "worker": self.worker_id,
            "acquisition_id": h0.get("acquisition_id"),
            "bundle_id": h0.get("bundle_id"),
            "position_index": int(h0.get("position_index") or 0),
            **_source_place(h0),
            "source_seqs": [f.header.get("seq") for f in ordered],
            "channels": self.channels,
            "dtype": "float32",
            "shape": list(y.shape),
            "scale_factor": self.m.scale_factor,
            "pixel_size_um": _num(h0.get("pixel_size_um")) / self.m.scale_factor,
            "stage_x_um": h0.get("stage_x_um"),
            "stage_y_um": h0.get("stage_y_um"),
            "stage_z_um": h0.get("stage_z_um"),
            "t_exposure_start_ns": _ns(h0.get("t_exposure_start_ns")),
            "t_bundle_exposure_start_ns": min(_ns(f.header.get("t_exposure_start_ns")) for f in ordered),
            "t_acquired_ns": _ns(h0.get("t_acquired_ns")),
            "t_frame_published_ns": max(_ns(f.header.get("t_published_ns")) for f in ordered),
            "t_received_ns": max(f.t_received_ns for f in ordered),
            "t_dequeued_ns": t_deq,
            "t_checked_ns": t_chk,
            "t_preprocessed_ns": t_pre,
            "t_inferred_ns": t_inf,
            "t_postprocessed_ns": t_post,
            "t_published_ns": 0,
            "trust": trust(verdict, out_fig, out_reasons, out_margin),
        }
        check, reason = self.check_uncertainty.report()
        t = header["trust"]
        t["uncertainty"] = {**(unc or {}), "check": check}  # the map's summary only when it was computed
        t["consistency"], reason_c = self.check_consistency.report()
        for r in (reason, reason_c):
            if r:
                t["reasons"].append(r)
                t["ok"], t["score"] = False, 0.0
        return Result(header, dest if dest is not None else np.ascontiguousarray(y, dtype=np.float32))
