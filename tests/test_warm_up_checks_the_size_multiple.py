"""A package whose manifest's size ``multiple`` is smaller than its network needs is refused at load, naming it.

Frames smaller than the tile run whole, padded only to the manifest's ``multiple``. Before, the warm-up ran one
512² frame (a multiple of any network's), so such a package loaded, and then every bundle of a smaller frame that
is not a multiple of the network's (a 100² ROI, a binned or small camera) failed inside ONNX Runtime ("Concat
... mismatched dimensions"), each bundle an error that named neither the package nor its manifest.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import zmq

from scopecast.daemon.control import ControlClient, DaemonError
from scopecast.daemon.inference.engine import InferenceEngine
from scopecast.daemon.inference.package import PackageError, load_package
from scopecast.daemon.inference.runtimes import open_runtime
from scopecast.daemon.inference.worker import InferenceWorker
from scopecast.models import packages_root


def _copy(tmp_path, name: str, **fields):
    """A copy of the shipped virtual-staining-live package (its network needs sizes in multiples of 2), named
    ``name``, with ``fields`` replaced in its manifest."""
    dst = tmp_path / name
    shutil.copytree(packages_root() / "virtual-staining-live", dst)
    m = json.loads((dst / "manifest.json").read_text())
    (dst / "manifest.json").write_text(json.dumps({**m, "name": name, **fields}))
    return dst


def test_warm_up_refuses_a_multiple_the_network_does_not_have(tmp_path):
    pkg = load_package(_copy(tmp_path, "lie", multiple=1))
    w = InferenceWorker(pkg, open_runtime(pkg, "ort-cpu", threads=1), uncertainty_budget=0)
    with pytest.raises(PackageError, match=r"padded to a multiple of 1 \(the manifest's multiple\)"):
        w.warm_up((512, 512))
    honest = load_package(_copy(tmp_path, "honest"))
    assert InferenceWorker(honest, open_runtime(honest, "ort-cpu", threads=1), uncertainty_budget=0).warm_up(
        (512, 512)) > 0
    out = InferenceWorker(honest, open_runtime(honest, "ort-cpu", threads=1)).runtime.run(
        np.zeros((1, 6, 100, 100), np.float32))  # what the honest multiple (2) promises: an even frame runs
    assert out.shape[-2:] == (100, 100)


def test_load_model_refuses_it_and_keeps_serving(tmp_path):
    good, lie = _copy(tmp_path, "good"), _copy(tmp_path, "lie", multiple=1)
    pub = zmq.Context.instance().socket(zmq.PUB)
    pub.setsockopt(zmq.LINGER, 0)
    pub.bind("tcp://127.0.0.1:*")
    engine = InferenceEngine(good, pub.getsockopt_string(zmq.LAST_ENDPOINT), "tcp://127.0.0.1:*",
                             "tcp://127.0.0.1:*").start()  # warms up (and checks) at load, as `scopecast engine`
    try:
        with ControlClient(engine.control.address, timeout_s=120) as ec:
            with pytest.raises(DaemonError, match="the manifest's multiple"):
                ec.request("load_model", path=str(lie))
            assert ec.request("status")["model"]["name"] == "good"
    finally:
        engine.close()
        pub.close(linger=0)
