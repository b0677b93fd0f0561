"""A capturing child process for kill and orphan tests: a script run on its own interpreter."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path


def start_child_run(tmp_path: Path, source: str, db_url: str,
                    stdin: bool = False) -> tuple[subprocess.Popen[str], str]:
    """Run ``source`` (a script taking the database URL as argv[1]) in ``tmp_path``; return the process
    and the run id it prints first line. Raises AssertionError (the test fails) if it prints none.
    ``stdin``: a pipe the test writes to, for a child that waits to be told when to go on."""
    script = tmp_path / "child.py"
    script.write_text(textwrap.dedent(source))
    env = {**os.environ, "CMBAGENT_EVENTS_SPILL_DIR": str(tmp_path / "spill")}
    child = subprocess.Popen([sys.executable, str(script), db_url], stdin=subprocess.PIPE if stdin else None,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
    run_id = child.stdout.readline().strip() if child.stdout else ""
    if not run_id:
        child.kill()
        raise AssertionError(f"child did not start: {child.communicate()[1]}")
    return child, run_id
