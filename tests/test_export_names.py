"""``scopecast export --name``: a name the package rule allows but bioimage.io's rdf does not ('.', fewer than 5
characters) is refused before any work, saying the rule; it used to fail at the rdf, after the ONNX export,
parity (and INT8 calibration, TensorRT build) with a pydantic ValidationError."""

import pytest

pytest.importorskip("torch", reason="the 'train' extra (torch) is not installed")
pytest.importorskip("bioimageio.core", reason="bioimageio.core (the 'dev' extra) is not installed")

from scopecast.export import package as export_package_module  # noqa: E402
from tests.test_models_export import tiny_dataset, trained  # noqa: E402, F401 - the module's fixtures


@pytest.mark.parametrize("name", ["vs-v1.2", "vs"])
def test_export_refuses_a_name_bioimageio_cannot_carry_before_the_work(cli, trained, monkeypatch, name):  # noqa: F811
    ckpt, out = trained
    exported = []
    real = export_package_module.export_onnx
    monkeypatch.setattr(export_package_module, "export_onnx", lambda *a, **k: exported.append(a) or real(*a, **k))
    rc, _, err = cli("export", "--checkpoint", ckpt, "--out", out / f"pkg-{name}", "--name", name,
                     "--tile", "64", "--halo", "8")
    assert rc == 2, err
    assert "bioimage.io" in err and "5-64 letters, digits, '_', '-'" in err and "ValidationError" not in err, err
    assert exported == [], "the ONNX export ran for a name the package could never carry"
    assert not (out / f"pkg-{name}").exists()


def test_a_name_bioimageio_accepts_exports(cli, trained):  # noqa: F811
    ckpt, out = trained
    rc, stdout, err = cli("export", "--checkpoint", ckpt, "--out", out / "pkg-v1_2", "--name", "vs-v1_2",
                          "--tile", "64", "--halo", "8")
    assert rc == 0, err
    assert "(vs-v1_2, sha256" in stdout
