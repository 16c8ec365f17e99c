"""Model architectures, training, evaluation and shipped packages (torch only where noted)."""

from pathlib import Path as _Path


def packages_root() -> _Path:
    """The folder of the trained packages that ship with scopecast."""
    return _Path(__file__).resolve().parent / "packages"
