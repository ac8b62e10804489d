"""The real Dagster UI for tests: its GraphQL endpoint, a webserver on a home, and a page in
headless Chromium (Debian's, driven by Playwright: `make test` installs it when it is missing)."""

from __future__ import annotations

import json
import os
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from recall_pipeline.settings import HomeLayout
from recall_pipeline_tests.subprocesses import free_port, home_env, server, wait_for_http

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
# As this machine's closed network needs: no sandbox (root), no GPU, no calls home.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-sync",
                 "--disable-background-networking", "--disable-component-update"]


def graphql(port: int, query: str, variables: dict | None = None) -> dict:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql", data=json.dumps({"query": query, "variables": variables or {}}).encode(),
        headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        body = json.loads(response.read())
    assert "errors" not in body, body
    return body["data"]


@contextmanager
def webserver(home: HomeLayout, log: Path) -> Iterator[str]:
    """``dagster-webserver`` on the home's instance and the project's workspace; yields its URL.
    The community sign-up dialog that a fresh instance shows once is marked seen, as its
    "Skip" button does."""
    port = free_port()
    process = server(["dagster-webserver", "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)],
                     home_env(home), log)
    try:
        wait_for_http(f"http://127.0.0.1:{port}/server_info", process, timeout=120)
        assert graphql(port, "mutation { setNuxSeen }")["setNuxSeen"] is True
        yield f"http://127.0.0.1:{port}"
    finally:
        process.shutdown()


@contextmanager
def chromium_page() -> Iterator:
    """A page in headless Chromium; the error says how to get Chromium when it is missing."""
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).is_file(), (f"the UI tests need Chromium at {CHROMIUM}: `make test` installs Debian's "
                                      "chromium package; or set CHROMIUM to a Chromium binary")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(60_000)
            yield page
        finally:
            browser.close()
