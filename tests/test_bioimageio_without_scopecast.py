"""A package's bioimage.io description is self-contained: ``bioimageio test`` passes where scopecast is not
installed (the bioimage.io CI, a user who downloads the package), the PyTorch weights included."""

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

pytest.importorskip("bioimageio.core", reason="bioimageio.core (the 'dev' extra) is not installed")

from scopecast.export.bioimageio import write_rdf  # noqa: E402
from scopecast.models.manifest import MANIFEST, ModelManifest  # noqa: E402

PACKAGES = Path(__file__).resolve().parents[1] / "models" / "packages"
SHIPPED = ["virtual-staining", "super-resolution", "virtual-staining-live", "super-resolution-live"]

#: Makes ``import scopecast`` fail in the interpreter that loads it (an environment without scopecast).
_NO_SCOPECAST = """
import sys


class _NoScopecast:
    def find_spec(self, name, path=None, target=None):
        if name == "scopecast" or name.startswith("scopecast."):
            raise ImportError(f"No module named {name!r}")
        return None


sys.meta_path.insert(0, _NoScopecast())
"""


def _shipped(name: str) -> Path:
    path = PACKAGES / name
    if not (path / "rdf.yaml").exists():
        pytest.skip(f"package {name} has not been trained and shipped yet")
    return path


def _bioimageio_test_without_scopecast(package: Path, tmp_path: Path) -> dict:
    """``bioimageio.core.test_model`` in a fresh interpreter that cannot import scopecast."""
    site = tmp_path / "no-scopecast"
    site.mkdir()
    (site / "sitecustomize.py").write_text(_NO_SCOPECAST)
    code = textwrap.dedent(f"""
        import json, warnings
        warnings.filterwarnings("ignore")
        from loguru import logger
        logger.remove()
        try:
            import scopecast  # noqa: F401
            raise SystemExit("scopecast is importable: the check would prove nothing")
        except ImportError:
            pass
        from bioimageio.core import test_model
        s = test_model({str(package / "rdf.yaml")!r})
        print(json.dumps({{"status": s.status, "failed": [f"{{d.name}}: {{[e.msg for e in d.errors]}}"
                                                          for d in s.details if d.status == "failed"]}}))
    """)
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(site), "HOME": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_packages_carry_their_architecture(name):
    """The rdf names the architecture's class in a file of the package, not in a module only scopecast has."""
    path = _shipped(name)
    arch = yaml.safe_load((path / "rdf.yaml").read_text())["weights"]["pytorch_state_dict"]["architecture"]
    assert "import_from" not in arch, arch
    assert (path / arch["source"]).is_file()


def test_a_written_package_passes_bioimageio_test_where_scopecast_is_not_installed(tmp_path):
    path = tmp_path / "pkg"
    shutil.copytree(_shipped("super-resolution-live"), path)
    (path / "architectures.py").unlink(missing_ok=True)  # as an export writes it: from the manifest and model
    m = ModelManifest.model_validate_json((path / MANIFEST).read_bytes())
    write_rdf(path, m)
    report = _bioimageio_test_without_scopecast(path, tmp_path)
    assert report["status"] == "passed", report["failed"]
