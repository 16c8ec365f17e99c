"""The headless demo's snapshot: labelled tiles, outputs at their own sampling, trust shown."""

import numpy as np

from scopecast.daemon.snapshot import _GLYPH_H, autoscale, draw_text, snapshot


def _header(model, task, channels, scale, trust):
    return {"model": model, "task": task, "channels": channels, "scale_factor": scale,
            "pixel_size_um": 0.65 / scale, "trust": trust}


def test_snapshot_labels_tiles_and_keeps_the_super_resolved_sampling():
    rng = np.random.default_rng(1)
    frames = {c: rng.integers(100, 4000, (256, 256)).astype(np.uint16) for c in ("BF", "Membrane")}
    sr = np.add.outer(np.arange(512.0), np.arange(512.0))[None].astype(np.float32)  # a ramp: known pixels
    results = [
        (_header("vs", "virtual-staining", ["nuclei", "membrane"], 1, {"ok": True, "score": 0.9}),
         rng.random((2, 256, 256)).astype(np.float32)),
        (_header("sr", "super-resolution", ["membrane-sr"], 2,
                 {"ok": False, "score": 0.1, "reasons": ["outside training range"]}), sr),
    ]
    img = snapshot(frames, results, ["BF", "Membrane"])
    # raw tiles (2 x 256) on the first row; the composite (256) and sr at its own 512 x 512 on the second
    assert img.shape[1] == 256 + 6 + 512 and img.shape[0] > 256 + 6 + 512
    sr_tile = img[-512:, 256 + 6 :, 0]
    # unresampled, and dimmed because it is not trusted (never shown as a confident image)
    assert np.array_equal(sr_tile, (autoscale(sr[0]) * 0.35).astype(np.uint8))
    # the label strip above it names the model and sampling, and shows the verdict in red
    strip = 0  # the label strip: rows above the tile whose left margin has the strip's grey
    while img[-513 - strip, 256 + 6, 0] == 24:
        strip += 1
    assert strip >= 2 * _GLYPH_H  # two lines: what it shows, and the verdict
    label = img[-512 - strip : -512, 256 + 6 :]
    assert (label == 230).all(axis=2).any() and ((label[..., 0] == 255) & (label[..., 1] == 110)).any()
    # the trusted composite is labelled in green; each raw tile has its label
    assert ((img[256 + 6 :, :256, 0] == 110) & (img[256 + 6 :, :256, 1] == 230)).any()
    for x0 in (0, 256 + 6):
        assert (img[:16, x0 : x0 + 256] == 230).all(axis=2).any()


def test_text_is_drawn_and_clipped():
    img = np.zeros((20, 30, 3), np.uint8)
    draw_text(img, "µm 5", 0, 0)
    assert img[:, :7].any() and img[:, 7:14].any()  # 'µ' and 'm' drawn from the built-in font
    draw_text(img, "a long line that runs off the edge", 0, 5)  # clipped, no error
    assert img.shape == (20, 30, 3)


def test_uncertainty_channels_are_not_composited_as_stains():
    rng = np.random.default_rng(2)
    frames = {"BF": rng.integers(100, 4000, (256, 256)).astype(np.uint16)}
    y = rng.random((2, 256, 256)).astype(np.float32)
    std = rng.random((2, 256, 256)).astype(np.float32) * 1e3  # would add colour if treated as stains
    plain = snapshot(frames, [(_header("vs", "virtual-staining", ["nuclei", "membrane"], 1, {"ok": True}), y)])
    with_std = snapshot(frames, [(_header("vs", "virtual-staining", ["nuclei", "membrane", "nuclei:std",
                                                                      "membrane:std"], 1, {"ok": True}),
                                  np.concatenate([y, std]))])
    assert np.array_equal(plain, with_std)  # same tile and the same label
