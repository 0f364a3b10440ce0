"""A browser session for the page tests: one signed-out Chromium context on the backend that
collects the page's script errors and Content-Security-Policy violations (the `browsing`
fixture in conftest.py gives each test its own)."""

from __future__ import annotations

from typing import Any

from backend_fixture import Backend


class Browsing:
    """One signed-out browser context on the backend, collecting the page's JS errors and the
    Content-Security-Policy violations it reports."""

    def __init__(self, chromium: Any, backend: Backend) -> None:
        self.backend = backend
        self.context = chromium.new_context(viewport={"width": 1400, "height": 1000})
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))
        self.page.on("console", self._console)

    def _console(self, message: Any) -> None:
        """A Content-Security-Policy violation is reported on the console: an error here too."""
        if "Content Security Policy" in message.text:
            self.errors.append(message.text)

    def sign_in(self, path: str) -> None:
        """Open `path`, get the login form, send the token, land on `path`."""
        answer = self.page.goto(self.backend.url + path)
        assert answer is not None and answer.status == 401
        self.page.fill("input[name=token]", self.backend.token)
        self.page.click("button[type=submit]")
        self.page.wait_for_url(self.backend.url + path)

    def js(self, expression: str) -> Any:
        return self.page.evaluate(expression)
