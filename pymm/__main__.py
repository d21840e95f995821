"""python -m pymm: the same as the pymm command."""
import sys

from pymm.cli import main

sys.exit(main())
