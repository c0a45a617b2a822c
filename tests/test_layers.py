"""The package is layered one way: a module imports only from its own layer or the layers below it, and no two
modules import each other, directly or round a longer loop (imports inside functions included).

    formats  (and tensor, backend, kernels,     number formats, arrays in, arrays out; the output-error metric
              metrics)
    data     beside formats                     the corpus, tokenizer, calibration batches
    methods                                     quantization methods, arrays in, arrays out: no model code
    model    (and training)                     torch: load, walk, capture, quantize_model, folds, hooks; QAT
    eval                                        perplexity, divergence, sweeps, footprints
    top      viz, cli, notebook, the package    what a learner or a terminal calls

The imports are read from the source with ``ast``, so a lazy import inside a function counts as much as one at
the top of a file, and so does ``importlib.import_module("qtutor....")`` with a constant name. An edge goes to the
module named in the import (``from qtutor.formats.base import Format`` -> ``qtutor.formats.base``;
``from qtutor import formats`` -> ``qtutor.formats``), not to the packages above it that Python also initializes:
a package's ``__init__`` importing its own submodules is not a cycle.

Code that moves up a layer may keep its old name answering for a while, through a module-level
``MOVED = {name: "new.module"}`` table and a PEP 562 ``__getattr__``, so that notebooks written before the move still
run; such names are listed in ``ALIASES``, checked below to exist at both addresses, and removed once nothing calls
them (none are left: the notebooks import from the new modules).
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "qtutor"

# module-name prefix -> layer; the longest matching prefix wins
LAYER_OF_PREFIX = {
    "qtutor.formats": "formats", "qtutor.tensor": "formats", "qtutor.backend": "formats",
    "qtutor.kernels": "formats", "qtutor.ops": "formats", "qtutor.metrics": "formats",
    "qtutor.data": "data",
    "qtutor.methods": "methods", "qtutor.synth": "methods",
    "qtutor.model": "model", "qtutor.zoo": "model", "qtutor.training": "model",
    "qtutor.eval": "eval",
    "qtutor.viz": "top", "qtutor.cli": "top", "qtutor.notebook": "top", "qtutor.check": "top",
    "qtutor.course": "top", "qtutor": "top",
}
# what each layer may import (its own layer included)
ALLOWED = {
    "formats": {"formats"},
    "data": {"data", "formats"},
    "methods": {"methods", "formats"},
    "model": {"model", "methods", "formats", "data"},
    "eval": {"eval", "model", "methods", "formats", "data"},
    "top": {"top", "eval", "model", "methods", "formats", "data"},
}


# (old module, name, new module): the names that moved up and still answer at their old address (none left)
ALIASES: set[tuple[str, str, str]] = set()


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def layer_of(module: str) -> str:
    prefixes = [prefix for prefix in LAYER_OF_PREFIX if module == prefix or module.startswith(prefix + ".")]
    if not prefixes:
        raise AssertionError(f"{module} is in no layer: add its prefix to LAYER_OF_PREFIX")
    return LAYER_OF_PREFIX[max(prefixes, key=len)]


def parse(module: str) -> ast.Module:
    path = MODULES[module]
    return ast.parse(path.read_text(), str(path))


def imports_of(module: str) -> list[tuple[str, int]]:
    """(imported qtutor module, line) for every import statement in ``module``, at any depth."""
    is_package = MODULES[module].name == "__init__.py"
    found = []
    for node in ast.walk(parse(module)):
        if isinstance(node, ast.Call) and _is_import_module(node.func) and node.args:
            if isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
                found.append((node.args[0].value, node.lineno))
        elif isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # a relative import: resolve it against this module's package
                package = module.split(".") if is_package else module.split(".")[:-1]
                base = ".".join(package[: len(package) - node.level + 1] + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                found.append((submodule if submodule in MODULES else base, node.lineno))
    return [(name, line) for name, line in found if name == "qtutor" or name.startswith("qtutor.")]


def _is_import_module(function: ast.expr) -> bool:
    return (isinstance(function, ast.Attribute) and function.attr == "import_module") or (
        isinstance(function, ast.Name) and function.id == "import_module")


def moved_names(module: str) -> set[tuple[str, str, str]]:
    """(module, name, new module) for the entries of a module-level ``MOVED = {name: "new.module"}``."""
    found = set()
    for node in parse(module).body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "MOVED" for t in node.targets):
            table = ast.literal_eval(node.value)
            found |= {(module, name, target) for name, target in table.items()}
    return found


GRAPH = {module: sorted({name for name, _ in imports_of(module) if name != module and name in MODULES})
         for module in MODULES}


def test_the_walk_sees_the_package_and_its_lazy_imports():
    # guards the test itself: a walk that found nothing would pass everything below
    assert {"qtutor.formats.base", "qtutor.methods.gptq", "qtutor.model.quantize", "qtutor.cli"} <= set(MODULES)
    assert "qtutor.methods" in GRAPH["qtutor.model.quantize"]  # imported at the top of the file
    assert "qtutor.model.quantize" in GRAPH["qtutor.eval.sweep"]  # imported inside evaluate()


def test_the_moved_names_are_the_listed_aliases_and_answer_at_both_addresses():
    import importlib

    found = set().union(*(moved_names(module) for module in MODULES))
    assert found == ALIASES, "a MOVED table changed: list its aliases in ALIASES (or remove them from there)"
    for old, name, new in sorted(ALIASES):
        assert getattr(importlib.import_module(old), name) is getattr(importlib.import_module(new), name)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_module_imports_a_higher_layer(module):
    layer = layer_of(module)
    upward = [f"line {line}: {name} ({layer_of(name)})" for name, line in imports_of(module)
              if layer_of(name) not in ALLOWED[layer]]
    assert not upward, f"{module} (layer {layer}) imports from a higher layer: " + "; ".join(upward)


def find_cycle(graph: dict[str, list[str]]) -> list[str] | None:
    """One cycle of ``graph`` as [a, b, ..., a], or None (depth-first search, white/grey/black)."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for successor in graph.get(node, ()):
            if state.get(successor) == 1:
                return stack[stack.index(successor):] + [successor]
            if successor not in state:
                cycle = visit(successor)
                if cycle:
                    return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_find_cycle_finds_one_and_only_one():
    assert find_cycle({"a": ["b"], "b": ["c"], "c": ["a"], "d": ["a"]}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": ["b", "c"], "b": ["c"], "c": []}) is None


def test_no_import_cycle():
    cycle = find_cycle(GRAPH)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)
