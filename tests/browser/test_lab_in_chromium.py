"""A real browser: JupyterLab on loopback, Debian's Chromium driven by Playwright, notebook 04 run top to bottom,
the explorer's bit-width slider moved to a measured point, the perplexity it states checked to change, and a
screenshot saved; notebook 06's GPTQ stepper driven by its Step button and its act-order control, its figure
checked to change each time, and a group size that does not divide the layer answered with a message.

Skipped when Playwright (the Python package) or a system Chromium is missing; `.ci/run` installs Chromium from
Debian when it can. Playwright's own browser download is never used (``executable_path`` is the system one).
Screenshots go to ``test-output/`` at the repository root.
"""
from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK = "04_rtn_real_model.ipynb"
STEPPER_NOTEBOOK = "06_gptq.ipynb"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
playwright = pytest.importorskip("playwright.sync_api", reason="needs the playwright Python package")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="needs a system Chromium (Debian: apt-get install chromium)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    port, token = free_port(), secrets.token_hex(16)
    settings = tmp_path_factory.mktemp("jupyter")
    course = tmp_path_factory.mktemp("course")  # a copy: JupyterLab saves what it runs, the repository stays as is
    for name in (NOTEBOOK, STEPPER_NOTEBOOK):
        shutil.copy(ROOT / "notebooks" / name, course / name)
    news = settings / "lab-settings" / "@jupyterlab" / "apputils-extension"
    news.mkdir(parents=True)  # no "get notified about Jupyter news?" toast over the screenshot
    (news / "notification.jupyterlab-settings").write_text('{"fetchNews": "false", "checkForUpdates": false}')
    env = dict(os.environ, JUPYTER_CONFIG_DIR=str(settings / "config"), JUPYTER_DATA_DIR=str(settings / "data"),
               JUPYTERLAB_SETTINGS_DIR=str(settings / "lab-settings"), JUPYTERLAB_WORKSPACES_DIR=str(settings / "ws"))
    process = subprocess.Popen(
        [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
         f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={course}",
         "--LabApp.news_url=", "--ServerApp.disable_check_xsrf=False", "--allow-root"],
        cwd=course, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(120):
        try:
            urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2)
            break
        except OSError:
            time.sleep(0.5)
    else:
        process.terminate()
        pytest.fail("JupyterLab did not start within a minute")
    yield url, token
    process.terminate()
    process.wait(timeout=30)


def in_chromium(screenshot: str, drive, *args):
    """Run ``drive(page, *args)`` in a fresh headless Chromium; save a screenshot of where it ended."""
    output = ROOT / "test-output"
    output.mkdir(exist_ok=True)
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        try:
            return drive(page, *args)
        finally:  # the screenshot is the evidence, of success or of where it stopped
            page.screenshot(path=str(output / screenshot), full_page=False)
            browser.close()


def open_notebook(page, url: str, token: str, name: str) -> None:
    page.goto(f"{url}/lab/tree/{name}?token={token}")
    page.wait_for_selector(".jp-Notebook", timeout=120_000)
    try:  # a fresh profile may ask which kernel to start: the notebook's own (python3)
        page.click(".jp-Dialog .jp-mod-accept", timeout=15_000)
    except playwright.TimeoutError:
        pass
    page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle'], .jp-Toolbar", timeout=120_000)


def test_notebook_04_runs_and_its_slider_changes_the_perplexity(lab):
    url, token = lab
    errors = in_chromium("notebook04_slider.png", drive_notebook_04, url, token)
    assert not errors, f"{len(errors)} cell(s) of notebook 04 show an error"


def test_notebook_06_stepper_redraws_on_step_and_on_a_new_control(lab):
    url, token = lab
    result = in_chromium("notebook06_stepper.png", drive_notebook_06_stepper, url, token)
    assert not result["errors"], f"{len(result['errors'])} cell(s) of notebook 06 show an error"
    first, stepped, reordered = result["figures"]
    assert first != stepped != reordered != first, "the stepper's figure did not change"
    assert "step 1/16" in result["labels"][1] and "act-order" in result["labels"][2]
    assert "does not divide the 16 columns" in result["message"]


def drive_notebook_04(page, url: str, token: str) -> list:
    """Open notebook 04, run all cells, press ArrowLeft on the explorer's bits slider (INT4 -> INT3, both in its
    table, so it answers at once); the error outputs left on the page."""
    open_notebook(page, url, token, NOTEBOOK)
    page.keyboard.press("Escape")
    page.click(".lm-MenuBar-itemLabel:text-is('Run')", timeout=30_000)  # the Run menu of the menu bar
    page.click(".lm-Menu-itemLabel:text-is('Run All Cells')", timeout=30_000)
    find_summary = ("() => { const e = [...document.querySelectorAll('.widget-label')]"
                    ".find(e => e.innerText.includes('perplexity')); return e ? e.innerText : null; }")
    page.wait_for_function(find_summary, timeout=420_000)  # SmolLM2's table comes first: minutes on a busy CPU
    before = page.evaluate(find_summary)
    handle = page.wait_for_selector(".widget-slider .noUi-handle", timeout=60_000)
    handle.focus()
    page.keyboard.press("ArrowLeft")
    page.wait_for_function("before => [...document.querySelectorAll('.widget-label')]"
                           ".some(e => e.innerText.includes('perplexity') && e.innerText !== before)",
                           arg=before, timeout=60_000)
    # wait until every cell has run: no "[*]" prompts left
    page.wait_for_function("() => ![...document.querySelectorAll('.jp-InputPrompt')].some(e => e.innerText.includes('*'))",
                           timeout=300_000)
    return page.query_selector_all("[data-mime-type='application/vnd.jupyter.error']")


STEPPER_LABEL = ("() => { const e = [...document.querySelectorAll('.widget-label')]"
                 ".find(e => e.innerText.startsWith('toy layer')); return e ? e.innerText : null; }")
RUNNING = "() => [...document.querySelectorAll('.jp-InputPrompt')].some(e => e.innerText.includes('*'))"
# the image inside the stepper's own box (the box holding its "toy layer" label): JupyterLab may restore another
# notebook's tab beside it (notebook 04's, from the test before), whose widget images come first in the page
STEPPER_FIGURE = ("() => { const label = [...document.querySelectorAll('.widget-label')]"
                  ".find(e => e.innerText.startsWith('toy layer'));"
                  " const box = label ? label.closest('.widget-vbox') : null;"
                  " const e = box ? box.querySelector('.widget-output img') : null;"
                  " return e ? e.getAttribute('src') : null; }")


def drive_notebook_06_stepper(page, url: str, token: str) -> dict:
    """Open notebook 06, run the cells up to the toy stepper (the cells above the one after it), press Step, tick
    act-order, type a group size that does not divide the 16 columns; the stepper's figure (its image's bytes)
    and label after each, the message, and the error outputs left on the page."""
    open_notebook(page, url, token, STEPPER_NOTEBOOK)
    page.locator(".jp-Cell", has_text="The same object without the widget").first.click()
    page.click(".lm-MenuBar-itemLabel:text-is('Run')", timeout=30_000)
    page.click(".lm-Menu-itemLabel:text-is('Run All Above Selected Cell')", timeout=30_000)
    # the saved notebook may draw the widget from its stored state: wait for the cells to run ("[*]") and finish
    page.wait_for_function(f"() => ({RUNNING})()", timeout=60_000)
    page.wait_for_function(f"() => !({RUNNING})()", timeout=300_000)
    page.wait_for_function(STEPPER_LABEL, timeout=60_000)
    page.wait_for_function(STEPPER_FIGURE, timeout=60_000)
    figures, labels = [page.evaluate(STEPPER_FIGURE)], [page.evaluate(STEPPER_LABEL)]

    def after(action) -> None:
        action()
        page.wait_for_function(f"before => ({STEPPER_FIGURE})() !== before && ({STEPPER_LABEL})() !== null",
                               arg=figures[-1], timeout=60_000)
        figures.append(page.evaluate(STEPPER_FIGURE))
        labels.append(page.evaluate(STEPPER_LABEL))

    after(lambda: page.click(".widget-button:text-is('Step')"))
    after(lambda: page.locator(".widget-checkbox", has_text="act-order").locator("input").check())
    group_size = page.locator("input[placeholder='per channel or a divisor']")
    group_size.fill("5")
    group_size.press("Enter")
    page.wait_for_function("() => [...document.querySelectorAll('.widget-html')]"
                           ".some(e => e.innerText.includes('does not divide'))", timeout=60_000)
    message = page.evaluate("() => [...document.querySelectorAll('.widget-html')]"
                            ".map(e => e.innerText).find(t => t.includes('does not divide'))")
    return {"figures": figures, "labels": labels, "message": message,
            "errors": page.query_selector_all("[data-mime-type='application/vnd.jupyter.error']")}
