"""Each optimize option declared once: the CLI, the Python API and the report use its one name."""

from __future__ import annotations

import inspect
import json

import pytest
from helpers import MODELS, assert_clean_error, run_cli

import onnx_sk
from onnx_sk.cli.params import option_parameters, options_from_cli
from onnx_sk.options import GROUPS, OptimizeOptions, flag_of, option_fields


def _declared() -> dict[str, str]:
    """Every option's flat name → its flag."""
    return {f.name: flag_of(f) for _, f in option_fields()}


def test_names_are_unique_and_flags_follow_names():
    names = [f.name for _, f in option_fields()]
    assert len(names) == len(set(names))
    for name, flag in _declared().items():
        assert flag in (f"--{name.replace('_', '-')}", f"--no-{name.replace('_', '-')}"), name


def test_every_option_is_in_the_cli_help():
    help_text = run_cli("optimize", "--help").stdout
    for flag in _declared().values():
        assert flag in help_text, flag
    for cls in GROUPS.values():
        assert cls.PANEL in help_text


def test_api_signature_is_generated_from_the_declarations():
    sig = inspect.signature(onnx_sk.optimize)
    assert list(sig.parameters)[:2] == ["model", "output"]
    declared = {f.name: f.default for _, f in option_fields()}
    assert {k: p.default for k, p in list(sig.parameters.items())[2:]} == declared


def test_from_flat_groups_and_rejects_unknown_names():
    o = OptimizeOptions.from_flat(design="dw-pw", threads=2, init="approx", round_to=8, seed=3)
    assert (o.reduce.design, o.latency.threads, o.fitting.init, o.widen.round_to, o.seed) == (
        "dw-pw", 2, "approx", 8, 3,
    )  # fmt: skip
    assert OptimizeOptions.from_flat(exclude=None).reduce.exclude == ()
    assert OptimizeOptions.from_flat(exclude=["a", "b"]).reduce.exclude == ("a", "b")
    with pytest.raises(TypeError, match="unexpected keyword argument 'lut_foreign'"):
        OptimizeOptions.from_flat(lut_foreign=True)
    with pytest.raises(TypeError):
        onnx_sk.optimize(MODELS / "tiny_cnn.onnx", desing="dw-pw")


def test_cli_arguments_map_back_to_the_options():
    values = {p.name: p.default.default for p in option_parameters()}
    assert "no_verify" in values and "verify" not in values
    values.update(no_verify=True, exclude=["conv1"], lut_from_target=True)
    o = options_from_cli(values)
    assert o.verify is False and o.reduce.exclude == ("conv1",) and o.latency.lut_from_target
    assert options_from_cli({p.name: p.default.default for p in option_parameters()}) == (
        OptimizeOptions()
    )


def test_report_options_use_the_declared_names(tmp_path):
    out, report = tmp_path / "o.onnx", tmp_path / "r.json"
    conv = "/features/features.3/Conv"  # --exclude must name a conv
    proc = run_cli(
        "optimize", MODELS / "tiny_cnn.onnx", out, "--report", report, "--exclude", conv, "-q"
    )
    assert proc.returncode == 0, proc.stderr
    options = json.loads(report.read_text())["options"]
    assert set(options) == set(_declared())
    assert options["exclude"] == [conv] and options["verify"] is True


def test_validation_lives_with_the_owner_and_keeps_its_messages(tmp_path):
    src = MODELS / "tiny_cnn.onnx"
    out = tmp_path / "o.onnx"
    assert_clean_error(
        run_cli("optimize", src, out, "--mode", "x"), "--mode 'x': expected reduce or widen"
    )
    assert_clean_error(
        run_cli("optimize", src, out, "--round-to", "8"), "--round-to needs --mode widen"
    )
    assert_clean_error(
        run_cli("optimize", src, out, "--threads", "2"),
        "--threads apply to --objective latency only",
    )
    assert_clean_error(
        run_cli("optimize", src, out, "--init", "he", "--calibration", "c.npz"),
        "--calibration needs --init approx",
    )
    assert_clean_error(
        run_cli("optimize", src, out, "--mode", "widen", "--objective", "latency"),
        "--objective latency needs --widen-init preserve in --mode widen (he mode re-chooses "
        "every design by counting, for widths not measured)",
    )
    assert not out.exists()


def test_default_init_is_approx_and_its_help_explains_the_init_error():
    fields = {f.name: f for _, f in option_fields()}
    assert OptimizeOptions().fitting.init == "approx"
    # widen he draws every widened conv fresh: no kernel to fit, so he is its default
    assert OptimizeOptions.from_flat(mode="widen").fitting.init == "he"
    assert OptimizeOptions.from_flat(mode="widen", widen_init="preserve").fitting.init == "approx"
    assert OptimizeOptions.from_flat(mode="widen", init="approx").fitting.init == "approx"
    text = fields["init"].metadata["help"]
    assert "he draws He-normal weights (retrain from scratch" in text
    assert "'init error' is the fit's relative weight error vs the original kernel" in text
