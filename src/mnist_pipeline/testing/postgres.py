"""A throwaway PostgreSQL server on 127.0.0.1 for the sweep's many-worker test: Debian's
`postgresql` binaries (`.ci/run` installs them), a fresh cluster in a temporary folder,
trust authentication for one user, stopped and removed afterwards.

PostgreSQL refuses to run as root: as root the cluster is made and run as the
`postgres` user, in a folder that user owns.
"""

import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

USER = "sweep"
START_TIMEOUT_S = 120  # pg_ctl -w waits for the server to accept connections, up to this


def find_bin_dir() -> Path | None:
    """The folder of initdb and pg_ctl (Debian keeps them off PATH), if installed."""
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    return versions[-1].parent if versions else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def local_server(bin_dir: Path) -> Iterator[str]:
    """Start a cluster; yield its URL (postgresql://sweep@127.0.0.1:PORT/postgres)."""
    as_root = os.geteuid() == 0
    folder = Path(tempfile.mkdtemp(prefix="pg-", dir="/tmp"))
    data = folder / "data"
    prefix: list[str] = []
    if as_root:
        import pwd

        owner = pwd.getpwnam("postgres")
        os.chmod(folder, 0o755)
        os.chown(folder, owner.pw_uid, owner.pw_gid)
        prefix = ["runuser", "-u", "postgres", "--"]
    port = free_port()
    run = {"check": True, "capture_output": True, "timeout": START_TIMEOUT_S, "cwd": "/"}
    try:
        subprocess.run(
            [*prefix, str(bin_dir / "initdb"), "-D", str(data), "-U", USER, "--auth=trust"],
            **run,  # type: ignore[call-overload]
        )
        options = f"-c listen_addresses=127.0.0.1 -p {port} -c unix_socket_directories={folder}"
        subprocess.run(
            [
                *prefix,
                str(bin_dir / "pg_ctl"),
                *("-D", str(data), "-l", str(folder / "log"), "-o", options),
                *("-w", "-t", str(START_TIMEOUT_S), "start"),
            ],
            **run,  # type: ignore[call-overload]
        )
        try:
            yield f"postgresql://{USER}@127.0.0.1:{port}/postgres"
        finally:
            subprocess.run(
                [*prefix, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                check=False,
                capture_output=True,
                timeout=START_TIMEOUT_S,
                cwd="/",
            )
    finally:
        shutil.rmtree(folder, ignore_errors=True)
