"""A synthetic PASCAL-VOC-like dataset, written in VOC's layout.

``generate(OUT, ...)`` (the command ``deeplab-synthetic OUT``, :mod:`deeplab_compile.cli.synthetic`)
writes::

    OUT/JPEGImages/syn_000000.jpg ...
    OUT/SegmentationClass/syn_000000.png ...       palette PNGs (VOC colours), values = class ids
    OUT/ImageSets/Segmentation/{train,val,trainval}.txt      ids
    OUT/list/{train,val,trainval,train_aug,trainval_aug}.txt  "/JPEGImages/x.jpg /SegmentationClass/x.png"
    OUT/list/{train,val}_id.txt                               ids (MatWrite's source)
    OUT/synthetic.json                                        the parameters; written last

21 classes like VOC.  Class 0, the background, is a smooth low-contrast gradient with
noise.  Each of the 20 object classes has its own colour (hue), texture (stripes at a
class angle and period, checks, dots or speckle) and shape (ellipse, rectangle,
triangle, diamond, ring); an image holds 1 to 3 objects of random classes, sizes and
places, which may overlap (the later one wins).  Object edges are hard steps, so a
dense CRF has real boundaries to snap to.  The same seed gives the same files, byte for
byte.  ``--void-band N`` marks an N-pixel band around each object 255, as VOC does.

The whole set is written to ``OUT.partial-*`` and renamed, so OUT is either complete or
absent; if OUT is already complete with the same parameters nothing is done.
"""
from __future__ import annotations

import colorsys
import json
import os
import shutil
import tempfile

import numpy as np

NUM_CLASSES = 21
SHAPES = ("ellipse", "rectangle", "triangle", "diamond", "ring")
TEXTURES = ("stripes", "checks", "dots", "speckle")


def voc_palette() -> list[int]:
    """PASCAL VOC's colour map (the ``bitget`` construction of VOCdevkit's labelcolormap)."""
    from ..io.palette import voc_palette as _pal
    return [int(v) for v in np.asarray(_pal()).reshape(-1)][:768]


def class_style(c: int) -> dict:
    """The look of object class ``c`` (1..20): colour, texture and shape."""
    hue = ((c - 1) * 0.61803398875) % 1.0
    sat = 0.55 + 0.4 * ((c * 7) % 5) / 4
    val = 0.55 + 0.4 * ((c * 3) % 4) / 3
    rgb = np.array(colorsys.hsv_to_rgb(hue, sat, val)) * 255
    return {"rgb": rgb, "texture": TEXTURES[c % 4], "shape": SHAPES[(c // 4) % 5],
            "angle": np.deg2rad((c * 37) % 180), "period": 4 + (c % 5) * 1.5}


def _texture(style: dict, yy: np.ndarray, xx: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    t, a, p = style["texture"], style["angle"], style["period"]
    if t == "stripes":
        return np.sign(np.sin(2 * np.pi * (xx * np.cos(a) + yy * np.sin(a)) / p))
    if t == "checks":
        return np.sign(np.sin(np.pi * xx / p) * np.sin(np.pi * yy / p))
    if t == "dots":
        u, v = np.cos(np.pi * xx / p), np.cos(np.pi * yy / p)
        return np.where(u * v > 0.5, 1.0, -0.6)
    return rng.uniform(-1, 1, size=xx.shape)


def _shape_mask(shape: str, yy, xx, cy, cx, ry, rx, theta) -> np.ndarray:
    dy, dx = yy - cy, xx - cx
    u = (dx * np.cos(theta) + dy * np.sin(theta)) / rx
    v = (-dx * np.sin(theta) + dy * np.cos(theta)) / ry
    if shape == "ellipse":
        return u * u + v * v <= 1
    if shape == "rectangle":
        return (np.abs(u) <= 1) & (np.abs(v) <= 0.7)
    if shape == "triangle":
        return (v <= 0.8) & (v >= -1 + 2 * np.abs(u) * 0.9) & (np.abs(u) <= 1)
    if shape == "diamond":
        return np.abs(u) + np.abs(v) <= 1
    r2 = u * u + v * v
    return (r2 <= 1) & (r2 >= 0.35)


def make_sample(rng: np.random.Generator, h: int, w: int, void_band: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """One image (H x W x 3 uint8, RGB) and its label map (H x W uint8)."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    base = rng.uniform(60, 190, size=3)
    grad = rng.uniform(-40, 40, size=(2, 3))
    img = base + grad[0] * (yy / h)[..., None] + grad[1] * (xx / w)[..., None]
    img = img + rng.normal(0, 6, size=(h, w, 3))
    label = np.zeros((h, w), np.uint8)
    for _ in range(int(rng.integers(1, 4))):
        c = int(rng.integers(1, NUM_CLASSES))
        st = class_style(c)
        ry = rng.uniform(0.18, 0.36) * h
        rx = rng.uniform(0.18, 0.36) * w
        cy, cx = rng.uniform(0.2, 0.8) * h, rng.uniform(0.2, 0.8) * w
        theta = rng.uniform(0, np.pi) if st["shape"] in ("rectangle", "triangle") else 0.0
        m = _shape_mask(st["shape"], yy, xx, cy, cx, ry, rx, theta)
        if not m.any():
            continue
        tex = _texture(st, yy, xx, rng)
        colour = st["rgb"] * rng.uniform(0.9, 1.1) + 28 * tex[..., None]
        img[m] = colour[m]
        label[m] = c
    if void_band > 0:
        edge = np.zeros_like(label, bool)
        for s in range(1, void_band + 1):
            edge[s:] |= label[s:] != label[:-s]
            edge[:-s] |= label[s:] != label[:-s]
            edge[:, s:] |= label[:, s:] != label[:, :-s]
            edge[:, :-s] |= label[:, s:] != label[:, :-s]
        label[edge] = 255
    img = img + rng.normal(0, 4, size=(h, w, 3))
    return np.clip(np.rint(img), 0, 255).astype(np.uint8), label


def generate(out: str, *, num_images: int = 200, val_fraction: float = 0.2, min_size: int = 96,
             max_size: int = 128, seed: int = 0, void_band: int = 0, force: bool = False,
             quality: int = 95) -> str:
    """Write the dataset to ``out`` (see the module docstring); returns ``out``."""
    from PIL import Image
    params = {"num_images": num_images, "val_fraction": val_fraction, "min_size": min_size,
              "max_size": max_size, "seed": seed, "void_band": void_band, "quality": quality,
              "num_classes": NUM_CLASSES, "version": 1}
    marker = os.path.join(out, "synthetic.json")
    if os.path.exists(marker) and not force:
        try:
            with open(marker) as f:
                if json.load(f) == params:
                    return out
        except (OSError, ValueError):
            pass
    if os.path.exists(out) and not force and os.listdir(out):
        from ..errors import DeepLabError
        raise DeepLabError(f"'{out}' exists and is not a synthetic set made with these parameters",
                           hint="pick another folder or pass --force to replace it")
    parent = os.path.dirname(os.path.abspath(out))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=os.path.basename(os.path.abspath(out)) + ".partial-", dir=parent)
    try:
        for d in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation", "list"):
            os.makedirs(os.path.join(tmp, d))
        pal = voc_palette()
        ids = []
        for k in range(num_images):
            rng = np.random.default_rng((seed, k))
            h, w = (int(v) for v in rng.integers(min_size, max_size + 1, size=2))
            img, lab = make_sample(rng, h, w, void_band)
            name = f"syn_{k:06d}"
            Image.fromarray(img).save(os.path.join(tmp, "JPEGImages", name + ".jpg"), quality=quality)
            p = Image.fromarray(lab, mode="L").convert("P")
            p.putpalette(pal)
            p.save(os.path.join(tmp, "SegmentationClass", name + ".png"))
            ids.append(name)
        n_val = int(round(num_images * val_fraction))
        n_val = min(max(n_val, 1 if num_images > 1 else 0), num_images - 1) if num_images > 1 else 0
        splits = {"train": ids[:num_images - n_val], "val": ids[num_images - n_val:], "trainval": ids}

        def write(path, lines):
            with open(os.path.join(tmp, path), "w") as f:
                f.write("".join(line + "\n" for line in lines))

        for split, sids in splits.items():
            write(f"ImageSets/Segmentation/{split}.txt", sids)
            pairs = [f"/JPEGImages/{i}.jpg /SegmentationClass/{i}.png" for i in sids]
            write(f"list/{split}.txt", pairs)
            write(f"list/{split}_id.txt", sids)
            if split != "val":
                write(f"list/{split}_aug.txt", pairs)
        with open(os.path.join(tmp, "synthetic.json"), "w") as f:
            json.dump(params, f, indent=1)
        if os.path.exists(out):
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
