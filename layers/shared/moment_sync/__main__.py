"""`python -m moment_sync`: the operator's command line (see moment_sync.cli)."""

import sys

from moment_sync.cli import main

sys.exit(main())
