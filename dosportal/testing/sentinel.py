"""Redis set-ups other than one plain server: Sentinel with a failover, and TLS.

`tls_redis` (one per test) is a `redis-server` that speaks only TLS, with a certificate for
127.0.0.1 signed by a CA made for the test (`ca_file`), as a managed Redis endpoint would be.

A Redis primary, one replica and three sentinels on 127.0.0.1, for failover tests:

`redis_failover` (one per test) starts them with `redis-server` (the sentinels with
`--sentinel`) on free ports in a temporary directory; the sentinels watch the primary as
`MASTER_NAME`, call it down after 1 s without an answer and need two of them to agree, so a
killed primary is replaced in a few seconds. `kill_primary()` sends it SIGKILL;
`wait_for_new_primary()` waits until the sentinels name the replica and it answers as a primary.
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from dosportal.testing.gateway import free_port

MASTER_NAME = "dosportal"

_SENTINEL_CONFIG = """
port {port}
bind 127.0.0.1
dir {directory}
sentinel monitor {name} 127.0.0.1 {primary} 2
sentinel down-after-milliseconds {name} 1000
sentinel failover-timeout {name} 3000
sentinel parallel-syncs {name} 1
"""


def _wait(check: object, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if check():  # type: ignore[operator]
                return
        except redis.exceptions.RedisError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen in {timeout:.0f} s")
        time.sleep(0.05)


class RedisFailoverSet:
    def __init__(self, directory: Path):
        self.directory = directory
        self.processes: list[subprocess.Popen[bytes]] = []
        self.primary_port, self.replica_port = free_port(), free_port()
        self.sentinel_ports = [free_port() for _ in range(3)]
        self.primary = self._server(self.primary_port)
        self._server(self.replica_port, "--replicaof", "127.0.0.1", str(self.primary_port))
        for port in self.sentinel_ports:
            config = directory / f"sentinel-{port}.conf"  # sentinels rewrite their file: one each
            config.write_text(
                _SENTINEL_CONFIG.format(port=port, directory=directory, name=MASTER_NAME, primary=self.primary_port)
            )
            self._start(["redis-server", str(config), "--sentinel"], port)
        # Ready when every sentinel knows the replica and the two other sentinels.
        for port in self.sentinel_ports:
            sentinel = redis.Redis(port=port, socket_timeout=1, decode_responses=True)
            _wait(lambda s=sentinel: self._knows_everyone(s), f"sentinel {port} discovering the set")
        _wait(lambda: self.client(self.replica_port).info("replication")["master_link_status"] == "up",
              "the replica's first sync")  # fmt: skip

    @staticmethod
    def _knows_everyone(sentinel: redis.Redis) -> bool:
        state = sentinel.execute_command("SENTINEL", "MASTER", MASTER_NAME)
        fields = dict(zip(state[::2], state[1::2], strict=True)) if isinstance(state, list) else state
        return int(fields["num-slaves"]) == 1 and int(fields["num-other-sentinels"]) == 2

    def _server(self, port: int, *args: str) -> subprocess.Popen[bytes]:
        command = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                   "--dir", str(self.directory), *args]  # fmt: skip
        return self._start(command, port)

    def _start(self, command: list[str], port: int) -> subprocess.Popen[bytes]:
        log = (self.directory / f"redis-{port}.log").open("wb")
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        self.processes.append(process)
        _wait(lambda: redis.Redis(port=port, socket_timeout=1).ping(), f"redis on {port} starting", timeout=10)
        return process

    @property
    def sentinels(self) -> str:
        """The REDIS_SENTINELS setting for this set."""
        return ",".join(f"127.0.0.1:{port}" for port in self.sentinel_ports)

    @staticmethod
    def client(port: int) -> redis.Redis:
        return redis.Redis(port=port, socket_timeout=1, decode_responses=True)

    def primary_named(self) -> int:
        """The port of the primary the first sentinel that answers names."""
        for port in self.sentinel_ports:
            try:
                _host, primary = self.client(port).execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER_NAME)
                return int(primary)
            except redis.exceptions.ConnectionError:
                continue
        raise AssertionError("no sentinel answers")

    def replicated(self) -> int:
        """Wait until the replica has every write the primary acknowledged; replicas that have."""
        # WAIT counts the writes of its own connection: write once on that connection first, and
        # everything the primary had before that write is on the replica when it is acknowledged.
        with redis.Redis(port=self.primary_port, socket_timeout=6, single_connection_client=True) as primary:
            primary.incr("dosportal:test:replication-barrier")
            return int(primary.execute_command("WAIT", 1, 5000))

    def kill_primary(self) -> None:
        self.primary.send_signal(signal.SIGKILL)
        self.primary.wait(timeout=10)

    def wait_for_new_primary(self) -> redis.Redis:
        def promoted() -> bool:
            return (
                self.primary_named() == self.replica_port
                and self.client(self.replica_port).info("replication")["role"] == "master"
            )

        _wait(promoted, "the failover")
        return self.client(self.replica_port)

    def stop(self) -> None:
        for process in reversed(self.processes):
            if process.poll() is None:
                process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()


class TlsRedis:
    def __init__(self, directory: Path):
        self.ca_file = directory / "ca.crt"
        key, cert = directory / "redis.key", directory / "redis.crt"

        def openssl(*args: str) -> None:
            subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=directory, timeout=60)

        openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", str(self.ca_file),
                "-days", "1", "-subj", "/CN=dosportal test CA")  # fmt: skip
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", "redis.csr",
                "-subj", "/CN=127.0.0.1")  # fmt: skip
        (directory / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
        openssl("x509", "-req", "-in", "redis.csr", "-CA", str(self.ca_file), "-CAkey", "ca.key",
                "-CAcreateserial", "-out", str(cert), "-days", "1", "-extfile", "san.ext")  # fmt: skip
        self.port = free_port()
        self.url = f"rediss://127.0.0.1:{self.port}/0"
        self.process = subprocess.Popen(
            ["redis-server", "--port", "0", "--tls-port", str(self.port), "--bind", "127.0.0.1",
             "--tls-cert-file", str(cert), "--tls-key-file", str(key), "--tls-ca-cert-file", str(self.ca_file),
             "--tls-auth-clients", "no", "--save", "", "--appendonly", "no", "--dir", str(directory)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        _wait(lambda: self.client().ping(), "the TLS redis starting", timeout=10)

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url, ssl_ca_certs=str(self.ca_file), socket_timeout=1)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


@pytest.fixture
def tls_redis(tmp_path: Path) -> Iterator[TlsRedis]:
    directory = tmp_path / "redis-tls"
    directory.mkdir()
    server = TlsRedis(directory)
    yield server
    server.stop()


@pytest.fixture
def redis_failover(tmp_path: Path) -> Iterator[RedisFailoverSet]:
    directory = tmp_path / "redis-failover"
    directory.mkdir()
    servers = RedisFailoverSet(directory)
    yield servers
    servers.stop()
