"""``python -m cmbagent_events.cli``: the ``cmbagent-events`` command."""

import sys

from .main import main

sys.exit(main())
