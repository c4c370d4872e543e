"""The garbage collector's thresholds for a broker process (`trio-broker serve`).

Python collects its youngest generation every 700 net allocations of container objects,
and a broker allocates them by the thousand for every connection it accepts (socket,
task, coroutine frames, cancel scopes), nearly all of which live as long as the
connection. A reconnect storm of 10,000 clients ran about 1,450 collections, 1.6 s of
CPU, that freed almost nothing (bench/run.py, "reconnect storm"): each collection walks
the young objects again only to promote them. Reference counting frees what a broker
drops; the collector is there for the rare cycles (an exception and its traceback), and
finding those a few thousand allocations later costs nothing worth the walks.
"""

import gc

# Net allocations between collections of the youngest generation (Python's default: 700),
# and how many of those before a middle one, and of those before an old one (10 and 10).
YOUNG_THRESHOLD = 20_000
MIDDLE_EVERY = 20
OLD_EVERY = 20


def tune() -> None:
    gc.set_threshold(YOUNG_THRESHOLD, MIDDLE_EVERY, OLD_EVERY)
