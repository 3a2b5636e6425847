"""Headless Chromium for page tests: load a file:// page, collect console errors, run JS, screenshot.

Talks the Chrome DevTools Protocol over `--remote-debugging-pipe` (JSON messages ended by NUL on
file descriptors 3 (to the browser) and 4 (from it)), so it needs no port, no websocket client and
no Python package beyond the standard library.

    from browser import Browser, chromium_path      # tests/ is on sys.path under pytest
    with Browser() as browser:                      # pytest.skip(...) first if chromium_path() is None
        page = browser.open(path_or_url)            # waits for the load event
        page.evaluate("document.title")             # → JSON value (awaits promises)
        page.wait_for("document.querySelectorAll('.row').length > 3")
        page.screenshot(tmp_path / "page.png")
        assert page.errors == []                    # console.error, uncaught exceptions, failed loads
        assert all(u.startswith("file:") for u in page.requests)   # every URL it asked for

`SAESTEER_CHROMIUM` overrides the executable (default: `chromium` on PATH, Debian's package).
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--remote-debugging-pipe",
]


def chromium_path() -> str | None:
    """The Chromium executable, or None when it is not installed (tests then skip)."""
    return os.environ.get("SAESTEER_CHROMIUM") or shutil.which("chromium")


class BrowserError(RuntimeError):
    """The browser died, timed out, or answered a command with an error."""


class Browser:
    """One headless Chromium process; `open()` gives a `Page` per URL. Use as a context manager."""

    def __init__(self, timeout: float = 30.0, width: int = 1280, height: int = 900) -> None:
        exe = chromium_path()
        if exe is None:
            raise BrowserError("Chromium is not installed: `apt-get install -y chromium`.")
        self.timeout = timeout
        self.size = (width, height)
        self._profile = tempfile.TemporaryDirectory(prefix="saesteer-chromium-")
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()

        def wire_pipes() -> None:  # runs in the child: the protocol wants fds 3 (in) and 4 (out)
            high_r = fcntl.fcntl(to_browser_r, fcntl.F_DUPFD, 10)  # never clobber each other
            high_w = fcntl.fcntl(from_browser_w, fcntl.F_DUPFD, 10)
            os.dup2(high_r, 3)
            os.dup2(high_w, 4)

        self._process = subprocess.Popen(
            [exe, *FLAGS, f"--user-data-dir={self._profile.name}", "about:blank"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=wire_pipes,
            pass_fds=(3, 4, to_browser_r, from_browser_w),  # close_fds runs after wire_pipes
        )
        os.close(to_browser_r)
        os.close(from_browser_w)
        self._buffer = b""
        self._next_id = 0
        self._events: list[dict[str, Any]] = []

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Ask the browser to quit, kill it if it does not, and remove its profile."""
        if self._process.poll() is None:
            with contextlib.suppress(BrowserError, OSError):
                self.send("Browser.close", timeout=5)
            try:
                self._process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        for fd in (self._to_browser, self._from_browser):
            with contextlib.suppress(OSError):
                os.close(fd)
        self._profile.cleanup()

    def send(
        self,
        method: str,
        params: dict[str, Any] | None = None,
        session: str | None = None,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        """Send one protocol command and return its result (events seen meanwhile are kept)."""
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            reply = self._receive(deadline, f"the reply to {method}")
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise BrowserError(f"{method} failed: {reply['error']}")
                return reply.get("result", {})
            self._events.append(reply)

    def next_event(self, deadline: float, waiting_for: str) -> dict[str, Any]:
        """The oldest unread event, reading from the browser until `deadline` if none is queued."""
        if self._events:
            return self._events.pop(0)
        return self._receive(deadline, waiting_for)

    def _receive(self, deadline: float, waiting_for: str) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise BrowserError(f"Timed out waiting for {waiting_for}.")
            ready, _, _ = select.select([self._from_browser], [], [], left)
            if ready:
                chunk = os.read(self._from_browser, 1 << 20)
                if not chunk:
                    raise BrowserError(f"Chromium exited while waiting for {waiting_for}.")
                self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(raw)

    def open(self, target: str | Path) -> Page:
        """A new tab showing `target` (a file path or URL), after its load event."""
        url = str(target)
        if not url.startswith(("file:", "http:", "https:", "about:", "data:")):
            url = Path(target).resolve().as_uri()
        target_id = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target_id, "flatten": True})[
            "sessionId"
        ]
        page = Page(self, session)
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.send(f"{domain}.enable", session=session)
        width, height = self.size
        self.send(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
            session=session,
        )
        page.navigate(url)
        return page


class Page:
    """One tab: navigation, JS evaluation, screenshots, the errors it logged (`errors`) and the
    URLs it requested (`requests`, to check that a page stays off the network)."""

    def __init__(self, browser: Browser, session: str) -> None:
        self.browser = browser
        self.session = session
        self.errors: list[str] = []
        self.requests: list[str] = []

    def _drain(self, deadline: float | None = None, until: str | None = None) -> None:
        """Record queued events; with `until`, keep reading until that event (or the deadline)."""
        while True:
            if until is None and not self.browser._events:
                return
            event = self.browser.next_event(deadline or time.monotonic(), until or "events")
            if event.get("sessionId") != self.session:
                continue
            self._record(event)
            if until is not None and event.get("method") == until:
                return

    def _record(self, event: dict[str, Any]) -> None:
        method, params = event.get("method"), event.get("params", {})
        if method == "Network.requestWillBeSent":
            self.requests.append(params["request"]["url"])
        elif method == "Runtime.exceptionThrown":
            details = params["exceptionDetails"]
            text = details.get("exception", {}).get("description") or details.get("text", "")
            self.errors.append(f"uncaught: {text}")
        elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            args = [a.get("value", a.get("description", "")) for a in params.get("args", [])]
            self.errors.append("console.error: " + " ".join(map(str, args)))
        elif method == "Log.entryAdded" and params["entry"].get("level") == "error":
            entry = params["entry"]
            self.errors.append(f"{entry.get('source')}: {entry.get('text')} {entry.get('url', '')}")

    def navigate(self, url: str) -> None:
        """Go to `url` and wait for its load event (all <script> files run by then)."""
        self.browser.send("Page.navigate", {"url": url}, session=self.session)
        self._drain(time.monotonic() + self.browser.timeout, until="Page.loadEventFired")

    def reload(self) -> None:
        """Reload the page (same URL, same storage) and wait for its load event."""
        self.browser.send("Page.reload", session=self.session)
        self._drain(time.monotonic() + self.browser.timeout, until="Page.loadEventFired")

    def evaluate(self, expression: str) -> Any:
        """Run JS in the page and return its (awaited) value as JSON; JS exceptions raise."""
        result = self.browser.send(
            "Runtime.evaluate",
            {"expression": expression, "returnByValue": True, "awaitPromise": True},
            session=self.session,
        )
        self._drain()
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            text = details.get("exception", {}).get("description") or details.get("text")
            raise BrowserError(f"JS error in {expression[:80]!r}: {text}")
        return result["result"].get("value")

    def wait_for(self, condition: str, timeout: float = 10.0) -> Any:
        """Poll the JS `condition` until its JSON value is truthy (use `!!` for DOM nodes); return it."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.evaluate(condition)
            if value:
                return value
            if time.monotonic() > deadline:
                raise BrowserError(f"Timed out waiting for {condition!r}.")
            time.sleep(0.05)

    def screenshot(self, path: str | Path) -> Path:
        """Save a PNG of the viewport to `path`."""
        data = self.browser.send("Page.captureScreenshot", {"format": "png"}, session=self.session)
        path = Path(path)
        path.write_bytes(base64.b64decode(data["data"]))
        self._drain()
        return path
