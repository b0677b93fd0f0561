"""AG2 1.x tests: collected only where AG2 1.x (``ag2`` >= 1) is installed, and then required.

``make test-ag2-v1`` sets ``CMBAGENT_EVENTS_AG2_V1=ag2==<version>``: there a missing or different
AG2 1.x stops the session with an error, and an ``ag2_v1`` test that skips counts as failed.
Elsewhere (``make test`` on classic AG2) these files are not collected (the session header says
so): they are not this venv's flavour.
"""

from __future__ import annotations

import os

import pytest

from cmbagent_events.integrations import flavours

V1_ENV = "CMBAGENT_EVENTS_AG2_V1"
WANTED = os.environ.get(V1_ENV, "")

if WANTED:
    found = flavours.v1_version()
    version = WANTED.partition("==")[2]
    if found is None or (version and found != version):
        raise pytest.UsageError(f"{V1_ENV}={WANTED}: AG2 1.x {found or 'is not installed'} here")
elif not flavours.v1_installed():
    collect_ignore_glob = ["test_*.py"]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):
    """In the AG2 1.x target an AG2 1.x test never skips: a skip there is a failure, with its reason."""
    outcome = yield
    report = outcome.get_result()
    if report.skipped and not hasattr(report, "wasxfail") and WANTED and item.get_closest_marker("ag2_v1"):
        report.outcome = "failed"
        report.longrepr = f"AG2 1.x test skipped in the {WANTED} target: {report.longrepr}"
