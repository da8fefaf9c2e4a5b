"""report.html in a real browser: Debian's chromium, headless, takes a screenshot; a JavaScript error or an
empty page fails. `.ci/run` installs chromium; elsewhere the test is skipped when it is missing."""

import os
import re
import shutil
import subprocess

import pytest
from PIL import Image, ImageStat


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# Nothing but the page: no network, no first-run work, a profile of its own.
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--enable-logging=stderr", "--v=0"]
# How chromium logs what a page's console says; uncaught exceptions are logged this way too.
CONSOLE = re.compile(r":CONSOLE[:(]\d+\)?\] \"(.*)\", source: (.*)")

@pytest.fixture(autouse=True)
def needs_chromium():
    if CHROMIUM is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is missing in CI; .ci/run installs it with apt-get install chromium")
        pytest.skip("chromium is not installed (apt-get install chromium; .ci/run installs it)")


def chromium(tmp_path, *args):
    profile = tmp_path / f"profile-{len(list(tmp_path.glob('profile-*')))}"
    profile.mkdir()
    return subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *map(str, args)], capture_output=True,
                          text=True, timeout=120, stdin=subprocess.DEVNULL)


def look_at(tmp_path, page, screenshot=True):
    """Screenshot (if asked for) and rendered DOM of ``page``, and what its console logged."""
    logged = ""
    if screenshot:
        screenshot = tmp_path / f"{page.stem}.png"
        logged = chromium(tmp_path, f"--screenshot={screenshot}", "--window-size=1100,1400", "--hide-scrollbars",
                          page.as_uri()).stderr
    dom = chromium(tmp_path, "--dump-dom", page.as_uri())
    assert dom.returncode == 0, dom.stderr
    messages = [m.group(1) for m in CONSOLE.finditer(logged + dom.stderr)]
    return screenshot, dom.stdout, messages


def not_blank(image_path):
    image = Image.open(image_path).convert("L")
    return ImageStat.Stat(image).stddev[0] > 5  # a blank page is one flat colour


def test_the_console_check_catches_a_javascript_error(tmp_path):
    page = tmp_path / "broken.html"
    page.write_text("<!DOCTYPE html><html><body><h1>broken</h1><script>undefinedFunction();</script></body></html>")
    _, dom, messages = look_at(tmp_path, page, screenshot=False)
    assert "<h1>broken</h1>" in dom
    assert any("undefinedFunction" in m for m in messages), messages


def test_report_html_renders_in_chromium_without_errors(tmp_path, lpb, finished_run):
    assert lpb("report", finished_run).exit_code == 0
    screenshot, dom, messages = look_at(tmp_path, finished_run / "report.html")
    assert messages == []
    assert Image.open(screenshot).size == (1100, 1400) and not_blank(screenshot)
    for heading in ("Best prompt", "Is it really better?", "Fitness per generation", "Top prompts", "Lineage"):
        assert f"<h2>{heading}</h2>" in dom
    assert len(re.sub(r"<[^>]+>", " ", dom).split()) > 200  # words a reader sees
    assert dom.count('src="data:image/png;base64,') == 2
