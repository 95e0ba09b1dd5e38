"""A real PostgreSQL server for the tests, on loopback, in a temporary directory.

``.ci/run`` installs Debian's postgresql when it is missing; elsewhere the
tests that need it skip, saying why. PostgreSQL refuses to run as root, so the
cluster is created and run as the ``postgres`` system user when we are root.

Use it with ``from pg import postgres_server, postgres_url`` in a test module:
one server serves the whole session, and ``postgres_url`` is a new empty
database on it for each test.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import uuid

import pytest


def _server_binaries() -> str | None:
    """The newest installed PostgreSQL's bin directory (Debian layout), or one on PATH."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[-3]))
    if found:
        return os.path.dirname(found[-1])
    initdb = shutil.which("initdb")
    return os.path.dirname(initdb) if initdb else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_server_user(command: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


@pytest.fixture(scope="session")
def postgres_server():
    """URL of the ``postgres`` database of a server started for this test session."""
    bin_dir = _server_binaries()
    if bin_dir is None:
        pytest.skip("PostgreSQL server binaries not installed (.ci/run installs Debian's postgresql)")
    base = tempfile.mkdtemp(prefix="monitor-pg-")
    data, sockets = os.path.join(base, "data"), os.path.join(base, "run")
    os.makedirs(sockets)
    if os.geteuid() == 0:
        shutil.chown(base, "postgres")
        shutil.chown(sockets, "postgres")
    port = _free_port()

    def run(*command: str) -> None:
        subprocess.run(_as_server_user(list(command)), check=True, capture_output=True, timeout=120)

    run(os.path.join(bin_dir, "initdb"), "-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
    run(
        os.path.join(bin_dir, "pg_ctl"), "-D", data, "-l", os.path.join(base, "server.log"), "-w", "-t", "60",
        "-o", f"-h 127.0.0.1 -p {port} -k {sockets} -c fsync=off", "start",
    )  # fmt: skip
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        run(os.path.join(bin_dir, "pg_ctl"), "-D", data, "-m", "immediate", "stop")
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def postgres_url(postgres_server):
    """URL of a new, empty database for one test."""
    import psycopg

    name = f"test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_server, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return postgres_server.rsplit("/", 1)[0] + f"/{name}"
