"""Headless Chromium (Debian's package) for the tests of pages the product writes: the DOM after scripts ran, and
a screenshot; `Articles` reads the review page's items out of a dumped DOM."""

from __future__ import annotations

import html.parser
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)

needs_chromium = pytest.mark.skipif(
    shutil.which("chromium") is None, reason="needs Debian's chromium (make test installs it)"
)


def chromium(work: Path, *args: str) -> str:
    """Run Chromium once with a fresh profile under `work`; its stdout."""
    profile = tempfile.mkdtemp(prefix="chromium-profile-", dir=work)
    done = subprocess.run(
        ["chromium", *FLAGS, f"--user-data-dir={profile}", *args], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, f"chromium exited {done.returncode}: {done.stderr[-2000:]}"
    return done.stdout


def dump_dom(page: Path, fragment: str = "") -> str:
    """The page's DOM once loaded and its scripts ran (`fragment`: the URL's #..., which sets the filters)."""
    return chromium(page.parent, "--dump-dom", page.as_uri() + fragment)


def screenshot(page: Path, out: Path, size: str = "1200,800") -> Path:
    chromium(page.parent, f"--window-size={size}", f"--screenshot={out}", page.as_uri())
    assert out.stat().st_size > 1000, "the screenshot is (nearly) empty"
    return out


class Articles(html.parser.HTMLParser):
    """The page's items: for each <article>, its classes, whether hidden, its key and the text of each cell."""

    def __init__(self, dom: str) -> None:
        super().__init__()
        self.items: list[dict] = []
        self.scripts = 0
        self.title = ""
        self.shown = ""
        self._field: str | None = None
        self._mark = False
        self.feed(dom)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        classes = (attrs.get("class") or "").split()
        if tag == "script":
            self.scripts += 1
        elif tag == "title":
            self._field = "title"
        elif tag == "article":
            self.items.append({"classes": classes, "hidden": "hidden" in attrs, "key": "", "cells": [], "marks": []})
        elif tag == "span" and attrs.get("id") == "shown":
            self._field = "shown"
        elif self.items and tag == "div" and "key" in classes:
            self._field = "key"
        elif self.items and tag == "p" and ("caption" in classes or "error" in classes):
            self.items[-1]["cells"].append("")
            self._field = "cell"
        elif self.items and tag == "mark":
            self.items[-1]["marks"].append("")
            self._mark = True

    def handle_endtag(self, tag):
        if tag == "mark":
            self._mark = False
        elif tag in ("title", "span", "div", "p"):
            self._field = None

    def handle_data(self, data):
        if self._field == "title":
            self.title += data
        elif self._field == "shown":
            self.shown += data
        elif self._field == "key":
            self.items[-1]["key"] += data
        elif self._field == "cell":
            self.items[-1]["cells"][-1] += data
            if self._mark:
                self.items[-1]["marks"][-1] += data

    def visible(self) -> list[dict]:
        return [item for item in self.items if not item["hidden"]]
