"""Cost of queueing one delivery: `Outbox.offer` with the flusher's request, per frame.

    .venv/bin/python bench/outbox_offer.py [TREE ...]

Each TREE is a checkout whose ``broker`` package is measured (default: this one), so
two versions can be compared in one run. 100 outboxes take 10 frames each, then are
flushed, as a publish burst to 100 subscribers does.
"""

import subprocess
import sys
import timeit
from pathlib import Path

ROUNDS = 2000
SUBSCRIBERS = 100
FRAMES = 10


def measure() -> float:
    """Nanoseconds per offer, for the ``broker`` package on sys.path."""
    from broker.connections.flusher import Flusher
    from broker.connections.outbox import Outbox

    flusher = Flusher()

    class Connection:
        def flush(self) -> None:
            pass

    def outbox() -> Outbox:
        connection = Connection()
        return Outbox(10**9, 10**12, lambda: None, lambda: flusher.schedule(connection))

    outboxes = [outbox() for _ in range(SUBSCRIBERS)]
    frame = b"x" * 130

    def burst() -> None:
        for _ in range(FRAMES):
            for box in outboxes:
                box.offer(frame)
        for box in outboxes:
            box.take_for_direct_write()
            box.sent(FRAMES, FRAMES * len(frame))
        flusher._pending.clear()

    seconds = min(timeit.repeat(burst, number=ROUNDS, repeat=3))
    return seconds / (ROUNDS * SUBSCRIBERS * FRAMES) * 1e9


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--here":
        print(f"{measure():.0f}")
        return
    trees = sys.argv[1:] or [str(Path(__file__).resolve().parent.parent)]
    for tree in trees:
        # A process per tree: each imports its own `broker`. The offers need no Trio run.
        ns = subprocess.run(
            [sys.executable, __file__, "--here"],
            env={"PYTHONPATH": tree},
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        print(f"{tree}: {ns} ns per offer")


if __name__ == "__main__":
    main()
