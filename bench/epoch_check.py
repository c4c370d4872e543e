"""What the epoch's check of the master's replication ID costs Redis per history publish.

Every script that hands out positions asks Redis for its replication ID (``INFO
replication``) and compares it with the epoch's (broker/cluster/scripts.py). This runs the
PUBLISH script as the broker sends it and, as the baseline in the same run, the same
script without that check, alternating, on a private redis-server (unix socket, no
persistence, pinned to CPU 0 and this script to CPU 1), and reads Redis' own CPU time
per call (``INFO commandstats``).

    python bench/epoch_check.py                # 20,000 publishes a round, 5 rounds
    python bench/epoch_check.py --calls 50000 --rounds 3
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import coredis
import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from broker.cluster import scripts as redis_scripts
from broker.cluster.names import Names

# The epoch as read before the check: created when missing, never compared.
UNCHECKED_EPOCH = """
local epoch = redis.call('GET', KEYS[1])
if not epoch then
  epoch = ARGV[1]
  redis.call('SET', KEYS[1], epoch)
  redis.call('SET', KEYS[2], string.format('%.0f', now * 1000), 'NX')
end
"""
BATCH = 500


def without_check(script: str) -> str:
    assert redis_scripts._EPOCH in script
    return script.replace(redis_scripts._EPOCH, UNCHECKED_EPOCH)


async def usec_per_call(client: "coredis.Redis[bytes]", script: str, calls: int) -> float:
    names = Names("bench", 1)
    publish = client.register_script(script)
    keys = [*names.positions, names.stream("t"), names.topics]
    args = ["e0", "bench:t:t", "n 0 m\n", '{"op":"message","topic":"t","data":1,"pos":"', '"}']
    args += [100, 0, "t"]
    await client.config_resetstat()
    for _ in range(calls // BATCH):
        async with client.pipeline(transaction=False) as pipe:
            for _ in range(BATCH):
                publish(keys=keys, args=args, client=pipe)
    stats = await client.info("commandstats")
    return float(stats["cmdstat_evalsha"]["usec_per_call"])  # type: ignore[index]


async def measure(socket: Path, calls: int, rounds: int) -> dict[str, list[float]]:
    scripts = {
        "without the check": without_check(redis_scripts.PUBLISH),
        "with the check": redis_scripts.PUBLISH,
    }
    results: dict[str, list[float]] = {name: [] for name in scripts}
    async with coredis.Redis(unix_socket_path=str(socket)) as client:
        for _ in range(rounds):
            for name, script in scripts.items():
                results[name].append(await usec_per_call(client, script, calls))
    return results


def main(calls: int, rounds: int) -> None:
    binary = shutil.which("redis-server")
    if binary is None:
        sys.exit("needs redis-server (apt-get install redis-server)")
    with tempfile.TemporaryDirectory() as directory:
        socket = Path(directory) / "redis.sock"
        command = [binary, "--port", "0", "--unixsocket", str(socket), "--save", ""]
        if shutil.which("taskset") and len(os.sched_getaffinity(0)) > 1:
            command = ["taskset", "-c", "0", *command]  # Redis on CPU 0, this on CPU 1
            os.sched_setaffinity(0, {1})
        with subprocess.Popen([*command, "--dir", directory], stdout=subprocess.PIPE) as server:
            assert server.stdout is not None
            for line in server.stdout:
                if b"ready to accept connections" in line.lower():
                    break
            try:
                results = trio.run(measure, socket, calls, rounds)
            finally:
                server.terminate()
    base = statistics.median(results["without the check"])
    for name, values in results.items():
        median = statistics.median(values)
        rounds_text = ", ".join(f"{v:.2f}" for v in values)
        print(
            f"{name:>18}: {median:5.2f} µs of Redis CPU per history publish "
            f"({median / base:.2f}x; rounds: {rounds_text})"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    arguments = parser.parse_args()
    main(arguments.calls, arguments.rounds)
