"""``python -m bench``: run the whole benchmark suite (see :mod:`bench.run_all`)."""

import sys

from bench.run_all import main

sys.exit(main())
