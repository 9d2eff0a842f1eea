"""Helpers for the Playwright tests: open a page and wait for it to settle, save screenshots."""

from __future__ import annotations

import os

# Debian's Chromium on a closed network: no background connections, no sandbox as root.
CHROMIUM_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SHOTS = os.path.join(os.path.dirname(__file__), "..", "..", "test-artifacts", "screenshots")


def screenshot(page, name: str) -> None:
    os.makedirs(SHOTS, exist_ok=True)
    page.screenshot(path=os.path.join(SHOTS, f"{name}.png"), full_page=True)


def open_page(page, url: str, shot: str | None = None) -> None:
    page.goto(url)
    page.wait_for_load_state("networkidle")
    if shot:
        screenshot(page, shot)
