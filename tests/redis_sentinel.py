"""Redis with Sentinel for the tests: a master, a replica and three sentinels, each a real
redis-server on a TCP port of its own (sentinels: ``redis-server FILE --sentinel``).

The sentinels judge the master down after `DOWN_AFTER_MS`, so a failover takes a few
seconds here (in production: `down-after-milliseconds`, often 5 to 30 s, plus the
election).
"""

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import coredis
import trio

from tests.redis_server import RedisServer, free_ports, redis_binary

MASTER_NAME = "trio-broker-test"
DOWN_AFTER_MS = 1000
SENTINELS = 3
QUORUM = 2


class SentinelSetup:
    def __init__(self, binary: str, directory: Path, sentinel_password: str | None) -> None:
        master_port, replica_port, *sentinel_ports = free_ports(2 + SENTINELS)
        self.master = RedisServer(binary, _made(directory / "master"), port=master_port)
        self.replica = RedisServer(
            binary,
            _made(directory / "replica"),
            port=replica_port,
            arguments=["--replicaof", "127.0.0.1", str(master_port)],
        )
        self.sentinel_password = sentinel_password
        self.sentinels = []
        for index, port in enumerate(sentinel_ports):
            home = _made(directory / f"sentinel{index}")
            config = home / "sentinel.conf"  # a sentinel rewrites its file: one each
            lines = [
                f"sentinel monitor {MASTER_NAME} 127.0.0.1 {master_port} {QUORUM}",
                f"sentinel down-after-milliseconds {MASTER_NAME} {DOWN_AFTER_MS}",
                f"sentinel failover-timeout {MASTER_NAME} 10000",
            ]
            if sentinel_password is not None:
                lines += [
                    f"requirepass {sentinel_password}",
                    f"sentinel sentinel-pass {sentinel_password}",
                ]
            config.write_text("\n".join(lines) + "\n")
            sentinel = RedisServer(
                binary,
                home,
                port=port,
                arguments=[str(config), "--sentinel"],
                ready=b"+monitor master",
            )
            self.sentinels.append(sentinel)

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{sentinel.port}" for sentinel in self.sentinels)
        return f"redis+sentinel://{hosts}/{MASTER_NAME}"

    def sentinel_client(self, sentinel: RedisServer) -> "coredis.Redis[bytes]":
        return coredis.Redis(
            "127.0.0.1", sentinel.port, password=self.sentinel_password, stream_timeout=5
        )

    async def wait_ready(self, timeout: float = 30) -> None:
        """Until every sentinel knows the other two and the replica, and the replica is in
        sync: only then can they agree on a failover."""
        with trio.fail_after(timeout):
            for sentinel in self.sentinels:
                async with self.sentinel_client(sentinel) as client:
                    while True:
                        others = await client.sentinel_sentinels(MASTER_NAME)
                        replicas = await client.sentinel_replicas(MASTER_NAME)
                        if len(others) == SENTINELS - 1 and _up(replicas):
                            break
                        await trio.sleep(0.1)
            async with coredis.Redis("127.0.0.1", self.replica.port) as replica:
                while await _link(replica) != "up":  # noqa: ASYNC110 (another process)
                    await trio.sleep(0.05)

    async def cut_replication(self) -> None:
        """The replica stops getting the master's writes (it cannot log in again): what the
        master acknowledges from now on is lost when it dies."""
        async with coredis.Redis("127.0.0.1", self.replica.port) as replica:
            await replica.config_set({"masterauth": "not-the-password"})
            await replica.client_kill(type_=coredis.PureToken.MASTER)
            with trio.fail_after(10):
                while await _link(replica) != "down":  # noqa: ASYNC110 (another process)
                    await trio.sleep(0.02)

    async def switched(self, *, task_status: trio.TaskStatus[None]) -> float:
        """When the first sentinel announces a new master (``+switch-master``)."""
        client = self.sentinel_client(self.sentinels[0])
        async with client, client.pubsub(channels=["+switch-master"]) as pubsub:
            task_status.started()
            async for message in pubsub:
                if message["type"] == "message":
                    return trio.current_time()
        raise AssertionError("no +switch-master")

    async def master_port(self) -> int:
        """The master's port, as the first sentinel that answers says."""
        for sentinel in self.sentinels:
            if sentinel.process is None:
                continue
            async with self.sentinel_client(sentinel) as client:
                _, port = await client.sentinel_get_master_addr_by_name(MASTER_NAME)
                return int(port)
        raise AssertionError("no sentinel runs")


def _made(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def _up(replicas: object) -> bool:
    return (
        isinstance(replicas, list | tuple)
        and len(replicas) == 1
        and "s_down" not in str(replicas[0].get("flags", ""))
    )


async def _link(client: "coredis.Redis[bytes]") -> object:
    """The replica's link to its master: "up" or "down"."""
    return (await client.info("replication")).get("master_link_status")


@contextmanager
def sentinel_setup(
    directory: Path, sentinel_password: str | None = None
) -> Iterator[SentinelSetup]:
    setup = SentinelSetup(redis_binary(), directory, sentinel_password)
    with ExitStack() as stack:
        for server in [setup.master, setup.replica, *setup.sentinels]:
            server.start()
            stack.callback(server.kill)
        yield setup
