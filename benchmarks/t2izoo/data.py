"""Captioned digits: every 16x16 digit gets captions from templates (class as word or numeral, a
stroke-thickness style from its pixel mass, a slant from its moments)."""

from __future__ import annotations

import torch

from hfaudit.digits import load_digits_images

NUMBER_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
TEMPLATES = [
    "a handwritten {w}",
    "the digit {n}, {s} strokes",
    "number {w} written {s}",
    "a {n} drawn by hand",
    "a photo of the number {w}",
    "the handwritten digit {w}, {l}",
    "a {s} {w}",
    "digit {n} with {s} strokes",
    "a {l} handwritten {n}",
    "the number {n} on paper",
]
STYLES = ["thin", "thick"]
SLANTS = ["upright", "slanted"]


def caption_words() -> set[str]:
    """Every word the captions use (lower case, punctuation and numerals dropped)."""
    words = set(NUMBER_WORDS) | set(STYLES) | set(SLANTS)
    for t in TEMPLATES:
        for w in t.replace(",", " ").split():
            if not w.startswith("{"):
                words.add(w)
    return words


def digit_styles(images: torch.Tensor) -> tuple[list[str], list[str]]:
    """Stroke thickness (pixel mass above / below the class median) and slant (|shear moment|)."""
    x01 = (images[:, 0] + 1) / 2
    mass = x01.sum((1, 2))
    h, w = x01.shape[1:]
    ys = torch.arange(h, dtype=torch.float32).view(1, h, 1)
    xs = torch.arange(w, dtype=torch.float32).view(1, 1, w)
    m = mass.clamp(min=1e-6).view(-1, 1, 1)
    cy = (x01 * ys).sum((1, 2), keepdim=True) / m
    cx = (x01 * xs).sum((1, 2), keepdim=True) / m
    shear = ((x01 * (ys - cy) * (xs - cx)).sum((1, 2)) / ((x01 * (ys - cy) ** 2).sum((1, 2)) + 1e-6)).abs()
    thick = mass > mass.median()
    slanted = shear > shear.median()
    return [STYLES[int(t)] for t in thick], [SLANTS[int(s)] for s in slanted]


def caption(label: int, template: int, style: str = "thin", slant: str = "upright") -> str:
    """One caption of class ``label`` with template number ``template``."""
    return TEMPLATES[template % len(TEMPLATES)].format(w=NUMBER_WORDS[label], n=str(label), s=style, l=slant)


def load_captioned_digits() -> tuple[torch.Tensor, torch.Tensor, list[str], list[str]]:
    """``(images (N,1,16,16) in [-1,1], labels, styles, slants)``."""
    images, labels = load_digits_images(size=16)
    styles, slants = digit_styles(images)
    return images, labels, styles, slants


def class_prompts(label: int, word: str | None = None) -> list[str]:
    """Every template's prompt for ``label`` (styles alternate); ``word`` replaces the class word."""
    out = []
    for i in range(len(TEMPLATES)):
        p = caption(label, i, STYLES[i % 2], SLANTS[(i // 2) % 2])
        if word is not None:
            p = p.replace(NUMBER_WORDS[label], word).replace(str(label), word)
        out.append(p)
    return out
