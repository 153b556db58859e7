import sys

from iqa.cli import main

sys.exit(main())
