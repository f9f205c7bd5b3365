"""Attention over padding-free batches with PyTorch's own variable-length flash kernel.

A padding-free batch lays its sequences end to end in one row. transformers then keeps each token's
attention inside its own sequence by building a (tokens x tokens) mask for SDPA, which costs memory and
rules out the flash kernel. PyTorch ships a variable-length flash kernel (torch.nn.attention.varlen) that
takes the sequence boundaries trl's collator already computes (cu_seq_lens_*), so no mask is needed.
It is used only on CUDA, and only after a self-check against SDPA passes; otherwise SDPA stays.
"""
from __future__ import annotations

import inspect

import torch

NAME = "studio_varlen"


def _kernel_keywords() -> frozenset:
    from torch.nn.attention.varlen import varlen_attn

    return frozenset(inspect.signature(varlen_attn).parameters)


_KEYWORDS: frozenset = frozenset()  # the kernel's keywords, read once in use_varlen_attention (inspect cannot
# run inside torch.compile's graphs)


def _varlen_kwargs(query: torch.Tensor, key: torch.Tensor) -> dict:
    """Causal attention, with the keyword each PyTorch version's kernel understands."""
    kwargs = {"window_size": (-1, 0)} if "window_size" in _KEYWORDS else {"is_causal": True}
    if query.shape[1] != key.shape[1] and "enable_gqa" in _KEYWORDS:
        kwargs["enable_gqa"] = True
    return kwargs


def varlen_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, cu_seq_lens_q=None,
                     cu_seq_lens_k=None, max_length_q=None, max_length_k=None, **kwargs):
    """The attention interface transformers calls: query/key/value are (1, heads, tokens, head_dim)."""
    from torch.nn.attention.varlen import varlen_attn

    if cu_seq_lens_q is None:  # not a padding-free batch (e.g. one plain sequence): SDPA does it right
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        return sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout,
                                      **kwargs)
    q, k, v = (t.squeeze(0).transpose(0, 1) for t in (query, key, value))  # -> (tokens, heads, head_dim)
    options = _varlen_kwargs(q, k)
    if q.shape[1] != k.shape[1] and "enable_gqa" not in options:  # older kernels want as many kv heads as q heads
        k, v = (t.repeat_interleave(q.shape[1] // k.shape[1], dim=1) for t in (k, v))
    out = varlen_attn(q, k, v, cu_seq_lens_q, cu_seq_lens_k if cu_seq_lens_k is not None else cu_seq_lens_q,
                      int(max_length_q), int(max_length_k or max_length_q), scale=scaling, **options)
    return out.unsqueeze(0), None  # (1, tokens, heads, head_dim), as transformers expects back


def _self_check() -> bool:
    """Two sequences through the kernel must match SDPA on each sequence alone."""
    import torch.nn.functional as F

    torch.manual_seed(0)
    lengths = [37, 91]
    q = torch.randn(1, 4, sum(lengths), 64, device="cuda", dtype=torch.bfloat16)
    k = torch.randn(1, 2, sum(lengths), 64, device="cuda", dtype=torch.bfloat16)
    v = torch.randn_like(k)
    cu = torch.tensor([0, lengths[0], sum(lengths)], device="cuda", dtype=torch.int32)
    out, _ = varlen_attention(None, q, k, v, None, scaling=64 ** -0.5, cu_seq_lens_q=cu, cu_seq_lens_k=cu,
                              max_length_q=max(lengths), max_length_k=max(lengths))
    for start, end in ((0, lengths[0]), (lengths[0], sum(lengths))):
        ref = F.scaled_dot_product_attention(q[:, :, start:end], k[:, :, start:end].repeat_interleave(2, 1),
                                             v[:, :, start:end].repeat_interleave(2, 1), is_causal=True)
        if not torch.allclose(out[0, start:end], ref[0].transpose(0, 1), atol=2e-2, rtol=2e-2):
            return False
    return True


def use_varlen_attention(model) -> bool:
    """Switch the model to the variable-length kernel when this machine has it and it checks out."""
    if not torch.cuda.is_available():
        return False
    global _KEYWORDS
    try:
        _KEYWORDS = _kernel_keywords()
        from transformers import AttentionInterface
        from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, flash_attention_mask

        AttentionInterface.register(NAME, varlen_attention)
        ALL_MASK_ATTENTION_FUNCTIONS.register(NAME, flash_attention_mask)  # no (tokens x tokens) mask is built
        if not _self_check():
            return False
        model.set_attn_implementation(NAME)
    except Exception as e:  # noqa: BLE001 - an older PyTorch or an unusual model: SDPA stays, training goes on
        print(f"Variable-length attention not used ({type(e).__name__}: {e}); using SDPA.", flush=True)
        return False
    print("Attention: PyTorch's variable-length flash kernel over padding-free batches.", flush=True)
    return True
