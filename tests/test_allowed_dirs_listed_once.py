"""The "outside the allowed directories" refusal names each allowed directory once.

An engine serving a shipped package allows its parent and the shipped packages directory: the same
directory, which ``load_model`` of a path elsewhere listed twice."""

from __future__ import annotations

import re

import pytest
from helpers import engine_beside_a_bare_stream

from scopecast.daemon.confine import OutsideAllowedDirectories, confined
from scopecast.daemon.control import ControlClient, DaemonError
from scopecast.models import packages_root


def test_load_model_outside_names_the_shipped_packages_directory_once(tmp_path):
    with engine_beside_a_bare_stream(packages_root() / "virtual-staining") as engine:
        with ControlClient(engine.control.address, timeout_s=120) as ec:
            with pytest.raises(DaemonError) as e:
                ec.request("load_model", path=str(tmp_path))
    root = str(packages_root().resolve())
    assert e.value.type == "OutsideAllowedDirectories"
    assert re.search(r"is outside the allowed directories \(([^)]*)\)", e.value.message).group(1) == root


def test_confined_names_each_root_once(tmp_path):
    (tmp_path / "a").mkdir()
    with pytest.raises(OutsideAllowedDirectories) as e:
        confined(tmp_path / "elsewhere", [tmp_path / "a", tmp_path / "a" / ".." / "a", tmp_path / "a"], "dir")
    assert str(e.value).endswith(f"is outside the allowed directories ({(tmp_path / 'a').resolve()})")
