"""``python -m adtr_core.pipeline``: run the notebooks from the command line (:mod:`.cli`)."""

import sys

from adtr_core.pipeline.cli import main

if __name__ == "__main__":
    sys.exit(main())
