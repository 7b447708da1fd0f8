"""Dense CRF post-processing: our own permutohedral-lattice mean-field inference.

>>> from deeplab_compile.crf import dense_crf
>>> q = dense_crf(image, logits, "deeplab_largefov")      # C x H x W marginals
>>> labels = q.argmax(0)

pydensecrf is used only as the reference in tests and benchmarks.
"""
from .errors import CRFError
from .inference import SCORE_KINDS, dense_crf, dense_crf_batch, labels
from .params import CRFParams, from_pydensecrf
from .presets import PRESETS, get_preset, resolve

__all__ = ["CRFError", "CRFParams", "PRESETS", "SCORE_KINDS", "dense_crf", "dense_crf_batch",
           "from_pydensecrf", "get_preset", "labels", "resolve"]
