"""``python -m cmbagent_events.demo``."""

import sys

from .main import main

sys.exit(main())
