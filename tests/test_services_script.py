"""scripts/services: up is idempotent, the three services answer, down leaves nothing behind.

Runs a separate, throw-away instance (own state dir, own ports) so the developer's
main instance (default ports 19092/19093/15432/18081/19000) is never touched.
"""

from __future__ import annotations

import contextlib
import glob
import ipaddress
import json
import os
import re
import shutil
import socket
import struct
import subprocess
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from collections.abc import Iterator

# The module's instance comes up (up to 240 s) in the first test's setup and is
# cleaned (up to 120 s) in the last one's teardown; both count against the limit.
pytestmark = [pytest.mark.integration, pytest.mark.timeout(450)]

REPO_ROOT = Path(__file__).resolve().parent.parent
SCRIPT = REPO_ROOT / "scripts" / "services"

KAFKA_PORT = 29092
KAFKA_CONTROLLER_PORT = 29093
PG_PORT = 25432
REGISTRY_PORT = 28081
REGISTRY_MANAGEMENT_PORT = 29000
PORTS = (KAFKA_PORT, KAFKA_CONTROLLER_PORT, PG_PORT, REGISTRY_PORT, REGISTRY_MANAGEMENT_PORT)
REGISTRY_URL = f"http://127.0.0.1:{REGISTRY_PORT}/apis/ccompat/v7"

EXPECTED_ENV = (
    f"export KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:{KAFKA_PORT}\n"
    f"export DATABASE_URL=postgresql+asyncpg://postgres@127.0.0.1:{PG_PORT}/followups\n"
    f"export SCHEMA_REGISTRY_URL={REGISTRY_URL}\n"
)


@dataclass
class Instance:
    state_dir: Path
    env: dict[str, str]
    first_up: subprocess.CompletedProcess[str]

    def run(self, *args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(SCRIPT), *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def kafka_pid(self) -> int:
        return int((self.state_dir / "kafka" / "kafka.pid").read_text().strip())

    def postgres_pid(self) -> int:
        return int((self.state_dir / "postgres" / "postgres.pid").read_text().strip())

    def registry_pid(self) -> int:
        return int((self.state_dir / "registry" / "registry.pid").read_text().strip())

    def postgres_root(self) -> Path:
        # Where the cluster lives: under the state dir, or a /var/tmp fallback when
        # the postgres user cannot traverse the state dir's parents (as with tmp_path).
        return Path((self.state_dir / "postgres" / "root").read_text().strip())


def _pg_bin(name: str) -> str:
    dirs = sorted(
        glob.glob("/usr/lib/postgresql/*/bin"),
        key=lambda d: int(re.sub(r"\D", "", Path(d).parent.name) or 0),
    )
    for d in reversed(dirs):
        candidate = Path(d) / name
        if candidate.exists():
            return str(candidate)
    found = shutil.which(name)
    assert found, f"{name} not found"
    return found


def _alive(pid: int) -> bool:
    """True if the process exists and is not a zombie (exited, not yet reaped)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    state = stat.rsplit(")", 1)[1].split()[0]
    return state not in ("Z", "X")


def _port_open(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=2):
        return True
    return False


def _kafka_api_versions(port: int) -> int:
    """Send a Kafka ApiVersions v0 request; return the response's error code (0 = ok)."""
    client_id = b"services-test"
    correlation_id = 4242
    body = struct.pack(">hhih", 18, 0, correlation_id, len(client_id)) + client_id
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(struct.pack(">i", len(body)) + body)
        header = b""
        while len(header) < 10:
            chunk = sock.recv(10 - len(header))
            assert chunk, "broker closed the connection"
            header += chunk
    _size, got_correlation_id, error_code = struct.unpack(">iih", header)
    assert got_correlation_id == correlation_id
    return int(error_code)


def _get_json(url: str) -> object:
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.status == 200
        return json.loads(response.read())


def _listening_addresses(port: int) -> set[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """Local addresses of the sockets listening on TCP port (from /proc/net/tcp{,6})."""
    found: set[ipaddress.IPv4Address | ipaddress.IPv6Address] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(FileNotFoundError):
            for line in Path(table).read_text().splitlines()[1:]:
                local, state = line.split()[1], line.split()[3]
                address, port_hex = local.split(":")
                if state != "0A" or int(port_hex, 16) != port:  # 0A: LISTEN
                    continue
                raw = bytes.fromhex(address)
                # The kernel prints each 32-bit word in host (little-endian) order.
                words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
                found.add(ipaddress.ip_address(words))
    return found


def _is_loopback(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


def _processes_referring_to(paths: list[Path]) -> list[str]:
    """Live processes whose command line mentions, or whose cwd is inside, one of paths."""
    hits = []
    needles = [str(p) for p in paths]
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            cwd = os.readlink(proc / "cwd")
        except OSError:
            continue
        if not _alive(int(proc.name)):
            continue
        if any(n in cmdline or cwd == n or cwd.startswith(n + "/") for n in needles):
            hits.append(f"{proc.name}: {cmdline.strip()} (cwd {cwd})")
    return hits


@pytest.fixture(scope="module")
def instance(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Instance]:
    state_dir = tmp_path_factory.mktemp("services").resolve()
    env = {
        **os.environ,
        "SERVICES_DIR": str(state_dir),
        "KAFKA_PORT": str(KAFKA_PORT),
        "KAFKA_CONTROLLER_PORT": str(KAFKA_CONTROLLER_PORT),
        "PG_PORT": str(PG_PORT),
        "REGISTRY_PORT": str(REGISTRY_PORT),
        "REGISTRY_MANAGEMENT_PORT": str(REGISTRY_MANAGEMENT_PORT),
    }
    for port in PORTS:
        assert not _port_open(port), f"port {port} is already in use before the test"
    inst = Instance(state_dir=state_dir, env=env, first_up=subprocess.CompletedProcess([], 0))
    try:
        inst.first_up = inst.run("up")
        yield inst
    finally:
        # `clean` = down + remove the state (including a /var/tmp fallback for postgres).
        result = inst.run("clean", timeout=120)
        assert result.returncode == 0, result.stderr


def test_up_starts_all_and_prints_env(instance: Instance) -> None:
    assert instance.first_up.returncode == 0, instance.first_up.stderr
    # stdout is exactly the shell lines, so `eval "$(scripts/services up)"` works.
    assert instance.first_up.stdout == EXPECTED_ENV
    # ... and the same lines in a file, where the CLI of this checkout finds them.
    assert (instance.state_dir / "env").read_text() == EXPECTED_ENV
    assert "kafka: broker ready" in instance.first_up.stderr
    assert "registry: ready" in instance.first_up.stderr
    assert _alive(instance.kafka_pid())
    assert _alive(instance.postgres_pid())
    assert _alive(instance.registry_pid())


def test_env_prints_only_the_exports(instance: Instance) -> None:
    result = instance.run("env")
    assert result.returncode == 0
    assert result.stdout == EXPECTED_ENV


def test_second_up_is_harmless(instance: Instance) -> None:
    pids = (instance.kafka_pid(), instance.postgres_pid(), instance.registry_pid())
    result = instance.run("up")
    assert result.returncode == 0, result.stderr
    assert result.stdout == EXPECTED_ENV
    for service in ("kafka", "postgres", "registry"):
        assert f"{service}: already running" in result.stderr
    assert (instance.kafka_pid(), instance.postgres_pid(), instance.registry_pid()) == pids
    assert all(_alive(pid) for pid in pids)


def test_the_registry_answers_on_loopback_only(instance: Instance) -> None:
    # The Confluent-compatible API: an empty registry has no subjects.
    assert _get_json(f"{REGISTRY_URL}/subjects") == []
    assert isinstance(_get_json(f"{REGISTRY_URL}/schemas/types"), list)
    # The management interface (health) is on its own port, not Quarkus's 0.0.0.0:9000.
    health = _get_json(f"http://127.0.0.1:{REGISTRY_MANAGEMENT_PORT}/health/ready")
    assert isinstance(health, dict)
    assert health["status"] == "UP"
    for port in (REGISTRY_PORT, REGISTRY_MANAGEMENT_PORT):
        addresses = _listening_addresses(port)
        assert addresses, f"nothing listens on {port}"
        assert all(_is_loopback(a) for a in addresses), f"{port} listens on {addresses}"


def test_both_services_answer(instance: Instance) -> None:
    assert _port_open(KAFKA_PORT)
    assert _kafka_api_versions(KAFKA_PORT) == 0

    ready = subprocess.run(
        [_pg_bin("pg_isready"), "-h", "127.0.0.1", "-p", str(PG_PORT), "-U", "postgres"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert ready.returncode == 0, ready.stdout + ready.stderr
    psql = subprocess.run(
        [
            _pg_bin("psql"),
            "-X",
            "-h", "127.0.0.1",
            "-p", str(PG_PORT),
            "-U", "postgres",
            "-d", "followups",
            "-tAc", "select 1",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )  # fmt: skip
    assert psql.returncode == 0, psql.stderr
    assert psql.stdout.strip() == "1"


def test_status_reports_running(instance: Instance) -> None:
    result = instance.run("status", timeout=30)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "kafka:    running" in result.stdout
    assert "postgres: running" in result.stdout
    assert "registry: running" in result.stdout


def test_down_leaves_no_process_behind(instance: Instance) -> None:
    kafka_pid, pg_pid = instance.kafka_pid(), instance.postgres_pid()
    registry_pid = instance.registry_pid()
    pg_root = instance.postgres_root()

    result = instance.run("down", timeout=120)
    assert result.returncode == 0, result.stderr

    assert not _alive(kafka_pid)
    assert not _alive(pg_pid)
    assert not _alive(registry_pid)
    assert not (instance.state_dir / "kafka" / "kafka.pid").exists()
    assert not (instance.state_dir / "postgres" / "postgres.pid").exists()
    assert not (instance.state_dir / "registry" / "registry.pid").exists()
    for port in PORTS:
        assert not _port_open(port), f"something still listens on {port}"
    # No broker, registry, postmaster or postgres backend of this instance remains
    # (postgres backends keep the data dir as cwd; the JVMs' command lines name the
    # state dir).
    assert _processes_referring_to([instance.state_dir, pg_root]) == []
    if shutil.which("pgrep"):
        for path in (instance.state_dir, pg_root):
            pgrep = subprocess.run(
                ["pgrep", "-f", str(path)], capture_output=True, text=True, check=False
            )
            assert pgrep.returncode == 1, f"pgrep found: {pgrep.stdout}"

    status = instance.run("status", timeout=30)
    assert status.returncode == 3
    assert "kafka:    stopped" in status.stdout
    assert "postgres: stopped" in status.stdout
    assert "registry: stopped" in status.stdout
    # Data is kept by down.
    assert (instance.state_dir / "kafka" / "data" / "meta.properties").exists()
