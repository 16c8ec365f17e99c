"""Declarative acquisition plans.

Scans are useq-schema ``MDASequence`` objects; :class:`PairPlan` (the
dual-modality capture that gathers training pairs) and :class:`LivePlan` are
small pydantic models. :meth:`PairPlan.to_sequence` turns a pair plan into the
``MDASequence`` the engine runs, so there is one executor for both.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator
import useq

__all__ = [
    "DEFAULT_FLUORESCENCE",
    "DEFAULT_FLUORESCENCE_EXPOSURE_MS",
    "DEFAULT_LABEL_FREE",
    "MAX_LIVE_INTERVAL_MS",
    "ChannelSpec",
    "GridSpec",
    "LivePlan",
    "PairPlan",
    "z_stack_planes",
]

#: The label-free cycle a virtual-staining model sees (DPC halves, bright-, dark-field).
DEFAULT_LABEL_FREE: tuple[str, ...] = ("DPC-Left", "DPC-Right", "DPC-Top", "DPC-Bottom", "BF", "DF")
DEFAULT_FLUORESCENCE: tuple[str, ...] = ("Nuclei", "Membrane")
#: Pairs' default fluorescence exposures: the training targets' (models/dataset.py), below the full well on
#: the simulated slides (Nuclei at 100 ms clipped ~3.5 % of its pixels)
DEFAULT_FLUORESCENCE_EXPOSURE_MS: dict[str, float] = {"Nuclei": 20.0, "Membrane": 100.0}
#: At most this many engines pace one live cycle.
MAX_PACING_ENGINES = 8
#: Longest time between live cycle starts (ms): one day; a slower series is a time-lapse (``run_scan`` with a
#: ``time_plan``). Beyond ~292 years the wait between cycles cannot even be timed: the job failed after its first.
MAX_LIVE_INTERVAL_MS = 86_400_000.0
#: Up to this many, :func:`z_stack_planes` counts useq's own planes.
COUNTED_PLANES = 100_000
#: An engine's results address (``tcp://`` or ``ipc://``).
EngineAddress = Annotated[str, StringConstraints(pattern=r"^(tcp|ipc)://.+")]


def default_exposures_ms(channels: dict[str, Any], exposure_ms: float | None, current_ms: float) -> dict[str, float]:
    """Each channel's exposure where a request names none for it: the request's ``exposure_ms``, else the
    exposure its preset sets on the main camera (``ChannelInfo.exposure_ms``, from a line such as
    ``ConfigGroup,Channel,DAPI,Camera,Exposure,50``: what a snap or scan of it takes), else ``current_ms``."""
    return {n: exposure_ms or c.exposure_ms or current_ms for n, c in channels.items()}


def pin_exposures(seq: useq.MDASequence, exposures_ms: dict[str, float]) -> useq.MDASequence:
    """``seq`` with an exposure for every main-camera channel that names none (``exposures_ms``, from
    :func:`default_exposures_ms`), so a preset that sets the camera's exposure applies to its own frames, not
    to the channels after it."""
    def pinned(c: useq.Channel) -> useq.Channel:
        keep = c.exposure is not None or c.camera or c.config not in exposures_ms  # (unknown: refused by name later)
        return c if keep else c.model_copy(update={"exposure": exposures_ms[c.config]})

    return seq.replace(channels=[pinned(c) for c in seq.channels])


def with_field_of_view(seq: useq.MDASequence, fov_um: tuple[float, float]) -> useq.MDASequence:
    """``seq`` whose grid plan has a field of view: the camera's (``fov_um``: width, height, µm) wherever the
    plan gives none, as pymmcore-plus's MDA engine sets it (ROI times pixel size). Without one useq spaces a
    rows × columns grid's tiles 1 µm apart (every tile the same field) and cannot lay out a grid by its edges
    or its size at all. A field of view the plan gives is kept (its own tile spacing)."""
    grid = seq.grid_plan
    if grid is None or not all(v > 0 for v in fov_um):
        return seq
    update = {k: v for k, v in zip(("fov_width", "fov_height"), fov_um, strict=True)
              if getattr(grid, k, 0) is None}
    return seq.replace(grid_plan=grid.model_copy(update=update)) if update else seq


def z_stack_planes(range_um: float, step_um: float) -> float:
    """Planes a Z stack of ``useq.ZRangeAround(range=range_um, step=step_um)`` acquires: from ``-range/2`` up in
    steps of ``step_um``, the last less than half a step above ``+range/2`` (range 2, step 1: -1, 0, 1; range 3,
    step 2: -1.5 and 0.5, 2 planes; range 2.85, step 0.1: 30). A float: beyond :data:`COUNTED_PLANES` it is
    about ``range / step + 1``, reported (a plan that long is refused), not enumerated."""
    ratio = range_um / step_um
    if not ratio <= COUNTED_PLANES:
        return ratio + 1
    return float(len(useq.ZRangeAround(range=range_um, step=step_um).positions()))


class ChannelSpec(BaseModel):
    """A channel preset, optionally with its own exposure and detector.

    An empty ``name`` means the hardware as it is (no preset applied).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    exposure_ms: float | None = Field(default=None, gt=0)
    detector: str | None = None

    @classmethod
    def coerce(cls, value: str | dict | ChannelSpec) -> ChannelSpec:
        if isinstance(value, ChannelSpec):
            return value
        if isinstance(value, str):
            return cls(name=value)
        return cls.model_validate(value)


def _channels(v: list) -> list[ChannelSpec]:
    return [ChannelSpec.coerce(c) for c in v]


class LivePlan(BaseModel):
    """Repeat an illumination cycle at the current position until stopped."""

    model_config = ConfigDict(extra="forbid")

    channels: list[ChannelSpec] = Field(
        default_factory=lambda: [ChannelSpec(name=c) for c in DEFAULT_LABEL_FREE], min_length=1,
        description="the cycle (an empty one would end at once, done, with no frame)",
    )
    exposure_ms: float | None = Field(default=None, gt=0, description="for channels without their own")
    interval_ms: float = Field(default=0.0, ge=0, le=MAX_LIVE_INTERVAL_MS,
                               description="minimum time between cycle starts (at most one day)")
    max_cycles: int | None = Field(default=None, ge=1)
    record: bool = False
    hardware_sequence: bool = Field(
        default=False, description="take the DPC channels as one hardware-triggered LED/camera burst where the "
        "rig can (daemon/sequenced.py); otherwise, and for the other channels, software-timed")
    pace_from: list[EngineAddress] | None = Field(
        default=None, min_length=1, max_length=MAX_PACING_ENGINES, description="the results addresses of one or "
        "more engines: acquire each cycle just in time for the slowest of their models instead of free-running "
        "(daemon/pacing.py)")

    _v = field_validator("channels", mode="before")(classmethod(lambda cls, v: _channels(v)))

    @field_validator("pace_from", mode="before")
    @classmethod
    def _addresses(cls, v: Any) -> Any:
        """Each address once, in order."""
        if isinstance(v, list) and all(isinstance(a, str) for a in v):
            return list(dict.fromkeys(v))
        return v


class GridSpec(BaseModel):
    """A rows × columns tile grid centred on each position."""

    model_config = ConfigDict(extra="forbid")

    rows: int = Field(ge=1, le=1000)
    columns: int = Field(ge=1, le=1000)
    overlap: float = Field(default=0.0, ge=0, lt=1, description="fraction of the field")


class PairPlan(BaseModel):
    """Dual-modality capture: at each position the label-free cycle, then fluorescence.

    All frames taken at one position form one bundle (the training pair) and
    share its metadata.
    """

    model_config = ConfigDict(extra="forbid")

    label_free: list[ChannelSpec] = Field(
        default_factory=lambda: [ChannelSpec(name=c) for c in DEFAULT_LABEL_FREE]
    )
    fluorescence: list[ChannelSpec] = Field(
        default_factory=lambda: [ChannelSpec(name=c, exposure_ms=DEFAULT_FLUORESCENCE_EXPOSURE_MS[c])
                                 for c in DEFAULT_FLUORESCENCE]
    )
    positions: list[tuple[float, float]] | None = Field(
        default=None, min_length=1, description="stage (x, y) µm; default (left out): the current position"
    )
    grid: GridSpec | None = None
    exposure_ms: float | None = Field(default=None, gt=0, description="for channels without their own")

    _lf = field_validator("label_free", "fluorescence", mode="before")(
        classmethod(lambda cls, v: _channels(v))
    )

    def to_sequence(
        self, current_xyz: tuple[float, float, float], fov_um: tuple[float, float],
        default_exposure_ms: dict[str, float],
    ) -> useq.MDASequence:
        """The equivalent ``MDASequence`` (axis order position, grid, channel); ``default_exposure_ms``: by
        channel name, the exposure of channels without their own and without the plan's ``exposure_ms``."""
        x0, y0, z0 = current_xyz
        positions = self.positions or [(x0, y0)]
        channels = [
            useq.Channel(
                config=c.name, exposure=c.exposure_ms or self.exposure_ms or default_exposure_ms.get(c.name),
                camera=c.detector,
            )
            for c in [*self.label_free, *self.fluorescence]
        ]
        grid = None
        if self.grid is not None:
            grid = useq.GridRowsColumns(
                rows=self.grid.rows, columns=self.grid.columns,
                overlap=(self.grid.overlap * 100, self.grid.overlap * 100),
                fov_width=fov_um[0], fov_height=fov_um[1],
            )
        return useq.MDASequence(
            stage_positions=[useq.Position(x=x, y=y, z=z0) for x, y in positions],
            grid_plan=grid,
            channels=channels,
            axis_order="pgcz",
            metadata={"scopecast": {"kind": "pairs"}},
        )


def at_current_position(seq: useq.MDASequence, xyz_um: tuple[float, float, float]) -> useq.MDASequence:
    """``seq`` with the stage's current position (``xyz_um``) wherever its plan is relative to a position that
    does not say where: no stage positions (here), a relative ``z_plan`` at a position without ``z`` (the stack
    around the current focus, as Micro-Manager's relative Z stacks and pymmcore-widgets' MDA take it) and a
    relative grid at a position without ``x`` or ``y`` (the tiles around the current one). useq adds 0 for a
    coordinate a position leaves out: a stack around z = 0 µm wherever the sample is in focus. An absolute
    grid gets a position without ``x`` and ``y`` (useq ignores them there, warns, and is to refuse them)."""
    x, y, z = xyz_um
    if not seq.stage_positions:  # an absolute grid (useq's GridFromEdges) says x and y itself: only z is here
        absolute_grid = seq.grid_plan is not None and not seq.grid_plan.is_relative
        return seq.replace(stage_positions=[useq.Position(x=None if absolute_grid else x,
                                                          y=None if absolute_grid else y, z=z)])
    here = {"x": x, "y": y, "z": z}
    axes = [*(("z",) if seq.z_plan is not None and seq.z_plan.is_relative else ()),
            *(("x", "y") if seq.grid_plan is not None and seq.grid_plan.is_relative else ())]

    def placed(p: useq.Position) -> useq.Position:
        missing = {a: here[a] for a in axes if getattr(p, a) is None}
        return p.model_copy(update=missing) if missing else p

    return seq.replace(stage_positions=[placed(p) for p in seq.stage_positions])
