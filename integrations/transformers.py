"""Hugging Face ``transformers`` integration: run a model's attention on ``torch.ops.flashinfer.fwd``.

Opt-in and reversible; importing this module changes nothing::

    from torch_flashinfer.integrations import transformers as tfi

    tfi.patch(model)                 # switch a loaded model (tfi.unpatch(model) switches it back)
    with tfi.patched(model):         # or for a block
        model.generate(...)
    tfi.register()                   # or load by name
    model = AutoModelForCausalLM.from_pretrained(path, attn_implementation=tfi.ATTN_IMPLEMENTATION)

Works with models that call attention through transformers' ``AttentionInterface`` and build masks
with ``masking_utils`` (LLaMA, Mistral, Qwen2 and most decoder LMs; transformers >= 4.53).

How it fits transformers: the model first asks the mask function registered under our name for a
mask, once per forward, then calls our attention function in every layer with that mask. Instead of
a ``(batch, 1, q, kv)`` mask we return ``None`` (every key row is a real token: plain causal) or the
bounds of the key rows each sequence may see, as an int32 tensor ``(2, batch, 1, 1)``:

- ``[0]`` = first key row (``cache_leftpad``): the left pads still in the keys, from the 2D padding
  mask's leading zeros;
- ``[1]`` = one past the last key row written (``cache_seqlens``): the cache length plus the new
  tokens, minus the rows a sliding-window cache dropped. A ``StaticCache`` hands attention its whole
  ``max_cache_len`` buffer; this bound makes the kernel stop at the tokens actually written.

Both are computed on the device (no host sync), so a decode step stays capturable in a CUDA graph.
The bounds are 4D only so that transformers passes them through unchanged when ``generate``
pre-builds the mask for a static cache and the model asks for a mask again (it returns 4D masks as
they are). Causal attention needs nothing else: right pads come after every real token, so real
queries never see them.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Optional, Union

import torch
from transformers import AttentionInterface
from transformers.masking_utils import AttentionMaskInterface

from torch_flashinfer import ops as flashinfer_ops

Tensor = torch.Tensor

# transformers treats an implementation name containing "flash" as a flash-attn kernel (it imports
# flash_attn or fetches a hub kernel for it), one with a "/" as a hub repository, and names
# containing "sdpa" or "flex_attention" as those backends: this name is none of them.
ATTN_IMPLEMENTATION = "tfi_attention"

_PREVIOUS_IMPLEMENTATION = "_tfi_previous_attn_implementation"  # set on a patched model


def _key_bounds(batch_size: int, padding_mask: Optional[Tensor], end: Union[int, Tensor], kv_offset: int,
                device: torch.device) -> Tensor:
    """Rows ``[first, end)`` of the keys each sequence may attend, int32 ``(2, batch, 1, 1)``.

    ``padding_mask``: bool ``(batch, tokens seen)``, True for real tokens, in absolute positions;
    key row ``j`` holds position ``kv_offset + j``. ``end``: an int, or a tensor on the device
    (a static cache's length).
    """
    if padding_mask is None:
        first = torch.zeros(batch_size, dtype=torch.int32, device=device)
    else:
        # argmax returns the first maximum, i.e. the number of leading zeros (left pads).
        first = (padding_mask.to(torch.int32).argmax(-1) - kv_offset).clamp(min=0).to(torch.int32)  # [B]
    if isinstance(end, Tensor):
        end = end.to(torch.int32).reshape(-1).expand(batch_size)  # [B]
    else:  # a fill, not a copy from the host: copying a host scalar to a GPU waits for the stream
        end = torch.full((batch_size,), end, dtype=torch.int32, device=device)  # [B]
    return torch.stack([first, end]).view(2, batch_size, 1, 1)


def _check_mask_request(config, kwargs: dict) -> None:
    """Refuse mask patterns that bounds per sequence cannot express, rather than ignore them."""
    if kwargs.get("use_vmap"):
        raise NotImplementedError(
            f"{ATTN_IMPLEMENTATION}: custom mask overlays (or_mask_function / and_mask_function) are not supported")
    if "allow_is_bidirectional_skip" in kwargs:
        raise NotImplementedError(f"{ATTN_IMPLEMENTATION}: bidirectional (non-causal) attention is not supported")
    if getattr(config, "attention_chunk_size", None) is not None:
        raise NotImplementedError(f"{ATTN_IMPLEMENTATION}: chunked attention (attention_chunk_size) is not supported")


def flashinfer_mask(
    batch_size: int,
    q_length: Optional[int] = None,
    kv_length: Optional[int] = None,
    q_offset: Union[int, Tensor] = 0,
    kv_offset: int = 0,
    attention_mask: Optional[Tensor] = None,
    cache_position: Optional[Tensor] = None,
    device: Optional[torch.device] = None,
    config=None,
    **kwargs,
) -> Optional[Tensor]:
    """The mask function registered under :data:`ATTN_IMPLEMENTATION` in ``AttentionMaskInterface``.

    Called by transformers' ``create_causal_mask`` / ``create_sliding_window_causal_mask`` once per
    forward and mask type, with keyword arguments.

    Args:
        batch_size: the batch.
        q_length, q_offset: the new tokens and the tokens cached before them (transformers >= 5;
            ``q_offset`` is a device tensor for a static cache).
        cache_position: ``(q_length,)`` absolute positions of the new tokens (transformers 4.x,
            instead of ``q_length`` / ``q_offset``).
        kv_length, kv_offset: the keys attention will get, and the position of their first row
            (> 0 once a sliding-window cache dropped tokens).
        attention_mask: bool ``(batch, tokens seen)`` padding mask (True = real token), or None.
        device, config, kwargs: from transformers; ``kwargs`` are checked for patterns we cannot
            express (custom overlays, bidirectional, chunked attention).

    Returns:
        ``None`` when every key row holds a real token, else int32 ``(2, batch, 1, 1)`` key bounds
        (see the module docstring).
    """
    _check_mask_request(config, kwargs)
    if cache_position is not None:  # transformers 4.x: the last new token's position, on the device
        end = cache_position[-1:] + 1 - kv_offset
        device = cache_position.device
    else:
        end = q_offset + q_length - kv_offset
    if attention_mask is None and isinstance(end, int) and end == kv_length:
        return None
    if attention_mask is not None:
        device = attention_mask.device
    return _key_bounds(batch_size, attention_mask, end, kv_offset, device)


def flashinfer_attention(
    module: torch.nn.Module,
    query: Tensor,
    key: Tensor,
    value: Tensor,
    attention_mask: Optional[Tensor],
    dropout: float = 0.0,
    scaling: Optional[float] = None,
    sliding_window: Optional[int] = None,
    softcap: Optional[float] = None,
    is_causal: Optional[bool] = None,
    **kwargs,
) -> tuple[Tensor, None]:
    """The attention function registered under :data:`ATTN_IMPLEMENTATION` in ``AttentionInterface``.

    Args:
        module: the attention layer (its ``is_causal`` is read when ``is_causal`` is not given).
        query: ``(batch, heads_q, q_length, head_dim)``.
        key, value: ``(batch, heads_k, kv_length, head_dim)``: the new tokens, or the cache after
            its update (a static cache's whole buffer); ``heads_q % heads_k == 0`` (GQA read in
            place, no ``repeat_kv``). Passed to the op as ``transpose(1, 2)`` views: no copies.
        attention_mask: ``None`` or the key bounds of :func:`flashinfer_mask`.
        dropout: must be 0 (inference only).
        scaling: softmax scale, default ``head_dim ** -0.5``.
        sliding_window: keys within the last ``sliding_window`` positions (Mistral, Qwen2).
        softcap: logit soft-capping (Gemma 2).
        kwargs: other transformers kwargs (position ids, cache positions, ...), unused.

    Returns:
        ``(out, None)``: ``out`` ``(batch, q_length, heads_q, head_dim)``, the layout transformers
        expects back; no attention weights.
    """
    if dropout != 0.0:
        raise ValueError(f"{ATTN_IMPLEMENTATION}: dropout must be 0 (inference-only kernels); call model.eval()")
    if is_causal is None:
        is_causal = getattr(module, "is_causal", True)
    if not is_causal:
        raise NotImplementedError(f"{ATTN_IMPLEMENTATION}: bidirectional (non-causal) attention is not supported")
    if kwargs.get("s_aux") is not None or kwargs.get("position_bias") is not None:
        raise NotImplementedError(f"{ATTN_IMPLEMENTATION}: attention sinks and position biases are not supported")
    batch = query.shape[0]
    cache_leftpad = cache_seqlens = None
    if attention_mask is not None:
        if attention_mask.dtype != torch.int32 or tuple(attention_mask.shape) != (2, batch, 1, 1):
            raise ValueError(
                f"{ATTN_IMPLEMENTATION}: attention_mask must come from transformers' mask creation with "
                f"attn_implementation={ATTN_IMPLEMENTATION!r} (int32 key bounds of shape (2, {batch}, 1, 1)); "
                f"got {attention_mask.dtype} {tuple(attention_mask.shape)}: custom 4D masks are not supported")
        cache_leftpad, cache_seqlens = attention_mask.view(2, batch).unbind(0)  # [B] each, contiguous
    out, _ = flashinfer_ops.fwd(
        query.transpose(1, 2),  # [B, Sq, Hq, D]
        key.transpose(1, 2),  # [B, Sk, Hk, D]
        value.transpose(1, 2),  # [B, Sk, Hk, D]
        cache_seqlens=cache_seqlens,
        cache_leftpad=cache_leftpad,
        softmax_scale=scaling,
        causal=True,
        window_left=sliding_window - 1 if sliding_window else -1,
        softcap=softcap or 0.0,
        return_lse=False,
    )
    return out, None  # [B, Sq, Hq, D]


def register() -> None:
    """Register :data:`ATTN_IMPLEMENTATION` in transformers' attention and mask interfaces.

    Afterwards ``from_pretrained(..., attn_implementation=ATTN_IMPLEMENTATION)``, ``from_config``
    and ``model.set_attn_implementation`` accept the name. Idempotent; affects no loaded model.
    """
    AttentionInterface.register(ATTN_IMPLEMENTATION, flashinfer_attention)
    AttentionMaskInterface.register(ATTN_IMPLEMENTATION, flashinfer_mask)


def is_patched(model) -> bool:
    """Whether :func:`patch` switched ``model`` (and :func:`unpatch` has not switched it back)."""
    return hasattr(model, _PREVIOUS_IMPLEMENTATION)


def patch(model):
    """Switch a loaded ``PreTrainedModel`` (and its sub-models) to our attention; returns the model.

    Registers the name first. The previous implementation (e.g. ``"sdpa"``) is remembered on the
    model for :func:`unpatch`; patching a patched model does nothing. Raises ``ValueError`` for a
    model that does not dispatch attention through ``AttentionInterface``.
    """
    if is_patched(model):
        return model
    register()
    previous = model.config._attn_implementation
    model.set_attn_implementation(ATTN_IMPLEMENTATION)
    if model.config._attn_implementation != ATTN_IMPLEMENTATION:
        raise ValueError(f"{type(model).__name__} cannot switch its attention implementation "
                         "(it does not call attention through transformers' AttentionInterface)")
    setattr(model, _PREVIOUS_IMPLEMENTATION, previous)
    return model


def unpatch(model):
    """Switch a patched model back to the implementation it had before :func:`patch`; returns it.

    A model that is not patched is returned unchanged.
    """
    if not is_patched(model):
        return model
    model.set_attn_implementation(getattr(model, _PREVIOUS_IMPLEMENTATION))
    delattr(model, _PREVIOUS_IMPLEMENTATION)
    return model


@contextmanager
def patched(model):
    """``with patched(model):`` runs the block with our attention, then restores the model.

    A model that was already patched stays patched after the block.
    """
    was_patched = is_patched(model)
    patch(model)
    try:
        yield model
    finally:
        if not was_patched:
            unpatch(model)
