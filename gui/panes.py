"""One image pane of the viewer: an image at its physical size with everything needed to read it.

A pane shows a 2-D image (grey, with a LUT) or a false-colour composite of
several output channels, placed in µm so that panes link pan and zoom. It
carries a scale bar sized to the visible field, a colour legend with units (the
LUT bar under the image, or one swatch per stain with its display range), a
readout of the value(s) and position under the cursor, a trust badge, and a
message that says why the pane is empty (or stale) instead of leaving it blank.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pyqtgraph as pg
from pyqtgraph.Qt import QtCore

from scopecast.daemon.snapshot import composite, composite_limits
from scopecast.daemon.stain_colors import output_names, output_rgb

__all__ = ["ImagePane", "nice_length"]


def nice_length(target_um: float) -> float:
    """The largest 1-2-5 × 10^k length not above ``target_um`` (a scale bar's length)."""
    if not target_um > 0 or not math.isfinite(target_um):
        return 1.0
    k = math.floor(math.log10(target_um))
    for m in (5, 2, 1):
        if m * 10**k <= target_um:
            return m * 10**k
    return 10**k


def _count(v: float) -> str:
    return f"{v:.0f}" if abs(v) >= 100 else f"{v:.3g}"


def _format_um(v: float) -> str:
    return f"{v * 1000:g} nm" if v < 1 else f"{v:g} µm"


class _ScaleBar(pg.ScaleBar):
    """A scale bar that resizes to about a fifth of the visible width (µm view coordinates)."""

    def updateBar(self) -> None:  # noqa: N802 - pyqtgraph API
        view = self.parentItem()
        if view is None:
            return
        (x0, x1), _ = view.viewRange()
        self.size = nice_length(0.2 * abs(x1 - x0))
        self.text.setText(_format_um(self.size))
        super().updateBar()


class ImagePane(pg.GraphicsLayoutWidget):
    """An image in µm with scale bar, colour legend (``units``), cursor readout, badge and message."""

    def __init__(self, title: str, units: str = "counts") -> None:
        super().__init__()
        self.setMinimumSize(300, 340)
        self.units = units
        self.plot = self.addPlot(row=0, col=0, title=title)
        for side, name in (("bottom", "x"), ("left", "y")):
            self.plot.setLabel(side, name, units="µm")
            self.plot.getAxis(side).enableAutoSIPrefix(False)
        self.image = pg.ImageItem(axisOrder="row-major")
        self.plot.addItem(self.image)
        self.plot.setAspectLocked(True)
        self.plot.invertY(True)
        # the colour legend of a grey image: the LUT bar with its axis in the image's units
        self.hist = pg.HistogramLUTItem(image=self.image, orientation="horizontal")
        self.hist.axis.setLabel(units)
        self.hist.setMaximumHeight(80)
        self.addItem(self.hist, row=1, col=0)
        # the colour legend of a composite: one swatch per channel with its display range
        self.legend = pg.LabelItem("", justify="left", size="9pt")
        self.readout = pg.LabelItem("move the cursor over the image for values", justify="left", size="9pt")
        self.addItem(self.legend, row=2, col=0)
        self.addItem(self.readout, row=3, col=0)
        self.scalebar = _ScaleBar(10.0, width=5, brush="w", pen="k", suffix="µm", offset=(-20, -25))
        self.scalebar.setParentItem(self.plot.vb)
        self.scalebar.changeParent()
        self.badge = pg.TextItem("", anchor=(0, 0), color="w", fill=pg.mkBrush(60, 60, 60, 200))
        self.badge.setZValue(10)
        self.badge.setParentItem(self.plot.vb)
        self.badge.setPos(4, 4)
        self.badge.setVisible(False)
        self.message = pg.TextItem("", anchor=(0.5, 0.5), color=(255, 220, 120), fill=pg.mkBrush(0, 0, 0, 190))
        self.message.setZValue(11)
        self.message.setParentItem(self.plot.vb)
        self.message.setVisible(False)  # an empty message still draws its dark box over the image
        self.plot.vb.sigResized.connect(self._center_message)
        self.plot.vb.sigResized.connect(self._fit_badge)
        self.values: np.ndarray | None = None  # (C, H, W) physical values of what is shown
        self.channel_names: list[str] = []
        self.px_um = 1.0
        self.message_text = ""
        self._rect: tuple[float, float] | None = None
        self._color = (1.0, 1.0, 1.0)  # the LUT's full colour (the default gradient is grey)
        self.scene().sigMouseMoved.connect(self.show_value_at)
        self._legend_mode(grey=True)
        self.hist.setVisible(False)  # no LUT to show before the first image

    # ------------------------------------------------------------------ images
    def show_grey(self, img: np.ndarray, px_um: float, name: str, auto_levels: bool = False,
                  color: tuple[float, float, float] = (1.0, 1.0, 1.0)) -> None:
        """An image of ``name`` sampled at ``px_um``, drawn from black to ``color`` (RGB 0-1; white: grey, a camera
        frame; a model's one output in its stain's colour, :func:`output_rgb`); ``auto_levels`` stretches the LUT
        to its 0.5-99.8 percentiles (else the user's LUT stays)."""
        self._legend_mode(grey=True)
        self._tint(color)
        self.values, self.channel_names, self.px_um = img[None], [name], px_um
        self.image.setImage(img, autoLevels=False)
        if auto_levels or self.image.levels is None:
            step = max(1, img.shape[0] // 256)
            lo, hi = np.percentile(img[::step, ::step], [0.5, 99.8])
            self.hist.setLevels(float(lo), float(max(hi, lo + 1e-6)))
        self.place(img.shape[1] * px_um, img.shape[0] * px_um)

    def show_composite(self, values: np.ndarray, names: list[str], px_um: float,
                       base: np.ndarray | None = None, overlay: bool = False) -> None:
        """Stains ``values`` (C, H, W) as a false-colour composite (optionally over a grey ``base``), each output
        in the colour a recording of it shows in napari (nuclei blue, membrane red: :mod:`scopecast.daemon.
        stain_colors`); the legend gives each channel's colour and display range in units. ``overlay``: the user
        asked for the stains over the label-free image; without a ``base`` the legend says it is not shown."""
        self._legend_mode(grey=False)
        self.values, self.channel_names, self.px_um = values, list(names), px_um
        names = output_names(names, len(values))
        self.image.setImage(composite(values, names, base), levels=(0, 1))
        rows = []
        for name, color, (lo, hi) in zip(names, output_rgb(names), composite_limits(values), strict=True):
            r, g, b = (int(255 * v) for v in color)
            rows.append(f"<span style='color:rgb({r},{g},{b})'>&#9632;</span> {name}: black {_count(lo)} → "
                        f"full {_count(hi)} {self.units}")
        if base is not None:
            rows.append("over the label-free image (grey)")
        elif overlay:
            rows.append("stains alone: the viewer holds no label-free frame of this result's bundle")
        self.legend.setText("<br>".join(rows))
        self.place(values.shape[2] * px_um, values.shape[1] * px_um)

    def _tint(self, color: tuple[float, float, float]) -> None:
        """The LUT runs from black to ``color``; set only when it changes, so the user's edits of the LUT stay."""
        if color != self._color:
            self._color = color
            rgb = tuple(int(round(255 * v)) for v in color)
            self.hist.gradient.setColorMap(pg.ColorMap([0.0, 1.0], [(0, 0, 0), rgb]))

    def clear_image(self) -> None:
        self.image.clear()
        self.values = None
        self.hist.setVisible(False)

    def _legend_mode(self, grey: bool) -> None:
        self.hist.setVisible(grey)
        self.hist.setMaximumHeight(80 if grey else 0)
        if grey:
            self.legend.setText("")

    def legend_text(self) -> str:
        """What the colour legend says (the LUT axis label for grey images)."""
        if self.hist.isVisible():
            lo, hi = self.hist.getLevels()
            return f"{self.channel_names[0] if self.channel_names else ''}: {_count(lo)} → {_count(hi)} {self.units}"
        return self.legend.text

    def place(self, width_um: float, height_um: float) -> None:
        """Put the image at its physical size so linked panes show the same region."""
        self.image.setRect(QtCore.QRectF(0, 0, width_um, height_um))
        if self._rect != (width_um, height_um):
            self._rect = (width_um, height_um)
            self.plot.autoRange()

    # ------------------------------------------------------------ overlays
    def set_message(self, text: str | None) -> None:
        """Say why the pane is empty or stale (None hides the message)."""
        text = text or ""
        if text != self.message_text:
            self.message_text = text
            self.message.setText(text)
            self.message.setVisible(bool(text))
            self._center_message()

    def _center_message(self) -> None:
        r = self.plot.vb.boundingRect()
        self.message.setPos(r.center())

    def set_badge(self, text: str, color: tuple[int, int, int, int]) -> None:
        """The trust badge (top left), wrapped to the pane's width rather than cut off at its edge."""
        self.badge.setText(text)
        self.badge.fill = pg.mkBrush(*color)
        self.badge.setVisible(True)
        self._fit_badge()

    def _fit_badge(self) -> None:
        avail = max(120.0, self.plot.vb.width() - 12)
        self.badge.setTextWidth(-1)
        if self.badge.textItem.boundingRect().width() > avail:
            self.badge.setTextWidth(avail)
        self.badge.update()

    # ---------------------------------------------------------------- readout
    def show_value_at(self, scene_pos: Any) -> str:
        """Readout of the value(s) and position (µm, pixel) under a scene position."""
        if self.values is None or not self.plot.vb.sceneBoundingRect().contains(scene_pos):
            return self.readout.text
        p = self.plot.vb.mapSceneToView(scene_pos)
        x_um, y_um = p.x(), p.y()
        col, row = math.floor(x_um / self.px_um), math.floor(y_um / self.px_um)
        _, h, w = self.values.shape
        if not (0 <= row < h and 0 <= col < w):
            text = f"x {x_um:.2f} µm, y {y_um:.2f} µm: outside the image"
        else:
            fmt = "{:d}" if self.values.dtype.kind in "ui" else "{:.1f}"  # camera counts are integers
            vals = ", ".join(f"{n} {fmt.format(v.item())}" for n, v in zip(self.channel_names, self.values[:, row, col],
                                                                            strict=False))
            text = f"x {x_um:.2f} µm, y {y_um:.2f} µm (pixel {col}, {row}): {vals} {self.units}"
        self.readout.setText(text)
        return text
