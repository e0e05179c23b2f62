"""python -m miglab.cli: the miglab command."""
import sys

from . import main

sys.exit(main())
