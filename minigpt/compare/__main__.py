import sys

from minigpt.compare.cli import main

sys.exit(main())
