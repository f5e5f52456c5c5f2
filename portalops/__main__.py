"""``python -m portalops``: the ``ops`` command line, for where no ``ops`` script is on hand."""

import sys

from portalops.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
