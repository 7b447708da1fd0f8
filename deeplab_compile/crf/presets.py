"""Published dense CRF settings (bi_w / bi_xy_std / bi_rgb_std / pos_w / pos_xy_std), and
:func:`resolve`, which turns any accepted form of CRF settings (a preset name, a mapping
in DeepLab's or pydensecrf's spelling, :class:`~.params.CRFParams`) into CRFParams.

Each set was found by DeepLab's cross-validation on a PASCAL VOC 2012 val subset, with
DeepLab's own densecrf code, which normalises each kernel after filtering
(``normalization="after"``, pydensecrf's ``NORMALIZE_AFTER``).  The ``deeplab_*``
presets therefore use that normalisation.  Each has a ``pydensecrf_*`` twin with the
same numbers and pydensecrf's default normalisation ("symmetric",
``NORMALIZE_SYMMETRIC``), for results that match ``pydensecrf`` run with its defaults.
"""
from __future__ import annotations

from typing import Any, Mapping

from ..errors import did_you_mean
from .errors import CRFError
from .params import DEEPLAB_KEYS, CRFParams, from_pydensecrf

_DEEPLAB: dict[str, CRFParams] = {
    # DeepLab-LargeFOV (v1, ICLR 2015): the defaults of DeepLab's run_pascal.sh
    # (post_densecrf_W4_XStd121_RStd5_PosW3_PosXStd3).
    "deeplab_largefov": CRFParams(bi_w=4, bi_xy_std=121, bi_rgb_std=5, pos_w=3, pos_xy_std=3, normalization="after"),
    # DeepLab v1 (ICLR 2015) DeepLab-CRF: the values of its DenseCRF layer example.
    "deeplab_v1": CRFParams(bi_w=5, bi_xy_std=50, bi_rgb_std=10, pos_w=3, pos_xy_std=3, normalization="after"),
    # DeepLab v2 ResNet-101 (TPAMI 2017), cross-validated on VOC 2012 val.
    "deeplab_v2_resnet101": CRFParams(bi_w=4, bi_xy_std=67, bi_rgb_std=3, pos_w=3, pos_xy_std=1,
                                      normalization="after"),
}

PRESETS: dict[str, CRFParams] = dict(_DEEPLAB)
PRESETS.update({"pydensecrf_" + name[len("deeplab_"):]: p.with_(normalization="symmetric")
                for name, p in _DEEPLAB.items()})


def get_preset(name: str) -> CRFParams:
    try:
        return PRESETS[name]
    except KeyError:
        raise CRFError(f"unknown CRF preset '{name}'",
                       hint=did_you_mean(str(name), PRESETS) or f"choose one of {', '.join(sorted(PRESETS))}") from None


def resolve(params: Any = None, **overrides) -> CRFParams:
    """Turn any accepted form into :class:`CRFParams`.

    ``params``: None (the ``deeplab_largefov`` preset), a preset name, a CRFParams, a
    mapping in DeepLab's spelling (all five keys unless overriding a preset given as
    ``preset=``) or in pydensecrf's (``gaussian`` / ``bilateral``).  ``overrides`` are
    DeepLab-spelled keys (and ``normalization``) applied last.
    """
    if params is None:
        base = get_preset("deeplab_largefov")
    elif isinstance(params, CRFParams):
        base = params
    elif isinstance(params, str):
        base = get_preset(params)
    elif isinstance(params, Mapping):
        if "gaussian" in params or "bilateral" in params:
            base = from_pydensecrf(params)
        else:
            d = dict(params)
            start = get_preset(d.pop("preset")) if "preset" in d else None
            unknown = set(d) - set(DEEPLAB_KEYS) - {"normalization"}
            if unknown:
                key = sorted(unknown)[0]
                hint = did_you_mean(key, list(DEEPLAB_KEYS) + ["normalization", "preset", "gaussian", "bilateral"])
                raise CRFError(f"unknown CRF parameter '{key}'",
                               hint=hint or f"use {', '.join(DEEPLAB_KEYS)} or gaussian/bilateral")
            if start is None:
                missing = [k for k in DEEPLAB_KEYS if k not in d]
                if missing:
                    raise CRFError(f"CRF parameters miss {', '.join(missing)}",
                                   hint="give all five, or start from a preset with 'preset': name")
                base = CRFParams(**d)
            else:
                base = start.with_(**d)
    else:
        raise CRFError(f"CRF 'params' must be a preset name, a mapping or CRFParams, got {type(params).__name__}")
    if overrides:
        bad = set(overrides) - set(DEEPLAB_KEYS) - {"normalization"}
        if bad:
            raise CRFError(f"unknown CRF parameter '{sorted(bad)[0]}'", hint=f"use {', '.join(DEEPLAB_KEYS)}")
        base = base.with_(**overrides)
    return base
