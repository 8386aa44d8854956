import sys

from nasrobust.cli.main import main

sys.exit(main())
