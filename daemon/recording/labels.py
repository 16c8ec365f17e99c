"""The ``trust`` label image of a series of results (NGFF ``labels``): what napari shows of the trust verdicts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import zarr

from .ngff import SeriesMeta, labels_group_attrs, trust_label_attrs, trust_labels

__all__ = ["write_trust_labels"]


def write_trust_labels(series_path: Path, version: str, spec: Any, meta: SeriesMeta, t0_ns: int | None) -> None:
    """Write ``labels/trust`` beside the image of the series at ``series_path`` when its planes carry trust
    verdicts (offline results): a ``(t, z, y, x)`` uint32 image, 0 where the result is trusted, else 1 + its
    verdict's index in the ``image-label`` properties (``trust``: untrusted or withheld, ``score``,
    ``reasons``). A series without verdicts (a camera's) gets none; writing it again replaces it."""
    if not any(p.trust is not None for p in meta.planes):
        return
    legend, values = trust_labels(meta)
    group = zarr.open_group(str(series_path), mode="r+", zarr_format=2 if version == "0.4" else 3)
    labels = group.require_group("labels")
    labels.attrs.update(labels_group_attrs(version))
    trust = labels.require_group("trust")
    ny, nx = spec.shape_yx
    names = {} if version == "0.4" else {"dimension_names": ["t", "z", "y", "x"]}
    array = trust.create_array("0", shape=(max(meta.t_count, 1), spec.n_z, ny, nx), chunks=(1, 1, ny, nx),
                               dtype="uint32", fill_value=0, overwrite=True, **names)
    for (t, z), value in sorted(values.items()):
        array[t, z] = value
    trust.attrs.update(trust_label_attrs(version, spec, meta, t0_ns, legend))
