import torch
import triton
import triton.language as tl

from sglang.srt.lora.triton_ops.kernel_utils import (
    _resolve_token_positions,
    _segment_of_position,
)
from sglang.srt.lora.utils import LoRABatchInfo

# At decode the tiled kernels' 16-row tiles are mostly padding. The decode
# kernel reads B once per token where a tile shares it among 16 tokens: past
# about 64K outputs (12 tokens of q/k/v, 32 of o at Qwen3-30B-A3B's shape) the
# tiled kernels win on an H100. The token bound is the LoRA A decode path's;
# the rank bound keeps 8 columns of a 2048-element tile per program.
_DECODE_MAX_TOKENS = 32
_DECODE_MAX_OUTPUTS = 65536
_DECODE_MAX_R = 256


def _use_decode_kernel(S: int, N: int, R: int) -> bool:
    return (
        S <= _DECODE_MAX_TOKENS and S * N <= _DECODE_MAX_OUTPUTS and R <= _DECODE_MAX_R
    )


@triton.jit
def _sgemm_lora_b_kernel(
    # Pointers to matrices
    x,
    weights,
    output,
    # Matrix dimensions
    N,  # output_dim
    K,  # r
    # Strides
    x_stride_0,
    x_stride_1,
    w_stride_0,
    w_stride_1,
    w_stride_2,
    output_stride_0,
    output_stride_1,
    # Information on sequence lengths and weight id
    seg_lens,
    seg_indptr,
    weight_indices,
    lora_ranks,
    sorted_token_ids,
    # Meta parameters
    SORTED_BY_ADAPTER: tl.constexpr,
    BLOCK_S: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    # For fused output scaling
    scalings,
):
    """
    Computes a segmented batched matrix multiplication for the LoRA B matrix
    and adds the result to the output in-place.

    When a sequence's rank is 0, the kernel is essentially a no-op, following
    the convention in pytorch where the product of two matrices of shape (m, 0)
    and (0, n) is an all-zero matrix of shape (m, n).

    Args:
        x (torch.Tensor): The intermediate tensor from the LoRA 'A' multiplication,
            of shape `(s, K)`, where `s` is the total number of tokens.
        weights (torch.Tensor): The LoRA 'B' weights for all available adapters,
            with shape `(num_lora, N, K)`.
        output (torch.Tensor): The output tensor of shape `(s, N)`. This can be
            the base model's output for a fused add operation.
    """

    # Current block computes sequence with batch_id,
    # which starts from row seg_start of x with length seg_len
    batch_id = tl.program_id(axis=1)
    w_index = tl.load(weight_indices + batch_id)
    rank = tl.load(lora_ranks + w_index)

    # If rank is 0, this kernel is a no-op.
    if rank == 0:
        return

    pid = tl.program_id(axis=0)
    seg_len = tl.load(seg_lens + batch_id)
    if seg_len == 0:
        return
    seg_start = tl.load(seg_indptr + batch_id)
    scaling = tl.load(scalings + w_index)
    # Adjust K (rank) according to the specific LoRA adapter
    K = tl.minimum(K, rank)

    # The tile in output matrix will have (pid_s, pid_n) as id
    num_pid_n = tl.cdiv(N, BLOCK_N)
    pid_s = pid // num_pid_n
    pid_n = pid % num_pid_n
    if pid_s * BLOCK_S >= seg_len:
        return

    # Create pointers for the first block of x and weights[batch_id]
    # The pointers will be advanced as we move in the K direction
    # and accumulate
    s_offset = tl.arange(0, BLOCK_S) + pid_s * BLOCK_S
    n_offset = tl.arange(0, BLOCK_N) + pid_n * BLOCK_N
    k_offset = tl.arange(0, BLOCK_K)
    s_physical = _resolve_token_positions(
        sorted_token_ids, seg_start, s_offset, seg_len, SORTED_BY_ADAPTER
    )
    x_ptrs = x + (s_physical[:, None] * x_stride_0 + k_offset[None, :] * x_stride_1)
    w_ptrs = (weights + w_index * w_stride_0) + (
        k_offset[:, None] * w_stride_2 + n_offset[None, :] * w_stride_1
    )

    # Iterate to compute the block in output matrix
    n_mask = n_offset[None, :] < N
    partial_sum = tl.zeros((BLOCK_S, BLOCK_N), dtype=tl.float32)
    for k in range(0, tl.cdiv(K, BLOCK_K)):
        x_tile = tl.load(
            x_ptrs,
            mask=(s_offset[:, None] < seg_len) & (k_offset[None, :] < K - k * BLOCK_K),
            other=0.0,
        )
        w_tile = tl.load(
            w_ptrs,
            mask=(k_offset[:, None] < K - k * BLOCK_K) & n_mask,
            other=0.0,
        )
        partial_sum += tl.dot(x_tile, w_tile)

        x_ptrs += BLOCK_K * x_stride_1
        w_ptrs += BLOCK_K * w_stride_2

    # Store result to output matrix
    partial_sum *= scaling
    partial_sum = partial_sum.to(x.dtype.element_ty)
    output_ptr = output + (
        s_physical[:, None] * output_stride_0 + n_offset[None, :] * output_stride_1
    )
    output_mask = (s_offset[:, None] < seg_len) & n_mask
    partial_sum += tl.load(output_ptr, mask=output_mask, other=0.0)
    tl.store(output_ptr, partial_sum, mask=output_mask)


@triton.jit
def _sgemm_lora_b_decode_kernel(
    x,
    weights,
    output,
    N,  # output_dim
    K,  # r
    n_offs,
    x_stride_0,
    x_stride_1,
    w_stride_0,
    w_stride_1,
    w_stride_2,
    output_stride_0,
    output_stride_1,
    seg_indptr,
    weight_indices,
    lora_ranks,
    scalings,
    sorted_token_ids,
    num_segs,
    N_SLICES: tl.constexpr,
    SORTED_BY_ADAPTER: tl.constexpr,
    BLOCK_SEG: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    """_sgemm_lora_b_kernel and _qkv_lora_b_kernel for a few tokens: one
    program per (token position, BLOCK_N output columns), no tensor-core tile
    padded to 16 rows. Columns from n_offs[j] on read slice j of x, which
    holds each slice's rank columns one after another."""
    pos = tl.program_id(axis=0)
    pid_n = tl.program_id(axis=1)
    seg = _segment_of_position(pos, seg_indptr, num_segs, BLOCK_SEG)
    if seg >= num_segs:
        return
    w_index = tl.load(weight_indices + seg)
    rank = tl.load(lora_ranks + w_index)
    if rank == 0:
        return
    row = _resolve_token_positions(sorted_token_ids, 0, pos, pos + 1, SORTED_BY_ADAPTER)

    n_offset = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    k_offset = tl.arange(0, BLOCK_K)
    slice_id = tl.zeros((BLOCK_N,), dtype=tl.int32)
    for j in tl.static_range(1, N_SLICES):
        slice_id += (n_offset >= tl.load(n_offs + j)).to(tl.int32)
    x_col = slice_id[:, None] * rank + k_offset[None, :]
    mask = (n_offset[:, None] < N) & (k_offset[None, :] < tl.minimum(K, rank))
    w = tl.load(
        weights
        + w_index * w_stride_0
        + n_offset[:, None] * w_stride_1
        + k_offset[None, :] * w_stride_2,
        mask=mask,
        other=0.0,
    )
    x_tile = tl.load(x + row * x_stride_0 + x_col * x_stride_1, mask=mask, other=0.0)
    acc = tl.sum(w.to(tl.float32) * x_tile.to(tl.float32), axis=1)
    acc *= tl.load(scalings + w_index)
    out_ptrs = output + row * output_stride_0 + n_offset * output_stride_1
    acc += tl.load(out_ptrs, mask=n_offset < N, other=0.0).to(tl.float32)
    tl.store(out_ptrs, acc.to(output.dtype.element_ty), mask=n_offset < N)


def sgemm_lora_b_decode_fwd(
    x: torch.Tensor,
    weights: torch.Tensor,
    batch_info: LoRABatchInfo,
    output: torch.Tensor,
    n_offs: torch.Tensor | None = None,
    n_slices: int = 1,
) -> torch.Tensor:
    S, N, R = x.shape[0], weights.shape[-2], weights.shape[-1]
    # Plain ints: triton.cdiv and next_power_of_2 cost microseconds a call.
    block_k = 1 << (R - 1).bit_length()
    block_n = max(2048 // block_k, 8)
    _sgemm_lora_b_decode_kernel[(S, (N + block_n - 1) // block_n)](
        x,
        weights,
        output,
        N,
        R,
        n_offs,
        *x.stride(),
        *weights.stride(),
        *output.stride(),
        batch_info.seg_indptr,
        batch_info.weight_indices,
        batch_info.lora_ranks,
        batch_info.scalings,
        batch_info.permutation,
        batch_info.bs,
        n_slices,
        batch_info.permutation is not None,
        1 << (batch_info.bs - 1).bit_length(),
        block_n,
        block_k,
    )
    return output


def sgemm_lora_b_fwd(
    x: torch.Tensor,
    weights: torch.Tensor,
    batch_info: LoRABatchInfo,
    base_output: torch.Tensor = None,
) -> torch.Tensor:
    # x: (s, max_r)
    # weights: (num_lora, output_dim, max_r)
    # output: (s, output_dim)
    # output_dim is much larger than max_r

    assert x.is_contiguous()
    assert weights.is_contiguous()
    assert len(x.shape) == 2
    assert len(weights.shape) == 3

    S = x.shape[0]
    N = weights.shape[-2]
    R = weights.shape[-1]
    assert x.shape[-1] == R

    if base_output is None:
        output = torch.zeros((S, N), device=x.device, dtype=x.dtype)
    else:
        output = base_output
    if _use_decode_kernel(S, N, R):
        return sgemm_lora_b_decode_fwd(x, weights, batch_info, output)

    # Block shapes
    BLOCK_S = 16
    BLOCK_R = 16
    BLOCK_N = 256

    grid = (
        triton.cdiv(batch_info.max_len, BLOCK_S) * triton.cdiv(N, BLOCK_N),
        batch_info.bs,
    )

    sorted_by_adapter = batch_info.permutation is not None
    _sgemm_lora_b_kernel[grid](
        x,
        weights,
        output,
        N,
        R,
        x.stride(0),
        x.stride(1),
        weights.stride(0),
        weights.stride(1),
        weights.stride(2),
        output.stride(0),
        output.stride(1),
        batch_info.seg_lens,
        batch_info.seg_indptr,
        batch_info.weight_indices,
        batch_info.lora_ranks,
        batch_info.permutation,
        sorted_by_adapter,
        BLOCK_S,
        BLOCK_N,
        BLOCK_R,
        batch_info.scalings,
    )
    return output
