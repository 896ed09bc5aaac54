"""Open a local HTML file in headless Chromium over the DevTools protocol, standard library only.

Chromium runs with `--remote-debugging-pipe` (commands on fd 3, replies on fd 4, NUL-separated
JSON), network access blocked (a dead proxy for every non-loopback host, plus DevTools URL
blocking), and a fresh profile. A visit records console errors, uncaught exceptions and every
request the page made, evaluates a script in the page, and can save a full-page PNG.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import queue
import shutil
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEBIAN_CHROMIUM = Path("/usr/lib/chromium/chromium")
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-default-apps",
    "--no-first-run",
    "--no-default-browser-check",
    "--mute-audio",
    "--hide-scrollbars",
    # Every request to a non-loopback host goes to a proxy that is not there: nothing leaves the machine.
    "--proxy-server=127.0.0.1:9",
    "--proxy-bypass-list=<-loopback>",
    "--window-size=1280,900",
)
BLOCKED = ("http://*", "https://*", "ws://*", "wss://*", "ftp://*")


def chromium_binary() -> Path | None:
    """Debian's real binary (the /usr/bin wrapper prints a shell error here), else one on PATH."""
    if DEBIAN_CHROMIUM.exists():
        return DEBIAN_CHROMIUM
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return Path(found)
    return None


@dataclass
class Visit:
    """What happened while the page was open."""

    value: Any = None
    console_errors: list[str] = field(default_factory=list)
    exceptions: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    failed_requests: list[str] = field(default_factory=list)
    screenshot: Path | None = None
    seconds: float = 0.0


class DevToolsPipe:
    """A minimal DevTools client: numbered commands, replies matched by id, events queued."""

    def __init__(self, binary: Path, profile_dir: Path) -> None:
        to_browser_read, self._to_browser = os.pipe()
        self._from_browser, from_browser_write = os.pipe()

        def wire_fds() -> None:  # runs in the child: its fd 3 reads commands, fd 4 writes replies
            commands = fcntl.fcntl(to_browser_read, fcntl.F_DUPFD, 10)
            replies = fcntl.fcntl(from_browser_write, fcntl.F_DUPFD, 10)
            os.dup2(commands, 3)
            os.dup2(replies, 4)

        self.process = subprocess.Popen(
            [str(binary), *FLAGS, f"--user-data-dir={profile_dir}", "--remote-debugging-pipe", "about:blank"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,  # harmless dbus "ERROR" lines live here
            preexec_fn=wire_fds,  # fd 3 and 4 must be exactly these; no threads run yet
            close_fds=False,
        )
        os.close(to_browser_read)
        os.close(from_browser_write)
        self._next_id = 0
        self._replies: dict[int, dict[str, Any]] = {}
        self.events: queue.Queue[dict[str, Any]] = queue.Queue()
        self._reply_ready = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        buffer = b""
        while True:
            chunk = os.read(self._from_browser, 1 << 16)
            if not chunk:
                break
            buffer += chunk
            while b"\0" in buffer:
                raw, buffer = buffer.split(b"\0", 1)
                message = json.loads(raw)
                if "id" in message:
                    with self._reply_ready:
                        self._replies[message["id"]] = message
                        self._reply_ready.notify_all()
                else:
                    self.events.put(message)
        with self._reply_ready:
            self._reply_ready.notify_all()

    def send(
        self,
        method: str,
        params: dict[str, Any] | None = None,
        session: str | None = None,
        timeout: float = 30,
    ) -> dict[str, Any]:
        """Send a command and wait for its reply; a protocol error raises RuntimeError."""
        self._next_id += 1
        number = self._next_id
        message: dict[str, Any] = {"id": number, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        with self._reply_ready:
            while number not in self._replies:
                left = deadline - time.monotonic()
                if left <= 0 or self.process.poll() is not None:
                    raise TimeoutError(f"no reply to {method} within {timeout}s")
                self._reply_ready.wait(left)
            reply = self._replies.pop(number)
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        return reply.get("result", {})

    def close(self) -> None:
        with contextlib.suppress(OSError, RuntimeError, TimeoutError):
            self.send("Browser.close", timeout=5)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        for fd in (self._to_browser, self._from_browser):
            with contextlib.suppress(OSError):
                os.close(fd)


def _record(event: dict[str, Any], visit: Visit) -> bool:
    """File one event under the visit; True when it is the page's load event."""
    method, params = event.get("method"), event.get("params", {})
    if method == "Runtime.exceptionThrown":
        details = params.get("exceptionDetails", {})
        visit.exceptions.append(details.get("exception", {}).get("description") or details.get("text", ""))
    elif method == "Runtime.consoleAPICalled" and params.get("type") in {"error", "assert"}:
        visit.console_errors.append(
            " ".join(str(a.get("value", a.get("description"))) for a in params["args"])
        )
    elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
        entry = params["entry"]
        visit.console_errors.append(
            f"{entry.get('source')}: {entry.get('text')} {entry.get('url', '')}".strip()
        )
    elif method == "Network.requestWillBeSent":
        visit.requests.append(params["request"]["url"])
    elif method == "Network.loadingFailed":
        visit.failed_requests.append(f"{params.get('errorText')} {params.get('blockedReason', '')}".strip())
    return method == "Page.loadEventFired"


def visit_page(
    page: Path,
    script: str = "document.title",
    screenshot: Path | None = None,
    binary: Path | None = None,
    timeout: float = 60,
) -> Visit:
    """Open `page` from file://, wait for load, evaluate `script` (its JSON value), optionally save a PNG."""
    binary = binary or chromium_binary()
    if binary is None:
        raise FileNotFoundError("no Chromium binary found")
    started = time.monotonic()
    visit = Visit()
    with tempfile.TemporaryDirectory(prefix="icp_chromium_") as profile:
        browser = DevToolsPipe(binary, Path(profile))
        try:
            target = browser.send("Target.createTarget", {"url": "about:blank"})["targetId"]
            session = browser.send("Target.attachToTarget", {"targetId": target, "flatten": True})[
                "sessionId"
            ]
            for domain in ("Page", "Runtime", "Log", "Network"):
                browser.send(f"{domain}.enable", session=session)
            try:
                patterns = [{"urlPattern": p, "block": True} for p in BLOCKED]
                browser.send("Network.setBlockedURLs", {"urlPatterns": patterns}, session=session)
            except RuntimeError:
                browser.send("Network.setBlockedURLs", {"urls": list(BLOCKED)}, session=session)
            browser.send("Page.navigate", {"url": page.resolve().as_uri()}, session=session)
            deadline = time.monotonic() + timeout
            loaded = False
            while not loaded:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{page} did not finish loading within {timeout}s")
                event = browser.events.get(timeout=left)
                loaded = event.get("sessionId") == session and _record(event, visit)
            result = browser.send(
                "Runtime.evaluate", {"expression": script, "returnByValue": True}, session=session
            )
            if "exceptionDetails" in result:
                raise RuntimeError(f"script failed: {result['exceptionDetails'].get('text')}")
            visit.value = result["result"].get("value")
            if screenshot is not None:
                size = browser.send("Page.getLayoutMetrics", session=session)["cssContentSize"]
                shot = browser.send(
                    "Page.captureScreenshot",
                    {
                        "format": "png",
                        "captureBeyondViewport": True,
                        "clip": {
                            "x": 0,
                            "y": 0,
                            "width": size["width"],
                            "height": size["height"],
                            "scale": 1,
                        },
                    },
                    session=session,
                )
                screenshot.parent.mkdir(parents=True, exist_ok=True)
                screenshot.write_bytes(base64.b64decode(shot["data"]))
                visit.screenshot = screenshot
            time.sleep(0.1)  # late console messages
            while not browser.events.empty():
                _record(browser.events.get_nowait(), visit)
        finally:
            browser.close()
    visit.seconds = time.monotonic() - started
    return visit
