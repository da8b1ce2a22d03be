"""JupyterLab in a real browser: notebook 02 opens with the package's kernel and runs.

Headless Chromium (Debian's ``chromium`` or ``chromium-headless-shell``, or the binary
named by ``ADTR_CHROMIUM``) is driven by Playwright through ``executable_path``:
Playwright's own browser download needs the network, and nothing here installs
anything. Without Chromium or Playwright the tests skip with a line saying how to
install them. Marked ``browser``: ``make test-browser`` runs them, ``.ci/run`` after
``make test``.

A JupyterLab server runs on 127.0.0.1 with a token, in temporary Jupyter folders that
hold the package's kernel (``adtr``, this interpreter), over a temporary folder with
copies of the notebooks; runs, figures and hand-run outputs go to temporary folders
too. The tests wait on the kernel's execution state (the server's REST API) and on
the files the notebook writes, not on cell counters (JupyterLab 4 does not render
off-screen cells); server, kernels and browser are stopped whatever happens.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import nbformat
import pytest
from helpers import unexpected_warnings

from adtr_core import paths
from adtr_core.figures.pipeline import KERNELSPEC, run_notebook

pytestmark = pytest.mark.browser

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
INSTALL_HINT = (
    "install Chromium to run the browser test: `apt-get install chromium` (Debian/Ubuntu; "
    "or chromium-headless-shell), or set ADTR_CHROMIUM to a Chrome/Chromium binary"
)
NOTEBOOK = "02_train_category"
PANEL = ".jp-NotebookPanel:not(.lm-mod-hidden)"  # the notebook tab on show
RUN_TIMEOUT_S = 600


def _chromium() -> str:
    candidates = [os.environ.get("ADTR_CHROMIUM")]
    candidates += [shutil.which(n) for n in ("chromium", "chromium-headless-shell")]
    found = next((c for c in candidates if c and os.access(c, os.X_OK)), None)
    if found is None:
        pytest.skip(f"no Chromium: {INSTALL_HINT}")
    return found


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Lab:
    """A JupyterLab server in temporary folders, spoken to over its REST API."""

    def __init__(self, root: Path, home: Path) -> None:
        self.root, self.home = root, home
        self.port, self.token = _free_port(), secrets.token_hex(16)
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None
        self.log = home / "lab.log"

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.pop("MPLBACKEND", None)  # the kernel's own inline backend shows the figures
        env.update(
            JUPYTER_DATA_DIR=str(self.home / "data"),
            JUPYTER_CONFIG_DIR=str(self.home / "config"),
            JUPYTER_RUNTIME_DIR=str(self.home / "runtime"),
            JUPYTERLAB_SETTINGS_DIR=str(self.home / "settings"),
            JUPYTERLAB_WORKSPACES_DIR=str(self.home / "workspaces"),
            IPYTHONDIR=str(self.home / "ipython"),
            HF_HUB_OFFLINE="1",
            PYTHONUNBUFFERED="1",
            # the kernels inherit these: a run writes nothing into the repository
            ADTR_SCRATCH=str(self.home / "scratch"),
            ADTR_RUNS=str(self.home / "runs"),
            ADTR_FIGURES=str(self.home / "figures"),
        )
        return env

    def register_kernel(self) -> None:
        """The package's kernel, as ``make kernel`` registers it, for this interpreter."""
        spec = self.home / "data" / "kernels" / KERNELSPEC["name"]
        spec.mkdir(parents=True)
        kernel = {
            "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": KERNELSPEC["display_name"],
            "language": "python",
            "metadata": {"debugger": True},
        }
        (spec / "kernel.json").write_text(json.dumps(kernel))
        # Nothing that reaches the network: no news, no update check, no extension manager.
        settings = self.home / "settings" / "@jupyterlab" / "apputils-extension"
        settings.mkdir(parents=True)
        (settings / "notification.jupyterlab-settings").write_text(
            json.dumps({"fetchNews": "false", "checkForUpdates": False})
        )

    def start(self) -> None:
        self.register_kernel()
        cmd = [
            sys.executable, "-m", "jupyter", "lab", "--no-browser",
            "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={self.port}",
            "--ServerApp.port_retries=0", f"--IdentityProvider.token={self.token}",
            f"--ServerApp.root_dir={self.root}", "--LabApp.extension_manager=readonly",
            "--LabApp.news_url=None",
            "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
            "--ServerApp.allow_root=True",  # CI containers run as root
        ]  # fmt: skip
        with open(self.log, "w") as log:
            self.process = subprocess.Popen(
                cmd, env=self.env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"JupyterLab exited: {self.log.read_text()[-2000:]}")
            try:
                self.api("GET", "api/status")
                return
            except OSError:
                time.sleep(0.5)
        raise RuntimeError(f"JupyterLab did not start in 120 s: {self.log.read_text()[-2000:]}")

    def api(self, method: str, path: str, body: dict | None = None):
        request = urllib.request.Request(
            f"{self.url}/{path}",
            method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Authorization": f"token {self.token}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            text = response.read().decode()
        return json.loads(text) if text else None

    def kernels(self, tries: int = 20) -> list[dict]:
        """The server's kernels. The server can fail the list (a 5xx) while it removes a kernel
        that is shutting down, a race between kernel shutdown and the list: ask again."""
        for _ in range(tries - 1):
            try:
                return self.api("GET", "api/kernels")
            except urllib.error.HTTPError as err:
                if err.code < 500:
                    raise
                time.sleep(0.5)
        return self.api("GET", "api/kernels")

    def shutdown_kernels(self) -> None:
        """Shut every kernel of the server down."""
        for kernel in self.kernels():
            self.api("DELETE", f"api/kernels/{kernel['id']}")

    def stop(self) -> None:
        """Shut the kernels down, then the server (its whole process group)."""
        if self.process is None or self.process.poll() is not None:
            return
        try:
            self.shutdown_kernels()
        except OSError:
            pass
        for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
            try:
                os.killpg(self.process.pid, sig)
                self.process.wait(timeout=wait)
                return
            except ProcessLookupError:
                return
            except subprocess.TimeoutExpired:
                continue


@pytest.fixture(scope="module")
def chromium_path() -> str:
    path = _chromium()
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        pytest.skip("no Playwright: `pip install playwright` (its browser download is not needed)")
    return path


@pytest.fixture(scope="module")
def lab(chromium_path, tmp_path_factory) -> Iterator[Lab]:
    root = tmp_path_factory.mktemp("lab_root")
    server = Lab(root, tmp_path_factory.mktemp("lab_home"))
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def browser(chromium_path, lab) -> Iterator:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        # launch() gives the browser a fresh temporary profile (user data dir) of its own
        instance = pw.chromium.launch(
            executable_path=chromium_path, headless=True, args=CHROMIUM_FLAGS
        )
        try:
            yield instance
        finally:
            instance.close()


def _copy_notebook(lab: Lab, name: str, edits: dict[str, str]) -> Path:
    """Copy a notebook into the server's folder, replacing parameter lines (the user's edit)."""
    nb = nbformat.read(str(paths.notebooks_dir() / f"{NOTEBOOK}.ipynb"), as_version=4)
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    lines = cell.source.splitlines()
    for key, line in edits.items():
        index = next(i for i, ln in enumerate(lines) if ln.startswith(f"{key} = "))
        lines[index] = line
    cell.source = "\n".join(lines)
    target = lab.root / f"{name}.ipynb"
    nbformat.write(nb, str(target))
    return target


def _open(browser, lab: Lab, name: str):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    # reset: a fresh workspace (no tabs of earlier tests restored), this notebook only
    page.goto(f"{lab.url}/lab/tree/{name}?reset&token={lab.token}", timeout=120_000)
    page.wait_for_selector(f"{PANEL} .jp-Cell", timeout=120_000)
    # the kernel the notebook names starts without a dialog, under its display name
    kernel_name = page.locator(f"{PANEL} .jp-NotebookPanel-toolbar .jp-KernelName")
    kernel_name.filter(has_text=KERNELSPEC["display_name"]).wait_for(timeout=60_000)
    _wait_idle(lab, timeout=120)
    return page


def _wait_idle(lab: Lab, timeout: float, settle: float = 2.0) -> None:
    """Until every kernel is idle for ``settle`` seconds (its state from the server)."""
    deadline = time.monotonic() + timeout
    idle_since = None
    while time.monotonic() < deadline:
        kernels = lab.kernels()
        if kernels and all(k["execution_state"] == "idle" for k in kernels):
            idle_since = idle_since or time.monotonic()
            if time.monotonic() - idle_since >= settle:
                return
        else:
            idle_since = None
        time.sleep(0.5)
    raise TimeoutError(f"kernel still busy after {timeout:.0f} s: {lab.kernels()}")


def _run_all_and_save(page, lab: Lab, target: Path, done: Path | None) -> dict:
    """Run all cells from the menu, wait for the end, save; return the saved notebook."""
    page.locator(".lm-MenuBar-item", has_text="Run").first.click()
    page.locator(".lm-Menu-item:visible", has_text="Run All Cells").first.click()
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while done is not None and not done.exists() and time.monotonic() < deadline:
        time.sleep(1)  # the last figure: the notebook reached its end (or timed out)
    _wait_idle(lab, timeout=max(10.0, deadline - time.monotonic()))
    before = target.stat().st_mtime_ns
    page.locator(f"{PANEL} .jp-Notebook").first.click()
    page.keyboard.press("Control+s")
    deadline = time.monotonic() + 30
    while target.stat().st_mtime_ns == before and time.monotonic() < deadline:
        time.sleep(0.2)
    return json.loads(target.read_text())


def _errors(nb: dict) -> list[str]:
    return [
        f"{out.get('ename')}: {out.get('evalue')}"
        for cell in nb["cells"]
        for out in cell.get("outputs", [])
        if out.get("output_type") == "error"
    ]


def _rendered_images(page) -> list[tuple[int, int]]:
    """Natural sizes of the images in the output areas that JupyterLab rendered."""
    return page.evaluate(
        """() => Array.from(document.querySelectorAll('.jp-OutputArea-output img'))
            .filter(img => img.complete)
            .map(img => [img.naturalWidth, img.naturalHeight])"""
    )


def test_notebook_02_runs_in_jupyterlab_with_the_smoke_profile(browser, lab):
    scratch = lab.home / "scratch"
    target = _copy_notebook(lab, NOTEBOOK, {"profile": 'profile = "smoke"  # one edited line'})
    committed = {p: p.stat().st_mtime_ns for p in paths.figures_dir().glob("02_*")}
    page = _open(browser, lab, target.name)
    try:
        saved = _run_all_and_save(
            page, lab, target, done=scratch / "smoke" / f"{NOTEBOOK}_score_maps.png"
        )
        assert not _errors(saved), f"error outputs: {_errors(saved)}"
        written = sorted(p.name for p in (scratch / "smoke").iterdir())
        assert f"{NOTEBOOK}_loss.png" in written and f"{NOTEBOOK}_score_maps.png" in written
        images = [
            out
            for cell in saved["cells"]
            for out in cell.get("outputs", [])
            if "image/png" in out.get("data", {})
        ]
        assert len(images) >= 2, "the notebook shows its figures"
        # every cell is on screen at some point: scroll through and collect rendered images
        sizes: set[tuple[int, int]] = set()
        page.mouse.move(700, 500)
        for _ in range(60):
            sizes.update(map(tuple, _rendered_images(page)))
            page.mouse.wheel(0, 800)
            page.wait_for_timeout(150)
        assert sizes and all(w > 0 and h > 0 for w, h in sizes), sizes
        stderr = [
            "".join(out["text"])
            for cell in saved["cells"]
            for out in cell.get("outputs", [])
            if out.get("name") == "stderr"
        ]
        assert not unexpected_warnings("\n".join(stderr)), stderr
        assert saved["metadata"]["kernelspec"]["name"] == KERNELSPEC["name"]
    finally:
        page.close()
        lab.shutdown_kernels()
    assert {p: p.stat().st_mtime_ns for p in paths.figures_dir().glob("02_*")} == committed


def test_a_notebook_that_raises_shows_an_error_output(browser, lab):
    """The check above can fail: a bad parameter stops the run with an error output."""
    target = _copy_notebook(lab, "02_bad_parameter", {"epochs": 'epochs = "abc"  # bad'})
    page = _open(browser, lab, target.name)
    try:
        saved = _run_all_and_save(page, lab, target, done=None)
    finally:
        page.close()
        lab.shutdown_kernels()
    errors = _errors(saved)
    assert errors and "epochs = 'abc' is not valid: expected an integer" in errors[0], errors


def test_an_executed_notebook_is_unchanged_by_opening_and_saving(browser, lab, tmp_path):
    """The pipeline writes executed notebooks in JupyterLab's form: saving changes no byte."""
    run = run_notebook(paths.notebooks_dir() / f"{NOTEBOOK}.ipynb", "smoke", tmp_path / "fig")
    assert run.error is None, run.error
    target = lab.root / "executed_02.ipynb"
    shutil.copy(tmp_path / "fig" / "executed" / f"{NOTEBOOK}.ipynb", target)
    original = target.read_bytes()
    os.utime(target, ns=(0, 0))  # so the save below shows in the modification time
    page = _open(browser, lab, target.name)
    try:
        page.wait_for_timeout(3000)
        page.locator(f"{PANEL} .jp-Notebook").first.click()
        page.keyboard.press("Control+s")
        deadline = time.monotonic() + 30
        while target.stat().st_mtime_ns == 0 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert target.stat().st_mtime_ns != 0, "JupyterLab did not save the notebook"
    finally:
        page.close()
        lab.shutdown_kernels()
    saved = target.read_bytes()
    if saved != original:
        import difflib

        diff = difflib.unified_diff(
            original.decode().splitlines(), saved.decode().splitlines(), lineterm="", n=1
        )
        pytest.fail("saving in JupyterLab changed the notebook:\n" + "\n".join(list(diff)[:40]))
