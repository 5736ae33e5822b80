"""``python -m fastsr`` == the ``fastsr`` command."""
import sys

from fastsr.cli import main

sys.exit(main())
