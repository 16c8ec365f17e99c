"""OME-NGFF and OME-XML metadata of a recording (no I/O here).

NGFF 0.4 (zarr format 2) is the default: every reader tried reads it
(ome-zarr-py 0.18, napari-ome-zarr 0.10, zarr-python 3); NGFF 0.5 (zarr
format 3, attributes under ``"ome"``) is offered for readers that want it.
Both use the ``bioformats2raw`` layout: series ``0``, ``1``, … listed in the
``OME`` group and described by ``OME/METADATA.ome.xml``, one ``Image`` per
series whose ``ID`` is ``Image:<series>`` (napari-ome-zarr finds the series
through those IDs, ome-zarr-py through their order).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Literal

import numpy as np

from ..stain_colors import emission_nm
from ..stain_colors import channel_colors as stain_channel_colors

__all__ = ["NGFF_VERSIONS", "TRUST_NS", "ChannelWindow", "NgffVersion", "Verdict", "channel_colors", "emission_nm",
           "image_attrs", "labels_group_attrs", "ome_xml", "root_attrs", "series_list_attrs", "trust_label_attrs",
           "trust_labels", "verdict"]

NgffVersion = Literal["0.4", "0.5"]
NGFF_VERSIONS: tuple[str, ...] = ("0.4", "0.5")
_PIXEL_TYPES = {"uint8": "uint8", "uint16": "uint16", "uint32": "uint32", "int8": "int8", "int16": "int16",
                "int32": "int32", "float32": "float", "float64": "double"}


@dataclass
class ChannelWindow:
    """Running display range of one channel, from a 1-in-16 pixel subsample of every frame.

    Integer data keeps a histogram (for the 0.1 / 99.9 percentiles); other
    data its minimum and maximum.
    """

    dtype: np.dtype
    lo: float = float("inf")
    hi: float = float("-inf")
    hist: np.ndarray | None = None

    def add(self, plane: np.ndarray) -> None:
        sub = plane[::4, ::4]
        if sub.dtype.kind == "u" and sub.dtype.itemsize <= 2:
            counts = np.bincount(sub.ravel(), minlength=1 << (8 * sub.dtype.itemsize))
            self.hist = counts if self.hist is None else self.hist + counts
            nz = np.flatnonzero(counts)
            if nz.size:
                self.lo, self.hi = min(self.lo, float(nz[0])), max(self.hi, float(nz[-1]))
        elif sub.size:
            finite = sub[np.isfinite(sub)] if sub.dtype.kind == "f" else sub
            if finite.size:
                self.lo, self.hi = min(self.lo, float(finite.min())), max(self.hi, float(finite.max()))

    def window(self) -> dict[str, float]:
        """The omero ``window``: ``min``/``max`` the data range, ``start``/``end`` its 0.1-99.9 percentiles."""
        if self.lo > self.hi:  # nothing written
            info = np.iinfo(self.dtype) if self.dtype.kind in "ui" else None
            lo, hi = (float(info.min), float(info.max)) if info else (0.0, 1.0)
            return {"min": lo, "max": hi, "start": lo, "end": hi}
        start, end = self.lo, self.hi
        if self.hist is not None:
            cdf = np.cumsum(self.hist) / self.hist.sum()
            start = float(np.searchsorted(cdf, 0.001))
            end = float(np.searchsorted(cdf, 0.999))
        if end <= start:
            end = start + 1
        return {"min": self.lo, "max": max(self.hi, end), "start": start, "end": end}


#: A result's trust, as the OME-XML annotates it: ``ok``, the guards' ``action`` (``inferred`` or ``withheld``),
#: ``score`` and the ``reasons`` it was not trusted.
Verdict = tuple[bool, str, float, tuple[str, ...]]
TRUST_NS = "scopecast/trust"  # namespace of the trust MapAnnotations in OME/METADATA.ome.xml
#: colours of the ``trust`` label image (RGBA): an untrusted result, a withheld (blank) one
_TRUST_RGBA = {"inferred": [255, 160, 0, 160], "withheld": [255, 0, 0, 160]}


def verdict(header: dict[str, Any]) -> Verdict | None:
    """The trust verdict a frame header's ``extra.trust`` carries (offline results), or None."""
    trust = (header.get("extra") or {}).get("trust")
    if not isinstance(trust, dict):
        return None
    action = str((trust.get("guards") or {}).get("action") or "inferred")
    return (bool(trust.get("ok")), action, round(float(trust.get("score") or 0.0), 3),
            tuple(str(r) for r in trust.get("reasons") or ()))


@dataclass(slots=True)
class PlaneInfo:
    """One journaled plane, for the OME-XML ``Plane`` element."""

    t: int
    c: int
    z: int
    t_ns: int
    exposure_ms: float
    x_um: float
    y_um: float
    z_um: float
    trust: Verdict | None = None  # a result's trust verdict (None: the frame carries none, e.g. a camera's)


@dataclass
class SeriesMeta:
    """What the metadata of one series needs, besides its spec."""

    t_count: int = 1
    t_first_ns: dict[int, int] = field(default_factory=dict)  # time point -> first exposure start
    windows: list[ChannelWindow] = field(default_factory=list)
    planes: list[PlaneInfo] = field(default_factory=list)
    bit_depth: int = 0  # the most bits a plane's camera used (OME SignificantBits); 0: no plane yet

    def add_plane(self, t: int, c: int, z: int, header: dict[str, Any]) -> int:
        """Record a durable plane from its frame header (a dict); returns its exposure start (ns, 0: unknown).
        Its bits are the header's ``extra.bit_depth`` (a 12-bit camera in 16-bit pixels), else its dtype's.
        A time point starts with the first exposure of the frames it was made from: an inferred plane's
        ``extra.t_bundle_exposure_start_ns`` (its bundle's first frame), else the plane's own exposure start."""
        extra, dtype = header.get("extra") or {}, header.get("dtype")
        bits = int(extra.get("bit_depth") or 0) or (8 * np.dtype(dtype).itemsize if dtype else 0)
        self.bit_depth = max(self.bit_depth, bits)
        t_ns = int(header.get("t_exposure_start_ns") or 0)
        if start := int(extra.get("t_bundle_exposure_start_ns") or 0) or t_ns:
            self.t_first_ns[t] = min(self.t_first_ns.get(t, start), start)
        self.planes.append(PlaneInfo(t, c, z, t_ns, float(header.get("exposure_ms") or 0.0),
                                     float(header.get("stage_x_um") or 0.0), float(header.get("stage_y_um") or 0.0),
                                     float(header.get("stage_z_um") or 0.0), verdict(header)))
        return t_ns

    def time_scale_s(self) -> float:
        """Mean interval between time points (s); 1.0 with a single time point."""
        ts = sorted(self.t_first_ns.items())
        if len(ts) < 2 or ts[-1][0] == ts[0][0]:
            return 1.0
        return max((ts[-1][1] - ts[0][1]) / 1e9 / (ts[-1][0] - ts[0][0]), 1e-9)

    def time_translation_s(self, t0_ns: int | None) -> float:
        """Where time point 0 lies (s after ``t0_ns``, the recording's first exposure) on an axis stepped by
        :meth:`time_scale_s`, so that the series' first (and last) time point sit at the time they began:
        a series that begins later in the recording (a new objective's, an offline result's) lines up with
        the others. 0.0 without times."""
        if not t0_ns or not self.t_first_ns:
            return 0.0
        t, start_ns = min(self.t_first_ns.items())
        return (start_ns - t0_ns) / 1e9 - t * self.time_scale_s()


def channel_colors(spec: Any) -> list[str]:
    """Display colours (``RRGGBB``) of ``spec``'s channels (:func:`scopecast.daemon.stain_colors.channel_colors`:
    label-free grey, a stain and its virtual stain in the colour of its emission band)."""
    return stain_channel_colors(spec.channels, spec.modalities)


def trust_labels(meta: SeriesMeta) -> tuple[list[Verdict], dict[tuple[int, int], int]]:
    """The untrusted verdicts of a series' planes, in order of appearance, and the ``trust`` label value of each
    untrusted time point and plane ``(t, z)``: 1 + its verdict's index (0, the background: trusted)."""
    legend: list[Verdict] = []
    values: dict[tuple[int, int], int] = {}
    for p in meta.planes:
        if p.trust is not None and not p.trust[0]:
            if p.trust not in legend:
                legend.append(p.trust)
            values[(p.t, p.z)] = legend.index(p.trust) + 1
    return legend, values


def trust_label_attrs(version: str, spec: Any, meta: SeriesMeta, t0_ns: int | None,
                      legend: list[Verdict]) -> dict[str, Any]:
    """The ``trust`` label image's attributes: the series' ``(t, z, y, x)`` axes and transforms (no channels:
    a verdict holds for every output of its bundle) and ``image-label`` colours and properties per value."""
    ms = image_attrs(version, spec, meta, t0_ns)
    ms = dict(ms.get("ome", ms)["multiscales"][0])
    keep = [0, 2, 3, 4]  # t, z, y, x
    ms["axes"] = [ms["axes"][i] for i in keep]
    ms["datasets"] = [{"path": "0", "coordinateTransformations": [
        {k: v if k == "type" else [v[i] for i in keep] for k, v in tr.items()}
        for tr in ms["datasets"][0]["coordinateTransformations"]]}]
    ms["name"] = f"{spec.name} trust"
    ms.pop("version", None)
    if version == "0.4":
        ms = {"version": "0.4", **ms}
    label = {
        "colors": [{"label-value": i + 1, "rgba": _TRUST_RGBA.get(v[1], _TRUST_RGBA["inferred"])}
                   for i, v in enumerate(legend)],
        "properties": [{"label-value": i + 1, "trust": "withheld" if v[1] == "withheld" else "untrusted",
                        "score": v[2], "reasons": "; ".join(v[3])} for i, v in enumerate(legend)],
        "source": {"image": "../../"},
    }
    if version == "0.4":
        label = {"version": "0.4", **label}
    return _wrap(version, {"multiscales": [ms], "image-label": label})


def labels_group_attrs(version: str) -> dict[str, Any]:
    return _wrap(version, {"labels": ["trust"]})


def _wrap(version: str, ome: dict[str, Any], extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """0.4 keeps the OME keys at the top of the attributes; 0.5 nests them under ``"ome"``."""
    extra = extra or {}
    if version == "0.4":
        return {**ome, **extra}
    return {"ome": {"version": "0.5", **ome}, **extra}


def root_attrs(version: str, scopecast: dict[str, Any]) -> dict[str, Any]:
    return _wrap(version, {"bioformats2raw.layout": 3}, {"scopecast": scopecast})


def series_list_attrs(version: str, names: list[str]) -> dict[str, Any]:
    return _wrap(version, {"series": names})


def image_attrs(version: str, spec: Any, meta: SeriesMeta, t0_ns: int | None = None) -> dict[str, Any]:
    """``multiscales`` (µm scale, stage translation, the real time step, the time the series began after
    ``t0_ns``) and ``omero`` (data windows)."""
    ny, nx = spec.shape_yx
    px, (x, y, z), t = spec.pixel_size_um, spec.position_um, meta.time_translation_s(t0_ns)
    multiscale: dict[str, Any] = {
        "name": spec.name,
        "axes": [
            {"name": "t", "type": "time", "unit": "second"},
            {"name": "c", "type": "channel"},
            {"name": "z", "type": "space", "unit": "micrometer"},
            {"name": "y", "type": "space", "unit": "micrometer"},
            {"name": "x", "type": "space", "unit": "micrometer"},
        ],
        "datasets": [{
            "path": "0",
            "coordinateTransformations": [
                {"type": "scale", "scale": [meta.time_scale_s(), 1.0, spec.z_step_um, px, px]},
                # the coordinate of pixel 0's centre: the field's centre (the stage position) lies between pixels
                # (n - 1) / 2 apart from it, not n / 2 (that put every series half its own pixel off, so a
                # camera series and its STED or 2x super-resolved series disagreed by a quarter camera pixel)
                {"type": "translation", "translation": [t, 0.0, z, y - (ny - 1) / 2 * px, x - (nx - 1) / 2 * px]},
            ],
        }],
    }
    if version == "0.4":
        multiscale = {"version": "0.4", **multiscale}
    omero = {
        "name": spec.name,
        "channels": [
            {"label": c, "color": color, "active": True, "window": w.window()}
            for c, color, w in zip(spec.channels, channel_colors(spec), meta.windows, strict=True)
        ],
        "rdefs": {"model": "color"},
    }
    scopecast = {
        "channels": list(spec.channels), "modalities": list(spec.modalities), "detector": spec.detector,
        "position_index": spec.position_index, "position_um": list(spec.position_um), "pixel_size_um": px,
    }
    return _wrap(version, {"multiscales": [multiscale], "omero": omero}, {"scopecast": scopecast})


def ome_xml(series: list[tuple[Any, SeriesMeta]], t0_ns: int | None, planes: bool = True) -> str:
    """``OME/METADATA.ome.xml``: one ``Image`` per series with (``planes``) a ``Plane`` per written
    frame (``DeltaT`` from the recording's first exposure, ``ExposureTime``, ``PositionX/Y/Z``; a result's
    ``AnnotationRef`` to the ``MapAnnotation`` of its trust verdict, namespace :data:`TRUST_NS`: ``ok``,
    ``action``, ``score`` and, where any, ``reasons`` joined by ``; ``); ``Channel`` ``Color``
    (:func:`channel_colors`); ``Pixels`` carries ``SignificantBits`` once a plane is journaled (the camera's
    bit depth, not only the dtype's)."""
    from ome_types import model as m
    from ome_types import to_xml
    from ome_types.model.simple_types import Color

    images, plane_xml = [], []
    verdicts = list(dict.fromkeys(p.trust for _, meta in series for p in meta.planes if p.trust is not None))
    ann_ids = {v: f"Annotation:trust:{k}" for k, v in enumerate(verdicts)}
    for i, (spec, meta) in enumerate(series):
        ny, nx = spec.shape_yx
        # Plane elements are formatted here, not built as ome-types models: ~1 µs instead of ~0.4 ms
        # each, which matters at close for hours at 100 frames/s
        plane_xml.append("".join(
            f'<Plane TheZ="{p.z}" TheT="{p.t}" TheC="{p.c}"'
            + (f' DeltaT="{(p.t_ns - t0_ns) / 1e9!r}" DeltaTUnit="s"' if t0_ns and p.t_ns else "")
            + f' ExposureTime="{p.exposure_ms!r}" ExposureTimeUnit="ms" PositionX="{p.x_um!r}" PositionXUnit="µm"'
            f' PositionY="{p.y_um!r}" PositionYUnit="µm" PositionZ="{p.z_um!r}" PositionZUnit="µm"'
            + (f'><AnnotationRef ID="{ann_ids[p.trust]}"/></Plane>' if p.trust is not None else "/>")
            for p in (sorted(list(meta.planes), key=lambda p: (p.t, p.c, p.z)) if planes else [])))
        pixels = m.Pixels(
            id=f"Pixels:{i}", dimension_order="XYZCT", type=_PIXEL_TYPES.get(spec.dtype, "uint16"),
            size_x=nx, size_y=ny, size_z=spec.n_z, size_c=len(spec.channels), size_t=max(meta.t_count, 1),
            physical_size_x=spec.pixel_size_um, physical_size_x_unit="µm",
            physical_size_y=spec.pixel_size_um, physical_size_y_unit="µm",
            physical_size_z=spec.z_step_um, physical_size_z_unit="µm",
            time_increment=meta.time_scale_s(), time_increment_unit="s", significant_bits=meta.bit_depth or None,
            channels=[m.Channel(id=f"Channel:{i}:{c}", name=name, samples_per_pixel=1, color=Color(f"#{color}"))
                      for c, (name, color) in enumerate(zip(spec.channels, channel_colors(spec), strict=True))],
            metadata_only=m.MetadataOnly(),
        )
        date = datetime.fromtimestamp(t0_ns / 1e9, timezone.utc) if t0_ns else None
        images.append(m.Image(id=f"Image:{i}", name=spec.name, acquisition_date=date, pixels=pixels))
    annotations = m.StructuredAnnotations(map_annotations=[m.MapAnnotation(
        id=ann_ids[v], namespace=TRUST_NS, value=m.Map(ms=[
            m.Map.M(k=k, value=x) for k, x in (("ok", str(v[0]).lower()), ("action", v[1]), ("score", repr(v[2])),
                                                ("reasons", "; ".join(v[3]))) if x]))
        for v in verdicts]) if verdicts else None
    xml = to_xml(m.OME(images=images, creator="scopecast", structured_annotations=annotations))
    parts = xml.split("<MetadataOnly/>")  # one per Pixels, in image order; the planes follow it (schema order)
    if len(parts) != len(images) + 1:
        raise RuntimeError("unexpected OME-XML from ome-types: cannot place the Plane elements")
    return "".join(p + "<MetadataOnly/>" + planes_i for p, planes_i in zip(parts, plane_xml)) + parts[-1]
