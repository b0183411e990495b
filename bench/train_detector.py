"""A small CenterNet-style shape detector trained on rendered scenes (issue 13's detector).

Scenes (:func:`render`, seeded, PIL): 96×96 RGB, a background of a random colour with a linear
gradient, a few random clutter lines and Gaussian pixel noise; 1-6 filled objects of three
classes (0 rectangle, 1 ellipse, 2 triangle), 12-40 px a side, random colours with a luminance
contrast of at least 60 against the background, overlapping at most 15 % of the smaller box.
A label is ``(class, x0, y0, x1, y1)`` in pixels.

The network (:class:`Detector`): four stride-2 stages of dense 3×3 conv + BatchNorm + ReLU (the
third ends in a CSP-style block: a channel Slice, a conv on one half, a Concat back), an FPN-ish
neck (nearest and bilinear ×2 upsampling, i.e. Resize, each Concat-ed with the lateral stage) and
a head whose 1×1 conv output is ``torch.split`` into the class heatmap (sigmoid), the box size
and the centre offset, at stride 4 (24×24 cells). Loss: CenterNet's penalty-reduced focal loss on
Gaussian heatmaps, L1 on size (×0.1) and offset at the centres. Decoding (:func:`decode`, numpy):
heatmap peaks that survive a 3×3 max-pool and score ≥ ``THRESHOLD``, size and offset read there.
Metric (:func:`f1`): greedy matching at IoU ≥ 0.5 within a class, F1 over the test set.

Test set: :func:`test_set` (300 scenes, seed 1000); training scenes are drawn on the fly from
seed 0; the recovery benchmark's unlabelled scenes use other seeds (:func:`scenes`).

    PYTHONPATH=. python bench/train_detector.py --out-dir models/trained

writes ``detector_ts.onnx`` (TorchScript exporter) and ``detector_dynamo.onnx`` (dynamo),
checks both against torch in ONNX Runtime and prints the test F1 of torch and of each file.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw
from torch import nn

SIZE = 96
STRIDE = 4
CELLS = SIZE // STRIDE
CLASSES = 3
THRESHOLD = 0.3
TEST_SEED = 1000
TEST_SCENES = 300
INPUT = "input"
OUTPUTS = ("heatmap", "size", "offset")


def _lum(c) -> float:
    return 0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2]


def _colour(rng: np.random.Generator, away_from: float) -> tuple[int, int, int]:
    while True:
        c = tuple(int(v) for v in rng.integers(0, 256, 3))
        if abs(_lum(c) - away_from) >= 60:
            return c  # type: ignore[return-value]


def _overlaps(box, boxes) -> bool:
    for b in boxes:
        iw = min(box[2], b[2]) - max(box[0], b[0])
        ih = min(box[3], b[3]) - max(box[1], b[1])
        if iw > 0 and ih > 0:
            small = min((box[2] - box[0]) * (box[3] - box[1]), (b[2] - b[0]) * (b[3] - b[1]))
            if iw * ih > 0.15 * small:
                return True
    return False


def render(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One scene: image [SIZE, SIZE, 3] uint8 and labels [n, 5] (class, x0, y0, x1, y1)."""
    base = rng.uniform(0, 255, 3)
    slope = rng.uniform(-60, 60, (2, 3))
    t = np.linspace(-0.5, 0.5, SIZE, dtype=np.float32)
    bg = base + t[None, :, None] * slope[0] + t[:, None, None] * slope[1]
    img = Image.fromarray(np.clip(bg, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    bg_lum = _lum(base)
    for _ in range(int(rng.integers(0, 4))):  # clutter lines
        pts = [tuple(int(v) for v in rng.integers(0, SIZE, 2)) for _ in range(2)]
        draw.line(pts, fill=tuple(int(v) for v in rng.integers(0, 256, 3)), width=1)
    labels: list[tuple[int, int, int, int, int]] = []
    boxes: list[tuple[int, int, int, int]] = []
    want = int(rng.integers(1, 7))
    for _ in range(want * 20):
        if len(boxes) == want:
            break
        w, h = (int(v) for v in rng.integers(12, 41, 2))
        x0, y0 = int(rng.integers(0, SIZE - w + 1)), int(rng.integers(0, SIZE - h + 1))
        box = (x0, y0, x0 + w, y0 + h)
        if _overlaps(box, boxes):
            continue
        cls = int(rng.integers(0, CLASSES))
        fill = _colour(rng, bg_lum)
        x1, y1 = x0 + w - 1, y0 + h - 1
        if cls == 0:
            draw.rectangle((x0, y0, x1, y1), fill=fill)
        elif cls == 1:
            draw.ellipse((x0, y0, x1, y1), fill=fill)
        else:
            apex = int(rng.integers(x0, x1 + 1))
            draw.polygon([(x0, y1), (x1, y1), (apex, y0)], fill=fill)
        boxes.append(box)
        labels.append((cls, *box))
    noise = rng.normal(0, rng.uniform(0, 12), (SIZE, SIZE, 3))
    out = np.clip(np.asarray(img, dtype=np.float32) + noise, 0, 255).astype(np.uint8)
    return out, np.array(labels, dtype=np.float32).reshape(-1, 5)


def to_input(images: np.ndarray) -> np.ndarray:
    """uint8 [n, H, W, 3] -> float32 [n, 3, H, W] in [0, 1]."""
    return np.ascontiguousarray(images.transpose(0, 3, 1, 2), dtype=np.float32) / 255.0


def scenes(n: int, seed: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """n scenes from ``seed``: the network input [n, 3, SIZE, SIZE] and the labels per scene."""
    rng = np.random.default_rng(seed)
    pairs = [render(rng) for _ in range(n)]
    return to_input(np.stack([p[0] for p in pairs])), [p[1] for p in pairs]


def test_set() -> tuple[np.ndarray, list[np.ndarray]]:
    return scenes(TEST_SCENES, TEST_SEED)


# ---- targets, decoding, metric ----


def targets(labels: list[np.ndarray]) -> tuple[np.ndarray, ...]:
    """Gaussian heatmaps [n, C, CELLS, CELLS], size and offset maps [n, 2, ...], centre mask."""
    n = len(labels)
    hm = np.zeros((n, CLASSES, CELLS, CELLS), np.float32)
    wh = np.zeros((n, 2, CELLS, CELLS), np.float32)
    off = np.zeros((n, 2, CELLS, CELLS), np.float32)
    mask = np.zeros((n, 1, CELLS, CELLS), np.float32)
    g = np.arange(CELLS, dtype=np.float32)
    for i, lab in enumerate(labels):
        for cls, x0, y0, x1, y1 in lab:
            cx, cy = (x0 + x1) / 2 / STRIDE, (y0 + y1) / 2 / STRIDE
            w, h = (x1 - x0) / STRIDE, (y1 - y0) / STRIDE
            ix, iy = min(int(cx), CELLS - 1), min(int(cy), CELLS - 1)
            sx, sy = max(0.5, 0.54 * w / 6 * 2), max(0.5, 0.54 * h / 6 * 2)
            gauss = np.exp(
                -((g[None, :] - ix) ** 2) / (2 * sx * sx) - ((g[:, None] - iy) ** 2) / (2 * sy * sy)
            )
            hm[i, int(cls)] = np.maximum(hm[i, int(cls)], gauss)
            wh[i, :, iy, ix] = (w, h)
            off[i, :, iy, ix] = (cx - ix, cy - iy)
            mask[i, 0, iy, ix] = 1
    return hm, wh, off, mask


def _maxpool3(x: np.ndarray) -> np.ndarray:
    p = np.pad(x, ((0, 0), (1, 1), (1, 1)), constant_values=-np.inf)
    h, w = x.shape[1:]
    return np.max(
        np.stack([p[:, dy : dy + h, dx : dx + w] for dy in range(3) for dx in range(3)]), axis=0
    )


def decode(heatmap: np.ndarray, size: np.ndarray, offset: np.ndarray) -> list[np.ndarray]:
    """Per image, detections [k, 6] (class, x0, y0, x1, y1, score) from the three outputs."""
    out = []
    for hm, wh, off in zip(heatmap, size, offset, strict=True):
        peaks = (hm == _maxpool3(hm)) & (hm >= THRESHOLD)
        cls, ys, xs = np.nonzero(peaks)
        cx = (xs + off[0, ys, xs]) * STRIDE
        cy = (ys + off[1, ys, xs]) * STRIDE
        w, h = wh[0, ys, xs] * STRIDE, wh[1, ys, xs] * STRIDE
        det = np.stack([cls, cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2, hm[cls, ys, xs]], 1)
        out.append(det.astype(np.float32).reshape(-1, 6))
    return out


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of boxes a [n, 4] against b [m, 4]: [n, m]."""
    iw = np.clip(
        np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None
    )
    ih = np.clip(
        np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None
    )
    inter = iw * ih
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)


def f1(detections: list[np.ndarray], reference: list[np.ndarray], iou: float = 0.5) -> float:
    """F1 of detections [k, 5+] against reference boxes [m, 5+] (class first), IoU ≥ ``iou``
    within a class, greedy by detection score (reference rows may carry a score: ignored)."""
    tp = fp = fn = 0
    for det, ref in zip(detections, reference, strict=True):
        if det.shape[1] > 5:
            det = det[np.argsort(-det[:, 5], kind="stable")]
        used = np.zeros(len(ref), bool)
        ious = _iou(det[:, 1:5], ref[:, 1:5]) if len(det) and len(ref) else None
        for i in range(len(det)):
            if ious is None:
                fp += 1
                continue
            ok = (ref[:, 0] == det[i, 0]) & ~used & (ious[i] >= iou)
            if ok.any():
                used[int(np.argmax(np.where(ok, ious[i], -1)))] = True
                tp += 1
            else:
                fp += 1
        fn += int((~used).sum())
    return 1.0 if tp + fp + fn == 0 else 2 * tp / (2 * tp + fp + fn)


# ---- the network ----


def cbr(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()
    )


class Detector(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stage1 = nn.Sequential(cbr(3, 16, 2), cbr(16, 16))  # 48×48
        self.stage2 = nn.Sequential(cbr(16, 32, 2), cbr(32, 32))  # 24×24
        self.stage3 = nn.Sequential(cbr(32, 48, 2), cbr(48, 48))  # 12×12
        self.csp = cbr(24, 24)
        self.stage4 = nn.Sequential(cbr(48, 64, 2), cbr(64, 64))  # 6×6
        self.lat3 = cbr(64 + 48, 48)
        self.lat2 = cbr(48 + 32, 32)
        self.head = cbr(32, 32)
        self.out = nn.Conv2d(32, CLASSES + 4, 1)
        with torch.no_grad():
            self.out.bias[:CLASSES] = -2.19  # CenterNet's prior: sigmoid = 0.1

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        c2 = self.stage2(self.stage1(x))
        c3 = self.stage3(c2)
        c3 = torch.cat([c3[:, :24], self.csp(c3[:, 24:])], 1)
        c4 = self.stage4(c3)
        p3 = self.lat3(torch.cat([F.interpolate(c4, scale_factor=2.0, mode="nearest"), c3], 1))
        up = F.interpolate(p3, scale_factor=2.0, mode="bilinear", align_corners=False)
        p2 = self.lat2(torch.cat([up, c2], 1))
        hm, size, offset = torch.split(self.out(self.head(p2)), [CLASSES, 2, 2], dim=1)
        return torch.sigmoid(hm), size, offset


def focal(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    p = pred.clamp(1e-4, 1 - 1e-4)
    pos = gt.eq(1).float()
    pos_loss = torch.log(p) * (1 - p) ** 2 * pos
    neg_loss = torch.log(1 - p) * p**2 * (1 - gt) ** 4 * (1 - pos)
    return -(pos_loss.sum() + neg_loss.sum()) / pos.sum().clamp(min=1)


def train(model: Detector, steps: int, batch: int, lr: float, seed: int) -> None:
    rng = np.random.default_rng(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=steps, pct_start=0.05)
    model.train()
    t0 = time.perf_counter()
    for step in range(steps):
        pairs = [render(rng) for _ in range(batch)]
        images = np.stack([p[0] for p in pairs])
        if rng.random() < 0.5:  # horizontal flip of the whole batch
            images = images[:, :, ::-1]
            labs = [p[1].copy() for p in pairs]
            for lab in labs:
                lab[:, [1, 3]] = SIZE - lab[:, [3, 1]]
        else:
            labs = [p[1] for p in pairs]
        hm, wh, off, mask = (torch.from_numpy(a) for a in targets(labs))
        x = torch.from_numpy(to_input(images))
        p_hm, p_wh, p_off = model(x)
        n = mask.sum().clamp(min=1)
        loss = (
            focal(p_hm, hm)
            + 0.1 * ((p_wh - wh).abs() * mask).sum() / n
            + ((p_off - off).abs() * mask).sum() / n
        )
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % 100 == 0 or step == steps - 1:
            el = time.perf_counter() - t0
            print(f"step {step}/{steps} loss {loss.item():.3f} {el:.0f} s", flush=True)
    model.eval()


def torch_outputs(model: Detector, x: np.ndarray) -> tuple[np.ndarray, ...]:
    with torch.no_grad():
        return tuple(
            np.concatenate([o.numpy() for o in outs])
            for outs in zip(
                *(model(torch.from_numpy(x[i : i + 100])) for i in range(0, len(x), 100)),
                strict=True,
            )
        )


def export(model: Detector, out_dir: Path) -> tuple[Path, Path]:
    x = torch.from_numpy(scenes(2, 7)[0])
    ts, dyn = out_dir / "detector_ts.onnx", out_dir / "detector_dynamo.onnx"
    axes = {INPUT: {0: "batch"}} | {name: {0: "batch"} for name in OUTPUTS}
    torch.onnx.export(
        model,
        (x,),
        str(ts),
        input_names=[INPUT],
        output_names=list(OUTPUTS),
        dynamic_axes=axes,
        opset_version=17,
        dynamo=False,
    )
    batch = torch.export.Dim("batch", min=1, max=1024)
    prog = torch.onnx.export(
        model,
        (x,),
        input_names=[INPUT],
        output_names=list(OUTPUTS),
        dynamic_shapes=({0: batch},),
        dynamo=True,
        external_data=False,
    )
    assert prog is not None
    prog.save(str(dyn))
    return ts, dyn


def ort_outputs(path: Path, x: np.ndarray) -> list[np.ndarray]:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    parts = [sess.run(list(OUTPUTS), {INPUT: x[i : i + 100]}) for i in range(0, len(x), 100)]
    return [np.concatenate([p[k] for p in parts]) for k in range(len(OUTPUTS))]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out-dir", type=Path, default=Path("models/trained"))
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=4e-3)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.manual_seed(args.seed)
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    model = Detector()
    train(model, args.steps, args.batch, args.lr, args.seed)
    seconds = time.perf_counter() - t0
    x, labels = test_set()
    result = {"train_seconds": round(seconds), "steps": args.steps, "batch": args.batch}
    result["f1_torch"] = f1(decode(*torch_outputs(model, x)), labels)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    want = torch_outputs(model, x)
    for path in export(model, args.out_dir):
        got = ort_outputs(path, x)
        diff = max(float(np.abs(g - w).max()) for g, w in zip(got, want, strict=True))
        result[f"{path.stem}_max_abs_diff_vs_torch"] = diff
        result[f"f1_{path.stem}"] = f1(decode(*got), labels)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
