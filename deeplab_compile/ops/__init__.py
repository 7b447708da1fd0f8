"""Python face of the ``deeplab`` custom ops (``torch.ops.deeplab.*``).

Each op has one module here holding its ``register_fake`` / ``register_autograd``
registrations, a pure-PyTorch reference, and the function users call, which runs the
compiled kernel when there is one and the reference otherwise (warning once).
"""
from ._ext import available, backends
from .aspp_sum import aspp_sum, aspp_sum_auto, aspp_sum_reference
from .aspp_v3_head import aspp_v3_head, aspp_v3_head_auto, aspp_v3_head_reference
from .dense_crf import dense_crf, dense_crf_reference
from .permutohedral_filter import permutohedral_filter, permutohedral_filter_reference

__all__ = ["available", "backends", "aspp_sum", "aspp_sum_auto", "aspp_sum_reference", "aspp_v3_head",
           "aspp_v3_head_auto", "aspp_v3_head_reference", "dense_crf", "dense_crf_reference",
           "permutohedral_filter", "permutohedral_filter_reference"]
