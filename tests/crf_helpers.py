"""Shared pieces of the CRF tests: brute-force references, VOC samples, pydensecrf."""
from __future__ import annotations

import os

import numpy as np
import torch
from PIL import Image

VOC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "voc_sample")
VOC_IDS = ["2007_000033", "2007_000129", "2007_000346", "2007_001284"]


def voc_image(image_id: str) -> np.ndarray:
    with Image.open(os.path.join(VOC, image_id + ".png")) as im:
        return np.array(im.convert("RGB"), dtype=np.uint8)


def voc_label(image_id: str) -> np.ndarray:
    with Image.open(os.path.join(VOC, image_id + "_label.png")) as im:
        return np.array(im, dtype=np.uint8)


def noisy_logits(label: np.ndarray, num_classes: int = 21, strength: float = 2.0, noise: float = 1.5,
                 seed: int = 0) -> np.ndarray:
    """Unaries made from the ground truth: a one-hot bump plus Gaussian noise per pixel."""
    rng = np.random.default_rng(seed)
    h, w = label.shape
    logits = rng.normal(0.0, noise, (num_classes, h, w)).astype(np.float32)
    onehot = np.zeros_like(logits)
    valid = label < num_classes
    onehot[label[valid], np.nonzero(valid)[0], np.nonzero(valid)[1]] = strength
    return logits + onehot


def unary_from_logits(logits: np.ndarray) -> np.ndarray:
    t = torch.from_numpy(logits)
    return (-torch.log_softmax(t, 0)).numpy()


def pydensecrf_marginals(image: np.ndarray, unary: np.ndarray, bi_w, bi_xy_std, bi_rgb_std, pos_w, pos_xy_std,
                         iterations=10, normalization="symmetric") -> np.ndarray:
    """pydensecrf's marginals; ``normalization`` "symmetric" is its NORMALIZE_SYMMETRIC
    (its default), "after" its NORMALIZE_AFTER (DeepLab's densecrf)."""
    import pydensecrf.densecrf as dcrf
    norm = {"symmetric": dcrf.NORMALIZE_SYMMETRIC, "after": dcrf.NORMALIZE_AFTER}[normalization]
    C, H, W = unary.shape
    d = dcrf.DenseCRF2D(W, H, C)
    d.setUnaryEnergy(np.ascontiguousarray(unary.reshape(C, -1), dtype=np.float32))
    if pos_w:
        d.addPairwiseGaussian(sxy=pos_xy_std, compat=pos_w, normalization=norm)
    if bi_w:
        d.addPairwiseBilateral(sxy=bi_xy_std, srgb=bi_rgb_std, rgbim=np.ascontiguousarray(image), compat=bi_w,
                               normalization=norm)
    return np.array(d.inference(iterations), dtype=np.float32).reshape(C, H, W)


def brute_force_meanfield(image: np.ndarray, unary: np.ndarray, bi_w, bi_xy_std, bi_rgb_std, pos_w, pos_xy_std,
                          iterations, kernel_fn, normalization="symmetric") -> np.ndarray:
    """Dense mean-field with explicit N x N kernel matrices from ``kernel_fn(features)``."""
    C, H, W = unary.shape
    ys, xs = np.mgrid[0:H, 0:W].astype(np.float64)
    pos = np.stack([xs.ravel(), ys.ravel()], 1)
    rgb = image.reshape(-1, 3).astype(np.float64)
    mats = []
    for w, feats in ((pos_w, pos / pos_xy_std), (bi_w, np.concatenate([pos / bi_xy_std, rgb / bi_rgb_std], 1))):
        if w == 0:
            continue
        K = kernel_fn(feats)
        deg = K.sum(1)
        if normalization == "symmetric":
            n = 1 / np.sqrt(deg)
            mats.append(w * n[:, None] * K * n[None, :])
        else:
            mats.append(w * K / deg[:, None])
    U = unary.reshape(C, -1).T.astype(np.float64)
    q = torch.softmax(torch.from_numpy(-U), 1).numpy()
    for _ in range(iterations):
        msg = -U + sum(M @ q for M in mats)
        q = torch.softmax(torch.from_numpy(msg), 1).numpy()
    return q.T.reshape(C, H, W)


def gaussian_matrix(feats: np.ndarray) -> np.ndarray:
    d2 = ((feats[:, None, :] - feats[None, :, :]) ** 2).sum(-1)
    return np.exp(-0.5 * d2)


def lattice_matrix(feats: np.ndarray) -> np.ndarray:
    """The lattice filter's operator, as a matrix (filter of the identity)."""
    from deeplab_compile.ops import permutohedral_filter
    n = feats.shape[0]
    return permutohedral_filter(torch.from_numpy(feats).double(), torch.eye(n, dtype=torch.float64)).numpy()
