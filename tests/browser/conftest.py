"""Fixtures of the real-browser tests: the example app on loopback, Debian's chromium through
pytest-playwright, and the checks every page of a test must pass.

- `page`, `context`, `new_context`, `browser` are pytest-playwright's, launched from
  /usr/bin/chromium (headless; `--headed` to watch). Every context starts at `base_url` = the
  test's app server (`page.goto("/login")`), 1280 x 800 px, in English (`browser_locale`), UTC,
  light colours, reduced motion, the browser's clock fixed at the app's. Other context options:
  `@pytest.mark.browser_context_args(java_script_enabled=False)`.
- `app_server`: the example app answering the test, shared by the session; a test that changes
  data the others see, or needs other configuration, gets its own app and database with
  `@pytest.mark.fresh_app(**config)` or by overriding or parametrizing `app_config`.
  HTML answers carry `Content-Security-Policy: default-src 'self'` unless `strict_csp=False` is
  given to the marker.
- `guards`: the console errors, page errors, requests to other origins and policy violations of
  the test's contexts, asserted empty at its teardown.

Debian's chromium or Playwright missing skips these tests, or fails them under CI=true.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.servers import missing

BROWSER_DIRECTORY = Path(__file__).parent
REQUIRED_MODULES = ("playwright", "pytest_playwright", "axe_playwright_python")
UNINSTALLED = [name for name in REQUIRED_MODULES if importlib.util.find_spec(name) is None]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "fresh_app(strict_csp=True, **config): the test gets its own example app and database",
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark the browser tests, and run them after every other test: Playwright's synchronous API
    keeps an event loop running in the main thread for the rest of the session, and Flask's async
    views (asgiref) refuse to run in a thread that has one."""
    browser = [item for item in items if item.path.is_relative_to(BROWSER_DIRECTORY)]
    for item in browser:
        item.add_marker(pytest.mark.browser)
    others = [item for item in items if not item.path.is_relative_to(BROWSER_DIRECTORY)]
    items[:] = others + browser


if UNINSTALLED:
    # The test modules import Playwright: each one becomes a single test that says what is missing.

    class _Unavailable(pytest.Item):
        def runtest(self) -> None:
            names = ", ".join(UNINSTALLED)
            missing(f"Python packages {names}", "install the test extra: pip install -e '.[test]'")

    class _UnavailableModule(pytest.File):
        def collect(self) -> Iterator[pytest.Item]:
            yield _Unavailable.from_parent(self, name="browser tests")

    def pytest_pycollect_makemodule(module_path: Path, parent: pytest.Collector) -> pytest.File:
        return _UnavailableModule.from_parent(parent, path=module_path)

else:
    from playwright.sync_api import BrowserContext
    from pytest_playwright.pytest_playwright import CreateContextCallback

    from tests.support.browser import (
        CHROMIUM,
        CHROMIUM_ARGS,
        DESKTOP,
        LiveServer,
        PageGuards,
        start_example_app,
    )

    RESULT = pytest.StashKey[bool]()
    """Whether the test itself (its call phase) failed: then its guards stay quiet."""

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
        report = yield
        if report.when == "call":
            item.stash[RESULT] = report.failed
        return report

    @pytest.fixture(scope="session")
    def browser_type_launch_args(browser_type_launch_args: dict[str, Any]) -> dict[str, Any]:
        """pytest-playwright's launch options, on Debian's chromium."""
        if not CHROMIUM.is_file():
            missing(
                f"Chromium ({CHROMIUM}, or set CHROMIUM)", "install the Debian package 'chromium'"
            )
        return {
            "headless": True,
            **browser_type_launch_args,
            "executable_path": str(CHROMIUM),
            "args": list(CHROMIUM_ARGS),
        }

    @pytest.fixture(scope="session")
    def shared_app_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
        server = start_example_app(tmp_path_factory.mktemp("example-app"))
        yield server
        server.stop()

    @pytest.fixture
    def app_config() -> dict[str, Any] | None:
        """Configuration of an app of the test's own; None shares the session's app."""
        return None

    @pytest.fixture
    def app_server(
        request: pytest.FixtureRequest, app_config: dict[str, Any] | None, tmp_path: Path
    ) -> Iterator[LiveServer]:
        marker = request.node.get_closest_marker("fresh_app")
        if app_config is None and marker is None:
            yield request.getfixturevalue("shared_app_server")
            return
        config = {**(app_config or {}), **(marker.kwargs if marker else {})}
        server = start_example_app(tmp_path, **config)
        yield server
        server.stop()

    @pytest.fixture(scope="session")
    def base_url() -> str | None:
        """None: `browser_context_args` points each context at the test's own `app_server`."""
        return None

    @pytest.fixture
    def browser_locale() -> str:
        """The browser's language, hence its Accept-Language; parametrize it for "ru-RU"."""
        return "en-US"

    @pytest.fixture
    def browser_context_args(
        browser_context_args: dict[str, Any], app_server: LiveServer, browser_locale: str
    ) -> dict[str, Any]:
        """Deterministic contexts: the same pixels for the same page on every machine."""
        return {
            **browser_context_args,
            "base_url": app_server.url,
            "viewport": DESKTOP,
            "device_scale_factor": 1,
            "locale": browser_locale,
            "timezone_id": "UTC",
            "color_scheme": "light",
            "reduced_motion": "reduce",
        }

    @pytest.fixture
    def guards(request: pytest.FixtureRequest, app_server: LiveServer) -> Iterator[PageGuards]:
        watched = PageGuards(origin=app_server.url)
        yield watched
        if not request.node.stash.get(RESULT, True):
            watched.assert_clean()

    @pytest.fixture
    def new_context(
        guards: PageGuards, app_server: LiveServer, new_context: CreateContextCallback
    ) -> Callable[..., BrowserContext]:
        """pytest-playwright's, with every context watched by `guards` and its clock fixed.

        `guards` comes first, so it is torn down last: after the contexts closed, with every
        event they had to report delivered."""

        def create(**options: Any) -> BrowserContext:
            context = new_context(**options)
            context.set_default_timeout(10_000)
            guards.watch(context)
            context.clock.set_fixed_time(app_server.clock())
            return context

        return create
