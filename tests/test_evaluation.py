"""Per-morphology evaluation (scopecast evaluate) and the resolution-target analysis (issue 10, items 3-5).

The blank-slide positive area through the engine, end to end, is tested in
tests/test_guards.py (test_blank_slide_and_saturated_bright_field_end_to_end,
also on the shipped virtual-staining package); not repeated here.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime")

from scopecast.models.dataset import DOMAIN, field_plan  # noqa: E402
from scopecast.models.evaluate_morphology import (  # noqa: E402
    RAYLEIGH_DIP, SPARROW_DIP, format_report, line_pair_dip, resolution_report, run_evaluation, smallest_separated,
    update_card,
)
from scopecast.models.synthetic import write_package  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ROOT / "models" / "packages"
CYCLE = ["DPC-Left", "DPC-Right", "DPC-Top", "DPC-Bottom", "BF", "DF"]
SPACINGS = (0.3, 0.4, 0.5, 0.6, 0.8, 1.0, 1.2, 1.5)


def _two_lines(sep: float, sigma: float, x: np.ndarray) -> np.ndarray:
    return np.exp(-((x + sep / 2) ** 2) / (2 * sigma**2)) + np.exp(-((x - sep / 2) ** 2) / (2 * sigma**2))


@pytest.mark.parametrize("sigma", [0.2, 0.3, 0.45])
def test_two_gaussians_are_separated_iff_the_sum_has_a_dip(sigma):
    """Two equal Gaussians have a dip between them exactly when they are more than 2σ apart (Sparrow)."""
    x = np.arange(-4, 4, 0.05)
    dips = {s: line_pair_dip(_two_lines(s, sigma, x), x, (-s / 2, s / 2), background=0.0) for s in SPACINGS}
    for s, d in dips.items():
        assert (d > 0.0) == (s > 2 * sigma), (s, d)
    sparrow = smallest_separated(dips, 1e-6)
    assert sparrow == min(s for s in SPACINGS if s > 2 * sigma)
    rayleigh = smallest_separated(dips, RAYLEIGH_DIP)
    assert rayleigh is None or rayleigh >= sparrow  # Rayleigh asks for more than Sparrow


def test_a_merged_pair_has_no_dip_and_a_gap_breaks_the_run():
    x = np.arange(-3, 3, 0.05)
    assert line_pair_dip(np.exp(-x**2 / 0.5), x, (-0.2, 0.2), background=0.0) == 0.0
    # separated at 1.5 and 0.8 but not at 1.0: the smallest spacing from which all larger ones are separated is 1.2
    assert smallest_separated({0.8: 0.5, 1.0: 0.0, 1.2: 0.4, 1.5: 0.9}, SPARROW_DIP) == 1.2
    assert smallest_separated({1.2: 0.0, 1.5: 0.01}, SPARROW_DIP) is None


def test_resolution_report_on_a_rendered_target():
    """Lines of the simulator's resolution target blurred by a Gaussian of known σ: the report finds 2σ."""
    from scipy import ndimage

    from scopecast.daemon.sim.slide import resolution_target_geometry

    px, n, sigma = 0.05, 1600, 0.25  # 80 µm field centred on the target, 50 nm pixels
    img = np.zeros((n, n), np.float64)
    c = lambda u: int(round(u / px + n / 2 - 0.5))  # noqa: E731
    for g in resolution_target_geometry():
        (cx, cy), half = g["center_um"], g["length_um"] / 2
        for line in g["lines_um"]:
            if g["orientation"] == "vertical":
                img[c(cy - half):c(cy + half), c(line)] = 1.0
            else:
                img[c(line), c(cx - half):c(cx + half)] = 1.0
    img = ndimage.gaussian_filter(img, sigma / px)
    rep = resolution_report({"blurred": (img, px)})["blurred"]
    assert rep["sparrow_um"] == min(s for s in SPACINGS if s > 2 * sigma + 0.02)
    assert rep["rayleigh_um"] is not None and rep["rayleigh_um"] >= rep["sparrow_um"]


def test_field_plan_covers_every_morphology_blank_fields_and_the_ranges():
    fields = field_plan("virtual-staining", "train", 50, seed=3)
    kinds = [f["kind"] for f in fields]
    dom = DOMAIN["virtual-staining"]
    assert set(kinds) == {*dom["train"], "blank"} and not set(kinds) & set(dom["held_out"])
    assert kinds.count("blank") == round(dom["blank_fraction"] * 50)
    lo, hi = dom["exposure_ms"]
    assert all(lo <= f["exposure_ms"] <= hi and abs(f["z"]) <= dom["defocus_um"] for f in fields)
    assert all(f["x"] < -2000 for f in fields)  # the training region
    assert field_plan("virtual-staining", "train", 50, seed=3) == fields  # seeded


def _synthetic_package(path: Path, task: str) -> Path:
    """A tiny random network with a calibrated manifest like a trained package's."""
    from scopecast.models.manifest import ChannelStats, InputStats

    if task == "virtual-staining":
        inputs, outputs, scale = CYCLE, ["nuclei", "membrane"], 1
    else:
        inputs, outputs, scale = ["Membrane"], ["membrane-sr"], 2
    n = len(inputs)
    st = {c: ChannelStats(signal=(10.0, 1000.0, 20000.0), contrast=(0.001, 0.1, 10.0), snr_min=3.0,
                          saturated_max=0.0, p_low=100.0, p_high=8000.0) for c in inputs}
    return write_package(
        path, inputs, outputs, name=f"tiny-{task}", task=task, width=4, layers=2, scale=scale, tile=64, halo=8,
        normalization={"kind": "calibrated", "offset": [100.0] * n, "scale": [8000.0] * n},
        camera={"offset_adu": 100.0, "saturation_adu": 15100.0, "read_noise_adu": 0.5, "gain_adu_per_e": 0.5},
        input_stats=InputStats(fields=4, percentiles=(1.0, 99.8), channels=st),
        output_scaling={"scale": [1000.0] * len(outputs), "offset": [100.0] * len(outputs)},
        output_range={"min": [0.0] * len(outputs), "max": [15100.0] * len(outputs)}, pixel_size_um=0.65,
    )


@pytest.mark.parametrize("task", ["virtual-staining", "super-resolution"])
def test_evaluate_prints_every_row_and_baseline(tmp_path, task):
    pkg = _synthetic_package(tmp_path / "pkg", task)
    rep = run_evaluation(pkg, fields=1, size=64, fit_fields=1, seed=7)
    dom = DOMAIN[task]
    rows = [r["row"] for r in rep["rows"]]
    assert rows[:len(dom["train"])] == [f"{k} (held-out region)" for k in dom["train"]]
    assert [f"{k} (held-out morphology)" for k in dom["held_out"]] == rows[len(dom["train"]):-5]
    assert rows[-5] == "blank slide" and len([r for r in rep["rows"] if r["group"] == "outside domain"]) == 4
    baselines = ["linear regression", "LR oracle"] if task == "virtual-staining" else \
        ["bicubic", "Richardson-Lucy", "RL oracle"]
    table = format_report(rep)
    for r in rep["rows"]:
        assert r["row"] in table
        if r["group"] != "blank":
            assert list(r["scores"]) == ["model", *baselines]
    for b in baselines:
        assert f"{b} PSNR / SSIM / r" in table
    assert "positive area" in table and "Smallest margin over the best baseline" in table
    v = rep["verdict"]
    assert set(v["psnr_margin_db"]) == {  # a field whose truth holds no stain (empty glass) has no PSNR
        f"{r['row']} / {o}" for r in rep["rows"][:-5] for o in rep["outputs"] if r["empty_fields"][o] < r["fields"]}
    assert 0.0 <= v["blank_positive_area"] <= 1.0
    if task == "super-resolution":
        rt = rep["resolution_target"]["results"]
        assert list(rt) == ["widefield", "bicubic", "Richardson-Lucy", "model", "STED ground truth"]
        assert "Resolution target" in table
    card = update_card(tmp_path / "card.md", rep, "scopecast evaluate --model x")
    text = card.read_text()
    assert text.count("## Validated domain") == 1 and "Failure modes measured outside" in text
    update_card(card, rep)  # replaced, not appended twice
    assert card.read_text().count("## Validated domain") == 1


@pytest.mark.parametrize("name", ["virtual-staining", "super-resolution", "virtual-staining-live",
                                  "super-resolution-live"])
def test_shipped_packages_carry_calibrated_normalization_and_training_statistics(name):
    pkg = PACKAGES / name
    if not (pkg / "manifest.json").exists():
        pytest.skip(f"{name} not shipped")
    m = json.loads((pkg / "manifest.json").read_text())
    assert m["normalization"]["kind"] == "calibrated"
    assert len(m["normalization"]["offset"]) == len(m["inputs"]) == len(m["normalization"]["scale"])
    assert set(m["input_stats"]["channels"]) == set(m["inputs"])
    # the guards judge exposure on the structure level, measured over 4x the fields the model was trained on
    assert all(c.get("peak") for c in m["input_stats"]["channels"].values())
    assert m["input_stats"]["fields"] > 400 and "training slide region" in m["input_stats"]["source"]
    assert len(m["output_range"]["min"]) == len(m["outputs"]) == len(m["output_range"]["max"])
    dom = m["provenance"]["data"]["domain"]
    assert set(dom["morphologies"]) == set(DOMAIN[m["task"]]["train"])
    assert not set(dom["morphologies"]) & set(DOMAIN[m["task"]]["held_out"])
    assert dom["target_clipped_max"] == 0.0  # ground truth never at the full well
    assert "## Validated domain and per-morphology evaluation" in (pkg / "card.md").read_text()


def test_evaluate_command_reports_a_bad_package_by_name(tmp_path):
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    r = subprocess.run([sys.executable, "-m", "scopecast.daemon.cli", "evaluate", "--model", str(tmp_path)],
                       capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 2 and "not a model package" in r.stderr


def test_a_package_without_output_scaling_is_refused_by_name(tmp_path):
    """It failed with "AttributeError: 'NoneType' object has no attribute 'offset'" after capturing every row."""
    pkg = write_package(tmp_path / "m", CYCLE, ["nuclei"], name="unscaled", task="virtual-staining", width=4,
                        layers=2, tile=64)
    with pytest.raises(ValueError, match="records no output_scaling"):
        run_evaluation(pkg, fields=1, size=64, fit_fields=1, seed=7)


def test_evaluating_the_int8_variant_of_a_package_without_one_names_why(tmp_path):
    pkg = _synthetic_package(tmp_path / "pkg", "virtual-staining")
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    r = subprocess.run([sys.executable, "-m", "scopecast.daemon.cli", "evaluate", "--model", str(pkg),
                        "--precision", "int8"], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 2 and "no int8 variant: it was never quantized" in r.stderr


@pytest.mark.parametrize("name", ["virtual-staining", "virtual-staining-live", "super-resolution",
                                  "super-resolution-live"])
def test_shipped_int8_variants_are_kept_only_where_every_morphology_kept_fidelity_and_they_are_faster(name):
    from scopecast.daemon.inference.package import PackageError, load_package

    pkg = PACKAGES / name
    if not (pkg / "int8.json").exists():
        pytest.skip(f"{name} not shipped or never quantized")
    report = json.loads((pkg / "int8.json").read_text())
    sel = report["calibration"]["selection"]  # chosen on training fields, judged on validation fields
    assert sel["from"] == "training fields apart from the calibration fields" and sel["fields"] == 32
    assert report["calibration"]["method"] == min(sel["worst_loss_db"], key=sel["worst_loss_db"].get)
    by_morphology = report["loss_db_by_morphology"]
    assert len(by_morphology) >= 5 and report["worst_loss_db"] == max(
        v for per in by_morphology.values() for v in per.values())
    faster = report["speed"]["speedup"] > report.get("min_speedup", 1.0)  # reports before the speed rule: 1x
    kept = report["worst_loss_db"] <= report["max_loss_db"] == 0.5 and faster
    assert report["accepted"] is kept and (pkg / "model_int8.onnx").exists() is kept
    if not kept:
        with pytest.raises(PackageError, match="quantization was refused"):
            load_package(pkg, "int8")
        return
    q = load_package(pkg, "int8")  # present and its sha256 verified
    assert q.manifest.variants["int8"].loss_db == report["loss_db"]
    # judged by its own trust figures, measured on it like the package's own
    own = q.manifest.validated
    assert own is not None and own.uncertainty is not None and "--precision int8" in own.uncertainty.method
    assert own.uncertainty.statistic == load_package(pkg).manifest.validated.uncertainty.statistic


def _package_trained_on(path: Path, train_kinds: dict[str, int] | None) -> Path:
    """A tiny calibrated virtual-staining package whose provenance records ``train_kinds`` as ``train`` does."""
    from scopecast.models.manifest import ChannelStats, InputStats

    st = {c: ChannelStats(signal=(10.0, 1000.0, 20000.0), contrast=(0.001, 0.1, 10.0), snr_min=3.0,
                          saturated_max=0.0, p_low=100.0, p_high=8000.0) for c in CYCLE}
    write_package(
        path, CYCLE, ["nuclei", "membrane"], name="tiny", task="virtual-staining", width=4, layers=2, tile=64, halo=8,
        normalization={"kind": "calibrated", "offset": [100.0] * 6, "scale": [8000.0] * 6},
        camera={"offset_adu": 100.0, "saturation_adu": 15100.0, "read_noise_adu": 0.5, "gain_adu_per_e": 0.5},
        input_stats=InputStats(fields=4, percentiles=(1.0, 99.8), channels=st),
        output_scaling={"scale": [1000.0] * 2, "offset": [100.0] * 2},
        output_range={"min": [0.0] * 2, "max": [15100.0] * 2}, pixel_size_um=0.65,
    )
    if train_kinds is not None:
        m = json.loads((path / "manifest.json").read_text())
        m["provenance"]["data"] = {"train_kinds": train_kinds}
        (path / "manifest.json").write_text(json.dumps(m))
    return path


def test_rows_follow_the_morphologies_the_package_was_trained_on(tmp_path):
    pkg = _package_trained_on(tmp_path / "pkg", {"cells": 3, "fibroblasts": 3, "blank": 1})
    rep = run_evaluation(pkg, fields=1, size=64, fit_fields=1, seed=7, outside=False)
    rows = {r["row"]: r["group"] for r in rep["rows"]}
    assert rows["cells (held-out region)"] == "training morphology"
    assert rows["fibroblasts (held-out region)"] == "training morphology"
    assert "fibroblasts (held-out morphology)" not in rows  # it was trained on
    for kind in ("epithelium", "sparse", "mitotic", "debris", "clusters"):  # never seen
        assert rows[f"{kind} (held-out morphology)"] == "held-out morphology"
        assert f"{kind} (held-out region)" not in rows
    assert rep["domain"]["train"] == ["cells", "fibroblasts"]
    assert "fibroblasts" not in rep["domain"]["held_out"]


def test_a_package_without_recorded_morphologies_and_the_shipped_ones_keep_the_task_domain(tmp_path):
    from scopecast.daemon.inference.package import load_package
    from scopecast.models.evaluate_morphology import evaluation_domain

    m = load_package(_package_trained_on(tmp_path / "pkg", None)).manifest
    dom = evaluation_domain(m)
    assert dom["train"] == DOMAIN["virtual-staining"]["train"] and "does not record" in dom["morphologies_from"]
    shipped = Path(__file__).resolve().parents[1] / "models" / "packages"
    for name in ("virtual-staining", "super-resolution"):
        if (shipped / name / "manifest.json").is_file():
            sm = load_package(shipped / name).manifest
            d = evaluation_domain(sm)  # same rows, order and seeds as before
            assert (d["train"], d["held_out"]) == (DOMAIN[sm.task]["train"], DOMAIN[sm.task]["held_out"])


def test_figure_without_pillow_is_refused_before_the_evaluation(cli, tmp_path, monkeypatch):
    from scopecast.models.synthetic import write_package

    pkg = write_package(tmp_path / "pkg", CYCLE, ["nuclei", "membrane"], name="tiny", task="virtual-staining",
                        width=4, layers=2, tile=64, halo=8, pixel_size_um=0.65,
                        normalization={"kind": "calibrated", "offset": [100.0] * 6, "scale": [8000.0] * 6},
                        output_scaling={"scale": [1000.0] * 2, "offset": [100.0] * 2})
    monkeypatch.setitem(sys.modules, "PIL", None)  # an engine-only install: no Pillow
    t0 = time.monotonic()
    rc, out, err = cli("evaluate", "--model", pkg, "--fields", "1", "--size", "64", "--no-outside", "--quiet",
                       "--figure", tmp_path / "fig.png", "--json", tmp_path / "rep.json")
    assert rc == 2 and "Traceback" not in err, err
    assert "--figure needs Pillow" in err, err
    assert "blank slide" not in out  # refused before the evaluation ran, not after it
    assert time.monotonic() - t0 < 60  # no capture at all (the evaluation takes minutes at real sizes)


def _package(path: Path) -> Path:
    """A tiny calibrated virtual-staining package with the shipped package's output scale (counts at 100 ms)."""
    from scopecast.models.manifest import ChannelStats, InputStats
    from scopecast.models.synthetic import write_package

    st = {c: ChannelStats(signal=(10.0, 1000.0, 20000.0), contrast=(0.001, 0.1, 10.0), snr_min=3.0,
                          saturated_max=0.0, p_low=100.0, p_high=8000.0) for c in CYCLE}
    return write_package(
        path, CYCLE, ["nuclei", "membrane"], name="tiny", task="virtual-staining", width=4, layers=2, tile=64, halo=8,
        normalization={"kind": "calibrated", "offset": [100.0] * 6, "scale": [8000.0] * 6},
        camera={"offset_adu": 100.0, "saturation_adu": 15100.0, "read_noise_adu": 0.5, "gain_adu_per_e": 0.5},
        input_stats=InputStats(fields=4, percentiles=(1.0, 99.8), channels=st),
        output_scaling={"scale": [21415.0, 6231.0], "offset": [98.8, 100.0]},
        output_range={"min": [0.0] * 2, "max": [15100.0] * 2}, pixel_size_um=0.65,
    )


def test_a_field_of_empty_glass_is_not_scored_by_psnr(tmp_path):
    # seed 500, one 64² field per row: the clusters row's field lies on the glass between colonies
    rep = run_evaluation(_package(tmp_path / "pkg"), fields=1, size=64, fit_fields=1, seed=500, outside=False)
    row = next(r for r in rep["rows"] if r["row"] == "clusters (held-out morphology)")
    assert row["positive_area"]["truth"] == {"nuclei": 0.0, "membrane": 0.0}  # no stain in the truth at all
    margins = rep["verdict"]["psnr_margin_db"]
    assert not any(k.startswith("clusters") for k in margins), margins  # no PSNR margin from camera noise
    assert row["empty_fields"] == {"nuclei": 1, "membrane": 1}
    assert "clusters (held-out morphology): nuclei 1, membrane 1" in format_report(rep)
    cells = next(r for r in rep["rows"] if r["row"] == "cells (held-out region)")
    assert cells["empty_fields"] == {"nuclei": 0, "membrane": 0} and "cells (held-out region) / nuclei" in margins


def _model_argument(command: str) -> str:
    args = shlex.split(command)
    return args[args.index("--model") + 1]


def test_the_validation_section_quotes_a_package_path_with_spaces():
    from scopecast.export.repackage import validation_section
    from scopecast.models.manifest import ModelManifest

    m = ModelManifest.model_validate_json((ROOT / "models/packages/virtual-staining/manifest.json").read_bytes())
    text = validation_section(m, None, "/data/my models/vs")
    command = re.search(r"`(scopecast evaluate --model .*?)`", text).group(1)
    assert _model_argument(command) == "/data/my models/vs", command


def test_evaluate_card_reproduce_line_quotes_the_package_path(cli, tmp_path):
    from scopecast.models.synthetic import write_package

    pkg = write_package(tmp_path / "my models" / "vs", CYCLE, ["nuclei", "membrane"], name="tiny",
                        task="virtual-staining", width=4, layers=2, tile=64, halo=8, pixel_size_um=0.65,
                        normalization={"kind": "calibrated", "offset": [100.0] * 6, "scale": [8000.0] * 6},
                        output_scaling={"scale": [1000.0] * 2, "offset": [100.0] * 2})
    rc, _, err = cli("evaluate", "--model", pkg, "--fields", "1", "--size", "64", "--no-outside", "--quiet", "--card")
    assert rc in (0, 3), err  # 3: a random network misses the targets; the card is written either way
    command = re.search(r"Reproduce: `(.*?)`", (pkg / "card.md").read_text()).group(1)
    assert _model_argument(command) == str(pkg), command


def _bench_trust():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import bench_trust
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    return bench_trust


def test_bench_trust_rows_are_the_package_training_morphologies(tmp_path):
    """A package trained on fibroblasts: its fibroblasts rows are in distribution (false alarms), never a
    'held-out morphology' it was trained on, as scopecast evaluate scores it."""
    pkg = _package_trained_on(tmp_path / "pkg", {"cells": 3, "fibroblasts": 3, "blank": 1})
    rep = _bench_trust().run_package(pkg, fields=1, size=64, seed=7, fit_fields=1, overhead_size=0,
                                     say=lambda *_: None, only_rows=("fibroblasts", "epithelium"))
    rows = {r["row"]: r["group"] for r in rep["rows"]}
    assert rows == {"fibroblasts (held-out region)": "in distribution",
                    "epithelium (held-out morphology)": "held-out morphology"}, rows
    assert rep["in_distribution_bundles"] == 1


def test_bench_trust_leaves_empty_glass_out_of_psnr_as_evaluate_does(tmp_path):
    from scopecast.daemon.inference.package import load_package
    from scopecast.models.evaluate_morphology import _scores, _stained
    from scopecast.models.evaluation import psnr

    m = load_package(_package_trained_on(tmp_path / "pkg", {"cells": 3})).manifest
    rng = np.random.default_rng(3)
    gt = np.full((3, 2, 32, 32), 100.0, np.float32)
    gt[:, :, 8:20, 8:20] += 900.0  # stained structure
    gt[1, 0] = 100.0 + rng.normal(0, 3.0, (32, 32))  # field 1: no nuclei there (empty glass: camera noise)
    gt[2] = 100.0 + rng.normal(0, 3.0, (2, 32, 32))  # field 2: empty glass in both outputs
    pred = gt + rng.normal(0, 30.0, gt.shape).astype(np.float32)
    assert _stained(gt, m).tolist() == [[True, True], [False, True], [False, False]]
    per_field = _bench_trust().row_psnr(pred, gt, m)
    assert per_field[0] == pytest.approx(np.mean([psnr(pred[0, c], gt[0, c]) for c in range(2)]))
    assert per_field[1] == pytest.approx(psnr(pred[1, 1], gt[1, 1]))  # nuclei left out
    assert np.isnan(per_field[2])  # no PSNR on empty glass
    ev = _scores(pred, gt, ["nuclei", "membrane"], _stained(gt, m))  # evaluate's figures, same fields
    assert ev["nuclei"]["psnr"] == pytest.approx(psnr(pred[0, 0], gt[0, 0]), abs=1e-3)


def test_evaluate_runs_the_monitors_checks_on_every_field(tmp_path):
    """The flagged column took the uncertainty check within its time budget: a check needs ~60 bundles of credit,
    so rows of 8 fields were flagged or not depending on how fast the machine ran. Every field is judged now (a
    threshold nothing meets: every inferred field is flagged by it)."""
    pkg = _package_trained_on(tmp_path / "pkg", {"cells": 3})
    m = json.loads((pkg / "manifest.json").read_text())
    figure = {"nuclei": {"psnr_db": 20.0}, "membrane": {"psnr_db": 20.0}}
    never = {"threshold": 1e-12, "median": 0.0, "max": 0.0, "fields": 1}
    m["validated"] = {"morphologies": {"cells": figure}, "floor": figure, "uncertainty": {
        "statistic": "mean", "tta": 2, "morphologies": {"cells": never}, "ceiling": 1e-12}}
    (pkg / "manifest.json").write_text(json.dumps(m))
    rep = run_evaluation(pkg, fields=3, size=64, fit_fields=1, seed=7, outside=False)
    inferred = [r for r in rep["rows"] if r["withheld"] < 1]
    assert inferred and all(r["flagged"] == 1 and "uncertainty" in r["reasons"] for r in inferred), [
        (r["row"], r["flagged"], r["reasons"]) for r in rep["rows"]]
