#!/usr/bin/env python3
"""Run ``ops`` from a checkout without installing it: ``./ops.py backup list``.

The command line itself is portalops.cli.main; installing portal-ops puts the same entry point on
PATH as ``ops``.
"""

import sys

from portalops.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
