"""Colour palettes for label maps and palette-PNG writing.

Label PNGs are mode "P" (one byte a pixel holding the class index, plus a palette), the
format of PASCAL VOC's SegmentationClass: any viewer shows colours, and reading the
file back with Pillow gives the indices.  255 (VOC's "void") is drawn light grey in
every palette here except VOC's own, whose index 255 is (224, 224, 192).
"""
from __future__ import annotations

import os

import numpy as np
from PIL import Image

from .atomic import atomic_path


def voc_palette(n: int = 256) -> np.ndarray:
    """PASCAL VOC's palette: the bits of the class index spread over R, G and B,
    most significant first (so 1 = dark red, 2 = dark green, 15 = person pink)."""
    pal = np.zeros((n, 3), np.uint8)
    for i in range(n):
        c, r, g, b = i, 0, 0, 0
        for shift in range(7, -1, -1):
            r |= (c & 1) << shift
            g |= ((c >> 1) & 1) << shift
            b |= ((c >> 2) & 1) << shift
            c >>= 3
        pal[i] = (r, g, b)
    return pal


# Cityscapes' 19 training classes (trainId 0..18), colours from the dataset's labels.py.
_CITYSCAPES = [
    (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153),
    (153, 153, 153), (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152),
    (70, 130, 180), (220, 20, 60), (255, 0, 0), (0, 0, 142), (0, 0, 70),
    (0, 60, 100), (0, 80, 100), (0, 0, 230), (119, 11, 32),
]

# ADE20K / SceneParsing's 150 classes (index 0 = wall), the benchmark's colour table, as hex.
_ADE20K = " ".join([
    "787878 b47878 06e6e6 503232 04c803 787850 8c8c8c cc05ff e6e6e6 04fa07",
    "e005ff ebff07 96053d 787846 08ff33 ff0652 8fff8c ccff04 ff3307 cc4603",
    "0066c8 3de6fa ff0633 0b66ff ff0747 ff09e0 0907e6 dcdcdc ff095c 7009ff",
    "08ffd6 07ffe0 ffb806 0aff47 ff290a 07ffff e0ff08 6608ff ff3d06 ffc207",
    "ff7a08 00ff14 ff0829 ff0599 0633ff eb0cff a09614 00a3ff 8c8c8c fa0a0f",
    "14ff00 1fff00 ff1f00 ffe000 99ff00 0000ff ff4700 00ebff 00adff 1f00ff",
    "0bc8c8 ff5200 00fff5 003dff 00ff70 00ff85 ff0000 ffa300 ff6600 c2ff00",
    "008fff 33ff00 0052ff 00ff29 00ffad 0a00ff adff00 00ff99 ff5c00 ff00ff",
    "ff00f5 ff0066 ffad00 ff0014 ffb8b8 001fff 00ff3d 0047ff ff00cc 00ffc2",
    "00ff52 000aff 0070ff 3300ff 00c2ff 007aff 00ffa3 ff9900 00ff0a ff7000",
    "8fff00 5200ff a3ff00 ffeb00 08b8aa 8500ff 00ff5c b800ff ff001f 00b8ff",
    "00d6ff ff0070 5cff00 00e0ff 70e0ff 46b8a0 a300ff 9900ff 47ff00 ff00a3",
    "ffcc00 ff008f 00ffeb 85ff00 ff00eb f500ff ff007a fff500 0abed4 d6ff00",
    "00ccff 1400ff ffff00 0099ff 0029ff 00ffcc 2900ff 29ff00 ad00ff 00f5ff",
    "4700ff 7a00ff 00ffb8 005cff b8ff00 0085ff ffd600 19c2c2 66ff00 5c00ff",
]).split()


def _padded(colors, n: int = 256) -> np.ndarray:
    pal = np.zeros((n, 3), np.uint8)
    pal[: len(colors)] = np.asarray(colors, np.uint8)
    pal[255] = (224, 224, 224)
    return pal


def cityscapes_palette() -> np.ndarray:
    return _padded(_CITYSCAPES)


def ade20k_palette() -> np.ndarray:
    return _padded([tuple(int(h[i:i + 2], 16) for i in (0, 2, 4)) for h in _ADE20K])


PALETTES = {"voc": voc_palette, "cityscapes": cityscapes_palette, "ade20k": ade20k_palette}


def get_palette(name: str) -> np.ndarray:
    """A 256 x 3 uint8 palette by name: voc, cityscapes, ade20k."""
    from ..errors import DeepLabError
    try:
        return PALETTES[name]()
    except KeyError:
        raise DeepLabError(f"unknown palette '{name}'", hint=f"choose one of {', '.join(PALETTES)}") from None


def colorize(labels: np.ndarray, palette: str | np.ndarray = "voc") -> np.ndarray:
    """H x W class indices -> H x W x 3 RGB."""
    pal = get_palette(palette) if isinstance(palette, str) else np.asarray(palette, np.uint8)
    return pal[np.asarray(labels, np.uint8)]


def write_label_png(path: str | os.PathLike, labels: np.ndarray, palette: str | np.ndarray = "voc") -> None:
    """Write H x W class indices (0..255) as a palette PNG, atomically."""
    lab = np.asarray(labels)
    if lab.ndim != 2:
        raise ValueError(f"write_label_png: 'labels' must be H x W, got shape {lab.shape}")
    if lab.size and (lab.min() < 0 or lab.max() > 255):
        raise ValueError("write_label_png: 'labels' must lie in 0..255")
    pal = get_palette(palette) if isinstance(palette, str) else np.asarray(palette, np.uint8)
    img = Image.fromarray(lab.astype(np.uint8), mode="P")
    img.putpalette(pal.reshape(-1).tolist())
    with atomic_path(path) as tmp:
        img.save(tmp, format="PNG")


def read_label_png(path: str | os.PathLike) -> np.ndarray:
    """Class indices of a palette or greyscale label PNG as H x W uint8."""
    with Image.open(path) as im:
        if im.mode not in ("P", "L"):
            raise ValueError(f"{path}: label PNG must be palette or greyscale, got mode {im.mode}")
        return np.array(im, dtype=np.uint8)
