"""A throwaway PostgreSQL server from the Debian package's binaries, for the benchmarks and the tests.

    with local_postgres() as server:
        url = server.url()            # postgresql://postgres@127.0.0.1:PORT/postgres

initdb into a fresh directory, ``pg_ctl start`` on a free port (trust
authentication, loopback only), and on exit ``pg_ctl stop`` and the directory
removed. As root (CI) the server runs as the package's ``postgres`` user:
initdb refuses root.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class PostgresServer:
    port: int

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"


def postgres_bin() -> Path | None:
    """The newest installed PostgreSQL's bin directory (Debian keeps each major version apart)."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), key=lambda p: int(p.parts[-3]))
    return found[-1].parent if found else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def local_postgres(*settings: str) -> Iterator[PostgresServer]:
    """``settings``: server parameters, e.g. ``"fsync=off"``."""
    bin_dir = postgres_bin()
    if bin_dir is None:
        raise FileNotFoundError("PostgreSQL is not installed (apt-get install postgresql)")
    root = Path(tempfile.mkdtemp(prefix="modelgate-pg-"))
    as_owner: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
        as_owner = ["runuser", "-u", "postgres", "--"]
    data, port = root / "data", _free_port()

    def run(*command: str, check: bool = True) -> None:
        subprocess.run([*as_owner, *command], check=check, capture_output=True, cwd=root)

    try:
        run(str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8")
        options = " ".join(
            [f"-p {port}", f"-k {root}", "-c listen_addresses=127.0.0.1", "-c max_connections=200",
             *(f"-c {setting}" for setting in settings)]
        )  # fmt: skip
        run(
            str(bin_dir / "pg_ctl"),
            "-D",
            str(data),
            "-l",
            str(root / "server.log"),
            "-o",
            options,
            "-w",
            "start",
        )
        yield PostgresServer(port)
    finally:
        run(str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop", check=False)
        shutil.rmtree(root, ignore_errors=True)
