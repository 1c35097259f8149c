"""Entry point of `python -m example_project.demo`."""

import sys

from .runner import main

sys.exit(main())
