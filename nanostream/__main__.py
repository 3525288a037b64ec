"""``python -m nanostream``: the ``nanostream`` command."""

import sys

from .cli import main

sys.exit(main())
