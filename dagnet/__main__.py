import sys

from dagnet.cli import main

sys.exit(main())
