"""``python -m md_validation``: the ``md-validate`` command line."""

import sys

from .cli import main

sys.exit(main())
