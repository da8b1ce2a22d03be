"""``python -m adtr_core.figures.pipeline``: run the notebooks from the command line (:mod:`.cli`)."""

import sys

from adtr_core.figures.pipeline.cli import main

if __name__ == "__main__":
    sys.exit(main())
