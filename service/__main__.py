"""``python -m service`` is the ``modelgate`` command."""

import sys

from service.cli import main

sys.exit(main())
