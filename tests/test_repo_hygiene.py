"""Guards on the repository's shape: Binder files as repo2docker wants them, notebooks clean and offline."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def test_binder_pins_everything_and_installs_qtutor_without_deps():
    requirements = (ROOT / "binder" / "requirements.txt").read_text().splitlines()
    packages = [line for line in requirements if line and not line.startswith(("#", "--"))]
    assert packages and all("==" in line for line in packages)
    assert not any(line.startswith(("-e", ".")) or "qtutor" in line for line in packages)
    assert any(line.startswith("torch==") and "+cpu" in line for line in packages)
    assert "--no-deps" in (ROOT / "binder" / "postBuild").read_text()
    assert (ROOT / "binder" / "start").read_text().rstrip().endswith('exec "$@"')


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebooks_are_clean_offline_and_built_from_their_sources(path):
    notebook = json.loads(path.read_text())
    assert notebook["metadata"]["kernelspec"]["name"] == "python3"
    assert (ROOT / "notebooks" / "src" / (path.stem + ".py")).is_file(), "edit notebooks/src and rebuild"
    for cell in notebook["cells"]:
        source = "".join(cell["source"])
        if cell["cell_type"] != "code":
            continue
        assert not re.search(r"^\s*[!%]pip", source, re.MULTILINE), "no installs inside notebooks"
        assert "http://" not in source and "https://" not in source, "no downloads"
        if ".cuda()" in source:
            assert "nbval-skip" in cell["metadata"].get("tags", []), "GPU-only cells are optional"
        assert cell.get("execution_count") is not None, "build notebooks with tools/build_notebooks.py"


def test_every_source_is_built_and_the_map_of_notebook_00_links_exactly_the_built_notebooks():
    sources = {path.stem for path in (ROOT / "notebooks" / "src").glob("*.py")}
    assert sources == {path.stem for path in NOTEBOOKS}, "build the notebooks: python tools/build_notebooks.py"
    start = (ROOT / "notebooks" / "src" / "00_start_here.py").read_text()
    linked = set(re.findall(r"\]\((\d\d_[a-z0-9_]+)\.ipynb\)", start))
    assert linked == sources - {"00_start_here"}


def test_ci_runs_the_readmes_test_command_verbatim():
    readme = (ROOT / "README.md").read_text()
    commands = re.findall(r"```bash\n(python -m pip install[^\n]*pytest[^\n]*)\n```", readme)
    assert len(commands) == 1, "the README's second command: install the test extras and run the suite"
    assert commands[0] in (ROOT / ".ci" / "run").read_text()
