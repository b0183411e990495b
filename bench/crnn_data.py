"""Synthetic text lines for the CRNN recogniser of issue 13 (seeded, offline).

A line is a random string of 4-10 characters from ``ALPHABET`` (digits and uppercase letters),
rendered with PIL in one of the DejaVu fonts at a random size, scaled to a random height and
placed at a random offset on a ``HEIGHT`` x ``WIDTH`` canvas with random background and ink
grey levels, an optional blur and Gaussian noise. Pixels are float32 in [0, 1], shape
[n, 1, HEIGHT, WIDTH]. Label k of the model is ``ALPHABET[k - 1]``; 0 is the CTC blank.

Everything is drawn from ``numpy.random.default_rng(seed)``: the same seed gives the same lines.
Seeds in use: training ``0`` (streamed batch after batch), the fixed test set ``TEST_SEED``
(``TEST_SIZE`` lines), the unlabelled recovery data ``UNLABELLED_SEED`` + the driver's seed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
HEIGHT, WIDTH = 32, 128
MIN_LEN, MAX_LEN = 4, 10
TEST_SEED, TEST_SIZE = 1001, 500
UNLABELLED_SEED = 5000
FONT_DIR = Path("/usr/share/fonts/truetype/dejavu")
FONT_NAMES = (
    "DejaVuSans.ttf",
    "DejaVuSans-Bold.ttf",
    "DejaVuSans-Oblique.ttf",
    "DejaVuSansCondensed.ttf",
    "DejaVuSansCondensed-Bold.ttf",
    "DejaVuSansMono.ttf",
    "DejaVuSansMono-Bold.ttf",
    "DejaVuSerif.ttf",
    "DejaVuSerif-Bold.ttf",
    "DejaVuSerifCondensed.ttf",
)
_FONTS: dict[tuple[str, int], ImageFont.FreeTypeFont] = {}


def _font(name: str, size: int) -> ImageFont.FreeTypeFont:
    key = (name, size)
    if key not in _FONTS:
        _FONTS[key] = ImageFont.truetype(str(FONT_DIR / name), size)
    return _FONTS[key]


def _render(text: str, rng: np.random.Generator) -> np.ndarray:
    """One line [HEIGHT, WIDTH] in [0, 1]: dark-or-light ink on a contrasting background."""
    font = _font(FONT_NAMES[int(rng.integers(len(FONT_NAMES)))], int(rng.integers(22, 34)))
    left, top, right, bottom = font.getbbox(text)
    spacing = int(rng.integers(0, 3))
    glyphs = Image.new("L", (right - left + 4 + spacing * len(text), bottom - top + 4), 0)
    draw = ImageDraw.Draw(glyphs)
    if spacing:
        x = 2 - left
        for ch in text:
            draw.text((x, 2 - top), ch, fill=255, font=font)
            x += int(font.getlength(ch)) + spacing
    else:
        draw.text((2 - left, 2 - top), text, fill=255, font=font)
    # scale to a height of 18-28 px, the width capped to the canvas
    h = int(rng.integers(18, 29))
    w = max(1, round(glyphs.width * h / glyphs.height * rng.uniform(0.85, 1.15)))
    if w > WIDTH - 4:
        w = WIDTH - 4
    glyphs = glyphs.resize((w, h), Image.BILINEAR)
    canvas = Image.new("L", (WIDTH, HEIGHT), 0)
    canvas.paste(
        glyphs, (int(rng.integers(0, WIDTH - w + 1)), int(rng.integers(0, HEIGHT - h + 1)))
    )
    if rng.random() < 0.3:
        canvas = canvas.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.3, 1.0))))
    ink = np.asarray(canvas, dtype=np.float32) / 255.0  # 1 where the glyphs are
    bg = rng.uniform(0.55, 1.0)
    fg = bg - rng.uniform(0.35, bg)  # ink darker than the background by >= 0.35
    if rng.random() < 0.2:  # light text on a dark background
        bg, fg = 1.0 - bg, 1.0 - fg
    img = bg + (fg - bg) * ink
    img = img + rng.normal(0.0, rng.uniform(0.0, 0.06), img.shape)
    return np.clip(img, 0.0, 1.0).astype(np.float32)


def random_text(rng: np.random.Generator) -> str:
    n = int(rng.integers(MIN_LEN, MAX_LEN + 1))
    return "".join(ALPHABET[int(i)] for i in rng.integers(len(ALPHABET), size=n))


def lines(n: int, seed: int | np.random.Generator) -> tuple[np.ndarray, list[str]]:
    """``n`` rendered lines [n, 1, HEIGHT, WIDTH] float32 and their strings."""
    rng = np.random.default_rng(seed)
    texts = [random_text(rng) for _ in range(n)]
    images = np.stack([_render(t, rng) for t in texts])[:, None]
    return images, texts


def test_set() -> tuple[np.ndarray, list[str]]:
    """The fixed labelled test set (``TEST_SIZE`` lines, seed ``TEST_SEED``)."""
    return lines(TEST_SIZE, TEST_SEED)


def encode(text: str) -> list[int]:
    return [ALPHABET.index(c) + 1 for c in text]


def greedy_decode(logits: np.ndarray) -> list[str]:
    """Greedy CTC decoding of [batch, T, classes] scores: argmax, repeats merged, blanks dropped."""
    best = logits.argmax(-1)
    out = []
    for row in best:
        chars, prev = [], 0
        for k in row:
            if k != prev and k != 0:
                chars.append(ALPHABET[k - 1])
            prev = k
        out.append("".join(chars))
    return out


def string_accuracy(preds: list[str], ref: list[str]) -> float:
    return float(np.mean([p == r for p, r in zip(preds, ref, strict=True)]))
