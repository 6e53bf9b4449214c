"""``python -m panning.cli``: the same as the ``panning`` command."""
import sys

from . import main

sys.exit(main())
