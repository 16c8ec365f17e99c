"""Confinement: what a client may name on disk.

A client never chooses where the daemon writes or what it reads outside the
directories the operator configured. Two rules, used by every request that
carries a path or a name that becomes part of one:

- :func:`confined` resolves a path (symbolic links and ``..`` included) and
  refuses it unless it lies inside one of the allowed roots and is of the
  expected kind (a regular file or a directory: never a FIFO, device or socket).
- :func:`safe_name` refuses names that could leave a directory when used as
  a file-name component.

:func:`inside` is the rule for paths the daemon builds itself (a new
recording named after a client's words): one plain entry of a directory,
still inside it once resolved.
"""

from __future__ import annotations

import re
import stat
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

__all__ = ["OutsideAllowedDirectories", "confined", "inside", "safe_name"]

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")  # whole name: fullmatch (no "\n" after it)


class OutsideAllowedDirectories(PermissionError):
    """A path outside the directories the operator allowed (or not a regular file/directory)."""


def safe_name(name: str, what: str = "name") -> str:
    """``name`` if it is a plain file-name component (letters, digits, ``_.-``; ≤ 64 chars)."""
    if not isinstance(name, str) or not _NAME.fullmatch(name) or ".." in name:
        raise ValueError(
            f"{what} {str(name)[:80]!r} is not allowed: use 1-64 letters, digits, '_', '.', '-' "
            "(starting with a letter or digit, no '..')"
        )
    return name


def confined(path: str | Path, roots: Iterable[str | Path], kind: Literal["file", "dir"] = "file",
             what: str = "path", max_bytes: int | None = None) -> Path:
    """The resolved ``path`` if it exists inside one of ``roots`` and is a ``kind``.

    Relative paths are taken relative to the server's working directory (as
    before confinement), and must still resolve inside a root. Raises
    :class:`OutsideAllowedDirectories` (naming the allowed roots) or
    ``FileNotFoundError``; ``max_bytes`` bounds a file's size.
    """
    roots = list(dict.fromkeys(Path(r).expanduser().resolve() for r in roots))  # each once, as named in errors
    if not roots:
        raise OutsideAllowedDirectories(f"{what} {path}: this server was started without directories to read from")
    resolved = Path(path).expanduser().resolve()
    if not any(resolved.is_relative_to(r) for r in roots):
        relative = "" if Path(path).is_absolute() else f"; a relative path is read from the server's working " \
            f"directory, {Path.cwd()}: give an absolute one"
        raise OutsideAllowedDirectories(
            f"{what} {path} is outside the allowed directories ({', '.join(map(str, roots))}){relative}"
        )
    try:
        st = resolved.stat()
    except FileNotFoundError:
        raise FileNotFoundError(f"{what} {path} does not exist") from None
    ok = stat.S_ISREG(st.st_mode) if kind == "file" else stat.S_ISDIR(st.st_mode)
    if not ok:
        raise OutsideAllowedDirectories(f"{what} {path} is not a {'regular file' if kind == 'file' else 'directory'}")
    if max_bytes is not None and kind == "file" and st.st_size > max_bytes:
        raise ValueError(f"{what} {path} is {st.st_size} bytes; the limit is {max_bytes}")
    return resolved


def inside(directory: str | Path, name: str, what: str = "path") -> Path:
    """``directory / name`` if ``name`` is one plain entry of ``directory`` that stays inside it once resolved.

    For paths the daemon builds (which need not exist yet): ``name`` must not be empty, ``.``/``..``, hold a
    path separator or a NUL, and ``directory / name`` resolved (symbolic links included) must lie directly in
    ``directory`` resolved. Raises :class:`OutsideAllowedDirectories` naming ``what`` and ``name``.
    """
    base = Path(directory)
    bad = (not isinstance(name, str) or name in ("", ".", "..") or "\0" in name
           or "/" in name or "\\" in name or Path(name).name != name)
    if not bad:
        root = base.expanduser().resolve()
        bad = (root / name).resolve().parent != root
    if bad:
        raise OutsideAllowedDirectories(f"{what} {str(name)[:120]!r} is not a plain entry of {base}: refused")
    return base / name
