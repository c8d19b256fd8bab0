"""Redis Sentinel on loopback for tests and `make chaos --sentinel`: a primary, its replica
and three sentinels (`redis-server --sentinel`), each a child process stopped by its pid."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from redis import Redis
from redis.exceptions import RedisError

from tests.helpers.servers import RedisServer, ServerProcess, redis_server_binary

SERVICE_NAME = "mymaster"  # the Bitnami chart's default
DOWN_AFTER_MS = 1000  # how long a silent primary takes to be judged down


class DataNode(RedisServer):
    """A Redis data node, started as `replica_of`'s replica when given (the sentinels
    reconfigure it as they fail over)."""

    def __init__(self, directory: Path, replica_of: int | None = None) -> None:
        super().__init__(directory)
        self.replica_of = replica_of

    def command(self) -> list[str]:
        # A replica's first sync starts at once (Redis waits 5 s for others by default).
        command = [*super().command(), "--repl-diskless-sync-delay", "0"]
        if self.replica_of is None:
            return command
        return [*command, "--replicaof", "127.0.0.1", str(self.replica_of)]

    def kill(self) -> None:
        """SIGKILL: no goodbye to replicas or clients, as when a node dies."""
        if self.process is not None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait()
        self.process = None

    def start_as_replica(self, primary_port: int) -> None:
        """Back as the current primary's replica (as an operator's restart script would):
        started as a primary, it would wait for the sentinels to demote it."""
        self.replica_of = primary_port
        self.start()

    def client(self) -> Redis:
        return Redis(host="127.0.0.1", port=self.port, socket_timeout=5)


class SentinelNode(ServerProcess):
    name = "sentinel"

    def __init__(self, directory: Path, primary_port: int) -> None:
        super().__init__(directory)
        self.primary_port = primary_port

    def command(self) -> list[str]:
        config = self.directory / "sentinel.conf"  # sentinel rewrites it: one per node
        config.write_text(
            f"port {self.port}\nbind 127.0.0.1\ndir {self.directory}\n"
            f"sentinel monitor {SERVICE_NAME} 127.0.0.1 {self.primary_port} 2\n"
            f"sentinel down-after-milliseconds {SERVICE_NAME} {DOWN_AFTER_MS}\n"
            f"sentinel failover-timeout {SERVICE_NAME} 10000\n"
        )
        binary = redis_server_binary()
        assert binary is not None, "redis-server is not installed"
        return [binary, str(config), "--sentinel", "--daemonize", "no"]

    def client(self) -> Redis:
        return Redis(host="127.0.0.1", port=self.port, socket_timeout=5, decode_responses=True)


class SentinelGroup:
    """One primary, one replica (or `replicas`), three sentinels."""

    def __init__(self, directory: Path, replicas: int = 1) -> None:
        self.primary = DataNode(directory / "a")
        self.replicas = [
            DataNode(directory / f"b{i}", replica_of=self.primary.port) for i in range(replicas)
        ]
        self.replica = self.replicas[0]
        self.nodes = [self.primary, *self.replicas]
        self.sentinels = [SentinelNode(directory / f"s{i}", self.primary.port) for i in range(3)]

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
        return f"redis+sentinel://{hosts}/{SERVICE_NAME}/0"

    def start(self) -> None:
        """All five, returning once the replica is in sync (a bump can be confirmed)."""
        for node in [*self.nodes, *self.sentinels]:
            node.start()
        deadline = time.monotonic() + 30
        while not self.replicas_in_sync():
            if time.monotonic() > deadline:
                raise TimeoutError("the replica never came in sync")
            time.sleep(0.05)
        # "online" can precede the replica's first acknowledgement; WAIT needs that.
        with self.primary.client() as client:
            client.set("sentinel-group:started", 1)
            if client.wait(len(self.replicas), 10_000) < len(self.replicas):
                raise TimeoutError("a replica never acknowledged a write")

    def stop(self) -> None:
        for node in [*self.sentinels, *self.nodes]:
            node.stop()

    def current_primary_port(self) -> int:
        """The primary as the first sentinel that answers names it."""
        for sentinel in self.sentinels:
            if sentinel.running:
                with sentinel.client() as client:
                    return int(client.sentinel_get_master_addr_by_name(SERVICE_NAME)[1])
        raise RuntimeError("no sentinel running")

    def node(self, port: int) -> DataNode:
        return next(node for node in self.nodes if node.port == port)

    def force_failover(self) -> None:
        with self.sentinels[0].client() as client:
            client.sentinel_failover(SERVICE_NAME)

    def replicas_in_sync(self) -> bool:
        """True once the primary has a replica online (writes can be confirmed again)."""
        try:
            with self.node(self.current_primary_port()).client() as client:
                info = client.info("replication")
        except (RedisError, OSError, StopIteration):  # a node down or between roles
            return False
        online = [v for k, v in info.items() if k.startswith("slave") and isinstance(v, dict)]
        return info.get("role") == "master" and any(r.get("state") == "online" for r in online)
