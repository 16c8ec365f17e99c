"""A user-supplied specimen: maps (or a label image) read from a file.

Supported files (see docs/specimens.md):

- NumPy ``.npz`` with any of the keys ``opd`` (optical path difference, µm),
  ``absorption`` (amplitude attenuation ``a`` in ``t = exp(-a + iφ)``),
  ``nuclei`` and ``membrane`` (fluorophore density, the simulator's units:
  ~100 in a stained nucleus), ``labels`` (integer cell labels, 0 = background);
  a ``.npy`` holds one array, read like a one-channel TIFF.
- TIFF (``.tif``/``.tiff``): a 2-D integer image is a label image; a 2-D float
  image is an OPD map; a ``CYX`` stack of 2-4 float channels (integer ones are refused) holds
  ``opd, absorption, nuclei, membrane`` in that order, or, in an OME-TIFF whose
  channel names are the keys above, in the order its names say.
- OME-Zarr (a ``.zarr`` directory, NGFF 0.4 or 0.5): the full-resolution
  image of the first multiscale; channels are named by their ``omero`` labels
  when those are the keys above, else read in the TIFF order; single-plane
  ``t``/``z`` axes are dropped, and one unnamed channel is a 2-D image (an integer one: labels).

A label image alone becomes plausible maps (:func:`maps_from_labels`); maps
given next to it win. Pixels are ``pixel_um`` wide, and the specimen is centred
on the slide origin (0, 0); the slide is blank outside it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage

from .specimens import _sample_texture

__all__ = ["MAP_KEYS", "SPECIMEN_KEYS", "SpecimenFileError", "UserSpecimen", "load_specimen", "maps_from_labels"]

MAP_KEYS: tuple[str, ...] = ("opd", "absorption", "nuclei", "membrane")
SPECIMEN_KEYS: tuple[str, ...] = (*MAP_KEYS, "labels")
_MAX_SIDE = 16384
_SUFFIXES = (".npz", ".npy", ".tif", ".tiff", ".zarr")


class SpecimenFileError(ValueError):
    """A specimen file that cannot be used; the message names the file and the problem."""


@dataclass
class UserSpecimen:
    """Maps of a specimen on its own pixel grid, centred on the slide origin."""

    path: str
    pixel_um: float
    maps: dict[str, np.ndarray]  # MAP_KEYS present, float32
    labels: np.ndarray | None = None
    _smoothed: dict = field(default_factory=dict, repr=False)

    @property
    def shape(self) -> tuple[int, int]:
        return next(iter(self.maps.values())).shape

    def extent_um(self) -> tuple[float, float, float, float]:
        """(x0, x1, y0, y1) of the specimen on the slide."""
        ny, nx = self.shape
        return (-nx * self.pixel_um / 2, nx * self.pixel_um / 2, -ny * self.pixel_um / 2, ny * self.pixel_um / 2)

    def _maps_for(self, pixel_um: float) -> dict[str, np.ndarray]:
        """Maps low-pass filtered for sampling at ``pixel_um`` (no aliasing when zoomed out)."""
        factor = pixel_um / self.pixel_um
        if factor <= 1.5:
            return self.maps
        key = round(factor, 1)
        if key not in self._smoothed:
            if len(self._smoothed) > 4:
                self._smoothed.clear()
            self._smoothed[key] = {k: ndimage.gaussian_filter(v, 0.5 * key) for k, v in self.maps.items()}
        return self._smoothed[key]

    def render(self, xs: np.ndarray, ys: np.ndarray, pixel_um: float, opd, absorption,
               lab: dict[str, np.ndarray]) -> np.ndarray | None:
        """Add the specimen sampled on the grid ``ys x xs`` (µm); returns the cell labels there."""
        ny, nx = self.shape
        fx = xs / self.pixel_um + (nx - 1) / 2  # fractional file column of each grid column
        fy = ys / self.pixel_um + (ny - 1) / 2
        cols = np.flatnonzero((fx > -1) & (fx < nx))
        rows = np.flatnonzero((fy > -1) & (fy < ny))
        ids = None
        if self.labels is not None:
            ids = np.zeros((len(ys), len(xs)), np.int64)
        if len(cols) == 0 or len(rows) == 0:
            return ids
        sx, sy = slice(cols[0], cols[-1] + 1), slice(rows[0], rows[-1] + 1)
        fx, fy = fx[sx], fy[sy]
        ix, iy = np.floor(fx).astype(np.int64), np.floor(fy).astype(np.int64)
        wx, wy = (fx - ix).astype(np.float32)[None, :], (fy - iy).astype(np.float32)[:, None]
        x0, x1 = np.clip(ix, 0, nx - 1), np.clip(ix + 1, 0, nx - 1)
        y0, y1 = np.clip(iy, 0, ny - 1), np.clip(iy + 1, 0, ny - 1)
        # outside the file the slide is empty: zero weight beyond its edge pixels
        vx0, vx1 = (ix >= 0).astype(np.float32)[None, :], (ix + 1 < nx).astype(np.float32)[None, :]
        vy0, vy1 = (iy >= 0).astype(np.float32)[:, None], (iy + 1 < ny).astype(np.float32)[:, None]
        targets = {"opd": opd, "absorption": absorption, **lab}
        for key, m in self._maps_for(pixel_um).items():
            if key not in targets:
                continue
            top = m[np.ix_(y0, x0)] * ((1 - wx) * vx0) + m[np.ix_(y0, x1)] * (wx * vx1)
            bot = m[np.ix_(y1, x0)] * ((1 - wx) * vx0) + m[np.ix_(y1, x1)] * (wx * vx1)
            targets[key][sy, sx] += top * ((1 - wy) * vy0) + bot * (wy * vy1)
        if ids is not None:
            jx, jy = np.rint(fx).astype(np.int64), np.rint(fy).astype(np.int64)
            okx, oky = (jx >= 0) & (jx < nx), (jy >= 0) & (jy < ny)
            sub = np.zeros((len(jy), len(jx)), np.int64)
            sub[np.ix_(oky, okx)] = self.labels[np.ix_(jy[oky], jx[okx])]
            ids[sy, sx] = sub
        return ids


# ------------------------------------------------------------------ labels
def maps_from_labels(labels: np.ndarray, pixel_um: float) -> dict[str, np.ndarray]:
    """Plausible maps for an integer label image (0 = background).

    Each label is one cell: a dome of cytoplasm 4 µm high at its deepest point,
    a nucleus in its core (the pixels deeper than 45 % of the cell's largest
    depth, with a smooth chromatin texture), and a membrane line on its
    boundary, shared with a touching neighbour. Depth is the distance to the
    nearest pixel of another label or of the background.
    """
    lab = np.asarray(labels)
    if lab.size and int(lab.max()) >= lab.size:
        # sparse ids (segmentation tools write large uint32/uint64 ids): the per-cell table below is indexed
        # by label, so number the cells 1..N first (0 stays background)
        uniq, inv = np.unique(lab, return_inverse=True)
        lab = inv.reshape(lab.shape) + (0 if uniq[0] == 0 else 1)
    lab = lab.astype(np.int64, copy=False)
    fg = lab > 0
    edge = np.zeros(lab.shape, bool)
    for axis in (0, 1):
        diff = np.diff(lab, axis=axis) != 0
        lo = [slice(None), slice(None)]
        hi = [slice(None), slice(None)]
        lo[axis], hi[axis] = slice(None, -1), slice(1, None)
        edge[tuple(lo)] |= diff
        edge[tuple(hi)] |= diff
    depth = ndimage.distance_transform_edt(~edge) + 0.5  # pixels from the cell's boundary line
    depth[~fg] = 0
    ids = np.unique(lab[fg])
    dmax = np.zeros(int(lab.max()) + 1 if lab.size else 1)
    if len(ids):
        dmax[ids] = ndimage.maximum(depth, lab, ids)
    q = np.where(fg, depth / np.maximum(dmax[lab], 1e-6), 0.0)
    height = 4.0 * np.sqrt(np.clip(1 - (1 - q) ** 2, 0, 1))
    nuc = np.clip((q - 0.45) / 0.1, 0, 1)
    ny, nx = lab.shape
    tex = _sample_texture(np.arange(nx) * pixel_um, np.arange(ny) * pixel_um)
    d_um = depth * pixel_um
    membrane = np.where(fg, 80.0 * np.exp(-((d_um - 0.5 * pixel_um) / 0.35) ** 2), 0.0)
    return {
        "opd": (0.025 * height + 0.012 * 4.0 * nuc).astype(np.float32),
        "absorption": np.zeros(lab.shape, np.float32),
        "nuclei": (100.0 * nuc * np.clip(1 + 0.2 * tex, 0.1, None)).astype(np.float32),
        "membrane": membrane.astype(np.float32),
    }


# ------------------------------------------------------------------ reading
def _fail(path, msg: str) -> SpecimenFileError:
    return SpecimenFileError(f"specimen file {str(path)!r}: {msg}")


def _channels(path, arr: np.ndarray, names: list[str] | None = None) -> dict[str, np.ndarray]:
    """Map an image (YX or CYX) to specimen keys by the rules in the module docstring."""
    arr = np.asarray(arr)
    if arr.ndim == 2:
        if np.issubdtype(arr.dtype, np.integer) or arr.dtype == bool:
            return {"labels": arr}
        return {"opd": arr}
    if arr.ndim == 3 and arr.shape[-1] in (3, 4) and arr.shape[0] > 4:
        raise _fail(path, f"looks like an RGB(A) image, shape {arr.shape}: save the maps as separate "
                          "channels (CYX: opd, absorption, nuclei, membrane) or as .npz")
    if arr.ndim != 3 or not 1 <= arr.shape[0] <= len(MAP_KEYS):
        raise _fail(path, f"expected a 2-D image (YX) or up to {len(MAP_KEYS)} channels (CYX), got shape {arr.shape}")
    if names and all(n in SPECIMEN_KEYS for n in names) and len(set(names)) == len(names):
        return dict(zip(names, arr, strict=True))
    if arr.shape[0] == 1:  # one unnamed channel is one plane, as a TIFF's: an integer one is a label image
        return _channels(path, arr[0])
    if np.issubdtype(arr.dtype, np.integer) or arr.dtype == bool:
        raise _fail(path, f"holds {arr.shape[0]} integer channels (CYX, dtype {arr.dtype}): stacked maps are real "
                          "numbers in their units (opd µm, absorption, nuclei and membrane densities), not camera "
                          "counts; a label image is one 2-D integer plane")
    return dict(zip(MAP_KEYS, arr, strict=False))


def _check_extent(path, shape) -> None:
    """Refuse an image too large to be a specimen from its shape alone, before any pixel is read: a whole-slide
    file would otherwise be read into memory (gigabytes, or a MemoryError) only to be refused by _validate."""
    shape = tuple(int(n) for n in shape)
    too_many = float(np.prod(shape, dtype=np.float64)) > len(SPECIMEN_KEYS) * _MAX_SIDE**2
    if shape and (max(shape) > _MAX_SIDE or too_many):
        raise _fail(path, f"is too large to be a specimen: shape {shape}; each side must be 2..{_MAX_SIDE} pixels "
                          "(crop or downsample it and set SpecimenPixelSizeUm to match)")


def _npy_shape(f) -> tuple[int, ...] | None:
    """The shape in a .npy header (None when it cannot be read: the full read reports the problem)."""
    try:
        version = np.lib.format.read_magic(f)
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        return tuple(read(f)[0])
    except Exception:  # noqa: BLE001
        return None


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    import zipfile

    try:
        with zipfile.ZipFile(path) as zf:
            shapes = []
            for name in zf.namelist():
                with zf.open(name) as f:
                    shapes.append(_npy_shape(f))
    except Exception:  # noqa: BLE001 - not a zip: np.load below says what it is
        shapes = []
    for shape in shapes:
        if shape is not None:
            _check_extent(path, shape)
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except ValueError as e:  # object arrays need pickle: refused
        raise _fail(path, f"cannot be read without pickle ({e}); store plain numeric arrays") from None
    except Exception as e:
        raise _fail(path, f"is not a readable .npz archive ({e})") from None
    unknown = sorted(set(data) - set(SPECIMEN_KEYS))
    if unknown:
        raise _fail(path, f"unknown key(s) {', '.join(unknown)}; valid keys: {', '.join(SPECIMEN_KEYS)}")
    if not data:
        raise _fail(path, f"holds no arrays; expected any of {', '.join(SPECIMEN_KEYS)}")
    return data


def _read_tiff(path: Path) -> dict[str, np.ndarray]:
    import tifffile

    try:
        with tifffile.TiffFile(path) as tf:
            series = tf.series[0]
            _check_extent(path, series.shape)
            arr, axes = series.asarray(), series.axes
            names = _ome_channel_names(tf.ome_metadata) if tf.is_ome else None
    except SpecimenFileError:
        raise
    except Exception as e:
        raise _fail(path, f"is not a readable TIFF ({e})") from None
    keep = [i for i, (n, a) in enumerate(zip(arr.shape, axes, strict=True)) if n > 1 or a in "YX"]
    arr = arr.reshape([arr.shape[i] for i in keep])
    axes = "".join(axes[i] for i in keep)
    for name in "TZ":  # a time series or a z-stack is not a stack of maps (as for OME-Zarr's t/z axes)
        if name in axes:
            raise _fail(path, f"has {arr.shape[axes.index(name)]} planes along '{name}' (axes {axes}); "
                              "a specimen is one 2-D plane: save one plane, or the maps as channels (CYX)")
    if "S" in axes and arr.ndim == 3 and np.issubdtype(arr.dtype, np.floating):
        # tifffile.imwrite writes a 3-4 channel float CYX stack as planar "RGB" by default: maps, not colours
        arr = np.moveaxis(arr, axes.index("S"), 0)
    elif "S" in axes and arr.ndim == 3:
        raise _fail(path, f"looks like an RGB(A) image (axes {axes}, shape {arr.shape}): save the maps as "
                          "separate channels (CYX: opd, absorption, nuclei, membrane) or as .npz")
    return _channels(path, arr, names if names and arr.ndim == 3 and len(names) == arr.shape[0] else None)


def _ome_channel_names(xml: str | None) -> list[str] | None:
    """The channel names of an OME-TIFF's first image (its first series), in channel order; None when the
    OME-XML does not name every channel (the TIFF order applies)."""
    import xml.etree.ElementTree as ET

    try:
        root = ET.fromstring(xml or "")
    except ET.ParseError:
        return None
    image = next((e for e in root if e.tag.rsplit("}", 1)[-1] == "Image"), None)
    pixels = next((e for e in image if e.tag.rsplit("}", 1)[-1] == "Pixels"), None) if image is not None else None
    if pixels is None:
        return None
    names = [e.get("Name") for e in pixels if e.tag.rsplit("}", 1)[-1] == "Channel"]
    return names if names and all(names) else None


def _read_zarr(path: Path) -> dict[str, np.ndarray]:
    import zarr

    try:
        root = zarr.open(str(path), mode="r")
    except Exception as e:
        raise _fail(path, f"is not a readable Zarr store ({e})") from None
    if isinstance(root, zarr.Array):
        _check_extent(path, root.shape)
        return _channels(path, root[...])
    attrs = dict(root.attrs)
    ome = attrs.get("ome", attrs)
    ms = ome.get("multiscales")
    if not ms and "bioformats2raw.layout" in ome:
        raise _fail(path, "is a collection of images (bioformats2raw layout); set SpecimenFile to one of them, "
                          f"e.g. {path / '0'}")
    if not ms:
        raise _fail(path, "is a Zarr group without OME-NGFF 'multiscales' metadata")
    ds = ms[0]["datasets"][0]["path"]
    axes = [a["name"] if isinstance(a, dict) else a for a in ms[0].get("axes", [])]
    _check_extent(path, root[ds].shape)
    arr = np.asarray(root[ds][...])
    if axes and len(axes) == arr.ndim:
        for name in ("t", "z"):
            if name in axes:
                i = axes.index(name)
                if arr.shape[i] != 1:
                    raise _fail(path, f"has {arr.shape[i]} planes along '{name}'; a specimen is one 2-D plane")
                arr = arr.take(0, axis=i)
                axes.pop(i)
    names = [c.get("label", "") for c in ome.get("omero", {}).get("channels", [])]
    if arr.ndim == 3 and len(names) != arr.shape[0]:
        names = None
    labels = _label_images(root)
    if labels and "image-label" not in ome and np.issubdtype(arr.dtype, np.integer):
        raise _fail(path, f"is an integer image with label images beside it ({', '.join(labels)}): set "
                          f"SpecimenFile to the label image, e.g. {path / labels[0]}, or save the image as maps")
    return _channels(path, arr, names)


def _label_images(root) -> list[str]:
    """The NGFF label images of an image group (``labels/<name>``), as paths relative to it."""
    try:
        group = root["labels"]
        attrs = dict(group.attrs)
    except Exception:  # noqa: BLE001 - no labels group
        return []
    return [f"labels/{name}" for name in attrs.get("ome", attrs).get("labels", [])]


def _validate(path, data: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    shapes = {k: np.shape(v) for k, v in data.items()}
    for k, v in data.items():
        if np.ndim(v) != 2:
            raise _fail(path, f"'{k}' must be a 2-D image (YX), got shape {np.shape(v)}")
        if not (np.issubdtype(v.dtype, np.number) or v.dtype == bool) or np.iscomplexobj(v):
            raise _fail(path, f"'{k}' has dtype {v.dtype}; expected real numbers")
        if min(v.shape) < 2 or max(v.shape) > _MAX_SIDE:
            raise _fail(path, f"'{k}' has shape {v.shape}; each side must be 2..{_MAX_SIDE} pixels")
    if len(set(shapes.values())) > 1:
        raise _fail(path, "maps differ in shape: " + ", ".join(f"{k} {s}" for k, s in shapes.items()))
    if "labels" in data:
        lab = data["labels"]
        if not (np.issubdtype(lab.dtype, np.integer) or lab.dtype == bool):
            raise _fail(path, f"'labels' must be an integer label image, got dtype {lab.dtype}")
        if lab.size and lab.min() < 0:
            raise _fail(path, "'labels' has negative values; use 0 for background and 1..N for cells")
        if lab.size and int(lab.max()) > np.iinfo(np.int64).max:
            raise _fail(path, f"'labels' has ids above {np.iinfo(np.int64).max} (dtype {lab.dtype}); "
                              "renumber the cells (e.g. 1..N)")
    for k in MAP_KEYS:
        if k in data and not np.all(np.isfinite(data[k])):
            raise _fail(path, f"'{k}' contains NaN or infinite values")
    for k in ("absorption", "nuclei", "membrane"):
        if k in data and data[k].size and float(np.min(data[k])) < 0:
            raise _fail(path, f"'{k}' has negative values; it is a density / attenuation (>= 0)")
    return data


def _format(p: Path) -> str:
    """The reader a path needs: its suffix, or ``.zarr`` for an image group inside an OME-Zarr store
    (``cells.zarr/labels/cells``: NGFF's place for a label image; ``slide.zarr/0``: a bioformats2raw series)."""
    suffix = p.suffix.lower()
    if suffix not in _SUFFIXES and p.is_dir() and any(q.suffix.lower() == ".zarr" for q in p.parents):
        return ".zarr"
    return suffix


def load_specimen(path: str | Path, pixel_um: float) -> UserSpecimen:
    """Read and check a specimen file; raises :class:`SpecimenFileError` naming the problem."""
    p = Path(path).expanduser().absolute()
    if not (pixel_um > 0 and np.isfinite(pixel_um)):
        raise SpecimenFileError(f"specimen pixel size must be > 0 µm, got {pixel_um}")
    if not p.exists():
        raise _fail(p, "does not exist")
    suffix = _format(p)
    if suffix not in _SUFFIXES:
        raise _fail(p, f"has an unsupported format {suffix or '(no suffix)'}; use one of {', '.join(_SUFFIXES)}")
    if suffix == ".npz":
        data = _read_npz(p)
    elif suffix == ".npy":
        try:
            with open(p, "rb") as f:
                shape = _npy_shape(f)
            if shape is not None:
                _check_extent(p, shape)
            data = _channels(p, np.load(p, allow_pickle=False))
        except SpecimenFileError:
            raise
        except Exception as e:
            raise _fail(p, f"is not a readable .npy array without pickle ({e})") from None
    elif suffix in (".tif", ".tiff"):
        data = _read_tiff(p)
    else:
        data = _read_zarr(p)
    data = _validate(p, data)
    labels = data.pop("labels", None)
    if labels is not None:
        labels = labels.astype(np.int64)
        derived = maps_from_labels(labels, pixel_um)
        derived.update(data)
        data = derived
    maps = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in data.items()}
    return UserSpecimen(path=str(p), pixel_um=float(pixel_um), maps=maps, labels=labels)
