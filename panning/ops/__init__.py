"""The public kernel API of panning.

Every op validates its arguments, then runs on one backend picked by `dispatch` (reference, cpp,
triton or cuda); `backend=` on each op, or PANNING_BACKEND, forces one. Algorithms call only these.
"""
from .dispatch import BackendError, backends
from .masked import masked_linear
from .saliency import product_score, saliency
from .sparse import sparse_linear, to_sparse
from .sparse_conv import sparse_conv1d, sparse_conv2d
from .sparse_weight import SparseWeight
from .topk import topk_mask

__all__ = ["BackendError", "SparseWeight", "backends", "masked_linear", "product_score", "saliency",
           "sparse_conv1d", "sparse_conv2d", "sparse_linear", "to_sparse", "topk_mask"]
