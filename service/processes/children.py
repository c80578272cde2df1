"""Starting the gateway's helper processes (the monitor, the log writers) from inside a worker."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import structlog

from service.settings import Settings

log = structlog.get_logger("modelgate.children")


def spawn(
    module: str, settings: Settings, env_extra: dict[str, str] | None = None, **popen: Any
) -> subprocess.Popen[bytes]:
    """``python -m module`` with the gateway's settings in its environment and this package importable.

    The child learns its parent's pid from ``MODELGATE_PARENT``, to notice when it is orphaned.
    """
    import service

    # the package's own directory first, wherever the worker runs from (a bento, a checkout)
    package_root = str(Path(service.__file__).resolve().parent.parent)
    path = os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, **settings.to_env(), "PYTHONPATH": path, "MODELGATE_PARENT": str(os.getpid()),
           **(env_extra or {})}  # fmt: skip
    return subprocess.Popen([sys.executable, "-m", module], env=env, **popen)


def wait_or_kill(child: subprocess.Popen[bytes], timeout: float) -> None:
    """Wait for a child told to stop (it finishes its work first); kill it after ``timeout`` s."""
    try:
        child.wait(timeout)
    except subprocess.TimeoutExpired:
        log.error("child.killed", pid=child.pid, args=child.args, timeout_s=timeout)
        child.kill()
        child.wait()
