from typing import Tuple, Union

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from sglang.srt.lora.backend.lmhead_mixing import LoRABackendLmHeadMixing
from sglang.srt.lora.utils import LoRABatchInfo, MoELoRABatchInfo
from sglang.srt.model_executor.forward_batch_info import ForwardBatch


@triton.jit
def _or(a, b):
    return a | b


@triton.jit
def _adapter_bits(loras, base):
    # Bit i: some entry is adapter base + i. -1 hits no bit: never an address.
    hit = (loras >= base) & (loras < base + 32)
    return tl.reduce(tl.where(hit, 1 << tl.where(hit, loras - base, 0), 0), 0, _or)


# The int arguments change with every batch: one compiled kernel per tile shape.
@triton.jit(do_not_specialize=range(5, 10))
def _compute_moe_lora_info_kernel(
    seg_indptr_ptr,  # (num_segments + 1,)
    weight_indices_ptr,  # (num_segments,), -1 for no adapter
    lora_ranks_ptr,  # (num_loras,)
    adapter_enabled_ptr,  # out: (enabled_len,), enabled_len >= num_loras
    mapping_ptr,  # out: token_lora_mapping (mapping_len,), >= num_tokens
    num_segments,
    num_tokens,
    num_loras,
    enabled_len,
    mapping_len,
    BLOCK_S: tl.constexpr,
    BLOCK_T: tl.constexpr,
    BLOCK_W: tl.constexpr,
    BLOCK_U: tl.constexpr,
):
    # A 2D grid: (segment block, token chunk), no division before the loads.
    pid, chunk = tl.program_id(0) - 1, tl.program_id(1)
    if (pid < 0) & (chunk == 0):
        # Program 0 ORs one bit per adapter in use, 32 adapters a step, beside
        # the token programs; each entry is stored once: no zeroing, no barrier.
        bit_ids = tl.arange(0, 32)
        ranks = tl.load(lora_ranks_ptr + bit_ids, bit_ids < num_loras, other=0)
        scan = tl.arange(0, BLOCK_W)
        used_by = tl.load(weight_indices_ptr + scan, scan < num_segments, other=-1)
        base = 0
        while base < enabled_len:
            bits = _adapter_bits(used_by, base)
            start = BLOCK_W
            while start < num_segments:
                scan = start + tl.arange(0, BLOCK_W)
                more = tl.load(weight_indices_ptr + scan, scan < num_segments, -1)
                bits |= _adapter_bits(more, base)
                start += BLOCK_W
            enabled = ((bits >> bit_ids) & 1) & (ranks > 0).to(tl.int32)
            ids = base + bit_ids
            tl.store(adapter_enabled_ptr + ids, enabled, mask=ids < enabled_len)
            base += 32
            ranks = tl.load(lora_ranks_ptr + ids + 32, ids + 32 < num_loras, other=0)
    elif pid >= 0:
        # The others write a block of BLOCK_S segments over their tokens,
        # num_chunks programs to a block. All loads share one round trip.
        num_chunks = tl.num_programs(1)
        segs = pid * BLOCK_S + tl.arange(0, BLOCK_S)
        seg_mask = segs < num_segments
        starts = tl.maximum(tl.load(seg_indptr_ptr + segs, seg_mask, other=0), 0)
        ends = tl.minimum(tl.load(seg_indptr_ptr + segs + 1, seg_mask, 0), num_tokens)
        loras = tl.load(weight_indices_ptr + segs, mask=seg_mask, other=-1)
        first = tl.minimum(tl.maximum(tl.load(seg_indptr_ptr), 0), num_tokens)
        last = tl.load(seg_indptr_ptr + num_segments)
        last = tl.minimum(tl.maximum(last, first), num_tokens)
        # The first tokens go out before the reduction bounding the loop, which
        # ends where seg_indptr says: a wrong max_len costs time, not tokens.
        offset = chunk * BLOCK_T
        tokens = starts[:, None] + offset + tl.arange(0, BLOCK_T)[None, :]
        tl.store(mapping_ptr + tokens, loras[:, None], mask=tokens < ends[:, None])
        longest = tl.max(ends - starts, axis=0)
        offset += num_chunks * BLOCK_T
        while offset < longest:
            tokens = starts[:, None] + offset + tl.arange(0, BLOCK_T)[None, :]
            tl.store(mapping_ptr + tokens, loras[:, None], tokens < ends[:, None])
            offset += num_chunks * BLOCK_T
        # Tokens no segment covers (a graph batch's padded tail too) get -1.
        tokens = (pid * num_chunks + chunk) * BLOCK_U + tl.arange(0, BLOCK_U)
        uncovered = ((tokens < first) | (tokens >= last)) & (tokens < mapping_len)
        tl.store(mapping_ptr + tokens, -1, mask=uncovered)


# Triton's interpreter (TRITON_INTERPRET=1) runs the kernel on CPU tensors too.
_TRITON_INTERPRETED = not isinstance(_compute_moe_lora_info_kernel, triton.JITFunction)


def _compute_moe_lora_info(
    num_tokens: int,
    seg_indptr: torch.Tensor,
    lora_ranks: torch.Tensor,
    weight_indices: torch.Tensor,
    adapter_enabled: torch.Tensor | None,
    token_lora_mapping: torch.Tensor | None,
    max_len: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """adapter_enabled[i] = 1 iff a segment uses adapter i and lora_ranks[i] > 0;
    token_lora_mapping[t] = the adapter of token t's segment, -1 elsewhere. Given
    buffers are written in place. On CUDA: one launch, no host sync."""
    num_segments, num_loras = weight_indices.shape[0], lora_ranks.shape[0]
    assert num_segments * max_len >= num_tokens, (
        f"{num_segments} segments of max_len={max_len} under-covers tokens: "
        f"num_tokens={num_tokens}"
    )
    assert (
        seg_indptr.shape[0] == num_segments + 1
    ), f"seg_indptr has {seg_indptr.shape[0]} entries for {num_segments} segments"
    device = seg_indptr.device
    if adapter_enabled is None:
        adapter_enabled = torch.empty(num_loras, dtype=torch.int32, device=device)
    if token_lora_mapping is None:
        token_lora_mapping = torch.empty(num_tokens, dtype=torch.int32, device=device)
    enabled_len, mapping_len = adapter_enabled.shape[0], token_lora_mapping.shape[0]
    assert enabled_len >= num_loras, f"adapter_enabled too short: {enabled_len}"
    assert mapping_len >= num_tokens, f"token_lora_mapping too short: {mapping_len}"

    if seg_indptr.is_cuda or _TRITON_INTERPRETED:
        # Tiles sized to the batch: one token per segment at decode, at most 256
        # tokens and 32 segments per program (more programs beat bigger ones).
        # Plain ints: triton.next_power_of_2 costs microseconds a call.
        max_len = max(min(max_len, num_tokens), 1)
        block_t = min(1 << (max_len - 1).bit_length(), 256)
        pow2_segments = 1 << max(num_segments - 1, 0).bit_length()
        block_s = min(pow2_segments, 256 // block_t, 32)
        num_chunks = -(-max_len // block_t)
        block_u = min(1 << max(mapping_len - 1, 0).bit_length(), 256)
        tail = -(-mapping_len // (block_u * num_chunks))
        grid = (1 + max(-(-num_segments // block_s), tail, 1), num_chunks)
        _compute_moe_lora_info_kernel[grid](
            seg_indptr,
            weight_indices,
            lora_ranks,
            adapter_enabled,
            token_lora_mapping,
            num_segments,
            num_tokens,
            num_loras,
            enabled_len,
            mapping_len,
            block_s,
            block_t,
            min(pow2_segments, 1024),
            block_u,
        )
    else:
        args = (seg_indptr, lora_ranks, weight_indices, adapter_enabled)
        _compute_moe_lora_info_native(num_tokens, *args, token_lora_mapping)
    # A slice costs about a microsecond of host time: only where it is needed.
    if enabled_len > num_loras:
        adapter_enabled = adapter_enabled[:num_loras]
    if mapping_len > num_tokens:
        token_lora_mapping = token_lora_mapping[:num_tokens]
    return adapter_enabled, token_lora_mapping


def _compute_moe_lora_info_native(
    num_tokens, seg_indptr, lora_ranks, weight_indices, adapter_enabled, mapping
):
    """The kernel's result from torch ops, for devices without Triton (CPU, NPU,
    XPU). No shape depends on the data, so nothing synchronizes."""
    lora_ids = torch.arange(adapter_enabled.shape[0], device=seg_indptr.device)
    ranks = F.pad(lora_ranks, (0, lora_ids.shape[0] - lora_ranks.shape[0]))
    used = (weight_indices[:, None] == lora_ids[None, :]).any(dim=0)
    adapter_enabled.copy_(used & (ranks > 0))
    tokens = torch.arange(mapping.shape[0], device=seg_indptr.device)
    # Token t of segment s sorts at s + 1; uncovered ones at 0 or past the end.
    segs = torch.searchsorted(seg_indptr, tokens.to(seg_indptr.dtype), right=True)
    lookup = F.pad(weight_indices, (1, 1), value=-1)[segs]
    mapping.copy_(torch.where(tokens < num_tokens, lookup, -1))


class BaseLoRABackend(LoRABackendLmHeadMixing):
    """Base class for different Lora backends.
       Each backend has its own implementation of Lora kernels.

    Args:
        max_loras_per_batch: maximum number of different lora weights
                             that can be applied in a single forward batch.
        device: the device where the backend runs.
    """

    def __init__(self, max_loras_per_batch: int, device: torch.device):
        self.max_loras_per_batch = max_loras_per_batch
        self.device = device
        # Set by MoE LoRA layers, which read batch_info.moe_lora_info.
        self.is_moe_lora = False
        self.init_lm_head_config()

    def _add_moe_lora_info(
        self, forward_batch: ForwardBatch, batch_info: LoRABatchInfo
    ) -> LoRABatchInfo:
        """Compute batch_info.moe_lora_info once per batch, for all MoE layers,
        at the end of prepare_lora_batch. MoE LoRA maps tokens to requests, so
        it takes the per-request segments where the backend has its own."""
        if not self.is_moe_lora:
            return batch_info
        num_tokens = forward_batch.input_ids.shape[0]
        if batch_info.req_seg_indptr is not None:
            bs = batch_info.bs
            seg_indptr = batch_info.req_seg_indptr[: bs + 1]
            req_to_lora = batch_info.req_weight_indices[:bs]
            extend_lens = forward_batch.extend_seq_lens_cpu
            is_extend = forward_batch.forward_mode.is_extend() and extend_lens
            max_len = max(extend_lens) if is_extend else -(-num_tokens // max(bs, 1))
        else:
            seg_indptr = batch_info.seg_indptr[: batch_info.num_segments + 1]
            req_to_lora = batch_info.weight_indices[: batch_info.num_segments]
            max_len = int(batch_info.max_len)  # a 0-d CPU tensor in some backends

        out = (None, None)
        if batch_info.use_cuda_graph and hasattr(self, "moe_cg_buffers"):
            # Graphs captured the addresses of these buffers: write in place.
            cg_buffers = self.moe_cg_buffers
            out = (cg_buffers["adapter_enabled"], cg_buffers["token_lora_mapping"])
        adapter_enabled, token_lora_mapping = _compute_moe_lora_info(
            num_tokens, seg_indptr, batch_info.lora_ranks, req_to_lora, *out, max_len
        )
        batch_info.moe_lora_info = MoELoRABatchInfo(
            seg_indptr, req_to_lora, adapter_enabled, token_lora_mapping
        )
        return batch_info

    def run_lora_a_embedding(
        self,
        input_ids: torch.Tensor,
        weights: torch.Tensor,
        vocab_size: int,
        extra_embeddings: torch.Tensor = None,
        *args,
        **kwargs,
    ) -> torch.Tensor:
        """Run LoRA A embedding lookup with CUDA graph support.

        Args:
            input_ids: token IDs with shape (s,), where s is the sum of all sequence lengths
            weights: LoRA A embedding weights with shape (num_loras, rank, vocab_size)
            vocab_size: base vocabulary size (tokens >= vocab_size are extra tokens)
            extra_embeddings: extra token embeddings with shape (num_loras, num_extra_tokens, rank)
            Only needed if there are added tokens beyond base vocabulary.

        Returns:
            result with shape (s, rank)
        """
        pass

    def run_extra_token_embedding(
        self,
        input_ids: torch.Tensor,
        output: torch.Tensor,
        extra_embeddings: torch.Tensor,
        vocab_size: int,
        *args,
        **kwargs,
    ) -> torch.Tensor:
        """
        Apply extra token embeddings to output in-place.

        Args:
            input_ids: (s,) token IDs
            output: (s, embed_dim) output tensor to be modified
            extra_embeddings: (num_loras, num_extra_tokens, embed_dim) extra embeddings
            vocab_size: base vocabulary size

        Returns:
            output: modified output tensor
        """
        raise NotImplementedError

    def run_lora_a_sgemm(
        self, x: torch.Tensor, weights: torch.Tensor, *args, **kwargs
    ) -> torch.Tensor:
        """Run segment Gemm of lora a modules with current backend.
        The definition of segment Gemm can be referred to https://docs.flashinfer.ai/api/gemm.html.

        Args:
             x: input matrix with shape (s, input_dim), here s is the sum of all sequence lengths
             weights: a set of lora weights with shape (num_lora, c * r, input_dim),
                      here r is lora rank, c is a multiplier for stacked modules (e.g., c=3 for qkv_proj, c=2 for gate_up_proj)
                      usually input_dim is much larger than r
        Returns:
             result with shape (s, c * r)
        """
        pass

    def run_lora_b_sgemm(
        self, x: torch.Tensor, weights: torch.Tensor, *args, **kwargs
    ) -> torch.Tensor:
        """Run segment Gemm of lora b modules with current backend.
        The definition of segment Gemm can be referred to https://docs.flashinfer.ai/api/gemm.html.

        Args:
             x: input matrix with shape (s, r), here s is the sum of all sequence lengths, r is lora rank
             weights: a set of lora weights with shape (num_lora, output_dim, r)
                      usually output_dim is much larger than r
        Returns:
             result with shape (s, output_dim)
        """
        pass

    def run_qkv_lora(
        self,
        x: torch.Tensor,
        qkv_lora_a: torch.Tensor,
        qkv_lora_b: Union[torch.Tensor, Tuple[torch.Tensor]],
        *args,
        **kwargs,
    ) -> torch.Tensor:
        """Run the lora pass for QKV Layer.

        Args:
            x: input matrix with shape (s, input_dim), here s is the sum of all sequence lengths
            qkv_lora_a: lora_a module for qkv, with shape (num_lora, 3 * r, input_dim)
            qkv_lora_b: lora_b module for qkv.
                        If passed in as a tensor, its shape should be (num_lora,output_dim_q + 2 * output_dim_kv, r)
                        If passed in as a tuple of two tensors, it should contain:
                           a lora_b module for q, with shape (1, num_lora, output_dim_q, r)
                           and a combined lora_b module for kv, with shape (2, num_lora, output_dim_kv, r)
        Returns:
            result with shape (s, output_dim_q + 2 * output_dim_kv)
        """
        pass

    def run_gate_up_lora(
        self,
        x: torch.Tensor,
        gate_up_lora_a: torch.Tensor,
        gate_up_lora_b: Union[torch.Tensor, Tuple[torch.Tensor]],
        *args,
        **kwargs,
    ) -> torch.Tensor:
        """Run the lora pass for gate_up_proj, usually attached to MergedColumnParallelLayer.

        Args:
            x: input matrix with shape (s, input_dim), here s is the sum of all sequence lengths
            gate_up_lora_a: lora_a module for gate_up_proj, with shape (num_lora, 2 * r, input_dim)
            gate_up_lora_b: lora_b module for qkv.
                        If passed in as a tensor, its shape should be (num_lora, 2 * output_dim, r)
                        If passed in as a tuple, it should contain two tensors with shape (num_lora, output_dim, r)
        Returns:
            result with shape (s, 2 * output_dim)
        """
        pass

    def init_cuda_graph_batch_info(
        self,
        max_bs_in_cuda_graph: int,
        num_tokens_per_bs: int,
    ):
        """Phase 2 of LoRA CUDA graph init: dense LoRA batch metadata.

        Called during CudaGraphRunner.__init__(), after init_memory_pool().

        Args:
            max_bs_in_cuda_graph: maximum batch size for CUDA Graph mode
            num_tokens_per_bs: number of tokens per sequence (1 for decoding, >1 for target_verify)
        """
        pass

    def init_cuda_graph_moe_buffers(
        self,
        max_bs: int,
        max_loras: int,
        compute_dtype: torch.dtype,
        moe_layer,
    ):
        """Phase 1 of LoRA CUDA graph init: MoE intermediate buffers.

        Called once before init_memory_pool() with a representative MoE layer
        to extract dimensions.  All FusedMoEWithLoRA layers share the same
        buffers since they execute sequentially during forward.

        This is backend-agnostic because MoE LoRA always uses the same
        fused Triton kernel (TritonRunnerCoreWithLoRA) regardless of which
        dense LoRA backend is selected.
        """
        base = moe_layer.base_layer
        top_k = base.top_k
        qinfo = moe_layer._quant_info
        E, N, _ = qinfo.w13_weight.shape
        hidden_dim = qinfo.w2_weight.shape[1]
        device = qinfo.w13_weight.device
        dtype = compute_dtype
        num_experts = base.num_experts

        block_size_m = 64
        max_num_tokens_padded = max_bs * top_k + num_experts * (block_size_m - 1)
        max_num_tokens_padded = (
            (max_num_tokens_padded + block_size_m - 1) // block_size_m
        ) * block_size_m
        max_num_m_blocks = (max_num_tokens_padded + block_size_m - 1) // block_size_m

        self.moe_cg_buffers = {
            "intermediate_cache1": torch.empty(
                (max_bs, top_k, N), device=device, dtype=dtype
            ),
            "intermediate_cache2": torch.empty(
                (max_bs * top_k, N // 2), device=device, dtype=dtype
            ),
            "intermediate_cache3": torch.empty(
                (max_bs, top_k, hidden_dim), device=device, dtype=dtype
            ),
            "out_hidden_states": torch.empty(
                (max_bs, hidden_dim), device=device, dtype=dtype
            ),
            "sorted_token_ids_lora": torch.empty(
                (max_loras * max_num_tokens_padded,),
                device=device,
                dtype=torch.int32,
            ),
            "expert_ids_lora": torch.empty(
                (max_loras * max_num_m_blocks,),
                device=device,
                dtype=torch.int32,
            ),
            "num_tokens_post_padded_lora": torch.empty(
                (max_loras,), device=device, dtype=torch.int32
            ),
            "adapter_enabled": torch.zeros(max_loras, dtype=torch.int32, device=device),
            # Adapter of each token, written by _add_moe_lora_info; -1 past the
            # batch's tokens.
            "token_lora_mapping": torch.full(
                (max_bs,), -1, dtype=torch.int32, device=device
            ),
            "lora_ids": torch.arange(max_loras, dtype=torch.int32, device=device),
            "cumsum_buffer": torch.zeros(
                max_loras * (num_experts + 1),
                dtype=torch.int32,
                device=device,
            ),
            "token_mask": torch.empty(
                (max_loras * max_bs * top_k,),
                dtype=torch.int32,
                device=device,
            ),
            "max_num_tokens_padded": max_num_tokens_padded,
            "max_num_m_blocks": max_num_m_blocks,
        }

    def prepare_lora_batch(
        self,
        forward_batch: ForwardBatch,
        weight_indices: list[int],
        lora_ranks: list[int],
        scalings: list[float],
        use_cuda_graph: bool,
    ):
        """Prepare the lora weights and batch info for current forward batch.

        This method provides a hook for each backend to conduct its own preparation
        logic for each forward batch.

        Args:
            forward_batch: the ForwardBatch object for current forward pass
            weight_indices: list of indices of lora weights to be applied for current batch
            lora_ranks: list of lora ranks corresponding to weight_indices
            scalings: list of scaling factors corresponding to weight_indices
            use_cuda_graph: whether to use CUDA Graph for this batch
        """
        pass
