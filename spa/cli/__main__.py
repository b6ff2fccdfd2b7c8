import sys

from spa.cli import main

sys.exit(main())
