"""An INT8 variant without validated figures of its own (exported, not yet measured by bench_trust_models.py) is
judged by the fp32 model's thresholds, which the README shows cause false alarms for variants: loading it says so
in the log, naming the command that measures its own. The shipped variant, measured, loads without a word."""

import json
import logging
import shutil

from scopecast.daemon.inference.package import load_package
from scopecast.models import packages_root


def test_an_int8_variant_without_its_own_figures_is_named_at_load(tmp_path, caplog):
    shipped = packages_root() / "virtual-staining"
    with caplog.at_level(logging.WARNING, logger="scopecast.daemon.inference.package"):
        own = load_package(shipped, "int8")
    assert not caplog.records
    copy = tmp_path / "vs"
    shutil.copytree(shipped, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    del manifest["variants"]["int8"]["validated"]
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with caplog.at_level(logging.WARNING, logger="scopecast.daemon.inference.package"):
        borrowed = load_package(copy, "int8")
    assert borrowed.manifest.validated == load_package(copy).manifest.validated != own.manifest.validated
    [record] = caplog.records
    assert "no validated figures of its own" in record.getMessage()
    assert "bench_trust_models.py" in record.getMessage() and str(copy) in record.getMessage()
