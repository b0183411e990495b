"""The pass infrastructure: the runner's contract, the pipelines, the dense twin's memory."""

from __future__ import annotations

import gc
import sys

import numpy as np
import onnx
import pytest
from helpers import MODELS

import onnx_sk
from onnx_sk import pipeline
from onnx_sk.errors import UserError, VerificationError
from onnx_sk.graph.load import load_model
from onnx_sk.options import OptimizeOptions
from onnx_sk.passes import twin as twin_pass
from onnx_sk.passes.base import PassError, PassResult, run_passes
from onnx_sk.passes.context import PassContext
from onnx_sk.pipeline import passes_for
from onnx_sk.report import ModelCounts, Report


def _ctx(model: onnx.ModelProto, **options: object) -> PassContext:
    opts = OptimizeOptions.from_flat(**options)
    return PassContext(
        options=opts,
        input_shapes={},
        source=load_model(model),
        report=Report(None, None, opts.flat()),
        before=ModelCounts.of(model),
    )


class _Touch:
    """A pass that marks the model (and says so)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def run(self, model: onnx.ModelProto, ctx: PassContext) -> PassResult:
        model.doc_string += self.name
        return PassResult(model, modified=True)


class _Look:
    name = "look"

    def run(self, model: onnx.ModelProto, ctx: PassContext) -> PassResult:
        return PassResult(model, modified=False)


class _Fail:
    def __init__(self, name: str, exc: Exception) -> None:
        self.name, self.exc = name, exc

    def run(self, model: onnx.ModelProto, ctx: PassContext) -> PassResult:
        raise self.exc


@pytest.fixture
def model() -> onnx.ModelProto:
    return onnx.load(MODELS / "tiny_cnn.onnx")


def test_runner_runs_in_order_and_tracks_changes(model):
    ctx = _ctx(model)
    out = run_passes([_Look(), _Touch("a"), _Touch("b")], model, ctx)
    assert out.doc_string.endswith("ab")
    assert ctx.passes_run == ["look", "a", "b"] and ctx.modified
    ctx = _ctx(model)
    run_passes([_Look()], model, ctx)
    assert not ctx.modified


def test_a_bug_names_the_pass_and_those_before_it(model):
    ctx = _ctx(model)
    boom = ZeroDivisionError("division by zero")
    with pytest.raises(PassError) as info:
        run_passes([_Look(), _Touch("a"), _Fail("widen", boom), _Touch("b")], model, ctx)
    assert str(info.value) == (
        "pass 'widen' failed (passes run before it: look, a): ZeroDivisionError: division by zero"
    )
    assert info.value.__cause__ is boom
    with pytest.raises(PassError, match=r"pass 'plan' failed \(passes run before it: none\)"):
        run_passes([_Fail("plan", KeyError("x"))], model, _ctx(model))


@pytest.mark.parametrize("exc", [UserError("bad input"), VerificationError("no match")])
def test_bad_input_reaches_the_user_unchanged(model, exc):
    with pytest.raises(type(exc)) as info:
        run_passes([_Touch("a"), _Fail("verify", exc)], model, _ctx(model))
    assert info.value is exc and str(exc) in ("bad input", "no match")
    assert exc.failed_pass == "verify" and exc.passes_before == ("a",)


@pytest.mark.parametrize(
    ("options", "names"),
    [
        (
            {},
            [
                "plan", "fit-targets", "init-weights", "dense-twin", "reduce", "provenance",
                "verify", "fidelity",
            ],
        ),
        (
            {"init": "he"},
            ["plan", "init-weights", "dense-twin", "reduce", "provenance", "verify", "fidelity"],
        ),
        (
            {"init": "approx", "max_error": 0.5, "for_training": True},
            [
                "plan", "fit-targets", "error-budget", "init-weights", "dense-twin", "reduce",
                "training-bn", "provenance", "verify", "fidelity",
            ],
        ),
        ({"mode": "widen"}, ["widen", "init-weights", "reduce", "provenance", "verify", "fidelity"]),
        ({"mode": "widen", "widen_init": "preserve"}, ["plan", "init-weights", "reduce", "widen", "provenance", "verify", "fidelity"]),
        ({"mode": "widen", "design": "none", "width_scale": 1.5}, ["widen", "provenance", "verify", "fidelity"]),
    ],
)  # fmt: skip
def test_pipelines_are_pass_lists(options, names):
    assert [p.name for p in passes_for(OptimizeOptions.from_flat(**options))] == names


@pytest.mark.skipif(sys.version_info < (3, 11), reason="CPython < 3.11 keeps call arguments alive")
def test_runner_holds_no_reference_to_the_model_while_a_pass_runs(model):
    """A pass that drops the model (the dense twin does) can free it: nobody else holds it."""
    counts: list[int] = []

    class _Drop:
        name = "drop"

        def run(self, m: onnx.ModelProto, ctx: PassContext) -> PassResult:
            ctx.source.model = None
            counts.append(sys.getrefcount(m))  # this frame's ``m`` + getrefcount's argument
            return PassResult(m, modified=False)

    ctx = _ctx(model)
    ctx.source.model = None
    run_passes([_Drop()], _copy(model), ctx)
    assert counts == [2]


@pytest.mark.skipif(sys.version_info < (3, 11), reason="CPython < 3.11 keeps call arguments alive")
def test_dense_twin_runs_with_the_python_copy_of_the_weights_released(tmp_path, monkeypatch):
    """While ONNX Runtime runs the twin from the file, no Python copy of the model is alive."""
    src = tmp_path / "in.onnx"
    onnx.save(onnx.load(MODELS / "resnet20_cifar.onnx"), src)
    loaded_models: list[onnx.ModelProto] = []
    counts: list[int] = []
    original_reference_outputs = twin_pass.reference_outputs
    original_load = pipeline.load_model

    def load_and_watch(source):
        loaded = original_load(source)
        loaded_models.append(loaded.model)
        return loaded

    def watching(*args, **kwargs):
        gc.collect()
        counts.append(sys.getrefcount(loaded_models[0]))  # the list's + getrefcount's argument
        return original_reference_outputs(*args, **kwargs)

    monkeypatch.setattr(pipeline, "load_model", load_and_watch)
    monkeypatch.setattr(twin_pass, "reference_outputs", watching)
    _, report = onnx_sk.optimize(src, tmp_path / "out.onnx")
    assert report.verification is not None and report.replaced > 0
    assert counts == [2]


def _copy(model: onnx.ModelProto) -> onnx.ModelProto:
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    return copy


def test_dense_twin_of_a_model_given_as_proto_swaps_kernels_and_restores_them(model):
    before = model.SerializeToString()
    result, report = onnx_sk.optimize(model, include_first=True)
    assert report.verification is not None and report.replaced > 0
    assert model.SerializeToString() == before  # the caller's model is never edited
    assert not any("::dense_twin::" in i.name for i in result.graph.initializer)
    assert np.isfinite(report.verification["max_rel_diff"])


def test_a_change_after_the_verified_file_was_staged_is_a_bug(model, tmp_path):
    """The verify pass stages the file it checks and that file is written: nothing may follow."""
    from onnx_sk.graph.save import OutputFile

    ctx = _ctx(model)
    with OutputFile(tmp_path / "out.onnx") as out:
        ctx.output = out

        class _Stage:
            name = "verify"

            def run(self, m: onnx.ModelProto, c: PassContext) -> PassResult:
                assert c.output is not None
                c.output.stage(m)
                return PassResult(m, modified=False)

        with pytest.raises(PassError, match="'late' changed the model after it was written out"):
            run_passes([_Touch("a"), _Stage(), _Touch("late")], model, ctx)
    assert list(tmp_path.iterdir()) == []  # the staged file is removed


def test_api_options_may_be_paths_and_the_report_stays_json(tmp_path):
    import json

    cal = tmp_path / "cal.npz"
    np.savez(cal, input=np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32))
    _, report = onnx_sk.optimize(MODELS / "tiny_cnn.onnx", init="approx", calibration=cal)
    assert report.options["calibration"] == str(cal)
    json.dumps(report.to_dict())
