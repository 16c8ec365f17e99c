"""The specimen library of the simulated slide, and specimens loaded from a user's file."""

import tracemalloc

import numpy as np
import pytest
from scipy import ndimage

from scopecast.daemon.sim.slide import (
    COLONY_CENTER_UM,
    RESOLUTION_TARGET_PERIOD_UM,
    RESOLUTION_TARGET_SPACINGS_UM,
    SAMPLE_KINDS,
    Slide,
    clear_caches,
    resolution_target_geometry,
)
from scopecast.daemon.sim.specimens_file import SpecimenFileError
from scopecast.daemon.sim.specimens_kinds import CELL_KINDS

PX = 0.5  # exact in binary: shifted regions sample identical slide coordinates


def _maps(kind, x0, y0, shape, px=PX, ids=False, seed=0):
    return Slide(kind, seed).render(x0, y0, px, shape, ids=ids)


def _cells_in(slide, x0, x1, y0, y1):
    t = 80.0
    return [c for ty in range(int(np.floor(y0 / t)) - 1, int(np.floor(y1 / t)) + 2)
            for tx in range(int(np.floor(x0 / t)) - 1, int(np.floor(x1 / t)) + 2)
            for c in slide.cells(tx, ty) if x0 <= c.x <= x1 and y0 <= c.y <= y1]


def _peaks(profile, rel=0.5):
    """Indices of local maxima above ``rel`` of the profile's maximum."""
    p = np.asarray(profile)
    top = rel * p.max()
    return [i for i in range(1, len(p) - 1) if p[i] >= top and p[i] > p[i - 1] and p[i] >= p[i + 1]]


# ------------------------------------------------------------- every kind
@pytest.mark.parametrize("kind", SAMPLE_KINDS)
def test_every_kind_renders_the_same_from_any_stage_path(kind):
    # a region straddling tile corners (tiles are 80 µm), rendered from cold caches,
    # then a shifted sub-region rendered first on another pass: the overlap is identical
    clear_caches()
    big = _maps(kind, -70.0, -60.0, (240, 280), ids=True)
    clear_caches()
    sub = _maps(kind, -70.0 + 37 * PX, -60.0 + 53 * PX, (150, 170), ids=True)
    again = _maps(kind, -70.0 + 37 * PX, -60.0 + 53 * PX, (150, 170), ids=True)
    win = (slice(53, 203), slice(37, 207))
    for name, a, b, c in [("opd", big.opd, sub.opd, again.opd), ("absorption", big.absorption, sub.absorption,
                                                                   again.absorption)] + [
            (k, big.labels[k], sub.labels[k], again.labels[k]) for k in big.labels]:
        assert np.array_equal(b, c), f"{kind}: {name} differs between two renders"
        scale = max(float(np.abs(a).max()), 1e-6)
        np.testing.assert_allclose(b, a[win], rtol=0, atol=1e-4 * scale, err_msg=f"{kind}: {name} at a tile edge")
        assert np.all(np.isfinite(a)), f"{kind}: {name} has NaN/inf"
    if kind in CELL_KINDS:
        assert np.array_equal(sub.cell_ids, big.cell_ids[win])
    if kind not in ("blank", "phase-grating"):
        # something is there, and fluorescent (the grating is a pure phase object)
        assert sum(float(v.max()) for v in big.labels.values()) > 0
    if kind != "blank":
        assert np.ptp(big.opd) > 0


@pytest.mark.parametrize("kind", CELL_KINDS)
def test_nothing_reaches_beyond_the_margin_rendering_looks_at(kind):
    # a region renders the tiles within the kind's margin: every cell (and thin structure)
    # of a tile must stay inside it, or regions would differ by stage path
    from scopecast.daemon.sim.specimens_kinds import cells_in_tile, kind_margin_um
    from scopecast.daemon.sim.specimens_structures import tile_segments

    margin = kind_margin_um(kind)
    for tx in range(-3, 4):
        for ty in range(-3, 4):
            lo_x, hi_x, lo_y, hi_y = tx * 80 - margin, (tx + 1) * 80 + margin, ty * 80 - margin, (ty + 1) * 80 + margin
            for c in cells_in_tile(kind, 0, tx, ty):
                ex, ey = c.box
                assert lo_x <= c.x - ex and c.x + ex <= hi_x and lo_y <= c.y - ey and c.y + ey <= hi_y
            for seg, _ in tile_segments(kind, 0, tx, ty):
                for x, y in ((seg.x0, seg.y0), (seg.x1, seg.y1)):
                    assert np.all((x > lo_x + 2) & (x < hi_x - 2) & (y > lo_y + 2) & (y < hi_y - 2))


def test_a_seed_gives_another_slide():
    a = _maps("epithelium", 0.0, 0.0, (100, 100), seed=0)
    b = _maps("epithelium", 0.0, 0.0, (100, 100), seed=1)
    assert not np.array_equal(a.opd, b.opd)


def test_blank_has_no_fluorophore_and_no_sample():
    m = _maps("blank", -100.0, -100.0, (200, 200))
    assert not m.opd.any() and not m.absorption.any()
    assert all(not v.any() for v in m.labels.values())


# ---------------------------------------------------------- no overlaps
@pytest.mark.parametrize("kind", CELL_KINDS)
def test_cell_bodies_never_overlap_and_nuclei_stay_whole(kind):
    slide = Slide(kind, 0)
    x0, y0, px, n = -100.0, 20.0, 0.25, 640  # 160 µm square: many contacts, across tiles
    if kind in ("sparse", "fibroblasts", "filaments"):  # fewer, bigger cells: look wider
        x0, y0, px, n = -200.0, -100.0, 0.4, 800
    m = slide.render(x0, y0, px, (n, n), ids=True)
    assert m.overlap_px == 0  # no pixel was claimed by two bodies or two nuclei
    if kind in ("epithelium", "membranes"):
        assert (m.cell_ids > 0).all()  # confluent: no gap between the cells of a sheet
    # a nucleus lies in its own cell's body, never in a neighbour's
    nuc = m.nucleus_ids > 0
    assert nuc.any()
    assert np.count_nonzero(m.cell_ids[nuc] != m.nucleus_ids[nuc]) <= 0.002 * nuc.sum()
    # every cell away from the border is one piece, and its nucleus is whole (not cut by a
    # neighbour): its drawn area matches the ellipse it was generated with
    cells = _cells_in(slide, x0 + 40, x0 + n * px - 40, y0 + 40, y0 + n * px - 40)
    assert cells
    checked = 0
    for c in cells:
        body = m.cell_ids == c.uid
        if not body.any():
            continue
        assert ndimage.label(body)[1] == 1, f"{kind}: cell {c.uid} is split in pieces"
        if len(c.nuclei) == 1 and c.nuclei[0].b > 1.0:
            nu = c.nuclei[0]
            expected = np.pi * nu.a * nu.b * (1 - 0.2 / nu.b) ** 2  # where the soft edge passes 0.5
            drawn = np.count_nonzero(m.nucleus_ids == c.uid) * px * px
            assert drawn == pytest.approx(expected, rel=0.12), f"{kind}: nucleus of {c.uid} cut"
            checked += 1
    assert checked > 0 or kind == "debris"  # debris holds only sub-µm DNA fragments


def test_touching_cells_share_their_territory():
    # in the dense colony cells touch; the drawn cytoplasm never stacks two cells
    slide = Slide("cells", 0)
    x0, y0 = COLONY_CENTER_UM[0] - 60, COLONY_CENTER_UM[1] - 60
    m = slide.render(x0, y0, 0.25, (480, 480), ids=True)
    cells = _cells_in(slide, x0 - 30, x0 + 150, y0 - 30, y0 + 150)
    tallest = max(c.height for c in cells)
    # OPD of cytoplasm + nucleus + nucleoli + granules of ONE cell stays below this bound
    bound = tallest * (0.025 + 0.012) + 0.036 + 0.12 * 2 * 0.6 * 2
    assert m.opd.max() < bound
    touching = 0
    for c in cells:
        body = m.cell_ids == c.uid
        if body.any():
            ring = ndimage.binary_dilation(body, iterations=2) & ~body
            touching += bool(np.any(m.cell_ids[ring] > 0))
    assert touching > 10  # contacts are common there, and resolved into shared borders


def test_colony_has_several_times_the_nuclei_of_the_culture():
    def fraction(x, y):
        m = _maps("cells", x - 80, y - 80, (320, 320))
        return float((m.labels["nuclei"] > 20).mean())

    colony = fraction(*COLONY_CENTER_UM)
    elsewhere = np.mean([fraction(0, 0), fraction(-12000, 3000), fraction(5000, -7000)])
    assert colony > 0.25 and colony > 2.5 * elsewhere


# ----------------------------------------------------------- morphology
def _membrane_profile(kind, a, b, px=0.02, half=3.0):
    """Membrane stain along the line from cell ``a`` to ``b``, within ±half µm of the midpoint."""
    d = np.array([b.x - a.x, b.y - a.y])
    dist = float(np.hypot(*d))
    u = d / dist
    s = np.arange(-half, half, px) + dist / 2
    pts = np.array([a.x, a.y])[:, None] + u[:, None] * s[None, :]
    lo = pts.min(axis=1) - 1
    n = int(np.ceil((pts.max(axis=1) - lo).max() / px)) + 3
    m = Slide(kind, 0).render(lo[0], lo[1], px, (n, n), ids=True)
    rc = np.array([(pts[1] - lo[1]) / px, (pts[0] - lo[0]) / px])
    prof = ndimage.map_coordinates(m.labels["membrane"], rc, order=1)
    ids = ndimage.map_coordinates(m.cell_ids.astype(float), rc, order=0)
    return s, prof, ids, dist


def _neighbours(kind):
    slide = Slide(kind, 0)
    cells = _cells_in(slide, 0, 160, 0, 160)
    pairs = []
    for a in cells:
        b = min((c for c in cells if c is not a), key=lambda c: np.hypot(c.x - a.x, c.y - a.y))
        pairs.append((a, b))
    return pairs[:4]


def test_epithelium_neighbours_share_one_junction_line():
    for a, b in _neighbours("epithelium"):
        s, prof, ids, dist = _membrane_profile("epithelium", a, b)
        # the two cells meet on the power-diagram bisector
        junction = (dist**2 + a.weight - b.weight) / (2 * dist)
        assert ids[0] == a.uid and ids[-1] == b.uid
        peaks = _peaks(prof)
        assert len(peaks) == 1, f"junction {a.uid}/{b.uid} drawn as {len(peaks)} lines"
        assert abs(s[peaks[0]] - junction) < 0.1
        above = s[prof > prof.max() / 2]
        assert above.max() - above.min() < 1.0  # one membrane's width, not two rings


def test_membranes_kind_has_two_membranes_at_the_declared_gap():
    for a, b in _neighbours("membranes"):
        s, prof, _, dist = _membrane_profile("membranes", a, b, px=0.01, half=1.0)
        junction = (dist**2 + a.weight - b.weight) / (2 * dist)
        gap = 0.5 * (a.gap + b.gap)
        near = np.abs(s - junction) < 0.4  # (Golgi stacks elsewhere along the line are membranes too)
        s, prof = s[near], prof[near]
        peaks = _peaks(prof, rel=0.3)
        assert len(peaks) == 2, f"expected two membranes {gap:.2f} µm apart, got {len(peaks)} peaks"
        assert s[peaks[1]] - s[peaks[0]] == pytest.approx(gap, abs=0.02)
        assert 0.5 * (s[peaks[0]] + s[peaks[1]]) == pytest.approx(junction, abs=0.02)


def test_fibroblast_cells_and_nuclei_are_elongated():
    slide = Slide("fibroblasts", 0)
    x0, y0, px, n = -150.0, -150.0, 0.25, 1200
    m = slide.render(x0, y0, px, (n, n), ids=True)
    measured = 0
    for c in _cells_in(slide, x0 + 60, x0 + n * px - 60, y0 + 60, y0 + n * px - 60):
        for ids, need in ((m.nucleus_ids, 2.0), (m.cell_ids, 3.0)):
            yy, xx = np.nonzero(ids == c.uid)
            if len(xx) < 20:
                break
            ev = np.linalg.eigvalsh(np.cov(np.stack([xx, yy]).astype(float)))
            assert np.sqrt(ev[1] / ev[0]) > need, f"cell {c.uid}: aspect {np.sqrt(ev[1] / ev[0]):.2f}"
        else:
            measured += 1
    assert measured >= 3


def test_mitotic_slide_holds_binucleated_and_dividing_cells():
    slide = Slide("mitotic", 0)
    cells = _cells_in(slide, -160, 160, -160, 160)
    two = [c for c in cells if len(c.nuclei) == 2]
    plates = [n for c in cells for n in c.nuclei if n.a / n.b > 3]  # chromosome plates
    assert len(two) >= 3 and len(plates) >= 3


def test_chromatin_is_a_smooth_random_texture():
    slide = Slide("cells", 0)
    c = max(_cells_in(slide, -200, 200, -200, 200), key=lambda c: c.nuclei[0].b)
    nu = c.nuclei[0]
    half = 0.6 * nu.b / np.sqrt(2)  # a square well inside the nucleus
    px, n = 0.05, int(2 * half / 0.05)
    m = slide.render(c.x + nu.dx - half, c.y + nu.dy - half, px, (n, n))
    dna = m.labels["nuclei"].astype(float)
    tex = dna - ndimage.gaussian_filter(dna, 20)  # the chromatin pattern, envelope removed
    spec = np.abs(np.fft.fft2((tex - tex.mean()) * np.outer(np.hanning(n), np.hanning(n)))) ** 2
    f = np.hypot(*np.meshgrid(np.fft.fftfreq(n, px), np.fft.fftfreq(n, px)))
    assert tex.std() > 0.03 * dna.mean()  # there is a texture
    assert spec[f > 2.5].sum() < 0.02 * spec.sum()  # no fine (pixel-scale) pattern
    assert spec.max() < 0.2 * spec.sum()  # no single periodic (checkerboard) component


# ---------------------------------------------------- resolution target
def test_resolution_target_has_line_pairs_at_the_declared_spacings():
    geo = resolution_target_geometry()
    assert sorted({g["spacing_um"] for g in geo}) == sorted(RESOLUTION_TARGET_SPACINGS_UM)
    assert min(RESOLUTION_TARGET_SPACINGS_UM) == 0.3 and max(RESOLUTION_TARGET_SPACINGS_UM) == 1.5
    px = 0.01
    slide = Slide("resolution-target", 0)
    for g in geo:
        for copy in (0.0, RESOLUTION_TARGET_PERIOD_UM):  # and one period away
            cx, cy = g["center_um"][0] + copy, g["center_um"][1]
            n = int(3.0 / px)
            if g["orientation"] == "vertical":  # lines along y: profile along x
                m = slide.render(cx - 1.5, cy, px, (1, n))
                prof_f, prof_p = m.labels["membrane"][0], m.opd[0]
                pos = cx - 1.5 + px * np.arange(n)
                want = g["lines_um"]
            else:
                m = slide.render(cx, cy - 1.5, px, (n, 1))
                prof_f, prof_p = m.labels["membrane"][:, 0], m.opd[:, 0]
                pos = cy - 1.5 + px * np.arange(n)
                want = g["lines_um"]
            for prof in (prof_f, prof_p):
                peaks = _peaks(prof)
                assert len(peaks) == 2, f"{g['spacing_um']} µm pair: {len(peaks)} lines"
                got = sorted(pos[peaks] - (copy if g["orientation"] == "vertical" else 0.0))
                np.testing.assert_allclose(got, want, atol=0.015)


def test_sted_detector_resolves_line_pairs_the_widefield_camera_cannot(backend, core):
    core.setProperty("Scope", "Sample", "resolution-target")
    core.setConfig("Objective", "40x")  # widefield FWHM at 600 nm: 0.47 µm
    core.setProperty("Camera", "Noise", "Off")
    core.setProperty("STED", "Noise", "Off")
    backend.set_channel("Membrane")

    def dip(g, detector, exposure):
        """Intensity midway between the two lines over that on the lines (1: not resolved)."""
        backend.move_um(*g["center_um"])
        img = backend.snap(detector, exposure).data.astype(float) - float(core.getProperty("Camera", "Offset"))
        h, w = img.shape
        px = backend.pixel_size_um() / (int(core.getProperty("STED", "Oversampling")) if detector else 1)
        x = (np.arange(w) - (w / 2 - 0.5)) * px
        row = img[h // 2 - 3: h // 2 + 3].mean(axis=0)
        on = max(np.interp(p - g["center_um"][0], x, row) for p in g["lines_um"])
        return np.interp(0.0, x, row) / on

    pairs = {g["spacing_um"]: g for g in resolution_target_geometry() if g["orientation"] == "vertical"}
    assert dip(pairs[0.3], None, 20) > 0.95 and dip(pairs[1.5], None, 20) < 0.2
    assert dip(pairs[0.3], "STED", 5) < 0.7


# ------------------------------------------------------- user specimens
def _snap(backend, channel, exposure=50):
    backend.set_channel(channel)
    return backend.snap(None, exposure).data.astype(float)


def test_a_user_npz_specimen_is_imaged_through_the_core(backend, core, tmp_path):
    n, px = 400, 0.2  # 80 µm square, centred on the slide origin
    yy, xx = (np.mgrid[:n, :n] - (n - 1) / 2) * px
    r = np.hypot(xx - 10, yy)  # a cell 10 µm right of the origin
    nuclei = np.where(r < 5, 100.0, 0.0)
    opd = np.where(r < 12, 0.08 * np.sqrt(np.clip(1 - (r / 12) ** 2, 0, 1)), 0.0)
    path = tmp_path / "mine.npz"
    np.savez(path, opd=opd, nuclei=nuclei, membrane=np.where(np.abs(r - 12) < 0.4, 80.0, 0.0))
    core.setProperty("Scope", "SpecimenPixelSizeUm", px)
    core.setProperty("Scope", "SpecimenFile", str(path))
    assert core.getProperty("Scope", "Sample") == "file"
    offset = float(core.getProperty("Camera", "Offset"))
    img = _snap(backend, "Nuclei") - offset
    cam_px = backend.pixel_size_um()
    h, w = img.shape
    cy, cx = ndimage.center_of_mass(np.clip(img - 0.5 * img.max(), 0, None))
    assert (cx - (w / 2 - 0.5)) * cam_px == pytest.approx(10.0, abs=cam_px)
    assert (cy - (h / 2 - 0.5)) * cam_px == pytest.approx(0.0, abs=cam_px)
    # outside the file the slide is empty
    backend.move_um(300.0, 0.0)
    assert np.percentile(_snap(backend, "Nuclei") - offset, 99) < 0.01 * img.max()
    backend.move_um(0.0, 0.0)
    core.setProperty("Camera", "Noise", "Off")  # expected counts
    dpc = _snap(backend, "DPC-Left", 10) - _snap(backend, "DPC-Right", 10)
    assert np.abs(dpc).max() > 100  # the phase object shows in DPC...
    assert np.abs(dpc[:, : w // 8]).max() < 0.05 * np.abs(dpc).max()  # ...and not far left of it


def test_a_user_tiff_label_image_becomes_cells(backend, core, tmp_path):
    tifffile = pytest.importorskip("tifffile")
    n, px = 300, 0.3
    yy, xx = np.mgrid[:n, :n]
    labels = np.zeros((n, n), np.uint16)
    labels[np.hypot(xx - 110, yy - 150) < 45] = 1
    labels[np.hypot(xx - 190, yy - 150) < 45] = 2  # overlaps 1: the label image decides the border
    path = tmp_path / "labels.tif"
    tifffile.imwrite(path, labels)
    core.setProperty("Scope", "SpecimenPixelSizeUm", px)
    core.setProperty("Scope", "SpecimenFile", str(path))
    assert core.getProperty("Scope", "Sample") == "file"
    # the maps derived from the labels: one nucleus per label, membrane on the shared border
    offset = float(core.getProperty("Camera", "Offset"))
    nuc = _snap(backend, "Nuclei") - offset
    blobs, count = ndimage.label(nuc > 0.5 * nuc.max())
    assert count == 2
    mem = _snap(backend, "Membrane") - offset
    h, w = mem.shape
    row = mem[h // 2 - 2: h // 2 + 3].mean(axis=0)
    cam_px = backend.pixel_size_um()
    x = (np.arange(w) - (w / 2 - 0.5)) * cam_px
    border = (150 - (n - 1) / 2) * px  # labels 1 and 2 meet at file column 150
    near = np.abs(x - border) < 3
    assert row[near].max() > 0.5 * row.max()  # the shared border is stained


@pytest.mark.filterwarnings("ignore:.*stored as RGB:DeprecationWarning")  # the default this test is about
def test_a_float_cyx_tiff_of_four_maps_is_read_as_channels(tmp_path):
    """tifffile.imwrite stores a (4, y, x) float stack as planar RGB(A) by default; docs/specimens.md accepts a
    CYX stack of up to 4 float maps, and it used to be refused as an RGB image."""
    tifffile = pytest.importorskip("tifffile")
    from scopecast.daemon.sim.specimens_file import load_specimen

    maps = np.random.default_rng(0).random((4, 50, 50)).astype(np.float32)
    maps[1] *= 0.01  # absorption, kept physical
    path = tmp_path / "c4.tif"
    tifffile.imwrite(path, maps)
    assert tifffile.TiffFile(path).series[0].axes == "SYX"  # what the default writes
    spec = load_specimen(path, 0.3)
    loaded = [np.asarray(spec.maps[k]) for k in ("opd", "absorption", "nuclei", "membrane")]
    for want, got in zip(maps, loaded, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-6)


def test_bad_specimen_files_are_refused_with_a_clear_error(core, tmp_path):
    good = tmp_path / "good.npz"
    np.savez(good, nuclei=np.zeros((8, 8)))
    core.setProperty("Scope", "SpecimenFile", str(good))
    cases = []
    np.savez(tmp_path / "keys.npz", dna=np.zeros((8, 8)))
    cases.append(("keys.npz", "unknown key.*dna.*valid keys"))
    np.savez(tmp_path / "shape.npz", opd=np.zeros((8, 8)), nuclei=np.zeros((9, 8)))
    cases.append(("shape.npz", "differ in shape"))
    np.savez(tmp_path / "dims.npz", opd=np.zeros((2, 8, 8)))
    cases.append(("dims.npz", "2-D image"))
    np.savez(tmp_path / "dtype.npz", labels=np.zeros((8, 8), np.float32))
    cases.append(("dtype.npz", "integer label image"))
    np.savez(tmp_path / "text.npz", opd=np.array([["a", "b"], ["c", "d"]]))
    cases.append(("text.npz", "expected real numbers"))
    np.savez(tmp_path / "nan.npz", opd=np.full((8, 8), np.nan))
    cases.append(("nan.npz", "NaN"))
    (tmp_path / "notes.txt").write_text("hello")
    cases.append(("notes.txt", "unsupported format"))
    (tmp_path / "broken.tif").write_bytes(b"not a tiff")
    cases.append(("broken.tif", "not a readable TIFF"))
    cases.append(("missing.npz", "does not exist"))
    for name, msg in cases:
        with pytest.raises(SpecimenFileError, match=msg) as err:
            core.setProperty("Scope", "SpecimenFile", str(tmp_path / name))
        assert name in str(err.value)
    # nothing was lost: the good specimen is still on the stage
    assert core.getProperty("Scope", "SpecimenFile") == str(good)
    assert core.getProperty("Scope", "Sample") == "file"
    core.setProperty("Scope", "SpecimenFile", "")
    assert core.getProperty("Scope", "Sample") == "cells"
    with pytest.raises(ValueError, match="needs a specimen"):
        core.setProperty("Scope", "Sample", "file")


def test_every_kind_is_offered_by_the_hub(core):
    allowed = set(core.getAllowedPropertyValues("Scope", "Sample"))
    assert set(SAMPLE_KINDS) | {"file"} == allowed


def _two_cells(a: int, b: int, dtype) -> np.ndarray:
    lab = np.zeros((120, 120), dtype)
    lab[10:60, 10:60] = a
    lab[60:110, 60:110] = b
    return lab


def test_sparse_label_ids_make_the_same_cells_as_consecutive_ones(core, tmp_path):
    from scopecast.daemon.sim.specimens_file import load_specimen

    ref, big = tmp_path / "ref.npz", tmp_path / "big.npz"
    np.savez(ref, labels=_two_cells(1, 2, np.int64))
    np.savez(big, labels=_two_cells(7, 2**40, np.int64))  # a valid id; a table 2**40 long is 8 TiB
    core.setProperty("Scope", "SpecimenPixelSizeUm", 0.5)
    core.setProperty("Scope", "SpecimenFile", str(big))  # MemoryError from inside the device before the fix
    assert core.getProperty("Scope", "Sample") == "file"
    a, b = load_specimen(ref, 0.5), load_specimen(big, 0.5)
    assert a.maps.keys() == b.maps.keys()
    for key in a.maps:
        np.testing.assert_array_equal(a.maps[key], b.maps[key])
    assert set(np.unique(b.labels).tolist()) == {0, 7, 2**40}  # the ground-truth ids are the file's own


def test_label_ids_beyond_int64_are_refused_by_name(core, tmp_path):
    from scopecast.daemon.sim.specimens_file import SpecimenFileError

    good, bad = tmp_path / "good.npz", tmp_path / "bad.npz"
    np.savez(good, labels=_two_cells(1, 2, np.uint16))
    np.savez(bad, labels=_two_cells(1, 2**63 + 5, np.uint64))
    core.setProperty("Scope", "SpecimenFile", str(good))
    with pytest.raises(SpecimenFileError, match=r"bad\.npz.*'labels' has ids above"):
        core.setProperty("Scope", "SpecimenFile", str(bad))  # IndexError (wrapped to negative) before the fix
    assert core.getProperty("Scope", "SpecimenFile") == str(good)  # the previous specimen stays


@pytest.mark.parametrize(("axes", "dtype"), [("ZYX", np.float32), ("TYX", np.uint16)])
def test_a_tiff_stack_along_z_or_t_is_refused_by_name(core, tmp_path, axes, dtype):
    tifffile = pytest.importorskip("tifffile")
    from scopecast.daemon.sim.specimens_file import SpecimenFileError

    good = tmp_path / "maps.tif"  # the documented CYX stack of maps still loads
    tifffile.imwrite(good, np.full((2, 32, 32), 0.1, np.float32), metadata={"axes": "CYX"})
    core.setProperty("Scope", "SpecimenFile", str(good))
    assert core.getProperty("Scope", "Sample") == "file"

    stack = tmp_path / f"stack_{axes}.ome.tif"
    tifffile.imwrite(stack, np.ones((3, 32, 32), dtype), ome=True, metadata={"axes": axes})
    assert tifffile.TiffFile(stack).series[0].axes == axes
    with pytest.raises(SpecimenFileError, match=rf"stack_{axes}.*3 planes along '{axes[0]}'.*one 2-D plane"):
        core.setProperty("Scope", "SpecimenFile", str(stack))  # silently read as opd/absorption/nuclei before
    assert core.getProperty("Scope", "SpecimenFile") == str(good)  # the previous specimen stays


def test_a_single_plane_z_tiff_is_one_plane(tmp_path):
    tifffile = pytest.importorskip("tifffile")
    from scopecast.daemon.sim.specimens_file import load_specimen

    path = tmp_path / "one_z.ome.tif"
    tifffile.imwrite(path, np.full((1, 32, 32), 0.1, np.float32), ome=True, metadata={"axes": "ZYX"})
    assert list(load_specimen(path, 0.5).maps) == ["opd"]


def _ome_zarr(path, shape) -> None:
    zarr = pytest.importorskip("zarr")
    root = zarr.open_group(str(path), mode="w", zarr_format=3)
    root.create_array("0", shape=shape, chunks=(1, 512, 4096), dtype="uint8", fill_value=0)
    root.attrs["ome"] = {"version": "0.5", "multiscales": [{
        "axes": [{"name": "c", "type": "channel"}, {"name": "y", "type": "space"}, {"name": "x", "type": "space"}],
        "datasets": [{"path": "0", "coordinateTransformations": [{"type": "scale", "scale": [1, 1, 1]}]}]}]}


def _npy_header_only(path, shape) -> None:
    with open(path, "wb") as f:  # a sparse file: the header and a hole, never the pixels
        np.lib.format.write_array_header_1_0(f, {"descr": "|u1", "fortran_order": False, "shape": shape})
        f.truncate(f.tell() + int(np.prod(shape)))


@pytest.mark.parametrize("suffix", [".zarr", ".npy"])
def test_a_whole_slide_file_is_refused_without_reading_it(core, tmp_path, suffix):
    from scopecast.daemon.sim.specimens_file import SpecimenFileError

    good = tmp_path / "good.npz"
    np.savez(good, opd=np.zeros((32, 32), np.float32))
    core.setProperty("Scope", "SpecimenFile", str(good))
    big = tmp_path / f"slide{suffix}"
    shape = (1, 2000, 20000) if suffix == ".zarr" else (2000, 20000)  # 40 MB of pixels, 20000 > 16384 per side
    (_ome_zarr if suffix == ".zarr" else _npy_header_only)(big, shape)
    tracemalloc.start()
    try:
        with pytest.raises(SpecimenFileError, match=r"slide.*\(?2000, 20000\)?.*16384"):
            core.setProperty("Scope", "SpecimenFile", str(big))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # before the fix the whole array was read first (40 MB here; gigabytes or a MemoryError for a real slide)
    assert peak < 4 << 20, f"{peak / 2**20:.0f} MiB allocated to refuse a file by its shape"
    assert core.getProperty("Scope", "SpecimenFile") == str(good)
