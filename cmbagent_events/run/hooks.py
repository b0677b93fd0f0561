"""The AG2 hooks a run installs while it is open."""

from __future__ import annotations

from collections.abc import Callable


def install_run_hooks() -> Callable[[], None] | None:
    """Install the AG2 hooks for the duration of a run (reference counted across runs): classic AG2
    (``autogen``) and AG2 1.x (``ag2`` >= 1), whichever are installed; both when both are."""
    from ..integrations import ag2_classic, flavours

    # Without classic AG2 this says once (INFO) that none was found, and whether AG2 1.x is there.
    releases = [ag2_classic.acquire_hooks()]
    if flavours.v1_installed():
        from ..integrations import ag2_v1

        releases.append(ag2_v1.acquire_hooks())
    held = [r for r in releases if r is not None]
    if not held:  # no AG2: capture still works through the manual API
        return None

    def release() -> None:
        for r in reversed(held):
            r()

    return release
