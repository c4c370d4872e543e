"""Where an idle connection's memory goes: tracemalloc, per allocation site.

Starts the broker in this process (run.py's bench config), opens N idle subscribed
connections with the Node load generator, and prints the traced bytes per connection and the
sites that hold the most. RSS per connection is `bench/run.py --only idle`'s job; this says
which lines to look at.

    python bench/idle_memory.py [N]     # N connections, 2,000 by default
"""

import gc
import sys
import tempfile
import tracemalloc
from pathlib import Path

import trio

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))
sys.path.insert(0, str(BENCH))

from run import TRIO_BROKER_CONFIG  # noqa: E402

from broker.config.schema import load_config  # noqa: E402
from broker.node.broker import Broker  # noqa: E402
from broker.plugin_host.loader import build_pipeline  # noqa: E402


async def main(count: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.toml"
        path.write_text(TRIO_BROKER_CONFIG.format(server=""))
        config = load_config(str(path))
    broker = Broker(config, build_pipeline(config, str(path)))
    async with trio.open_nursery() as nursery:
        await nursery.start(broker.serve)
        gc.collect()
        tracemalloc.start(1)
        before = tracemalloc.take_snapshot()
        loadgen = await trio.lowlevel.open_process(
            [
                *("node", str(BENCH / "loadgen" / "loadgen.js")),
                *("--url", f"ws://127.0.0.1:{broker.port}/ws"),
                *("--mode", "idle", "--subscribers", str(count)),
            ],
            stdout=-1,
            stdin=-1,
        )
        assert loadgen.stdout is not None and loadgen.stdin is not None
        output = b""
        while b'"ready"' not in output:
            output += await loadgen.stdout.receive_some(4096)
        await trio.sleep(1)
        gc.collect()
        after = tracemalloc.take_snapshot()
        sites = after.compare_to(before, "lineno")
        total = sum(site.size_diff for site in sites)
        print(f"{total / count:,.0f} traced bytes per connection ({count:,} connections)")
        for site in sites[:25]:
            print(
                f"{site.size_diff / count:7.0f} B {site.count_diff / count:5.2f} objects"
                f"  {site.traceback[0]}"
            )
        await loadgen.stdin.aclose()
        await loadgen.wait()
        nursery.cancel_scope.cancel()


if __name__ == "__main__":
    trio.run(main, int(sys.argv[1]) if len(sys.argv) > 1 else 2000)
