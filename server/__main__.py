"""``python -m server`` is the ``fairwatch`` command."""

import sys

from server.cli import main

sys.exit(main())
