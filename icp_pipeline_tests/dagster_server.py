"""Start Dagster's webserver and daemon as real processes for a test, talk GraphQL, stop them by pid.

STACK-NOTES: started from Python with `start_new_session=True` and stopped with `os.killpg`, so the
daemon's code-server child goes with it.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import requests

from icp_pipeline.config import PROJECT_ROOT

BIN = Path(sys.executable).parent
WORKSPACE = PROJECT_ROOT / "workspace.yaml"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def dagster_process(args: list[str], env: Mapping[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A Dagster CLI process in its own session; its output goes to `log` for the failure message."""
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(BIN / args[0]), *args[1:]],
            cwd=log.parent,
            env={**os.environ, **env},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            yield process
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait(timeout=10)


def webserver_args(port: int) -> list[str]:
    return ["dagster-webserver", "-h", "127.0.0.1", "-p", str(port), "-w", str(WORKSPACE)]


def daemon_args() -> list[str]:
    return ["dagster-daemon", "run", "-w", str(WORKSPACE)]


def wait_for_webserver(port: int, process: subprocess.Popen[bytes], log: Path, timeout_s: float = 90) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"webserver exited:\n{log.read_text(errors='replace')[-3000:]}")
        try:
            if requests.get(f"http://127.0.0.1:{port}/server_info", timeout=2).ok:
                return
        except requests.RequestException:
            pass
        time.sleep(0.5)
    raise AssertionError(f"webserver not ready in {timeout_s} s:\n{log.read_text(errors='replace')[-3000:]}")


def graphql(port: int, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
    response = requests.post(
        f"http://127.0.0.1:{port}/graphql", json={"query": query, "variables": variables or {}}, timeout=60
    )
    response.raise_for_status()
    body = response.json()
    assert "errors" not in body, body["errors"]
    return body["data"]


def repository_selector(port: int) -> dict[str, str]:
    """The project's code location as GraphQL addresses it."""
    data = graphql(
        port,
        "{ repositoriesOrError { ... on RepositoryConnection { nodes { name location { name } } } } }",
    )
    nodes = data["repositoriesOrError"]["nodes"]
    assert nodes, "no code location loaded"
    return {"repositoryName": nodes[0]["name"], "repositoryLocationName": nodes[0]["location"]["name"]}
