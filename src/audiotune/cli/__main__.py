"""``python -m audiotune.cli ...``: the same commands as the ``audiotune`` executable."""

import sys

from audiotune.cli import main

if __name__ == "__main__":
    sys.exit(main())
