"""``dense_crf``: post-process one image's class scores with the fully connected CRF.

Inputs are checked here so that every mistake names its argument; the work is done by
the ``deeplab::dense_crf`` op (our permutohedral-lattice mean-field, CPU threads or
CUDA), see :mod:`deeplab_compile.ops.dense_crf`.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from .. import settings
from ..ops.dense_crf import dense_crf as _dense_crf_op
from .errors import CRFError
from .presets import resolve

SCORE_KINDS = ("logits", "probs", "unary")
_PROB_FLOOR = 1e-8  # probabilities are clipped here before -log, so a zero costs 18.4 not inf


def _as_tensor(x: Any, name: str) -> tuple[torch.Tensor, bool]:
    if isinstance(x, torch.Tensor):
        return x, False
    if isinstance(x, np.ndarray):
        a = np.ascontiguousarray(x)
        return torch.from_numpy(a if a.flags.writeable else a.copy()), True
    raise CRFError(f"'{name}' must be a numpy array or a torch tensor, got {type(x).__name__}")


def _check_image(image: torch.Tensor, name: str = "image") -> None:
    if image.dtype != torch.uint8:
        raise CRFError(f"'{name}' must be uint8 (H x W x 3 RGB), got dtype {str(image.dtype).replace('torch.', '')}",
                       hint="pass the image as loaded, not normalised or mean-subtracted")
    if image.dim() != 3 or image.shape[2] != 3:
        raise CRFError(f"'{name}' must be H x W x 3, got shape {tuple(image.shape)}")


def _unary(scores: torch.Tensor, kind: str, name: str = "scores") -> torch.Tensor:
    """(C, H, W) or (B, C, H, W) scores -> float32 energies."""
    if kind not in SCORE_KINDS:
        raise CRFError(f"'kind' must be one of {', '.join(SCORE_KINDS)}, got {kind!r}")
    if not scores.is_floating_point():
        raise CRFError(f"'{name}' must be floating point ({kind}), got dtype {str(scores.dtype).replace('torch.', '')}")
    s = scores.float()
    if not bool(torch.isfinite(s).all()):
        raise CRFError(f"'{name}' contain NaN or infinite values")
    if kind == "logits":
        return -torch.log_softmax(s, dim=-3)
    if kind == "probs":
        if bool((s < 0).any()) or bool((s > 1.0001).any()):
            raise CRFError(f"'{name}' given as probabilities must lie in [0, 1]",
                           hint="pass kind='logits' for raw network outputs")
        return -torch.log(s.clamp_min(_PROB_FLOOR))
    return s


def dense_crf(image, scores, params: Any = None, iterations: int = 10, *, kind: str = "logits",
              **overrides):
    """Mean-field inference of the fully connected CRF on one image.

    image       H x W x 3 uint8 RGB (numpy or torch)
    scores      C x H x W float: ``kind="logits"`` (network outputs, default),
                ``"probs"`` (softmax outputs) or ``"unary"`` (energies -log p)
    params      a preset name, CRFParams, or a mapping in DeepLab's or pydensecrf's
                spelling (see :func:`deeplab_compile.crf.presets.resolve`); default
                ``deeplab_largefov``.  Keyword overrides (``bi_w=5``) apply last.
    iterations  mean-field steps (DeepLab: 10)

    Returns the C x H x W float32 marginals, as a numpy array when ``scores`` was one,
    else a tensor on ``scores``' device; ``.argmax(0)`` gives the labels.
    """
    img, _ = _as_tensor(image, "image")
    sc, to_numpy = _as_tensor(scores, "scores")
    _check_image(img)
    if sc.dim() != 3:
        raise CRFError(f"'scores' must be C x H x W, got shape {tuple(sc.shape)}")
    out = _run(img[None], sc[None], params, iterations, kind, overrides)[0]
    return out.cpu().numpy() if to_numpy else out


def dense_crf_batch(images, scores, params: Any = None, iterations: int = 10, *, kind: str = "logits",
                    **overrides):
    """Batched :func:`dense_crf`.

    ``images`` B x H x W x 3 uint8 and ``scores`` B x C x H x W run as one call (the
    CPU kernel puts one image on each thread).  Lists of images and score maps of
    differing sizes are also accepted and return a list.
    """
    if isinstance(images, (list, tuple)) or isinstance(scores, (list, tuple)):
        if not isinstance(images, (list, tuple)) or not isinstance(scores, (list, tuple)) \
                or len(images) != len(scores):
            raise CRFError("'images' and 'scores' must both be lists of the same length")
        return [dense_crf(i, s, params, iterations, kind=kind, **overrides) for i, s in zip(images, scores)]
    img, _ = _as_tensor(images, "images")
    sc, to_numpy = _as_tensor(scores, "scores")
    if img.dim() != 4:
        raise CRFError(f"'images' must be B x H x W x 3, got shape {tuple(img.shape)}")
    if img.dtype != torch.uint8:
        raise CRFError(f"'images' must be uint8, got dtype {str(img.dtype).replace('torch.', '')}")
    if sc.dim() != 4:
        raise CRFError(f"'scores' must be B x C x H x W, got shape {tuple(sc.shape)}")
    out = _run(img, sc, params, iterations, kind, overrides)
    return out.cpu().numpy() if to_numpy else out


def _run(img: torch.Tensor, sc: torch.Tensor, params, iterations, kind, overrides) -> torch.Tensor:
    try:
        settings.check("DEEPLAB_CRF_STORAGE")
    except settings.SettingError as err:
        raise CRFError(err.message, hint=err.hint) from None
    if img.dim() != 4 or img.shape[3] != 3:
        raise CRFError(f"'image' must be H x W x 3, got shape {tuple(img.shape[1:])}")
    if img.dtype != torch.uint8:
        raise CRFError(f"'image' must be uint8, got dtype {str(img.dtype).replace('torch.', '')}")
    if img.shape[0] != sc.shape[0]:
        raise CRFError(f"'images' holds {img.shape[0]} images but 'scores' {sc.shape[0]}")
    if tuple(img.shape[1:3]) != tuple(sc.shape[2:4]):
        raise CRFError(f"'scores' are {sc.shape[2]}x{sc.shape[3]} (H x W) but 'image' is "
                       f"{img.shape[1]}x{img.shape[2]}", hint="crop or resize the scores to the image first")
    if sc.shape[1] < 1:
        raise CRFError("'scores' has no labels (C = 0)")
    if isinstance(iterations, bool) or not isinstance(iterations, (int, np.integer)) or iterations < 0:
        raise CRFError(f"'iterations' must be a non-negative integer, got {iterations!r}")
    p = resolve(params, **overrides)
    unary = _unary(sc, kind).contiguous()
    colour = img.to(device=unary.device).permute(0, 3, 1, 2).float().contiguous()
    return _dense_crf_op(colour, unary, p.pos_w, p.pos_xy_std, p.bi_w, p.bi_xy_std, p.bi_rgb_std,
                         int(iterations), p.normalization)


def labels(marginals) -> Any:
    """Argmax over the label axis (works on numpy arrays and tensors, batched or not)."""
    if isinstance(marginals, np.ndarray):
        return marginals.argmax(axis=-3).astype(np.uint8 if marginals.shape[-3] <= 256 else np.int64)
    return marginals.argmax(dim=-3)


__all__: Sequence[str] = ["dense_crf", "dense_crf_batch", "labels", "SCORE_KINDS"]
