"""``python -m gradloop.cli``: the ``gradloop`` command."""

import sys

from .main import main

sys.exit(main())
