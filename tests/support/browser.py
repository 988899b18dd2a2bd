"""Helpers of the real-browser tests (tests/browser/): the example app served on loopback, what every
page must pass (no console error, no request elsewhere, no Content-Security-Policy violation, no
horizontal scrolling, no serious accessibility violation), logging in through the form, and the
screenshots of docs/screenshots/.

The browser is Debian's chromium (`/usr/bin/chromium`, or `CHROMIUM`), driven by Playwright: the
tests never download a browser of their own.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import urlsplit

from axe_playwright_python.sync_playwright import Axe
from example_app import create_app
from flask import Flask
from playwright.sync_api import BrowserContext, ConsoleMessage, Page, Request, WebError
from werkzeug.serving import BaseWSGIServer, make_server

from tests.support.host_app import Clock
from tests.support.loopback import HOST

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

CHROMIUM: Final = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))
# Chromium's sandbox needs user namespaces, which containers and root sessions often lack.
CHROMIUM_ARGS: Final = ("--no-sandbox",)

STRICT_POLICY: Final = "default-src 'self'"
"""The policy every HTML answer gets in these tests: Flask-Talisman's default, the strictest a host
is likely to run, under which no inline script, inline style or other origin works."""

SCREENSHOTS: Final = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
SCREENSHOT_WIDTHS: Final = (360, 1280)
SCREENSHOT_HEIGHT: Final = 800
DESKTOP: Final = {"width": 1280, "height": 800}
PHONE_WIDTH: Final = 360

SERIOUS_IMPACTS: Final = frozenset({"serious", "critical"})

ALICE: Final = ("alice@example.com", "alice")
"""The example app's demo user on the Free plan."""
BOB: Final = ("bob@example.com", "bob")
"""The example app's demo user on Professional."""


# -- the example app on loopback -------------------------------------------------------------------


class StrictPolicy:
    """WSGI middleware adding `STRICT_POLICY` to every HTML answer, on top of any policy the app
    sets itself (a browser enforces every policy it receives, so the app's own may be stricter,
    never looser)."""

    def __init__(self, app: WSGIApplication) -> None:
        self.app = app

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            content_type = next((v for k, v in headers if k.lower() == "content-type"), "")
            if content_type.startswith("text/html"):
                headers = [*headers, ("Content-Security-Policy", STRICT_POLICY)]
            return start_response(status, headers, exc_info)

        return self.app(environ, start)


@dataclass(frozen=True)
class Answer:
    method: str
    path: str
    status: int


class AnswerLog:
    """WSGI middleware keeping the status of every answer: what the browser asks for by itself
    (``/favicon.ico``) never reaches Playwright's request events, only the server."""

    def __init__(self, app: WSGIApplication) -> None:
        self.app = app
        self.answers: list[Answer] = []

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            path = environ.get("PATH_INFO", "")
            self.answers.append(Answer(environ["REQUEST_METHOD"], path, int(status.split()[0])))
            return start_response(status, headers, exc_info)

        return self.app(environ, start)


@dataclass
class LiveServer:
    """The example app answering on `url` from a thread of the test process."""

    app: Flask
    url: str
    """The origin, without a trailing slash: http://127.0.0.1:PORT."""
    clock: Clock
    """The app's clock (BILLING_CLOCK): fixed unless a test moves it."""
    database: Path
    answers: list[Answer] = field(repr=False)
    """Every answer the server sent, in order."""
    _server: BaseWSGIServer = field(repr=False)
    _thread: threading.Thread = field(repr=False)

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)
        with self.app.app_context():
            self.app.extensions["sqlalchemy"].engine.dispose()


def start_example_app(
    directory: Path,
    *,
    strict_csp: bool = True,
    **config: Any,
) -> LiveServer:
    """Start the example app (demo users alice and bob included) on a new SQLite file in
    `directory`, on a free port of 127.0.0.1, in a threaded server; `config` overrides its
    configuration. Stop it with `LiveServer.stop()`."""
    clock = config.pop("BILLING_CLOCK", None) or Clock()
    database = directory / "example.sqlite3"
    app = create_app(
        {
            "SQLALCHEMY_DATABASE_URI": f"sqlite:///{database}",
            "SECRET_KEY": "browser-tests",
            "BILLING_CLOCK": clock,
            **config,
        }
    )
    log = AnswerLog(app)
    served: WSGIApplication = StrictPolicy(log) if strict_csp else log
    server = make_server(HOST, 0, served, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="example-app", daemon=True)
    thread.start()
    url = f"http://{HOST}:{server.server_port}"
    return LiveServer(app, url, clock, database, log.answers, server, thread)


# -- what every page must pass ---------------------------------------------------------------------

CSP_BINDING: Final = "__browserTestsPolicyViolation"
# Runs before the page's own scripts in every document; the binding is Playwright's, outside the
# page's policy. Chromium also logs each violation to the console ("Refused to ..."), which is what
# catches them with JavaScript disabled, when no init script runs.
CSP_LISTENER: Final = f"""
document.addEventListener("securitypolicyviolation", (event) => {{
  const where = event.sourceFile ? ` at ${{event.sourceFile}}:${{event.lineNumber}}` : "";
  window.{CSP_BINDING}(
    `${{event.effectiveDirective}} blocked ${{event.blockedURI || "(unknown)"}}${{where}}`
  );
}}, true);
"""
# Chromium's console wording of a violation.
CSP_CONSOLE_MESSAGE: Final = re.compile(r"Content Security Policy")
# Schemes that never leave the browser; a policy violation by them is reported as one.
LOCAL_SCHEMES: Final = frozenset({"about", "data", "blob"})


@dataclass
class PageGuards:
    """What went wrong in the browser contexts of one test, collected while it runs.

    Every context the `new_context`, `context` and `page` fixtures create is watched; the test's
    teardown asserts that nothing was collected (unless the test failed already). A test that
    expects an error console message (a refused request logs "Failed to load resource: ... 429")
    allows it first with `allow_console_error`; `assert_clean()` checks at any moment.
    """

    origin: str
    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    foreign_requests: list[str] = field(default_factory=list)
    policy_violations: list[str] = field(default_factory=list)
    allowed_console_errors: list[re.Pattern[str]] = field(default_factory=list)
    allowed_origins: set[str] = field(default_factory=set)

    def watch(self, context: BrowserContext) -> None:
        context.expose_function(CSP_BINDING, self._on_policy_violation)
        context.add_init_script(CSP_LISTENER)
        context.on("console", self._on_console)
        context.on("weberror", self._on_web_error)
        context.on("request", self._on_request)

    def allow_origin(self, origin: str) -> None:
        """Accept requests to ``origin`` (``http://host:port``) from now on: a page the test sends
        the browser to on purpose, such as a payment provider's fake on loopback."""
        self.allowed_origins.add(origin.rstrip("/"))

    def allow_console_error(self, pattern: str) -> None:
        """Ignore from now on the console errors that `pattern` (a regex) finds."""
        self.allowed_console_errors.append(re.compile(pattern))

    def problems(self) -> list[str]:
        return [
            *(f"console error: {text}" for text in self.console_errors),
            *(f"page error: {text}" for text in self.page_errors),
            *(
                f"request to another origin than {self.origin}: {url}"
                for url in self.foreign_requests
            ),
            *(f"Content-Security-Policy violation: {text}" for text in self.policy_violations),
        ]

    def take_problems(self) -> list[str]:
        """What was collected so far, forgotten at once (for tests of the guards themselves)."""
        problems = self.problems()
        for found in (
            self.console_errors,
            self.page_errors,
            self.foreign_requests,
            self.policy_violations,
        ):
            found.clear()
        return problems

    def assert_clean(self) -> None:
        problems = self.problems()
        assert not problems, "the browser reported:\n  " + "\n  ".join(problems)

    def _on_console(self, message: ConsoleMessage) -> None:
        if message.type != "error":
            return
        location = message.location
        if urlsplit(location.get("url", "")).path == "/favicon.ico":
            return  # asked for by the browser itself; whether a host has one is its own business
        text = f"{message.text} ({location.get('url')}:{location.get('lineNumber')})"
        if CSP_CONSOLE_MESSAGE.search(message.text):
            self.policy_violations.append(text)
        elif not any(pattern.search(message.text) for pattern in self.allowed_console_errors):
            self.console_errors.append(text)

    def _on_policy_violation(self, text: str) -> None:
        self.policy_violations.append(text)

    def _on_web_error(self, error: WebError) -> None:
        self.page_errors.append(error.error.stack or error.error.message)

    def _on_request(self, request: Request) -> None:
        parts = urlsplit(request.url)
        if parts.scheme in LOCAL_SCHEMES:
            return
        origin = f"{parts.scheme}://{parts.netloc}"
        if origin != self.origin and origin not in self.allowed_origins:
            self.foreign_requests.append(f"{request.method} {request.url}")


# The elements sticking out on the right, to name them when the page scrolls sideways.
OVERFLOW_SCRIPT: Final = """() => {
  const root = document.documentElement;
  const width = root.clientWidth;
  const wide = [...document.body.querySelectorAll("*")]
    .filter((element) => element.getBoundingClientRect().right > width + 0.5)
    .slice(0, 5)
    .map((element) => {
      const id = element.id ? `#${element.id}` : "";
      const classes = [...element.classList].map((name) => `.${name}`).join("");
      const right = Math.round(element.getBoundingClientRect().right);
      return `${element.tagName.toLowerCase()}${id}${classes} ends at ${right}px`;
    });
  return {scrollWidth: root.scrollWidth, clientWidth: width, wide};
}"""


def assert_no_horizontal_overflow(page: Page) -> None:
    """The page fits its viewport's width: nothing to scroll sideways to."""
    found: dict[str, Any] = page.evaluate(OVERFLOW_SCRIPT)
    assert found["scrollWidth"] <= found["clientWidth"], (
        f"{page.url} scrolls sideways at {page.viewport_size}: scrollWidth "
        f"{found['scrollWidth']} > clientWidth {found['clientWidth']}; widest: {found['wide']}"
    )


# -- accessibility ---------------------------------------------------------------------------------

_axe = Axe()  # axe-core's script from the installed wheel: nothing is fetched


def serious_accessibility_violations(
    page: Page, selector: str | None = None
) -> list[dict[str, Any]]:
    """axe-core's violations of impact serious or critical on the page (or within `selector`)."""
    results = _axe.run(page, context=selector)
    violations: list[dict[str, Any]] = results.response["violations"]
    return [v for v in violations if v.get("impact") in SERIOUS_IMPACTS]


def accessibility_report(violations: Iterable[Mapping[str, Any]]) -> str:
    """axe-core's violations, one paragraph each: rule, impact, what it asks, where it failed."""
    paragraphs = []
    for violation in violations:
        lines = [
            f"{violation['id']} ({violation['impact']}): {violation['help']}",
            f"  {violation['helpUrl']}",
        ]
        for node in violation["nodes"]:
            target = " ".join(str(part) for part in node["target"])
            summary = " ".join(str(node.get("failureSummary", "")).split())
            lines.append(f"  - {target}: {node['html']}")
            lines.append(f"    {summary}")
        paragraphs.append("\n".join(lines))
    return "\n\n".join(paragraphs)


def assert_accessible(page: Page, selector: str | None = None) -> None:
    """No serious or critical axe-core violation on the page."""
    violations = serious_accessibility_violations(page, selector)
    assert not violations, f"axe-core on {page.url}:\n\n{accessibility_report(violations)}"


# -- logging in ------------------------------------------------------------------------------------


def login(page: Page, email: str, password: str) -> None:
    """Log in through the example app's form (works with JavaScript disabled too); fails with the
    form's own message when the app refuses."""
    page.goto("/login")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_load_state()
    if urlsplit(page.url).path == "/login":
        alert = page.get_by_role("alert")
        message = alert.inner_text() if alert.count() else "no message"
        raise AssertionError(f"logging in as {email} failed: {message}")


# -- screenshots -----------------------------------------------------------------------------------


def save_screenshots(
    page: Page, name: str, directory: Path = SCREENSHOTS, *, full_page: bool = True
) -> list[Path]:
    """Full-page PNGs of the page as it is at 360 and 1280 px wide: `<name>-360.png` and
    `<name>-1280.png` in `directory` (docs/screenshots/ by default), with animations stopped and
    the caret hidden; `full_page=False` takes the viewport only (800 px high), as for an open
    modal dialog, whose backdrop covers the viewport. A file is rewritten only when its pixels
    changed, so a run that changed nothing leaves the documentation's images as they were.
    Returns the paths."""
    directory.mkdir(parents=True, exist_ok=True)
    original = page.viewport_size
    paths = []
    try:
        for width in SCREENSHOT_WIDTHS:
            page.set_viewport_size({"width": width, "height": SCREENSHOT_HEIGHT})
            png = page.screenshot(
                full_page=full_page, animations="disabled", caret="hide", scale="css"
            )
            path = directory / f"{name}-{width}.png"
            if not path.is_file() or path.read_bytes() != png:
                path.write_bytes(png)
            paths.append(path)
    finally:
        if original is not None:
            page.set_viewport_size(original)
    return paths
