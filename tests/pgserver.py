"""A throwaway PostgreSQL server for tests: FASTOPTIM_TEST_POSTGRES_URL when set (CI's
.ci/services.sh starts one), otherwise initdb + pg_ctl in a temporary folder on a free
loopback port, as the ``postgres`` user when running as root."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

ENV_URL = "FASTOPTIM_TEST_POSTGRES_URL"


def _bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    hits = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return hits[-1] if hits else None


def missing_reason() -> str | None:
    """Why no server can be had here, or None."""
    if os.environ.get(ENV_URL):
        return None
    if _bin("initdb") is None or _bin("pg_ctl") is None:
        return ("needs PostgreSQL server binaries (Debian: apt-get install postgresql) or "
                f"{ENV_URL}")
    if os.geteuid() == 0:
        try:
            import pwd

            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root without a 'postgres' user to run the server as"
    try:
        import psycopg2  # noqa: F401
    except ImportError:
        return "needs psycopg2 (pip install psycopg2-binary)"
    return None


class Server:
    def __init__(self):
        self.url = os.environ.get(ENV_URL)
        self._own = self.url is None

    def _run(self, *cmd: str) -> None:
        if os.geteuid() == 0:
            cmd = ("runuser", "-u", "postgres", "--", *cmd)
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if r.returncode:
            raise RuntimeError(f"{' '.join(cmd)} failed: {r.stdout}{r.stderr}")

    def start(self) -> str:
        if not self._own:
            return self.url
        # its own folder directly under the temp dir: the server's user must reach it
        self.base = Path(tempfile.mkdtemp(prefix="fastoptim-pg-"))
        if os.geteuid() == 0:
            shutil.chown(self.base, "postgres")
        data = self.base / "data"
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self._run(_bin("initdb"), "-D", str(data), "-U", "postgres", "--auth=trust",
                  "--no-sync")
        self._run(_bin("pg_ctl"), "-D", str(data), "-w", "-l", str(self.base / "server.log"),
                  "-o", f"-p {port} -k {self.base} -c listen_addresses=127.0.0.1 -c fsync=off",
                  "start")
        self.data = data
        self._run(_bin("createdb") or "createdb", "-h", "127.0.0.1", "-p", str(port), "-U",
                  "postgres", "fastoptim_test")
        self.url = f"postgresql://postgres@127.0.0.1:{port}/fastoptim_test"
        return self.url

    def stop(self) -> None:
        if self._own and getattr(self, "data", None) is not None:
            self._run(_bin("pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")
            self.data = None
            shutil.rmtree(self.base, ignore_errors=True)
