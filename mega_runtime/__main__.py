"""``python -m mega_runtime``: the same command line as ``mega-runtime``."""

import sys

from mega_runtime.commands.cli import main

sys.exit(main())
