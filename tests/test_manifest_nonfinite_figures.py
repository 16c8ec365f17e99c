"""A package whose manifest holds NaN or Inf figures (normalization, input statistics, output scaling) or a
non-positive pixel size is refused when it is loaded, naming the field: before, ``load_model`` accepted it and the
engine then served every result untrusted for a reason the package's NaN made up ("blurred ... beyond the least
sharp training field (nan): defocus?"), skipped checks in silence, or published NaN images."""

from __future__ import annotations

import json
import shutil

import pytest

from helpers import engine_beside_a_bare_stream
from scopecast.daemon.control import ControlClient, DaemonError
from scopecast.daemon.inference.package import PackageError, load_package
from scopecast.models import packages_root

NAN = float("nan")


def _edit(manifest: dict, where: str) -> None:
    """Put a NaN (or a negative pixel size) into the ``where`` figure of ``manifest``."""
    if where == "input_stats":
        manifest["input_stats"]["channels"]["BF"]["focus"] = [NAN, NAN, NAN]
    elif where == "normalization":
        manifest["normalization"] = {"kind": "mean_std", "mean": [NAN] * 6, "std": [1.0] * 6}
    elif where == "output_scaling":
        manifest["output_scaling"]["scale"][0] = NAN
    elif where == "validated":
        manifest["validated"]["floor"]["nuclei"]["psnr_db"] = NAN
    else:
        manifest["pixel_size_um"] = -0.65


def _lying_copy(tmp_path, where: str):
    """A copy of the shipped virtual-staining-live package, named ``lie``, whose manifest is edited at ``where``."""
    dst = tmp_path / "lie"
    shutil.copytree(packages_root() / "virtual-staining-live", dst)
    path = dst / "manifest.json"
    m = json.loads(path.read_text())
    m["name"] = "lie"
    _edit(m, where)
    path.write_text(json.dumps(m))  # NaN / Infinity tokens, as Python's json writes them
    return dst


@pytest.mark.parametrize("where, field", [
    ("input_stats", "input_stats.channels.BF.focus"), ("normalization", "normalization.mean"),
    ("output_scaling", "output_scaling.scale"), ("validated", "validated.floor.nuclei.psnr_db"),
    ("pixel_size", "pixel_size_um"),
])
def test_a_manifest_with_nan_figures_is_refused_naming_the_field(tmp_path, where, field):
    with pytest.raises(PackageError, match=rf"invalid manifest: {field}"):
        load_package(_lying_copy(tmp_path, where))


def test_load_model_refuses_nan_statistics_and_keeps_the_current_model(tmp_path):
    good = tmp_path / "good"
    shutil.copytree(packages_root() / "virtual-staining-live", good)
    lie = _lying_copy(tmp_path, "input_stats")
    with engine_beside_a_bare_stream(good) as engine, ControlClient(engine.control.address, timeout_s=120) as ec:
        with pytest.raises(DaemonError, match="input_stats.channels.BF.focus"):
            ec.request("load_model", path=str(lie))
        assert ec.request("status")["model"]["name"] == "virtual-staining-live"
