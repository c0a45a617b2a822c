"""Finding the course notebooks and opening them in JupyterLab (``qtutor lab``)."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

START_NOTEBOOK = "00_start_here.ipynb"


def notebooks_dir() -> Path:
    """``notebooks/`` of a source checkout, or the copy shipped inside the wheel (``qtutor/_notebooks``)."""
    here = Path(__file__).resolve().parent
    for candidate in (here.parent / "notebooks", here / "_notebooks"):
        if candidate.is_dir() and any(candidate.glob("*.ipynb")):
            return candidate
    raise FileNotFoundError(f"no course notebooks in {here.parent / 'notebooks'} or {here / '_notebooks'}")


def working_copy(destination: Path | None = None) -> Path:
    """Where the learner works: the checkout's notebooks/ in place, or a copy of the packaged ones.

    A wheel's notebooks live in site-packages, which a learner should not edit; they are copied once to
    ``./qtutor-course`` (kept as they are on later runs, so a learner's edits survive).
    """
    source = notebooks_dir()
    if source.name == "notebooks":
        return source
    destination = destination or Path.cwd() / "qtutor-course"
    if not destination.exists():
        shutil.copytree(source, destination)
    return destination


def launch_lab(open_browser: bool = True, port: int | None = None, dry_run: bool = False) -> dict:
    """Start JupyterLab with the course folder as its root and notebook 00 open."""
    try:
        import jupyterlab  # noqa: F401
    except ImportError as error:
        raise RuntimeError("JupyterLab is not installed: pip install 'qtutor[lab]'") from error
    folder = working_copy()
    command = [sys.executable, "-m", "jupyterlab", f"--ServerApp.root_dir={folder}",
               f"--LabApp.default_url=/lab/tree/{START_NOTEBOOK}"]
    if not open_browser:
        command.append("--no-browser")
    if port:
        command.append(f"--port={port}")
    if dry_run:
        return {"command": command, "folder": str(folder)}
    subprocess.run(command, check=False)
    return {"command": command, "folder": str(folder)}
