"""`python -m tlwatch`."""

import sys

from tlwatch.cli import main

sys.exit(main())
