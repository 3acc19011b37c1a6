"""torch_flashinfer: FP16/BF16 flash-attention inference kernels as PyTorch custom ops.

Importing registers ``torch.ops.flashinfer.fwd`` and ``torch.ops.flashinfer.append_kv``
(CPU reference + fake implementations; CUDA kernels are built on first use). Nothing else is
patched: the transformers integration is opt-in (``torch_flashinfer.integrations.transformers``).
"""

from . import ops  # noqa: F401  (registers torch.ops.flashinfer.*)
from ._validation import ALGOS, HEAD_DIMS
from .interface import flash_attn_func, flash_attn_varlen_func, flash_attn_with_kvcache
from .reference import attention as reference_attention

__version__ = "0.1.0"

__all__ = [
    "ALGOS",
    "HEAD_DIMS",
    "flash_attn_func",
    "flash_attn_varlen_func",
    "flash_attn_with_kvcache",
    "reference_attention",
]
