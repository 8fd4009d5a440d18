"""``python -m qkdnode``: the same entry point as the ``qkdnode`` console script."""

import sys

from qkdnode.node.cli import main

sys.exit(main())
