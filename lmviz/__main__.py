import sys

from lmviz.cli import main

sys.exit(main())
