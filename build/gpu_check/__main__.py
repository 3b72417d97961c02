"""``python -m build.gpu_check``: see :mod:`build.gpu_check`."""

import sys

from build.gpu_check.cli import main

sys.exit(main())
