import sys

from spa.cli import console_main

sys.exit(console_main())
