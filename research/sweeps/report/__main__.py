"""`python -m research.sweeps.report runs/X` (or `./launch.sh report runs/X`)."""

import sys

from research.sweeps.report import main

sys.exit(main(sys.argv[1:]))
