"""Starting the gateway's helper processes (the monitor, the log writers) from inside a worker."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from service.settings import Settings


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
