"""Who holds a store: the error both store locks raise, and whether a recorded holder still runs."""

from __future__ import annotations

import os
from pathlib import Path


class StoreLockedError(RuntimeError):
    pass


def alive(pid: int) -> bool:
    """Whether a process of this machine is running (a zombie counts as dead: it holds nothing)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return not _zombie(pid)


def _zombie(pid: int) -> bool:
    """A killed process not yet reaped by its parent still has a pid, but holds nothing."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[:1] == ["Z"]
