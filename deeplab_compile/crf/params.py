"""Dense CRF parameters in DeepLab's and pydensecrf's spellings.

DeepLab names them after its ``DenseCRF`` layer and its ``run_densecrf.sh``:
``bi_w`` / ``bi_xy_std`` / ``bi_rgb_std`` for the bilateral (appearance) kernel and
``pos_w`` / ``pos_xy_std`` for the Gaussian (smoothness) kernel.  pydensecrf passes the
same numbers to ``addPairwiseGaussian(sxy, compat)`` and
``addPairwiseBilateral(sxy, srgb, rgbim, compat)``; here that spelling is the mapping
``{"gaussian": {"sxy": 3, "compat": 3}, "bilateral": {"sxy": 121, "srgb": 5, "compat": 4}}``.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any, Mapping

from .errors import CRFError

NORMALIZATIONS = ("after", "symmetric")
# What DeepLab's densecrf code (its DenseCRF layer and refine_pascal's dense_inference)
# did: each kernel's filtered message divided by that kernel's filtered ones, per pixel.
DEEPLAB_NORMALIZATION = "after"
DEEPLAB_KEYS = ("bi_w", "bi_xy_std", "bi_rgb_std", "pos_w", "pos_xy_std")


@dataclass(frozen=True)
class CRFParams:
    """Weights and standard deviations (pixels / intensity levels) of the two kernels.

    ``normalization``: "after" (the default: the per-pixel normalisation of the densecrf
    code DeepLab shipped with its DenseCRF layer, pydensecrf's ``NORMALIZE_AFTER``) or
    "symmetric" (pydensecrf's default, ``NORMALIZE_SYMMETRIC``).
    """

    bi_w: float
    bi_xy_std: float
    bi_rgb_std: float
    pos_w: float
    pos_xy_std: float
    normalization: str = DEEPLAB_NORMALIZATION

    def __post_init__(self):
        for key in DEEPLAB_KEYS:
            v = getattr(self, key)
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise CRFError(f"CRF parameter '{key}' must be a number, got {v!r}")
            if not math.isfinite(v):
                raise CRFError(f"CRF parameter '{key}' must be finite, got {v!r}")
            if key.endswith("_std") and v <= 0:
                raise CRFError(f"CRF parameter '{key}' must be a positive standard deviation, got {v!r}")
            if key.endswith("_w") and v < 0:
                raise CRFError(f"CRF parameter '{key}' must be a non-negative weight, got {v!r}")
            object.__setattr__(self, key, float(v))
        if self.normalization not in NORMALIZATIONS:
            raise CRFError(f"CRF parameter 'normalization' must be one of {', '.join(NORMALIZATIONS)}, "
                           f"got {self.normalization!r}")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def as_pydensecrf(self) -> dict[str, dict[str, float]]:
        return {"gaussian": {"sxy": self.pos_xy_std, "compat": self.pos_w},
                "bilateral": {"sxy": self.bi_xy_std, "srgb": self.bi_rgb_std, "compat": self.bi_w}}

    def dirname(self) -> str:
        """DeepLab's name for the output folder, e.g. ``post_densecrf_W4_XStd121_RStd5_PosW3_PosXStd3``;
        a normalisation other than DeepLab's adds ``_<normalization>`` (``..._PosXStd3_symmetric``)."""
        g = lambda v: f"{v:g}"
        name = (f"post_densecrf_W{g(self.bi_w)}_XStd{g(self.bi_xy_std)}_RStd{g(self.bi_rgb_std)}"
                f"_PosW{g(self.pos_w)}_PosXStd{g(self.pos_xy_std)}")
        return name if self.normalization == DEEPLAB_NORMALIZATION else f"{name}_{self.normalization}"

    def with_(self, **changes) -> "CRFParams":
        return replace(self, **changes)


def _one_std(value: Any, where: str) -> Any:
    """pydensecrf accepts sxy as one number or an (sx, sy) pair; only equal pairs map here."""
    if isinstance(value, (tuple, list)):
        if len(value) != 2 or value[0] != value[1]:
            raise CRFError(f"CRF parameter '{where}' must be one number or an equal (sx, sy) pair, got {value!r}")
        return value[0]
    return value


def from_pydensecrf(spec: Mapping[str, Any], normalization: str = "symmetric") -> CRFParams:
    """``{"gaussian": {"sxy", "compat"}, "bilateral": {"sxy", "srgb", "compat"}}`` -> CRFParams.
    A missing kernel gets weight 0.  The normalisation defaults to pydensecrf's own
    ("symmetric"), so settings copied from pydensecrf code give pydensecrf's result; a
    ``"normalization"`` key or the argument chooses another."""
    unknown = set(spec) - {"gaussian", "bilateral", "normalization"}
    if unknown:
        raise CRFError(f"unknown pydensecrf-style CRF key(s) {sorted(unknown)}; use 'gaussian' and 'bilateral'")
    g = dict(spec.get("gaussian") or {})
    b = dict(spec.get("bilateral") or {})
    for name, part, allowed in (("gaussian", g, {"sxy", "compat"}), ("bilateral", b, {"sxy", "srgb", "compat"})):
        extra = set(part) - allowed
        if extra:
            raise CRFError(f"unknown key(s) {sorted(extra)} in CRF '{name}'; it takes {', '.join(sorted(allowed))}")
    try:
        return CRFParams(
            pos_w=g.get("compat", 0.0) if g else 0.0,
            pos_xy_std=_one_std(g.get("sxy", 1.0), "gaussian.sxy"),
            bi_w=b.get("compat", 0.0) if b else 0.0,
            bi_xy_std=_one_std(b.get("sxy", 1.0), "bilateral.sxy"),
            bi_rgb_std=_one_std(b.get("srgb", 1.0), "bilateral.srgb"),
            normalization=spec.get("normalization", normalization))
    except CRFError as err:
        raise CRFError(err.message.replace("'pos_xy_std'", "'gaussian.sxy'").replace("'pos_w'", "'gaussian.compat'")
                       .replace("'bi_xy_std'", "'bilateral.sxy'").replace("'bi_rgb_std'", "'bilateral.srgb'")
                       .replace("'bi_w'", "'bilateral.compat'")) from None
