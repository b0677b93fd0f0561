"""Which AG2 flavours are installed, found without importing them (importing ``ag2`` 1.x takes ~2 s).

Classic AG2 is the ``autogen`` import package (distributions ``ag2`` 0.x, ``autogen``,
``cmbagent-autogen``); AG2 1.x is the ``ag2`` distribution >= 1 (``import ag2``, no ``autogen``).
Both may be installed side by side (``autogen`` 0.14.x next to ``ag2`` 1.x).

Answers are cached for the process: ``capture_run`` asks on every run, and a metadata lookup costs
milliseconds (tens on a busy machine), more than a whole framework-only chat's capture.
"""

from __future__ import annotations

import functools
import importlib.metadata
import importlib.util


@functools.cache
def classic_installed() -> bool:
    """True when ``import autogen`` can work."""
    try:
        return importlib.util.find_spec("autogen") is not None
    except (ImportError, ValueError):
        return False


@functools.cache
def v1_version() -> str | None:
    """The installed ``ag2`` distribution's version when it is AG2 1.x, else None."""
    try:
        found = importlib.metadata.version("ag2")
    except importlib.metadata.PackageNotFoundError:
        return None
    major = found.split(".", 1)[0]
    return found if major.isdigit() and int(major) >= 1 else None


@functools.cache
def v1_installed() -> bool:
    """True when AG2 1.x (``ag2`` >= 1) is installed."""
    return v1_version() is not None and importlib.util.find_spec("ag2") is not None
