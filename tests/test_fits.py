"""Fits computed once (maths/fits.py) and in worker processes (runtime/pool.py): the same
decisions and the same bytes whatever the number of workers, each distinct fit computed once."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import numpy as np
import onnx
import pytest
from helpers import MODELS, assert_clean_error, run_cli
from onnx import TensorProto, helper, numpy_helper

import onnx_sk
from onnx_sk.errors import UserError
from onnx_sk.graph.batchnorm import bn_scales
from onnx_sk.graph.convs import find_convs
from onnx_sk.graph.shapes import infer_shapes
from onnx_sk.maths import fits as fits_module
from onnx_sk.maths.approx import Target, fit, relative_errors
from onnx_sk.maths.designs import dense_equivalent, realisations
from onnx_sk.maths.fits import FitCache, digest, fit_with_errors
from onnx_sk.maths.spec import ConvSpec
from onnx_sk.options import OptimizeOptions
from onnx_sk.passes import objectives
from onnx_sk.passes.error_budget import decide_within, within_error
from onnx_sk.runtime.blas import single_blas_thread
from onnx_sk.runtime.pool import WORKERS_ENV, ordered_map, workers

MODEL = MODELS / "table1_w16_bn.onnx"  # unfused Conv→BN pairs, input [N, 3, H, W]


@pytest.fixture(scope="module")
def calibration(tmp_path_factory):
    path = tmp_path_factory.mktemp("cal") / "cal.npz"
    x = np.random.default_rng(0).standard_normal((4, 3, 32, 32)).astype(np.float32)
    np.savez(path, **{onnx.load(MODEL).graph.input[0].name: x})
    return path


def _pid(_: int) -> int:
    return os.getpid()


def _square(x: int) -> int:
    return x * x


def test_ordered_map_uses_worker_processes_and_keeps_the_order(monkeypatch):
    monkeypatch.setenv(WORKERS_ENV, "2")
    assert workers() == 2
    pids = ordered_map(_pid, list(range(6)))
    assert os.getpid() not in pids  # run in worker processes
    seen: list[tuple[int, int, int]] = []
    out = ordered_map(
        _square, list(range(7)), costs=[1, 9, 3, 0, 5, 2, 8], done=lambda *a: seen.append(a)
    )
    assert out == [x * x for x in range(7)]
    assert sorted(i for _, _, i in seen) == list(range(7)) and [n for n, _, _ in seen] == [
        1, 2, 3, 4, 5, 6, 7
    ]  # fmt: skip
    monkeypatch.setenv(WORKERS_ENV, "1")
    assert ordered_map(_pid, [0, 1]) == [os.getpid()] * 2  # one worker: in this process


def test_workers_default_is_the_cores_this_process_may_use(monkeypatch):
    monkeypatch.delenv(WORKERS_ENV, raising=False)
    assert workers() == len(os.sched_getaffinity(0))
    for bad in ("0", "-1", "two"):
        monkeypatch.setenv(WORKERS_ENV, bad)
        with pytest.raises(UserError, match=f"{WORKERS_ENV}={bad!r}: expected a whole number"):
            workers()


def test_bad_workers_variable_is_a_clean_cli_error(tmp_path, monkeypatch):
    monkeypatch.setenv(WORKERS_ENV, "0")
    out = tmp_path / "o.onnx"
    proc = run_cli("optimize", MODEL, out, "--max-error", "0.5")
    assert_clean_error(proc, f"{WORKERS_ENV}='0': expected a whole number of processes >= 1")
    assert not out.exists()


@pytest.mark.parametrize(
    "options",
    [{"max_error": 0.6}, {}, {"max_error": 0.9, "calibration": True}, {"calibration": True}],
    ids=["max-error", "approx", "max-error-calibration", "calibration"],
)
def test_one_and_two_workers_write_the_same_bytes(tmp_path, monkeypatch, calibration, options):
    options = {**options, "calibration": calibration} if "calibration" in options else options
    written = []
    for n in ("1", "2"):
        monkeypatch.setenv(WORKERS_ENV, n)
        out = tmp_path / f"w{n}.onnx"
        _, report = onnx_sk.optimize(MODEL, out, **options)
        assert report.replaced > 0
        written.append(out.read_bytes())
    assert written[0] == written[1]


def _two_convs_sharing_a_kernel(w: np.ndarray) -> onnx.ModelProto:
    """x → Conv(w) → Relu → Conv(w) → y: one initializer for both kernels."""
    c = w.shape[0]
    pads = {"pads": [1, 1, 1, 1]}
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["a"], name="c1", **pads),
        helper.make_node("Relu", ["a"], ["r"], name="relu"),
        helper.make_node("Conv", ["r", "w"], ["y"], name="c2", **pads),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, c, 8, 8])],
        [numpy_helper.from_array(w, "w")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _counting(monkeypatch) -> list[tuple]:
    """Every approx.fit call made through maths.fits, as (realisation, kernel, target) keys."""
    calls: list[tuple] = []

    def counted(real, weight, target=None):
        calls.append((real, digest(weight), fits_module.target_digest(target)))
        return fit(real, weight, target)

    monkeypatch.setattr(fits_module, "fit", counted)
    monkeypatch.setenv(WORKERS_ENV, "1")  # in this process, where the calls are counted
    return calls


def test_each_distinct_fit_is_computed_once(monkeypatch):
    calls = _counting(monkeypatch)
    w = np.random.default_rng(0).standard_normal((16, 16, 3, 3)).astype(np.float32)
    shared = _two_convs_sharing_a_kernel(w)
    _, report = onnx_sk.optimize(shared, max_error=0.95, include_first=True)
    assert report.replaced == 2
    assert calls and len(calls) == len(set(calls))  # no fit twice, init-weights included
    n_shared = len(calls)
    calls.clear()
    _, alone = onnx_sk.optimize(_one_conv(w), max_error=0.95, include_first=True)
    assert alone.replaced == 1 and len(calls) == n_shared  # the second conv cost no fit
    calls.clear()
    onnx_sk.optimize(shared, include_first=True)  # plain approx: one fit for both convs
    assert len(calls) == 1


def _one_conv(w: np.ndarray) -> onnx.ModelProto:
    m = _two_convs_sharing_a_kernel(w)
    del m.graph.node[1:]
    m.graph.node[0].output[0] = "y"
    return m


def test_max_error_on_a_real_model_refits_nothing(monkeypatch, calibration):
    calls = _counting(monkeypatch)
    _, report = onnx_sk.optimize(MODEL, max_error=0.9, calibration=calibration)
    assert report.replaced > 0 and len(calls) == len(set(calls))


def test_cached_decisions_and_weights_equal_direct_fits():
    """The pass's decisions are those of deciding each conv alone with a fresh cache, and the
    written stage weights are approx.fit's for the chosen realisation, bit for bit."""
    model = onnx.load(MODEL)
    options = OptimizeOptions.from_flat(max_error=0.6)
    sites = find_convs(model, infer_shapes(model, {"": (1, 3, 32, 32)}))
    plan = objectives.plan(sites, options)
    scales = bn_scales(model)
    targets = {s.node.output[0]: Target(scales.get(s.node.output[0])) for s in sites}
    cache = FitCache()
    decided = within_error(plan, options, targets, cache)
    with single_blas_thread():  # as the passes fit (results depend on BLAS's thread count)
        _check_direct(plan, decided, options, targets, cache)
    assert any(d.real is not None for d in decided)


def _check_direct(plan, decided, options, targets, cache) -> None:
    for before, after in zip(plan, decided, strict=True):
        if before.real is None:
            assert after is before or after.reason == before.reason
            continue
        target = targets[before.site.node.output[0]]
        alone = decide_within(before, options, target)
        assert (after.real, after.reason, after.note) == (alone.real, alone.reason, alone.note)
        if after.real is not None:
            found = cache.of(after.site.weight, target).lookup(after.real)
            assert found is not None
            direct = fit(after.real, after.site.weight, target)
            assert all(np.array_equal(a, b) for a, b in zip(found.weights, direct, strict=True))
            werr, oerr = relative_errors(
                after.site.weight, dense_equivalent(after.real.stages, direct), target
            )
            assert (found.weight_error, found.output_error) == (werr, oerr)


def test_fit_keys_tell_kernels_targets_and_realisations_apart():
    rng = np.random.default_rng(1)
    w = rng.standard_normal((8, 8, 3, 3)).astype(np.float32)
    cache = FitCache()
    spec = ConvSpec(8, 8, (3, 3))
    reals = realisations("dw-pw", spec)[:1] + realisations("gc-pwg", spec)[:1]
    a = cache.of(w, None)
    for real in reals:
        a.get(real)
    assert cache.computed == 2
    a.get(reals[0])
    cache.of(w.copy(), None).get(reals[0])  # the same bytes: the same kernel
    assert cache.computed == 2
    cache.of(w.astype(np.float64), None).get(reals[0])  # another dtype
    cache.of(w * 2, None).get(reals[0])  # another kernel
    cache.of(w, Target(row_scale=np.full(8, 2.0))).get(reals[0])  # another target
    assert cache.computed == 5
    got = cache.of(w, None).get(reals[1])
    direct = fit_with_errors(reals[1], w, None)
    assert all(np.array_equal(x, y) for x, y in zip(got.weights, direct.weights, strict=True))


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has ended
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs Linux /proc")
def test_workers_end_with_their_parent(tmp_path):
    """A run killed mid-fit leaves no worker computing on."""
    script = tmp_path / "nap.py"
    script.write_text(
        "import os, time\n"
        "from onnx_sk.runtime.pool import ordered_map\n"
        "def nap(x):\n"
        "    os.write(1, f'{os.getpid()}\\n'.encode())  # one write: atomic in a pipe\n"
        "    time.sleep(60)\n"
        "ordered_map(nap, [1, 2])\n"
    )
    env = {**os.environ, WORKERS_ENV: "2", "PYTHONPATH": str(MODELS.parent)}
    proc = subprocess.Popen(
        [sys.executable, str(script)], stdout=subprocess.PIPE, env=env, text=True
    )
    assert proc.stdout is not None
    pids = [int(proc.stdout.readline()) for _ in range(2)]
    assert all(_alive(p) for p in pids)
    proc.kill()
    proc.wait()
    deadline = time.monotonic() + 20
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_alive(p) for p in pids)
