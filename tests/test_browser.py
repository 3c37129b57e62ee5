"""JupyterLab as a participant meets it: started by `make lab`, driven by a headless Chromium.

`make lab` runs in a copy of the repository (so that JupyterLab's saves and the notebooks' results
stay out of the checkout) with this virtual environment, the Makefile's environment variables and
the settings that `make install` wrote. Only the user's own Jupyter state is kept out: a fresh
user-settings, workspaces, config and runtime directory, so that a participant's own settings can
neither break nor fix what is tested. The browser is Debian's `chromium` through playwright (whose
own browser download is not used). Each notebook opens by double-click in the file browser, as a
participant opens it, and runs with Run → Run All Cells at its defaults. Screenshots go to
results/screenshots/ (ignored by git).
"""

import os
import re
import secrets
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from repository_copy import ROOT, VENV, copy_repository

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--no-first-run"]
SCREENSHOTS = ROOT / "results" / "screenshots"
ERROR = '[data-mime-type="application/vnd.jupyter.error"]'
STDERR = '[data-mime-type="application/vnd.jupyter.stderr"]'
RUN_TIMEOUT = 600  # seconds for one notebook's Run All (about 20 s each on the reference machine)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """The URL of JupyterLab started by `make lab` in a copy of the repository, and that copy."""
    if not CHROMIUM.exists():
        pytest.skip(f"no browser: {CHROMIUM} is missing (`apt-get install chromium`, as .ci/run does)")
    pytest.importorskip("playwright", reason="playwright is missing: `make install` installs it (requirements.txt)")
    home = tmp_path_factory.mktemp("lab")
    copy = copy_repository(home / "repository")
    port, token = free_port(), secrets.token_hex(16)
    environment = {
        **os.environ,
        **{name: str(home / folder) for name, folder in (
            ("JUPYTERLAB_SETTINGS_DIR", "user-settings"), ("JUPYTERLAB_WORKSPACES_DIR", "workspaces"),
            ("JUPYTER_CONFIG_DIR", "config"), ("JUPYTER_RUNTIME_DIR", "runtime"))},
    }
    arguments = (f"--no-browser --ServerApp.ip=127.0.0.1 --ServerApp.port={port} --ServerApp.port_retries=0 "
                 f"--IdentityProvider.token={token} --ServerApp.allow_root=True")
    log = (home / "lab.log").open("w")
    server = subprocess.Popen(
        ["make", "--no-print-directory", "-C", str(copy), f"VENV={VENV}", "lab", f"LAB_ARGS={arguments}"],
        stdout=log, stderr=subprocess.STDOUT, env=environment, start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status?token={token}", timeout=5)
                break
            except OSError:
                assert server.poll() is None, f"make lab stopped:\n{(home / 'lab.log').read_text()[-3000:]}"
                assert time.monotonic() < deadline, f"JupyterLab did not start:\n{(home / 'lab.log').read_text()[-3000:]}"
                time.sleep(1)
        yield f"http://127.0.0.1:{port}/lab?token={token}", copy
    finally:
        os.killpg(server.pid, signal.SIGTERM)  # make, JupyterLab and its kernels: the group started above
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        log.close()


@pytest.fixture(scope="module")
def page(lab):
    from playwright.sync_api import sync_playwright

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1300})
        page.goto(lab[0])
        page.locator(".jp-DirListing-itemText").first.wait_for(timeout=120_000)
        yield page
        browser.close()


def open_by_double_click(page, name):
    """Double-click ``name`` in the file browser (which `make lab` opens at notebooks/); the new tab."""
    page.locator(".jp-DirListing-itemText").get_by_text(name, exact=True).dblclick()
    tab = page.locator(".lm-TabBar-tab.lm-mod-current .lm-TabBar-tabLabel").get_by_text(name, exact=True)
    tab.wait_for(timeout=60_000)
    return page.locator(".jp-MainAreaWidget:not(.lm-mod-hidden)").filter(has=page.locator(".jp-Notebook"))


def run_all(page, panel):
    """Run → Run All Cells once the kernel is idle; return when no cell is queued or running."""
    indicator = panel.locator(".jp-Notebook-ExecutionIndicator")
    page.wait_for_function("el => el.dataset.status === 'idle'", arg=indicator.element_handle(), timeout=120_000)
    page.locator(".lm-MenuBar-itemLabel").get_by_text("Run", exact=True).click()
    page.locator(".lm-Menu-itemLabel").get_by_text("Run All Cells", exact=True).click()
    deadline = time.monotonic() + RUN_TIMEOUT
    prompts = panel.locator(".jp-CodeCell .jp-InputPrompt")
    quiet = 0
    while quiet < 3:  # three quiet polls in a row: nothing queued or running, kernel idle
        assert time.monotonic() < deadline, "Run All did not finish"
        time.sleep(1)
        busy = any("*" in text for text in prompts.all_text_contents()) or indicator.get_attribute("data-status") != "idle"
        quiet = 0 if busy else quiet + 1


def check_ran_cleanly(panel, name):
    """Every code cell ran (has an execution count), none raised, nothing warned about widgets."""
    prompts = panel.locator(".jp-CodeCell .jp-InputPrompt").all_text_contents()
    assert prompts and all(re.fullmatch(r"\[\d+\]:", text.strip()) for text in prompts), f"{name}: {prompts}"
    errors = panel.locator(ERROR)
    assert errors.count() == 0, f"{name} raised:\n{errors.first.inner_text()[:2000]}"
    warnings = "\n".join(panel.locator(STDERR).all_text_contents())
    assert "IProgress not found" not in warnings and "Traceback" not in warnings, warnings


def screenshot(page, element, filename):
    """What the participant sees with ``element``'s cell scrolled to the top of the notebook."""
    element.evaluate("el => (el.closest('.jp-Cell') || el).scrollIntoView({block: 'start'})")
    page.wait_for_timeout(500)
    page.screenshot(path=str(SCREENSHOTS / filename))


def figures(panel):
    """Rendered figures (image/png outputs), not Markdown images."""
    return panel.locator(".jp-OutputArea .jp-RenderedImage img")


@pytest.mark.parametrize("name", ["01_neuron_model.ipynb", "02_task_and_target.md", "03_training.ipynb",
                                  "04_evaluation.md"])
def test_a_notebook_opens_by_double_click_and_runs_with_figures(page, name):
    """In order, as a participant works: notebook 4 reads what notebook 3 saved. A `.md` opens as a
    notebook (jupytext's viewer is the default for Markdown), not in the text editor."""
    panel = open_by_double_click(page, name)
    panel.locator(".jp-Notebook .jp-Cell").nth(3).wait_for(timeout=60_000)  # a notebook, not the text editor
    stem = name.split(".")[0]
    screenshot(page, panel.locator(".jp-Cell").first, f"{stem}-opened.png")
    run_all(page, panel)
    check_ran_cleanly(panel, name)
    assert figures(panel).count() >= 1, f"{name} shows no figure"
    screenshot(page, figures(panel).first, f"{stem}-figure.png")
    if name.startswith("03_"):
        bar = panel.locator(".widget-hprogress")
        assert bar.count() >= 1, "the training's progress widget did not render"
        box = panel.locator(".widget-hbox").filter(has=page.locator(".widget-hprogress"))
        assert "80/80" in box.first.inner_text(), box.first.inner_text()
        screenshot(page, bar.first, f"{stem}-progress.png")
    if name.startswith("04_"):
        original = panel.locator('img[src*="original_workshop_five_variables"]')
        original.scroll_into_view_if_needed()
        page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=original.element_handle(),
                               timeout=30_000)
        screenshot(page, original, f"{stem}-original-workshop.png")
