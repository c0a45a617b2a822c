"""Every registered method does what its declaration says (``qtutor.methods.<name>.METHOD``), on the tiny model.

One parametrized test per promise: calibrated methods refuse to run without calibration text and say how to get
it; sequential ones capture their layers' inputs block by block, each block after the blocks before it are
quantized; a method that defines its format refuses another; and whatever phases a method runs (transform, hook,
replacement), the model comes back bit for bit. Then: nothing outside a method's own file branches on its name.
"""
from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import qtutor as qt  # noqa: E402
import qtutor.model  # noqa: E402
from qtutor import methods  # noqa: E402
from qtutor.eval.sweep import evaluate  # noqa: E402
from qtutor.metrics import relative_output_error  # noqa: E402
from qtutor.model.quantize import quantize_model  # noqa: E402

TOKENS = 256  # one window: these tests check what runs, not how well
EXAMPLE_FORMAT = {"gguf": "Q4_K_M"}  # the methods whose fmt is not a number format
ALL = list(methods.METHODS)
DECLARED = {name: methods.declaration(name) for name in ALL}
WITH_A_QUANTIZER = [name for name in ALL if DECLARED[name].replace is None]


@pytest.fixture(scope="module")
def calib():
    return qt.data.calibration(n_samples=4, seq_len=128)


def low_bit_format(name: str) -> str:
    """A coarse format the method takes: INT3, or for a method that lists its formats the last one listed."""
    return DECLARED[name].formats[-1] if DECLARED[name].formats else "int3"


def snapshot(model) -> dict:
    return {key: value.detach().clone() for key, value in model.state_dict().items()}


def assert_same_weights(model, before: dict) -> None:
    after = model.state_dict()
    assert set(after) == set(before)
    for key, value in before.items():
        assert torch.equal(after[key], value), f"{key} was not restored bit for bit"


def no_hooks_left(model) -> bool:
    return not any(module._forward_hooks or module._forward_pre_hooks for module in model.modules())


# the codebook searches take a minute or more on the whole tiny model: the promises are checked on its first block
FIRST_BLOCK = [f"model.layers.0.{part}" for part in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                                                     "self_attn.o_proj", "mlp.gate_proj", "mlp.up_proj",
                                                     "mlp.down_proj")]
ON_ONE_BLOCK = {"quip_sharp", "aqlm", "vptq", "any4", "affinequant"}


def scope(name: str) -> dict:
    return {"layers": FIRST_BLOCK} if name in ON_ONE_BLOCK else {}


def run_options(name: str, calib) -> dict:
    declared = DECLARED[name]
    return dict(fmt=EXAMPLE_FORMAT.get(name, "default"), calib=calib if declared.calibration else None)


def test_every_registered_method_declares_itself_under_its_name():
    assert len(ALL) == len(set(ALL)) >= 7
    for name, declared in DECLARED.items():
        assert isinstance(declared, methods.Method) and declared.name == name
        assert (declared.quantize, declared.weights, declared.replace) != (None, None, None), (
            f"{name} declares no way to quantize weights")
    from qtutor.model import phases

    for name, declared in DECLARED.items():  # every phase a declaration names exists in the model layer
        assert declared.transform in (None, *phases.TRANSFORMS), name
        assert declared.hook in (None, *phases.HOOKS), name
        assert declared.activations in phases.ACTIVATIONS, name
        assert declared.replace in (None, *phases.REPLACEMENTS), name


@pytest.mark.parametrize("name", [name for name in ALL if DECLARED[name].calibration])
def test_a_calibrated_method_refuses_to_run_without_calibration_and_says_how_to_get_it(tiny, name):
    model, tokenizer = tiny
    before = snapshot(model)
    with pytest.raises(ValueError, match=rf"{name} needs calibration data: calib=qt\.data\.calibration\("):
        quantize_model(model, name, calib=None, progress=False)
    with pytest.raises(ValueError, match=r"calib=qt\.data\.calibration\("):
        evaluate(model, tokenizer, name, max_tokens=TOKENS)
    assert_same_weights(model, before)


@pytest.mark.parametrize("name", [name for name in ALL if not DECLARED[name].calibration])
def test_a_method_without_calibration_runs_without_it(tiny, name):
    model, tokenizer = tiny
    point = evaluate(model, tokenizer, name, EXAMPLE_FORMAT.get(name, "default"), max_tokens=TOKENS)
    assert point["method"] == name and np.isfinite(point["ppl"]) and point["tokens"] > 0


class CaptureSpy:
    """Records which way quantize_model captured the layers' inputs (it imports both from qtutor.model)."""

    def __init__(self, monkeypatch):
        self.calls: list[str] = []
        blockwise, once = qtutor.model.blockwise_inputs, qtutor.model.capture_inputs

        def blockwise_inputs(*args, **kwargs):
            self.calls.append("blockwise")
            yield from blockwise(*args, **kwargs)

        def capture_inputs(*args, **kwargs):
            self.calls.append("once")
            return once(*args, **kwargs)

        monkeypatch.setattr(qtutor.model, "blockwise_inputs", blockwise_inputs)
        monkeypatch.setattr(qtutor.model, "capture_inputs", capture_inputs)


@pytest.mark.parametrize("name", WITH_A_QUANTIZER)
def test_the_layers_inputs_are_captured_as_declared(tiny, calib, monkeypatch, name):
    model, _ = tiny
    declared = DECLARED[name]
    spy = CaptureSpy(monkeypatch)
    with quantize_model(model, name, calib=run_options(name, calib)["calib"], progress=False,
                        **scope(name)) as report:
        errors = [layer.output_error for layer in report.layers]
    if declared.sequential:
        assert spy.calls == ["blockwise"]
    elif declared.layer_inputs:
        assert spy.calls[-1:] == ["once"] and "blockwise" not in spy.calls
    else:  # no inputs needed; a calibrated method's calib went to its transform only
        assert "blockwise" not in spy.calls
        assert all(error is None for error in errors)


@pytest.mark.parametrize("name", [name for name in ALL if DECLARED[name].sequential])
def test_a_sequential_method_sees_each_block_after_the_blocks_before_it_are_quantized(tiny, calib, name):
    # the second block's q_proj reads what the first block computes: its output error in the report must be the
    # one measured on the inputs of the model whose first block is already quantized, not on the float model's
    model, _ = tiny
    layer = "model.layers.1.self_attn.q_proj"
    W = qtutor.model.get_weight(qtutor.model.find_layer(model, layer))
    X_float = qtutor.model.capture_inputs(model, calib, [layer])[layer]
    with quantize_model(model, name, low_bit_format(name), calib=calib, keep_tensors=True, progress=False) as report:
        X_after_block_0 = qtutor.model.capture_inputs(model, calib, [layer])[layer]  # block 1's inputs: block 0's
        W_hat = report.tensors[layer].dequantize()
        reported = next(row.output_error for row in report.layers if row.name == layer)
    assert not np.allclose(X_float, X_after_block_0)
    assert reported == pytest.approx(relative_output_error(W, W_hat, X_after_block_0), rel=1e-4)
    assert reported != pytest.approx(relative_output_error(W, W_hat, X_float), rel=1e-3)


@pytest.mark.parametrize("name", [name for name in ALL if DECLARED[name].fixed])
def test_a_method_with_its_own_format_refuses_another(tiny, name):
    model, tokenizer = tiny
    declared = DECLARED[name]
    W = np.random.default_rng(0).standard_normal((16, 64)).astype(np.float32)
    other = "int3" if declared.fixed.get("fmt") != "int3" else "int4"
    with pytest.raises(ValueError, match=f"{name} quantizes its weights with .* by definition; fmt='{other}'"):
        qt.quantize_tensor(W, other, name)
    with pytest.raises(ValueError, match="by definition"):
        quantize_model(model, name, other, progress=False)
    with pytest.raises(ValueError, match="by definition"):
        evaluate(model, tokenizer, name, other, max_tokens=TOKENS)
    if "group_size" in declared.fixed:
        with pytest.raises(ValueError, match="group_size=32 asks for another"):
            qt.quantize_tensor(W, method=name, group_size=32)
    q = qt.quantize_tensor(W, method=name)  # left out, the method's own
    for key, value in declared.fixed.items():
        assert getattr(q, key) == value, key


@pytest.mark.parametrize("name", [name for name in WITH_A_QUANTIZER if DECLARED[name].formats])
def test_a_method_with_a_list_of_formats_refuses_one_not_on_it(tiny, name):
    model, tokenizer = tiny
    W = np.random.default_rng(0).standard_normal((16, 64)).astype(np.float32)
    with pytest.raises(ValueError, match=f"{name} takes the formats {', '.join(DECLARED[name].formats)}, not 'int3'"):
        qt.quantize_tensor(W, "int3", name)
    with pytest.raises(ValueError, match="takes the formats"):
        quantize_model(model, name, "int3", progress=False)
    with pytest.raises(ValueError, match="takes the formats"):
        evaluate(model, tokenizer, name, "int3", max_tokens=TOKENS)
    assert DECLARED[name].resolve()[0] == DECLARED[name].formats[0]


@pytest.mark.parametrize("name", [name for name in WITH_A_QUANTIZER if DECLARED[name].formats])
def test_a_method_that_lists_its_formats_takes_each_and_refuses_the_others(tiny, calib, name):
    model, _ = tiny
    options = run_options(name, calib)
    for fmt in DECLARED[name].formats:
        with quantize_model(model, name, fmt, layers=["model.layers.0.mlp.down_proj"], calib=options["calib"],
                            progress=False) as report:
            assert report.fmt == fmt and len(report.layers) == 1
    with pytest.raises(ValueError, match=f"{name} takes the formats {', '.join(DECLARED[name].formats)}, not 'int3'"):
        quantize_model(model, name, "int3", calib=options["calib"], progress=False)


@pytest.mark.parametrize("name", [name for name in WITH_A_QUANTIZER if not DECLARED[name].fixed
                                  and not DECLARED[name].formats])
def test_a_method_without_a_format_of_its_own_uses_the_one_asked_for(tiny, calib, name):
    with quantize_model(tiny[0], name, "int3", 64, calib=run_options(name, calib)["calib"], progress=False,
                        keep_tensors=True, **scope(name)) as report:
        assert report.fmt == "int3" and report.group_size == 64
        # the format's own bits (a method may store more besides, counted in extra["side_bits"]: AffineQuant's A^-1)
        assert all(3 < q.format.storage_bits(q) / q.codes.size < 4 for q in report.tensors.values())
        assert all(layer.bits_per_weight >= 3 for layer in report.layers)


@pytest.mark.parametrize("name", WITH_A_QUANTIZER)
def test_restore_gives_back_the_exact_original_weights(tiny, calib, name):
    model, _ = tiny
    before = snapshot(model)
    options = run_options(name, calib)
    report = quantize_model(model, name, options["fmt"], calib=options["calib"], progress=False, **scope(name))
    changed = [key for key, value in model.state_dict().items() if not torch.equal(value, before[key])]
    assert changed, f"{name} changed no weight"
    report.restore()
    assert_same_weights(model, before)


@pytest.mark.parametrize("name", ALL)
def test_every_phase_is_undone_after_a_measured_point(tiny, calib, name):
    model, tokenizer = tiny
    before = snapshot(model)
    options = run_options(name, calib)
    point = evaluate(model, tokenizer, name, options["fmt"], calib=options["calib"], max_tokens=TOKENS,
                     **scope(name))
    assert point["method"] == name and np.isfinite(point["ppl"])
    for option in DECLARED[name].options:  # the run options the method reads are in its point
        assert option in point, option
    assert_same_weights(model, before)
    assert no_hooks_left(model)


# ---- nothing outside a method's own file branches on its name -----------------------------------------------------
PACKAGE = Path(qt.__file__).resolve().parent


def method_files(name: str) -> set[Path]:
    module = methods.get(name)
    path = Path(module.__file__).resolve()
    return set(path.parent.rglob("*.py")) if path.name == "__init__.py" else {path}


def branches_on_a_method_name(path: Path) -> list[tuple[int, set[str]]]:
    """(line, names) of every ``x == "gptq"``, ``x != "awq"``, ``x in ("gptq", "awq")`` and the like: a comparison
    with a registered method's name as a constant."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if not isinstance(node, ast.Compare):
            continue
        constants = []
        for side in (node.left, *node.comparators):
            if isinstance(side, ast.Constant):
                constants.append(side.value)
            elif isinstance(side, (ast.Tuple, ast.List, ast.Set)):
                constants += [item.value for item in side.elts if isinstance(item, ast.Constant)]
        named = {value for value in constants if isinstance(value, str) and value in methods.METHODS}
        if named:
            found.append((node.lineno, named))
    return found


def test_the_branch_finder_finds_a_branch(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text('def f(method):\n    return method == "gptq" or method in ("awq", "x") or method == "int4"\n')
    assert branches_on_a_method_name(sample) == [(2, {"gptq"}), (2, {"awq"})]


# comparisons with a method's name that select data rather than behaviour: (file, name) -> why
DATA_NOT_BEHAVIOUR = {
    ("qtutor/eval/advisor.py", "rtn"): "a measured RTN row of a format stands in for that format's other methods",
}


def test_nothing_outside_a_methods_own_file_branches_on_its_name():
    own = {path: name for name in ALL for path in method_files(name)}
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = str(path.relative_to(PACKAGE.parent))
        for line, named in branches_on_a_method_name(path):
            others = {name for name in named - {own.get(path.resolve())} if (relative, name) not in DATA_NOT_BEHAVIOUR}
            if others:
                found.append(f"{relative}:{line} compares with {', '.join(sorted(others))}")
    assert not found, "\n".join(found)
