"""``python -m mripipe.cli``: the ``mripipe`` command."""

import sys

from mripipe.cli import main

sys.exit(main())
