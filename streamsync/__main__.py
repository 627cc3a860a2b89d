import sys

from streamsync.cli import main

sys.exit(main())
