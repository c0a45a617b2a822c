"""Build the course notebooks: notebooks/src/NN_name.py (py:percent) -> notebooks/NN_name.ipynb, executed.

The .py sources are what people review and edit; the .ipynb files are generated from them, executed top to
bottom on the CPU with fixed seeds, and saved with their outputs so that nbval can compare the cells tagged
``nbval-check-output`` when CI runs them again. This is the one way to regenerate outputs:

    python tools/build_notebooks.py            # every notebook
    python tools/build_notebooks.py 02 04      # the ones whose names start with these prefixes
    python tools/build_notebooks.py --verify 02 04   # build, then check them under other CPU configurations

What a checked cell may print, and why (outputs must be the same on any x86-64 CPU): notebooks/AUTHORING.md.

Source format (a subset of jupytext's py:percent):

    # %% [markdown]
    # # A title
    # Some prose.

    # %% tags=["nbval-check-output"]
    print(1 + 1)

    # %% tags=["solution"]
    answer = 6 * 7   # an exercise's solution: its source starts collapsed in JupyterLab, and nbval runs it
"""
from __future__ import annotations

import ast
import os
import re
import sys
import time
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ROOT / "notebooks" / "src"
OUTPUT = ROOT / "notebooks"
SOLUTION = "solution"  # the tag of a cell that answers an exercise
CELL_MARKER = re.compile(r"^# %%(?P<markdown> \[markdown\])?(?: tags=(?P<tags>\[.*\]))?\s*$")


def parse(text: str) -> list:
    """Cells of a py:percent source."""
    cells, kind, tags, lines = [], None, [], []

    def flush():
        if kind is None:
            return
        body = "\n".join(lines).strip("\n")
        if kind == "markdown":
            body = "\n".join(line[2:] if line.startswith("# ") else line.lstrip("#") for line in body.splitlines())
            cell = nbformat.v4.new_markdown_cell(body)
        else:
            cell = nbformat.v4.new_code_cell(body)
        if tags:
            cell.metadata["tags"] = tags
        if SOLUTION in tags:  # JupyterLab opens the cell with its source folded away; the output stays visible
            cell.metadata["jupyter"] = {"source_hidden": True}
        cells.append(cell)

    for line in text.splitlines():
        match = CELL_MARKER.match(line)
        if match:
            flush()
            kind = "markdown" if match.group("markdown") else "code"
            tags = ast.literal_eval(match.group("tags")) if match.group("tags") else []
            lines = []
        elif kind is not None:
            lines.append(line)
    flush()
    return cells


POLL_SLICE_S = 1.0  # how long one wait on the kernel's shell channel may block before it looks again


def _client(notebook, **options):
    """An nbclient NotebookClient whose wait for a cell's reply polls the shell channel in short slices.

    nbclient waits for ``execute_reply`` with one ``poll(timeout)`` on the shell socket; now and then that poll
    misses a reply that has already arrived when the cell created a widget (jupyter/nbclient#312), and the build
    sits until the cell timeout (600 s) although the kernel answered in a fraction of a second. A fresh poll
    every POLL_SLICE_S seconds sees the waiting message, so the stall costs at most one slice.
    """
    from queue import Empty

    from nbclient import NotebookClient

    class SlicedPollClient(NotebookClient):
        async def async_start_new_kernel_client(self):
            client = await super().async_start_new_kernel_client()
            channel, blocking_get = client.shell_channel, client.shell_channel.get_msg

            async def get_msg(timeout=None):
                deadline = None if timeout is None else time.monotonic() + timeout
                while True:
                    left = POLL_SLICE_S if deadline is None else max(0.0, deadline - time.monotonic())
                    try:
                        return await blocking_get(timeout=min(POLL_SLICE_S, left))
                    except Empty:
                        if deadline is not None and time.monotonic() >= deadline:
                            raise

            channel.get_msg = get_msg
            return client

    return SlicedPollClient(notebook, **options)


def build(source: Path, execute: bool = True) -> Path:
    notebook = nbformat.v4.new_notebook()
    notebook.cells = parse(source.read_text())
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    notebook.metadata["language_info"] = {"name": "python"}
    target = OUTPUT / f"{source.stem}.ipynb"
    if execute:
        started = time.time()
        _client(notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(OUTPUT)}},
                allow_errors=False).execute()
        print(f"{source.stem}: executed in {time.time() - started:.1f} s")
    for cell in notebook.cells:  # volatile metadata nbval does not need
        cell.metadata.pop("execution", None)
    nbformat.write(notebook, target)
    return target


# The suite runs each notebook kernel with one compute thread (conftest.py), and the thread count changes the
# order of float additions in BLAS and with it, now and then, the last printed digit of a cell. So the kernels
# that write the outputs run with one thread too.
SINGLE_THREAD = ("QTUTOR_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")

# The CPU configurations a built notebook's checked cells must also pass under (the build itself runs on the
# machine's own vector kernels with one thread): torch's ATen kernels at AVX2 with MKL alike, no vectorization,
# and two threads.
VERIFY_CONFIGURATIONS = {
    "ATen and MKL at AVX2, 1 thread": {"ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"},
    "no vectorization (ATEN_CPU_CAPABILITY=default), 1 thread": {"ATEN_CPU_CAPABILITY": "default"},
    "the machine's own kernels, 2 threads": {variable: "2" for variable in SINGLE_THREAD} | {"OMP_WAIT_POLICY": "PASSIVE"},
}


def verify(targets: list[Path]) -> bool:
    """nbval on the built notebooks under every configuration of VERIFY_CONFIGURATIONS; True if all pass."""
    import subprocess

    passed = True
    for label, overrides in VERIFY_CONFIGURATIONS.items():
        environment = os.environ | {"QTUTOR_NOTEBOOK_CPU": "native"} | overrides
        command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", str(min(2, len(targets))),
                   *map(str, targets)]
        print(f"verify under {label}: {' '.join(command[3:])}", flush=True)
        result = subprocess.run(command, cwd=ROOT, env=environment)
        passed &= result.returncode == 0
    return passed


def main(arguments: list[str]) -> None:
    check = "--verify" in arguments
    prefixes = [a for a in arguments if a != "--verify"]
    sources = sorted(SOURCES.glob("*.py"))
    if prefixes:
        sources = [s for s in sources if any(s.stem.startswith(p) for p in prefixes)]
    if not sources:
        sys.exit(f"no notebook sources match {prefixes} in {SOURCES}")
    targets = [build(source) for source in sources]
    if check and not verify(targets):
        sys.exit("a checked cell prints differently under another CPU configuration: see notebooks/AUTHORING.md")


if __name__ == "__main__":
    for variable in SINGLE_THREAD:
        os.environ.setdefault(variable, "1")
    main(sys.argv[1:])
