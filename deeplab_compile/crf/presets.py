"""Published dense CRF settings (bi_w / bi_xy_std / bi_rgb_std / pos_w / pos_xy_std).

Each set was found by DeepLab's cross-validation on a PASCAL VOC 2012 val subset, with
DeepLab's own densecrf code, which normalises each kernel after filtering
(``normalization="after"``, pydensecrf's ``NORMALIZE_AFTER``).  The ``deeplab_*``
presets therefore use that normalisation.  Each has a ``pydensecrf_*`` twin with the
same numbers and pydensecrf's default normalisation ("symmetric",
``NORMALIZE_SYMMETRIC``), for results that match ``pydensecrf`` run with its defaults.
"""
from __future__ import annotations

from .errors import CRFError
from .params import CRFParams

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
        raise CRFError(f"unknown CRF preset '{name}'", hint=f"choose one of {', '.join(sorted(PRESETS))}") from None
