"""One writer per warehouse: an OS file lock beside the DuckDB file, held by every run that writes it.

Two overlapping runs would each deliver every pending alert (and DuckDB refuses the second writer
only at some later step, with an error about the internet connection). So `icp run` and every
Dagster run that uses the `icp` resource take `<warehouse>.lock` first, before any DuckDB
connection. The lock is `flock`: the kernel releases it when the holder dies, so a killed run never
leaves a stale lock; the file's text (run id, pid, start time) only says who holds it now, and may
be left over from a dead holder, which the flock, not the text, decides.

The lock is re-entrant within a process: `icp run` holds it and the in-process Dagster run it
starts takes it again without waiting for itself. Platforms without `fcntl` run unlocked.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from icp_pipeline.errors import IcpError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no flock, runs are not serialized
    fcntl = None  # type: ignore[assignment]

LOCK_SUFFIX = ".lock"
POLL_S = 0.2


class WarehouseBusyError(IcpError):
    """Another run holds the warehouse lock (and did not release it within the configured wait)."""


@dataclass
class _Held:
    handle: Any
    depth: int


_held: dict[str, _Held] = {}
_guard = threading.Lock()


def lock_path(warehouse: Path) -> Path:
    """The lock file beside the warehouse: `warehouse.duckdb` -> `warehouse.duckdb.lock`."""
    return warehouse.with_name(warehouse.name + LOCK_SUFFIX)


@contextmanager
def warehouse_lock(
    warehouse: Path,
    run_id: str | None = None,
    wait_s: float = 0,
    notify: Callable[[str], None] | None = None,
) -> Iterator[None]:
    """Hold the warehouse's writer lock for the block; wait up to `wait_s` seconds for another holder
    (`notify` hears once that it waits). Raises WarehouseBusyError with the one line
    "warehouse X is in use by run R (pid P) since T".
    """
    path = lock_path(Path(warehouse).resolve())
    key = str(path)
    with _guard:
        held = _held.get(key)
        if held is not None:
            held.depth += 1
    if held is None:
        handle = _acquire(path, Path(warehouse), run_id, wait_s, notify)
        with _guard:
            held = _held[key] = _Held(handle, 1)
    try:
        yield
    finally:
        with _guard:
            held.depth -= 1
            release = held.depth == 0
            if release:
                del _held[key]
        if release and held.handle is not None:
            held.handle.close()  # closing the last descriptor releases the flock


def _acquire(
    path: Path, warehouse: Path, run_id: str | None, wait_s: float, notify: Callable[[str], None] | None
) -> Any:
    if fcntl is None:
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = path.open("a+", encoding="utf-8")
    deadline = time.monotonic() + max(0.0, wait_s)
    try:
        while True:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    waited = f" (waited {wait_s:g} s)" if wait_s > 0 else ""
                    raise WarehouseBusyError(f"{in_use(warehouse)}{waited}") from None
                if notify is not None:
                    notify(f"{in_use(warehouse)}; waiting up to {wait_s:g} s")
                    notify = None
                time.sleep(POLL_S)
        holder = {
            "run_id": run_id or "",
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "since": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        }
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps(holder) + "\n")
        handle.flush()
    except BaseException:
        handle.close()
        raise
    return handle


def holder(warehouse: Path) -> dict[str, Any]:
    """What the lock file says about its holder; empty when unreadable (being rewritten, or none)."""
    try:
        text = lock_path(Path(warehouse).resolve()).read_text(encoding="utf-8")
        info = json.loads(text)
    except (OSError, ValueError):
        return {}
    return info if isinstance(info, dict) else {}


def in_use(warehouse: Path) -> str:
    """The one line naming the holder. The holder writes its details just after taking the lock:
    read again briefly when the file is empty at that instant."""
    info = holder(warehouse)
    for _ in range(5):
        if info:
            break
        time.sleep(0.05)
        info = holder(warehouse)
    run = info.get("run_id") or "unknown"
    pid = info.get("pid") or "unknown"
    since = info.get("since") or "unknown"
    return f"warehouse {warehouse} is in use by run {run} (pid {pid}) since {since}"
