"""Whether this process may use the optional speedups: compiled libraries that do what a
pure-Python (or standard library) path also does, faster.

``TRIO_BROKER_NO_SPEEDUPS=1`` in the environment turns them all off, so that the slower
path can be run, and tested, where the speedups are installed.
"""

import os

ENVIRONMENT = "TRIO_BROKER_NO_SPEEDUPS"


def enabled() -> bool:
    return os.environ.get(ENVIRONMENT, "") in ("", "0")
