import sys

from kglfr.cli import main

sys.exit(main())
