"""Which AG2 flavours are installed, found without importing them (importing ``ag2`` 1.x takes ~2 s).

Classic AG2 is the ``autogen`` import package (distributions ``ag2`` 0.x, ``autogen``,
``cmbagent-autogen``); AG2 1.x is the ``ag2`` distribution >= 1 (``import ag2``, no ``autogen``).
Both may be installed side by side (``autogen`` 0.14.x next to ``ag2`` 1.x).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util


def classic_installed() -> bool:
    """True when ``import autogen`` can work."""
    try:
        return importlib.util.find_spec("autogen") is not None
    except (ImportError, ValueError):
        return False


def v1_version() -> str | None:
    """The installed ``ag2`` distribution's version when it is AG2 1.x, else None."""
    try:
        found = importlib.metadata.version("ag2")
    except importlib.metadata.PackageNotFoundError:
        return None
    major = found.split(".", 1)[0]
    return found if major.isdigit() and int(major) >= 1 else None


def v1_installed() -> bool:
    """True when AG2 1.x (``ag2`` >= 1) is installed."""
    return v1_version() is not None and importlib.util.find_spec("ag2") is not None
