"""MoE LoRA for a few tokens: one program per (token, expert) pair and output block.

At decode a batch routes only a few (token, expert) pairs, so sorting them by
expert and padding each group to a 64-row tile (fused_moe_lora) leaves nearly
every program idle. Here each program reads its pair's adapter from
token_lora_mapping and computes shrink and expand of one output block:
    output[pair, block] += ((x @ A[lora, expert].T) @ B[lora, expert, block].T)
                           * (topk_weight if mul_routed_weight)
with the rounding of fused_moe_lora (the rank-sized intermediate and the delta
are rounded to the output dtype). One launch per hook, no alignment, no host
synchronization, graph-capturable.
"""

import torch
import triton
import triton.language as tl


@triton.jit
def _fused_moe_lora_decode_kernel(
    x_ptr,  # (num_tokens or num_pairs, K)
    a_ptr,  # (num_loras, num_experts or 1, num_slices * rank, K)
    b_ptr,  # (num_loras, num_experts or 1, num_slices * N, rank)
    out_ptr,  # (num_pairs, out_dim), out_dim >= num_slices * N
    topk_ids_ptr,  # (num_pairs,)
    topk_weights_ptr,  # (num_pairs,)
    token_lora_mapping_ptr,  # (num_tokens,), -1 for no adapter
    adapter_enabled_ptr,  # (num_loras,)
    num_loras,
    stride_xm,
    stride_al,
    stride_ae,
    stride_ar,
    stride_bl,
    stride_be,
    stride_bn,
    stride_om,
    K: tl.constexpr,  # fixed per model: the loops and masks are compiled for it
    N: tl.constexpr,
    RANK: tl.constexpr,
    TOP_K: tl.constexpr,
    X_PER_PAIR: tl.constexpr,
    MUL_ROUTED_WEIGHT: tl.constexpr,
    BLOCK_R: tl.constexpr,
    BLOCK_K: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_L: tl.constexpr,
):
    pair = tl.program_id(0)
    slice_id = tl.program_id(1)
    token = pair // TOP_K
    # Memory latency, not bandwidth, bounds a decode batch: the loads come in
    # two rounds, the routing and then every operand at once.
    lora = tl.load(token_lora_mapping_ptr + token)
    expert = tl.load(topk_ids_ptr + pair)
    loras = tl.arange(0, BLOCK_L)
    enabled = tl.load(adapter_enabled_ptr + loras, mask=loras < num_loras, other=0)
    if (lora < 0) | (expert < 0):
        return
    if tl.sum(tl.where(loras == lora, enabled, 0)) == 0:
        return
    lora = lora.to(tl.int64)
    expert = expert.to(tl.int64)

    rows = tl.arange(0, BLOCK_R)
    cols = tl.program_id(2) * BLOCK_N + tl.arange(0, BLOCK_N)
    b_cols = b_ptr + lora * stride_bl + expert * stride_be
    b_cols += (slice_id * N + cols)[:, None] * stride_bn
    b_mask = (cols[:, None] < N) & (rows[None, :] < RANK)
    b = tl.load(b_cols + rows[None, :], mask=b_mask, other=0.0)
    out = out_ptr + pair.to(tl.int64) * stride_om + slice_id * N + cols
    old = tl.load(out, mask=cols < N)

    # Shrink: the rank-sized intermediate of this slice, the K loop unrolled
    # so that its loads issue together.
    a_rows = a_ptr + lora * stride_al + expert * stride_ae
    a_rows += (slice_id * RANK + rows)[:, None] * stride_ar
    x_row = x_ptr + (pair if X_PER_PAIR else token).to(tl.int64) * stride_xm
    acc = tl.zeros((BLOCK_R,), dtype=tl.float32)
    for k in tl.static_range(0, K, BLOCK_K):
        ks = k + tl.arange(0, BLOCK_K)
        x = tl.load(x_row + ks, mask=ks < K, other=0.0)
        a_mask = (rows[:, None] < RANK) & (ks[None, :] < K)
        a = tl.load(a_rows + ks[None, :], mask=a_mask, other=0.0)
        acc += tl.sum(a.to(tl.float32) * x.to(tl.float32)[None, :], axis=1)
    inter = acc.to(out_ptr.dtype.element_ty).to(tl.float32)

    # Expand: one block of this slice's output columns.
    delta = tl.sum(b.to(tl.float32) * inter[None, :], axis=1)
    if MUL_ROUTED_WEIGHT:
        delta *= tl.load(topk_weights_ptr + pair)
    delta = delta.to(out_ptr.dtype.element_ty).to(tl.float32)
    tl.store(out, (old.to(tl.float32) + delta).to(old.dtype), mask=cols < N)


def fused_moe_lora_decode(
    output: torch.Tensor,
    hidden_states: torch.Tensor,
    lora_a: torch.Tensor,
    lora_b: torch.Tensor,
    topk_ids: torch.Tensor,
    topk_weights: torch.Tensor,
    token_lora_mapping: torch.Tensor,
    adapter_enabled: torch.Tensor,
    num_slices: int,
    mul_routed_weight: bool,
    config: dict | None = None,
) -> None:
    """output (M, top_k, num_slices * N) += the LoRA delta of every pair, in place.

    hidden_states is (M, K), or (M * top_k, K) with one row per pair (down);
    lora_a is (num_loras, num_experts or 1, num_slices * rank, K), lora_b
    (num_loras, num_experts or 1, num_slices * N, rank); an expert dimension of
    1 (experts_shared_outer_loras) serves every expert. config may set
    BLOCK_K, BLOCK_N and num_warps (default: 8K-element tiles, 8 warps).
    """
    M, top_k, out_dim = output.shape
    K, rank = hidden_states.shape[1], lora_b.shape[3]
    N = lora_b.shape[2] // num_slices
    assert lora_a.shape[2] == num_slices * rank and out_dim == num_slices * N
    # One row per token, or per pair: the first M * top_k rows, as fused_moe_lora.
    assert hidden_states.shape[0] == M or hidden_states.shape[0] >= M * top_k
    assert topk_ids.shape == (M, top_k) and token_lora_mapping.shape[0] >= M
    assert output.stride(2) == hidden_states.stride(1) == 1
    assert lora_a.stride(3) == lora_b.stride(3) == 1
    assert output.stride(0) == top_k * output.stride(1)
    assert topk_ids.is_contiguous() and topk_weights.is_contiguous()
    config = config or {}
    block_r = max(triton.next_power_of_2(rank), 16)
    # Tiles of 8K elements on 8 warps: no register spills up to rank 128 at
    # hidden 7168 (ptxas, sm_90).
    block_k = config.get("BLOCK_K", min(triton.next_power_of_2(K), 8192 // block_r))
    block_n = config.get("BLOCK_N", min(triton.next_power_of_2(N), 8192 // block_r))
    grid = (M * top_k, num_slices, triton.cdiv(N, block_n))
    _fused_moe_lora_decode_kernel[grid](
        hidden_states,
        lora_a,
        lora_b,
        output,
        topk_ids,
        topk_weights,
        token_lora_mapping,
        adapter_enabled,
        adapter_enabled.shape[0],
        hidden_states.stride(0),
        lora_a.stride(0),
        lora_a.stride(1) if lora_a.shape[1] > 1 else 0,
        lora_a.stride(2),
        lora_b.stride(0),
        lora_b.stride(1) if lora_b.shape[1] > 1 else 0,
        lora_b.stride(2),
        output.stride(1),
        K=K,
        N=N,
        RANK=rank,
        TOP_K=top_k,
        X_PER_PAIR=hidden_states.shape[0] != M,
        MUL_ROUTED_WEIGHT=mul_routed_weight,
        BLOCK_R=block_r,
        BLOCK_K=block_k,
        BLOCK_N=block_n,
        BLOCK_L=triton.next_power_of_2(adapter_enabled.shape[0]),
        num_warps=config.get("num_warps", 8),
    )
