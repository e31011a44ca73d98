"""`python -m pulse` is the `pulse` command."""

import sys

from pulse.cli import main

sys.exit(main())
