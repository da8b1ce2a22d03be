"""The package's Jupyter kernel comes with the environment: ``make setup`` registers it in the venv.

Every notebook names the kernel ``adtr``; papermill and JupyterLab find it only where it is
registered. ``make setup`` registers it inside the venv (``ipykernel install
--sys-prefix``), so the venv's papermill runs the documented batch command right after
set-up, without ``make kernel`` and without touching the user's home.

The fast tests build a light venv in a temporary folder (no pip: a ``.pth`` file lends it
this interpreter's packages), run the Makefile's own set-up on it, and check that the
venv's Jupyter resolves ``adtr`` under the venv's prefix and that papermill runs a tiny
notebook naming it. The slow test runs the documented command as written, with the
repository's ``.venv``.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import site
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from adtr_core import paths
from adtr_core.figures.pipeline import KERNELSPEC

PAPERMILL_LINE = ".venv/bin/papermill notebooks/02_train_category.ipynb out.ipynb -p profile smoke"


def _isolated_env(tmp_path: Path) -> dict[str, str]:
    """Jupyter folders of the user and of the machine out of reach: only the venv's count."""
    env = dict(os.environ)
    # (and no settings of an outer `make test`: this make starts afresh)
    for key in ("JUPYTER_PATH", "JUPYTER_CONFIG_PATH", "VIRTUAL_ENV", "PYTHONPATH", "MAKEFLAGS",
                "MFLAGS", "MAKELEVEL"):  # fmt: skip
        env.pop(key, None)
    home = tmp_path / "home"
    env.update(
        HOME=str(home),
        JUPYTER_DATA_DIR=str(home / "jupyter-data"),
        JUPYTER_CONFIG_DIR=str(home / "jupyter-config"),
        JUPYTER_RUNTIME_DIR=str(home / "jupyter-runtime"),
        JUPYTER_PLATFORM_DIRS="0",
        IPYTHONDIR=str(home / "ipython"),
    )
    return env


def _light_venv(target: Path) -> Path:
    """A venv without pip whose site-packages point at this interpreter's (a ``.pth`` file)."""
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", "--without-pip", str(target)], check=True)
    python = target / "bin" / "python"
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    lent = [p for p in site.getsitepackages() if Path(p).is_dir()]
    (Path(purelib) / "lent.pth").write_text("\n".join(lent) + "\n")
    return python


def _make(venv: Path, target: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    if shutil.which("make") is None:
        pytest.skip("no `make` on this machine")
    return subprocess.run(
        ["make", "-C", str(paths.repo_root()), target, f"VENV={venv}"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture(scope="module")
def set_up_venv(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """A light venv on which ``make setup`` has run (its install step already done)."""
    tmp_path = tmp_path_factory.mktemp("setup")
    venv = tmp_path / "venv"
    _light_venv(venv)
    (venv / ".installed").touch()  # newer than pyproject.toml: only the kernel step is left
    env = _isolated_env(tmp_path)
    done = _make(venv, "setup", env)
    assert done.returncode == 0, done.stdout + done.stderr
    return venv, env


def test_make_setup_registers_the_kernel_inside_the_venv(set_up_venv):
    venv, env = set_up_venv
    listed = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "jupyter_client.kernelspecapp", "list", "--json"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    specs = json.loads(listed.stdout)["kernelspecs"]
    assert KERNELSPEC["name"] in specs, f"make setup did not register 'adtr': {sorted(specs)}"
    spec = specs[KERNELSPEC["name"]]
    assert Path(spec["resource_dir"]).resolve().is_relative_to(venv.resolve())
    assert spec["spec"]["display_name"] == KERNELSPEC["display_name"]
    assert Path(spec["spec"]["argv"][0]).parent.resolve() == (venv / "bin").resolve()
    assert not (Path(env["HOME"]) / ".local").exists(), "the user's home was written to"


def test_the_venvs_papermill_runs_a_notebook_naming_the_kernel(set_up_venv, tmp_path):
    venv, env = set_up_venv
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = dict(KERNELSPEC)
    nb.cells = [nbformat.v4.new_code_cell("import sys\nprint(sys.prefix)")]
    source, out = tmp_path / "tiny.ipynb", tmp_path / "out.ipynb"
    nbformat.write(nb, str(source))
    run = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "papermill", str(source), str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    printed = nbformat.read(str(out), as_version=4).cells[0].outputs[0]["text"].strip()
    assert Path(printed).resolve() == venv.resolve(), "the kernel is not the venv's python"


def test_make_kernel_registers_in_the_venv_and_on_request_in_the_home(set_up_venv, tmp_path):
    venv, _ = set_up_venv
    env = _isolated_env(tmp_path)
    kernel_json = venv / "share" / "jupyter" / "kernels" / "adtr" / "kernel.json"
    kernel_json.unlink()
    assert _make(venv, "kernel", env).returncode == 0
    assert kernel_json.is_file()
    user = _make(venv, "kernel", {**env, "KERNEL_SCOPE": "--user"})
    assert user.returncode == 0, user.stderr
    assert (Path(env["JUPYTER_DATA_DIR"]) / "kernels" / "adtr" / "kernel.json").is_file()


def test_the_documented_papermill_line_is_the_one_tested():
    """The README and the notebooks page give the batch command this file runs, word for word."""
    for page in ("README.md", "docs/notebooks.md"):
        assert PAPERMILL_LINE in (paths.repo_root() / page).read_text(), page
    notebook = paths.repo_root() / shlex.split(PAPERMILL_LINE)[1]
    assert nbformat.read(str(notebook), as_version=4).metadata["kernelspec"] == KERNELSPEC
    assert re.search(
        r"\$\(PY\) -m ipykernel install --sys-prefix", (paths.repo_root() / "Makefile").read_text()
    ), "make setup no longer registers the kernel in the venv"


@pytest.mark.slow
def test_the_documented_papermill_line_runs_after_make_setup(tmp_path):
    """The command as written, from the repository root, with its ``.venv`` (``make setup``)."""
    root = paths.repo_root()
    if not (root / ".venv" / "bin" / "papermill").exists():
        pytest.skip("no .venv here: run `make setup` first")
    env = _isolated_env(tmp_path)  # the kernel must come from .venv, not from the home folder
    words = shlex.split(PAPERMILL_LINE)
    words[2] = str(tmp_path / "out.ipynb")  # not into the repository
    run = subprocess.run(words, cwd=root, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    executed = nbformat.read(words[2], as_version=4)
    assert executed.metadata["kernelspec"]["name"] == KERNELSPEC["name"]
    assert not [o for c in executed.cells for o in c.get("outputs", []) if o.output_type == "error"]
