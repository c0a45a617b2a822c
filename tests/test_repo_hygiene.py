"""Guards on the repository's shape: Binder files as repo2docker wants them, notebooks clean and offline."""
from __future__ import annotations

import json
import re
from pathlib import Path

import nbformat
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


def test_a_solution_cell_is_built_with_its_source_folded_and_nbval_still_runs_it():
    import importlib.util

    spec = importlib.util.spec_from_file_location("build_notebooks", ROOT / "tools" / "build_notebooks.py")
    builder = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(builder)
    cells = builder.parse('# %% [markdown]\n# Exercise: 6 x 7?\n\n# %% tags=["solution"]\nprint(6 * 7)\n\n# %%\nx = 1\n')
    assert [c.cell_type for c in cells] == ["markdown", "code", "code"]
    assert cells[1].metadata["jupyter"] == {"source_hidden": True} and cells[1].source == "print(6 * 7)"
    assert "jupyter" not in cells[2].metadata and "nbval-skip" not in cells[1].metadata["tags"]



def test_every_notebook_from_04_on_has_exercises_with_a_solution_cell():
    for path in NOTEBOOKS:
        if int(path.name[:2]) < 4:
            continue
        cells = nbformat.read(path, as_version=4).cells
        solutions = [c for c in cells if "solution" in c.metadata.get("tags", [])]
        assert solutions, f"{path.name}: write an exercise's solution in a cell tagged 'solution'"
        assert all(c.metadata.get("jupyter", {}).get("source_hidden") for c in solutions), path.name
        assert any("Exercise" in c.source for c in cells if c.cell_type == "markdown"), path.name
