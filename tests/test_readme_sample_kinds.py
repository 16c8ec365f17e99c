"""The README's simulator table names every specimen the hub's ``Sample`` property takes (it listed 4 of 13)."""

from __future__ import annotations

from conftest import ROOT

from scopecast.daemon.sim.hub import FILE_KIND, SAMPLE_KINDS


def test_the_readme_names_every_sample_kind():
    row = next(line for line in (ROOT / "README.md").read_text().splitlines() if line.startswith("| `SimScopeHub`"))
    listed = row.split("`Sample`:", 1)[1].split(";", 1)[0]
    names = [n.strip().removeprefix("or ").split(":")[0].strip() for n in listed.split(",")]
    assert names == [*SAMPLE_KINDS, FILE_KIND], row
    assert "docs/specimens.md" in row and "SpecimenFile" in row
