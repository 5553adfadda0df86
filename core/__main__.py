"""`python -m core <command>`: see core/cli.py."""
import sys

from .cli import main

sys.exit(main())
