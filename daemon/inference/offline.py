"""Offline inference over a recorded acquisition (policy: keep every bundle).

Reads an OME-Zarr recording written by the daemon, groups its frames into the
bundles they were acquired as, runs the same :class:`InferenceWorker` as the
live engine, and writes the results beside the recording as another OME-Zarr
(``<name>.<model>.ome.zarr``) with one series per source series and one
channel per model output. Bundles the model cannot use are reported and
skipped; every other bundle is inferred. Each output frame's header ``extra``
carries the result's ``trust`` verdict (as the live result header does), so
``scopecast replay`` gates triggers on trust exactly as live operation did;
the store's OME-XML annotates each plane with it and its ``labels/trust``
image marks the untrusted results for viewers (docs/protocol.md). The results'
times count from the source's first exposure, a time point from its bundle's
first exposure, so they lie on the source's time axis.
"""

from __future__ import annotations

import logging
import shutil
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..frames import Frame, FrameHeader, now_ns
from ..progress import Progress
from ..recorder import Recorder, SeriesSpec, open_recording
from .package import ModelPackage, load_package
from .runtimes import default_threads, open_runtime
from .worker import BundleMismatch, InferenceWorker, NonFiniteOutput, StreamFrame

__all__ = ["OfflineReport", "run_offline"]

log = logging.getLogger(__name__)


@dataclass
class OfflineReport:
    output: Path | None  # None: nothing was inferred, and no results store is left (a rerun may use the name)
    bundles: int = 0
    inferred: int = 0  # bundles with a result written (withheld and untrusted ones included)
    withheld: int = 0  # of those, the input guards withheld (a blank result saying why)
    untrusted: int = 0  # of those, trust.ok is false (the withheld included)
    skipped: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """``N/M bundles inferred`` and how many of those the trust verdict withheld or flagged."""
        return (f"{self.inferred}/{self.bundles} bundles inferred ({self.withheld} withheld by the input guards, "
                f"{self.untrusted} untrusted)")


def results_path(recording: Path, model_name: str) -> Path:
    stem = recording.name.removesuffix(".ome.zarr").removesuffix(".zarr")
    return recording.with_name(f"{stem}.{model_name}.ome.zarr")


def live_inputs(headers: list[FrameHeader], needed: list[str]) -> list[FrameHeader]:
    """The frames of one bundle plane that the live engine infers: in acquisition order (``seq``), up to the one
    that completes the model's ``needed`` channels (the engine releases the plane then; later frames go unused).
    Where a scan takes a preset twice (BF at 1 and 8 ms), the model so gets the frame live operation gave it."""
    ordered = sorted(headers, key=lambda h: h.seq)
    have: set[str] = set()
    for i, h in enumerate(ordered):
        have.add(h.channel)
        if set(needed) <= have:
            return ordered[: i + 1]
    return ordered  # incomplete: the worker names what is missing


def run_offline(package: ModelPackage | str | Path, recording: str | Path, runtime: str = "auto",
                output: str | Path | None = None, precision: str = "fp32", threads: int | None = None,
                uncertainty_budget: float = 0.025, uncertainty_morphology: str | None = None,
                uncertainty: int = 0) -> OfflineReport:
    """Run ``package`` (at ``precision``: ``int8`` runs its INT8 variant, as the live engine does) over
    ``recording``; ``threads``, ``uncertainty`` (the per-pixel map from that many copies: its
    ``<output>:std`` channels are recorded, and the check runs on every bundle, as live), ``uncertainty_budget``
    and ``uncertainty_morphology`` as for the live engine, so the results' ``trust`` is the live one."""
    pkg = package if isinstance(package, ModelPackage) else load_package(package, precision)
    m = pkg.manifest
    rec = open_recording(recording)
    out = Path(output) if output else results_path(Path(recording), m.name)
    worker = InferenceWorker(pkg, open_runtime(pkg, runtime, threads=threads or default_threads(1)),
                             uncertainty=uncertainty, uncertainty_budget=uncertainty_budget,
                             uncertainty_morphology=uncertainty_morphology)
    report = OfflineReport(out)
    grouped = []  # per series, its bundles in order (headers only: cheap)
    for series in rec.series:
        # a scan's bundle holds every plane of its z-stack: each plane is one model input (by bundle and z;
        # grouped by bundle alone, every plane but the last was silently dropped)
        bundles: dict[tuple[int, int], list[FrameHeader]] = defaultdict(list)
        for h in series.frames:
            if h.modality == "super-resolution":  # a ground-truth detector's frame (STED): never a model input,
                continue  # as the live engine drops it (engine:unused_channel)
            bundles[(h.bundle_id, h.index.get("z", 0))].append(h)
        if series.frames and not bundles:
            report.skipped.append(f"{series.name}: ground-truth detector frames (modality super-resolution) are "
                                  "no model input")
        grouped.append((series, sorted(bundles.items())))
    progress = Progress(f"offline {m.name} on {Path(recording).name}", sum(len(b) for _, b in grouped),
                        "bundles", log)
    writer = Recorder(out, f"{rec.attrs['scopecast']['acquisition_id']}.{m.name}", {
        "kind": "inference", "model": m.name, "model_sha256": m.sha256, "precision": pkg.precision,
        "weights_sha256": pkg.weights_sha256, "source": str(Path(recording).resolve()),
    }, ngff=rec.attrs.get("scopecast", {}).get("ngff", "0.4"),  # the source's version: beside it, read alike
        t0_ns=min((h.t_exposure_start_ns for h in rec.frames if h.t_exposure_start_ns), default=None))  # its clock
    try:
        for series, series_bundles in grouped:
            out_series = None
            times = {b: t for t, b in enumerate(sorted({b for (b, _), _ in series_bundles}))}
            for (bundle_id, z), headers in series_bundles:
                t = times[bundle_id]
                report.bundles += 1
                frames = [StreamFrame(h.to_dict(), series.plane(h), now_ns()) for h in live_inputs(headers, m.inputs)]
                try:
                    result = worker.process(frames)
                except (BundleMismatch, NonFiniteOutput) as e:
                    report.skipped.append(f"{series.name} bundle {bundle_id}" + (f" z {z}" if z else "") + f": {e}")
                    log.warning("offline: %s", report.skipped[-1])
                    progress.update()
                    continue
                h0 = headers[0]
                y = result.data
                if out_series is None:  # the source series' z-stack and place
                    src = series.attrs.get("scopecast", {})
                    n_z = int(series.data.shape[2])
                    z_step = float(series.attrs["multiscales"][0]["datasets"][0]["coordinateTransformations"][0]
                                   ["scale"][2])
                    out_series = writer.add_series(SeriesSpec(
                        name=f"{series.name} {m.name}", channels=tuple(worker.channels),
                        modalities=("inferred",) * len(worker.channels), shape_yx=(y.shape[1], y.shape[2]),
                        dtype="float32", pixel_size_um=h0.pixel_size_um / m.scale_factor,
                        position_um=tuple(src.get("position_um") or (h0.stage_x_um, h0.stage_y_um, h0.stage_z_um)),
                        n_z=n_z, z_step_um=z_step, detector=m.name, position_index=h0.position_index,
                    ))
                r = result.header  # time and position of the bundle's last frame, as live results carry
                for c, name in enumerate(worker.channels):
                    header = FrameHeader(
                        acquisition_id=writer.acquisition_id, seq=int(r["source_seqs"][0]),
                        bundle_id=bundle_id, bundle_index=c, bundle_size=len(worker.channels), channel=name,
                        modality="inferred", pattern="", detector=m.name, stage_x_um=r["stage_x_um"],
                        stage_y_um=r["stage_y_um"], stage_z_um=r["stage_z_um"], exposure_ms=0.0,
                        pixel_size_um=r["pixel_size_um"], dtype="float32",
                        shape=(y.shape[1], y.shape[2]), position_index=h0.position_index,
                        t_exposure_start_ns=r["t_exposure_start_ns"], t_acquired_ns=r["t_acquired_ns"],
                        extra={"model": m.name, "model_sha256": m.sha256, "precision": r["precision"],
                               "task": r["task"], "scale_factor": r["scale_factor"],
                               "t_bundle_exposure_start_ns": r["t_bundle_exposure_start_ns"],
                               "weights_sha256": r["weights_sha256"], "source_seqs": r["source_seqs"],
                               "source_acquisition_id": r["acquisition_id"], "source_series": r["series"],
                               "source_index": r["index"], "trust": r["trust"]},
                    )
                    writer.write(Frame(header, np.ascontiguousarray(y[c])), out_series, t, c, z)
                report.inferred += 1
                report.withheld += r["trust"]["guards"]["action"] == "withheld"
                report.untrusted += not r["trust"]["ok"]
                progress.update()
        progress.finish(f"{report.summary()}, {len(report.skipped)} skipped")
    finally:
        writer.close()
        if report.inferred == 0:  # an empty results store would only make the corrected rerun "already exist"
            shutil.rmtree(out, ignore_errors=True)
            report.output = None
    return report
