"""``python -m gradloop``: the ``gradloop`` command."""

import sys

from .cli import main

sys.exit(main())
