"""The display colour of each channel, by the stain it is named after: one table for every place that shows one.

Recordings carry these colours (omero metadata, which napari maps to its colormap of that name; OME-XML
``Channel Color``), and the viewer and the headless snapshot draw model outputs in them, so a virtual stain looks
in the viewer as it will in napari, and like the real stain. Pure: no I/O, no Qt, no acquisition code (the viewer
imports it).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

__all__ = ["EMISSION_NM", "channel_colors", "emission_nm", "output_names", "output_rgb"]

#: emission peak (nm) of stains and fluorophores channels are commonly named after (the simulator's Nuclei is
#: Hoechst-like, its Membrane CellMask-orange-like); an inferred stain or super-resolved output is named so too
EMISSION_NM = {
    "nuclei": 460, "nucleus": 460, "dapi": 461, "hoechst": 461, "bfp": 450, "cfp": 475, "gfp": 510, "egfp": 507,
    "fitc": 520, "alexa488": 520, "af488": 520, "yfp": 527, "cy3": 570, "tritc": 576, "tdtomato": 581, "rfp": 585,
    "membrane": 600, "mcherry": 610, "texasred": 615, "cy5": 670, "alexa647": 668, "af647": 668, "cy7": 780,
}
#: omero colours by emission band (napari maps each to its colormap of that name): blue, cyan, green, red
#: (orange to red: Cy3, mCherry), and far red as magenta
_BANDS = ((480, "0000FF"), (500, "00FFFF"), (560, "00FF00"), (640, "FF0000"), (10_000, "FF00FF"))
#: fluorescence channels of unknown emission, in order: distinct colours, not all one
_UNKNOWN = ("00FF00", "FF00FF", "00FFFF", "FFFF00", "FF0000", "0000FF")


def emission_nm(name: str) -> int | None:
    """The emission peak of the stain a channel is named after (by a word of its name, e.g. ``Nuclei``,
    ``nuclei``, ``membrane-sr``, ``GFP``; :data:`EMISSION_NM`), or None."""
    return next((EMISSION_NM[w] for w in re.split(r"[^a-z0-9]+", name.lower()) if w in EMISSION_NM), None)


def channel_colors(names: Sequence[str], modalities: Sequence[str]) -> list[str]:
    """Display colours (``RRGGBB``) of channels ``names`` of ``modalities``: label-free grey; any other the colour
    of its emission band (:func:`emission_nm`), so a stain and its virtual stain look alike; the rest distinct
    colours in turn (:data:`_UNKNOWN`)."""
    colors: list[str] = []
    unknown = 0
    for name, modality in zip(names, modalities, strict=True):
        nm = emission_nm(name)
        if modality == "label-free":
            colors.append("FFFFFF")
        elif nm is not None:
            colors.append(next(color for upper, color in _BANDS if nm < upper))
        else:
            colors.append(_UNKNOWN[unknown % len(_UNKNOWN)])
            unknown += 1
    return colors


def output_rgb(names: Sequence[str]) -> list[tuple[float, float, float]]:
    """RGB (0-1) of a model's outputs ``names``, as a recording of them shows them (:func:`channel_colors` of
    ``inferred`` channels): ``nuclei`` blue, ``membrane`` red, outputs of unknown stains distinct colours."""
    return [tuple(int(c[i:i + 2], 16) / 255 for i in (0, 2, 4))  # type: ignore[misc]
            for c in channel_colors(names, ["inferred"] * len(names))]


def output_names(names: Sequence[str], n: int) -> list[str]:
    """``names`` of a result's ``n`` outputs: cut to ``n``, or filled with ``channel <i>`` (unknown emission)."""
    return [*names[:n], *(f"channel {i}" for i in range(len(names), n))]
