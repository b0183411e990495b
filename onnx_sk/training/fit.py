"""The two training stages of distillation, in torch (imported only through ``training.distill``).

Loss, per target tensor ``t`` (teacher) and prediction ``s`` (student), normalised per channel
(axis 1; the whole tensor for 1-D outputs) by the teacher's variance on the training samples,
``var_c``, so that no output or channel drowns the others by its scale:

    L(s, t) = mean over (n, c, ...) of (s − t)² / (var_c + 1e-6 · mean_c var_c + 1e-12)

except on the graph outputs that are distributions (:func:`onnx_sk.training.targets.distributions`:
a Softmax/LogSoftmax output, or every output along a given class axis), where it is
``T² · KL(softmax(t/T) ‖ softmax(s/T))`` along the class axis (probabilities are turned into
logits by their log first), ``T`` = :attr:`Method.temperature`.

- stage 0, scale (:meth:`Blocks.match_scale`): each block's last Conv rescaled per output channel
  to the teacher's mean and standard deviation, block by block in order (the caller keeps it only
  when the held-out loss falls);
- stage 1, block-wise: every block of :mod:`onnx_sk.training.blocks` runs on the tensors the
  student itself computed before it (detached: no gradient crosses a block border) and is trained
  on L(block's anchor, teacher's tensor of that name); all blocks step together, so a block's
  input is always what the already-trained student in front of it now gives; it may use
  :attr:`Method.stage1` of the time;
- stage 2, end-to-end: the whole student against the teacher's graph outputs, mean over outputs
  of L, plus :attr:`Method.aux` × the mean L over the anchors (the shared intermediate tensors).

The choices (:class:`onnx_sk.training.method.Method`) were measured on the MNIST ResNet of
``bench/train_mnist_resnet.py`` (README, "Label-free distillation"): stage 1 barely moved the
student's output loss there while costing a third of the time, the anchors in stage 2 slowed it
and cost accuracy, KL on the class scores gave more accuracy than the squared error at equal
epochs, lr 1e-2 beat 3e-3 and the cosine decay added to it; mixing samples cost accuracy when
epochs were few (it helped once when the student overfitted: not the default).

Both stages: Adam at ``lr`` (:func:`run_stage`'s schedule; the teacher's own weights at
:attr:`Method.carried_lr` times it, and stage 0 leaves them alone), batches in a seeded order,
the model in eval mode (BatchNormalization uses its running statistics, which stay as written;
its scale and shift train). After every epoch the held-out loss (stage 2's output term, on the
held-out samples) is measured; a stage stops after ``patience`` epochs without a better held-out
loss (with the cosine schedule, epochs of its second half; a cosine stage with a deadline runs
to it), and the best parameters are kept (so the result is never worse on the held-out split
than the start). Time-limited runs (``minutes``) depend on the machine's speed; epoch-limited
ones do not. Deterministic for a seed on CPU:
``torch.manual_seed``, deterministic algorithms, a fixed thread count.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import onnx
import torch

from onnx_sk.graph.tensors import with_outputs
from onnx_sk.training.blocks import Block
from onnx_sk.training.method import Method
from onnx_sk.training.module import OnnxModule

PATIENCE = 10
#: the fraction of a cosine stage's epochs after which epochs without a better held-out loss count
#: (a stage with a deadline is not stopped early: at the full budget, the CRNN recoveries the
#: patience stop ended at 735-888 s of 1,140 reached 0.928-0.946 string accuracy, run to the
#: deadline 0.944 and 0.944; README, "Recovery at the full budget")
COSINE_JUDGED = 0.5
#: ``schedule="plateau"``: the learning rate halves after this many epochs without a better
#: held-out loss (and again after as many more)
PLATEAU_EPOCHS = 3


@dataclass
class Curve:
    """One entry per epoch: stage, epoch, mean training loss, held-out output loss, seconds."""

    rows: list[dict] = field(default_factory=list)


def setup(seed: int, threads: int) -> None:
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.set_num_threads(threads)


def inverse_variance(targets: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """Per tensor: 1 / (var_c + eps) shaped to broadcast over a batch (channel axis 1)."""
    out = {}
    for name, t in targets.items():
        t64 = t.astype(np.float64)
        if t64.ndim >= 2:
            axes = tuple(i for i in range(t64.ndim) if i != 1)
            var = t64.var(axis=axes)
            shape = [1, -1] + [1] * (t64.ndim - 2)
        else:
            var = np.array([t64.var()])
            shape = [1] * max(t64.ndim, 1)
        var = var + 1e-6 * float(var.mean()) + 1e-12
        out[name] = torch.from_numpy((1.0 / var).astype(np.float32)).reshape(shape)
    return out


def nmse(s: torch.Tensor, t: torch.Tensor, inv: torch.Tensor) -> torch.Tensor:
    return ((s - t) ** 2 * inv).mean()


def as_logits(x: torch.Tensor, kind: str) -> torch.Tensor:
    """Logits (up to a constant along the class axis) of an output that is ``"logits"``,
    ``"log-probabilities"`` or ``"probabilities"``."""
    return torch.log(x.clamp_min(1e-12)) if kind == "probabilities" else x


def kl_divergence(s: torch.Tensor, t: torch.Tensor, axis: int, temperature: float) -> torch.Tensor:
    """``T² · KL(softmax(t/T) ‖ softmax(s/T))`` along ``axis``, mean over the other positions."""
    log_s = torch.log_softmax(s / temperature, dim=axis)
    log_t = torch.log_softmax(t / temperature, dim=axis)
    kl = (log_t.exp() * (log_t - log_s)).sum(dim=axis)
    return kl.mean() * temperature**2


def _as_tuple(out: torch.Tensor | tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    return out if isinstance(out, tuple) else (out,)


class Student:
    """The student as one OnnxModule whose outputs are the graph outputs then the anchors."""

    def __init__(
        self,
        model: onnx.ModelProto,
        outputs: list[str],
        anchors: list[str],
        method: Method | None = None,
    ) -> None:
        self.method = method or Method()
        probe, added = with_outputs(model, anchors)
        self.names = outputs + added
        self.outputs = outputs
        self.anchors = [a for a in anchors if a not in outputs]
        self.module = OnnxModule(probe).eval()

    def run(self, feeds: dict[str, torch.Tensor], one_at_a_time: bool) -> dict[str, torch.Tensor]:
        n = len(next(iter(feeds.values())))
        step = 1 if one_at_a_time else n
        parts = []
        for i in range(0, n, step):
            args = [feeds[k][i : i + step] for k in self.module.inputs]
            parts.append(_as_tuple(self.module(*args)))
        return {
            name: torch.cat([p[j] for p in parts]) if len(parts) > 1 else parts[0][j]
            for j, name in enumerate(self.names)
        }

    def output_loss(self, got: dict, want: dict, inv: dict) -> torch.Tensor:
        return torch.stack([self._term(o, got[o], want[o], inv[o]) for o in self.outputs]).mean()

    def _term(self, name: str, s: torch.Tensor, t: torch.Tensor, inv: torch.Tensor) -> torch.Tensor:
        m = self.method
        if m.temperature <= 0 or name not in m.distributions:
            return nmse(s, t, inv)
        axis, kind = m.distributions[name]
        return kl_divergence(as_logits(s, kind), as_logits(t, kind), axis, m.temperature)

    def loss(self, got: dict, want: dict, inv: dict) -> torch.Tensor:
        loss = self.output_loss(got, want, inv)
        if self.anchors and self.method.aux > 0:
            aux = torch.stack([nmse(got[a], want[a], inv[a]) for a in self.anchors]).mean()
            loss = loss + self.method.aux * aux
        return loss

    def values(self) -> dict[str, np.ndarray]:
        """The trained float constants by ONNX name."""
        return {
            name: getattr(self.module, key).detach().cpu().numpy()
            for name, key in self.module.keys.items()
        }


class Blocks:
    """The student's blocks as OnnxModules; a weight read by two blocks stays frozen here."""

    def __init__(self, blocks: list[Block]) -> None:
        self.blocks = blocks
        self.modules = [OnnxModule(b.model).eval() for b in blocks]
        seen: dict[str, int] = {}
        for m in self.modules:
            for name in m.keys:
                seen[name] = seen.get(name, 0) + 1
        for m in self.modules:
            for name, key in m.keys.items():
                value = getattr(m, key)
                if isinstance(value, torch.nn.Parameter) and seen[name] > 1:
                    value.requires_grad_(False)

    def parameters(self) -> list[torch.nn.Parameter]:
        return [p for m in self.modules for p in m.parameters() if p.requires_grad]

    def loss(self, feeds: dict, want: dict, inv: dict, one_at_a_time: bool) -> torch.Tensor:
        n = len(next(iter(feeds.values())))
        step = 1 if one_at_a_time else n
        total = []
        for i in range(0, n, step):
            env: dict = {k: v[i : i + step] for k, v in feeds.items()}
            for block, module in zip(self.blocks, self.modules, strict=True):
                outs = self._run(block, module, env, False)
                for name, value in zip(block.outputs, outs, strict=True):
                    env[name] = value.detach() if isinstance(value, torch.Tensor) else value
                if block.anchor in want:
                    w = want[block.anchor][i : i + step]
                    total.append(nmse(outs[0], w, inv[block.anchor]) * (len(w) / n))
        anchors = sum(1 for b in self.blocks if b.anchor in want)
        return torch.stack(total).sum() / anchors

    def match_scale(
        self,
        feeds: dict,
        want: dict,
        one_at_a_time: bool,
        keep: set[str] = frozenset(),  # type: ignore[assignment]
    ) -> int:
        """Stage 0, block by block in order: where the anchor comes out of a Conv whose weight
        only this block holds, rescale that Conv per output channel c so the block's output on
        ``feeds`` has the teacher's mean and standard deviation: ``W[c] ← a_c·W[c]``,
        ``B[c] ← a_c·B[c] + mean_t − a_c·mean_s`` with ``a_c = std_t / std_s`` (no bias: only
        ``a_c``); a Conv whose weight is in ``keep`` (the teacher's own) is left alone. Returns
        the number of blocks rescaled."""
        count = 0
        with torch.no_grad():
            env: dict = dict(feeds)
            for block, module in zip(self.blocks, self.modules, strict=True):
                outs = self._run(block, module, env, one_at_a_time)
                conv = _producer(block.model, block.anchor)
                if (
                    conv is not None
                    and block.anchor in want
                    and conv.input[1] not in keep
                    and _scale_conv(module, conv, outs[0], want[block.anchor])
                ):
                    count += 1
                    outs = self._run(block, module, env, one_at_a_time)
                env.update(zip(block.outputs, outs, strict=True))
        return count

    @staticmethod
    def _run(block: Block, module: torch.nn.Module, env: dict, one_at_a_time: bool) -> tuple:
        args = [env[x] for x in block.inputs]
        if not one_at_a_time:
            return _as_tuple(module(*args))
        n = len(args[0])
        parts = [_as_tuple(module(*[a[i : i + 1] for a in args])) for i in range(n)]
        return tuple(
            torch.cat([p[j] for p in parts])
            if isinstance(parts[0][j], torch.Tensor)
            else parts[0][j]
            for j in range(len(parts[0]))
        )

    def copy_into(self, student: Student) -> None:
        for m in self.modules:
            for name, key in m.keys.items():
                if name in student.module.keys:
                    target = getattr(student.module, student.module.keys[name])
                    with torch.no_grad():
                        target.copy_(getattr(m, key))


def _producer(model: onnx.ModelProto, name: str) -> onnx.NodeProto | None:
    """The Conv that writes ``name``, when its weight (and bias) are read by it alone."""
    node = next((n for n in model.graph.node if name in n.output), None)
    if node is None or node.op_type != "Conv" or len(node.input) < 2:
        return None
    reads = [x for n in model.graph.node for x in n.input]
    if any(reads.count(x) != 1 for x in node.input[1:] if x):
        return None
    return node


def _scale_conv(
    module: OnnxModule, conv: onnx.NodeProto, got: torch.Tensor, want: torch.Tensor
) -> bool:
    keys = module.keys
    w = getattr(module, keys[conv.input[1]]) if conv.input[1] in keys else None
    if not isinstance(w, torch.nn.Parameter) or not w.requires_grad or got.dim() < 2:
        return False
    axes = [i for i in range(got.dim()) if i != 1]
    mean_s, std_s = got.mean(axes), got.std(axes)
    mean_t, std_t = want.mean(axes), want.std(axes)
    a = torch.where(std_s > 1e-12, std_t / std_s.clamp_min(1e-12), torch.ones_like(std_s))
    w.mul_(a.reshape([-1] + [1] * (w.dim() - 1)))
    b_name = conv.input[2] if len(conv.input) > 2 else ""
    b = getattr(module, keys[b_name]) if b_name in keys else None
    if isinstance(b, torch.nn.Parameter) and b.requires_grad:
        b.mul_(a).add_(mean_t - a * mean_s)
    return True


@dataclass
class Stage:
    """What one stage needs: its parameters, the training loss of a batch, a deadline."""

    name: str
    params: list[torch.nn.Parameter]
    batch_loss: Callable[[np.ndarray], torch.Tensor]
    holdout_loss: Callable[[], float]
    state: Callable[[], dict]
    restore: Callable[[dict], None]
    #: ``id()`` of the parameters that train at ``slow_lr`` times the rate (the teacher's own)
    slow: frozenset[int] = frozenset()


def param_groups(params: list, slow: frozenset[int], slow_lr: float) -> list[dict]:
    """Adam's parameter groups: the parameters in ``slow`` at ``slow_lr`` times the rate, the
    rest at the rate (``base_lr`` is the factor the schedule scales)."""
    fast = [p for p in params if id(p) not in slow]
    slow_ps = [p for p in params if id(p) in slow]
    groups = [{"params": ps, "factor": f} for ps, f in ((fast, 1.0), (slow_ps, slow_lr)) if ps]
    return groups


def run_stage(
    stage: Stage,
    n_train: int,
    batch_size: int,
    epochs: int,
    lr: float,
    deadline: float,
    rng: np.random.Generator,
    curve: Curve,
    start: float,
    progress: Callable[[dict], None] | None,
    patience: int = PATIENCE,
    schedule: str = "constant",
    slow_lr: float = 1.0,
) -> None:
    """Train one stage with early stopping on the held-out loss; the best state is kept.
    ``schedule="cosine"``: the learning rate follows ``lr · (1 + cos(π·f)) / 2``, ``f`` the
    fraction of the stage done (of its epochs or of its time to ``deadline``, the larger);
    ``"plateau"``: it halves after every ``PLATEAU_EPOCHS`` epochs without a better held-out loss.
    With the cosine schedule only the epochs in the second half of the stage (``COSINE_JUDGED``)
    count towards the ``patience`` stop (the high-rate start is noisy; the low-rate end is where
    the loss falls most), and a stage with a finite ``deadline`` is not stopped early: the user
    gave the time, the rate reaches 0 at the deadline, and the best state is kept either way."""
    if not stage.params or epochs <= 0:
        return
    opt = torch.optim.Adam(param_groups(stage.params, stage.slow, slow_lr), lr=lr)
    for group in opt.param_groups:
        group["base_lr"] = group["lr"] = lr * group["factor"]
    best, best_state, bad = stage.holdout_loss(), stage.state(), 0
    t0 = time.monotonic()
    steps = math.ceil(n_train / batch_size)

    def fraction(epochs_done: float) -> float:
        """The fraction of the stage done: of its epochs or of its time, the larger."""
        f = epochs_done / epochs
        if math.isfinite(deadline):
            f = max(f, (time.monotonic() - t0) / max(deadline - t0, 1e-9))
        return min(f, 1.0)

    for epoch in range(1, epochs + 1):
        if time.monotonic() >= deadline:
            break
        order = rng.permutation(n_train)
        losses = []
        for i, b in enumerate(range(0, n_train, batch_size)):
            done = fraction(epoch - 1 + i / steps)
            if schedule == "cosine":
                for group in opt.param_groups:
                    group["lr"] = group["base_lr"] * (1 + math.cos(math.pi * done)) / 2
            opt.zero_grad()
            loss = stage.batch_loss(order[b : b + batch_size])
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
            if time.monotonic() >= deadline:
                break
        held = stage.holdout_loss()
        done = fraction(epoch)
        row = {
            "stage": stage.name,
            "epoch": epoch,
            "train_loss": float(np.mean(losses)),
            "holdout_loss": held,
            "seconds": round(time.monotonic() - start, 2),
        }
        curve.rows.append(row)
        if progress is not None:
            progress(dict(row, epochs=epochs))
        if held < best and math.isfinite(held):
            best, best_state, bad = held, stage.state(), 0
        elif schedule != "cosine" or (done >= COSINE_JUDGED and not math.isfinite(deadline)):
            bad += 1
            if bad >= patience:
                break
            if schedule == "plateau" and bad % PLATEAU_EPOCHS == 0:
                for group in opt.param_groups:
                    group["lr"] *= 0.5
    stage.restore(best_state)


def train_blocks(
    blocks: Blocks,
    student: Student,
    holdout_loss: Callable[[], float],
    cal_feeds: dict,
    cal_want: dict,
    batch_loss: Callable[[np.ndarray], torch.Tensor],
    one_at_a_time: bool,
    run: Callable[[Stage], None],
    slow: set[str] = frozenset(),  # type: ignore[assignment]
) -> int:
    """Stages 0 and 1 on ``blocks``; ``student`` ends with the blocks' best parameters.

    Stage 0 (:meth:`Blocks.match_scale` on ``cal_feeds``/``cal_want``) is kept only when the
    student's held-out loss falls. Returns the number of blocks stage 0 rescaled (0 if undone).
    """

    def state() -> dict:
        return {i: module_state(m) for i, m in enumerate(blocks.modules)}

    def restore(saved: dict) -> None:
        for i, m in enumerate(blocks.modules):
            m.load_state_dict(saved[i])
        blocks.copy_into(student)

    def held() -> float:
        blocks.copy_into(student)
        return holdout_loss()

    loss0, state0 = holdout_loss(), state()
    scaled = blocks.match_scale(cal_feeds, cal_want, one_at_a_time, slow)
    if scaled and held() >= loss0:
        restore(state0)
        scaled = 0
    slow_ids = frozenset().union(*(ids_of(m, slow) for m in blocks.modules))
    run(Stage("blocks", blocks.parameters(), batch_loss, held, state, restore, slow_ids))
    return scaled


def ids_of(module: OnnxModule, names: set[str]) -> frozenset[int]:
    """``id()`` of the module's tensors whose ONNX names are in ``names``."""
    return frozenset(id(getattr(module, key)) for name, key in module.keys.items() if name in names)


def module_state(module: torch.nn.Module) -> dict:
    return copy.deepcopy(module.state_dict())


def freeze_except(module: torch.nn.Module, names: dict[str, str], trainable: set[str]) -> None:
    """Stop the gradient of every parameter whose ONNX name is not in ``trainable``."""
    for name, key in names.items():
        value = getattr(module, key)
        if isinstance(value, torch.nn.Parameter) and name not in trainable:
            value.requires_grad_(False)
