from typing import Optional, Tuple, Union

import torch
import triton
import triton.language as tl
from triton.runtime.jit import JITFunction

from sglang.srt.lora.backend.lmhead_mixing import LoRABackendLmHeadMixing
from sglang.srt.lora.utils import LoRABatchInfo, MoELoRABatchInfo
from sglang.srt.model_executor.forward_batch_info import ForwardBatch

# Tile shapes of _compute_moe_lora_info_kernel: (segments, tokens) per tile.
# Decode-shaped batches (one token per segment) write one token per segment;
# extend batches loop over each segment's tokens in chunks.
_MOE_LORA_INFO_DECODE_TILE = (512, 1)
_MOE_LORA_INFO_EXTEND_TILE = (4, 256)
# Tokens per program that fill the uncovered part of token_lora_mapping with -1.
_MOE_LORA_INFO_FILL_BLOCK = 1024
# Segments scanned per step when building adapter_enabled.
_MOE_LORA_INFO_SCAN_BLOCK = 1024


# Nothing is specialized on argument values or pointer alignment: one compiled
# kernel per tile shape serves every batch, and can be launched directly.
@triton.jit(
    do_not_specialize=[
        "num_segments",
        "num_tokens",
        "mapping_len",
        "num_loras",
        "enabled_len",
        "num_segment_programs",
    ],
    do_not_specialize_on_alignment=[
        "seg_indptr",
        "weight_indices",
        "lora_ranks",
        "adapter_enabled",
        "token_lora_mapping",
    ],
)
def _compute_moe_lora_info_kernel(
    seg_indptr,  # (num_segments + 1,)
    weight_indices,  # (num_segments,)
    lora_ranks,  # (num_loras,)
    adapter_enabled,  # out: (enabled_len,), enabled_len >= num_loras
    token_lora_mapping,  # out: (mapping_len,), mapping_len >= num_tokens
    num_segments,
    num_tokens,
    mapping_len,
    num_loras,
    enabled_len,
    num_segment_programs,
    BLOCK_S: tl.constexpr,
    BLOCK_T: tl.constexpr,
    BLOCK_F: tl.constexpr,
    BLOCK_W: tl.constexpr,
    BLOCK_L: tl.constexpr,
):
    pid = tl.program_id(0)
    if pid < num_segment_programs:
        # Segment programs: write each segment's adapter index over its tokens.
        # Loop bounds come from seg_indptr itself, so no token of a segment is
        # ever skipped, whatever max_len the caller believed.
        segs = pid * BLOCK_S + tl.arange(0, BLOCK_S)
        seg_mask = segs < num_segments
        starts = tl.load(seg_indptr + segs, mask=seg_mask, other=0)
        ends = tl.load(seg_indptr + segs + 1, mask=seg_mask, other=0)
        loras = tl.load(weight_indices + segs, mask=seg_mask, other=-1)
        starts = tl.maximum(starts, 0)
        ends = tl.minimum(ends, num_tokens)
        longest = tl.max(ends - starts, axis=0)
        offsets = tl.arange(0, BLOCK_T)
        values = tl.broadcast_to(loras[:, None], (BLOCK_S, BLOCK_T))
        start = 0
        while start < longest:  # a while loop: see the adapter_enabled scan
            tokens = starts[:, None] + start + offsets[None, :]
            mask = seg_mask[:, None] & (tokens < ends[:, None])
            tl.store(token_lora_mapping + tokens, values, mask=mask)
            start += BLOCK_T
    else:
        # Fill programs: tokens no segment covers (past seg_indptr[-1], or a
        # padded tail of the buffer) get -1 so they never pick up an adapter.
        fill_pid = pid - num_segment_programs
        first = tl.load(seg_indptr)
        last = tl.load(seg_indptr + num_segments)
        covered_start = tl.minimum(tl.maximum(first, 0), num_tokens)
        covered_end = tl.minimum(tl.maximum(last, covered_start), num_tokens)
        tokens = fill_pid * BLOCK_F + tl.arange(0, BLOCK_F)
        uncovered = (tokens < covered_start) | (tokens >= covered_end)
        tl.store(
            token_lora_mapping + tokens, -1, mask=(tokens < mapping_len) & uncovered
        )

        if fill_pid == 0:
            # adapter_enabled: every entry is written, so no zeroing launch is
            # needed; -1 (no adapter) and out-of-range indices match no adapter.
            # while, not range: the bounds are runtime values, which Triton's
            # interpreter cannot take as range() bounds.
            lora_start = 0
            while lora_start < enabled_len:
                lora_ids = lora_start + tl.arange(0, BLOCK_L)
                used = tl.zeros((BLOCK_L,), dtype=tl.int32)
                seg_start = 0
                while seg_start < num_segments:
                    segs = seg_start + tl.arange(0, BLOCK_W)
                    loras = tl.load(
                        weight_indices + segs, mask=segs < num_segments, other=-1
                    )
                    hits = (loras[:, None] == lora_ids[None, :]).to(tl.int32)
                    used = tl.maximum(used, tl.max(hits, axis=0))
                    seg_start += BLOCK_W
                ranks = tl.load(
                    lora_ranks + lora_ids, mask=lora_ids < num_loras, other=0
                )
                enabled = (used > 0) & (ranks > 0)
                tl.store(
                    adapter_enabled + lora_ids,
                    enabled.to(tl.int32),
                    mask=lora_ids < enabled_len,
                )
                lora_start += BLOCK_L


def _get_moe_lora_segments(
    batch_info: LoRABatchInfo,
) -> Tuple[torch.Tensor, torch.Tensor, Optional[int]]:
    """Return (seg_indptr, req_to_lora, max_len) of the segments MoE LoRA uses.

    These are the per-request segments when the backend keeps them apart from
    its own (chunked) ones, else the backend's segments with their max_len.
    max_len is None for per-request segments: the batch info does not hold it.
    """
    if (
        batch_info.req_seg_indptr is not None
        and batch_info.req_weight_indices is not None
    ):
        bs = batch_info.bs
        return (
            _leading(batch_info.req_seg_indptr, bs + 1),
            _leading(batch_info.req_weight_indices, bs),
            None,
        )
    num_segments = batch_info.num_segments
    max_len = batch_info.max_len
    return (
        _leading(batch_info.seg_indptr, num_segments + 1),
        _leading(batch_info.weight_indices, num_segments),
        # Some backends keep max_len as a 0-d CPU tensor.
        None if max_len is None else int(max_len),
    )


def _leading(tensor: torch.Tensor, n: int) -> torch.Tensor:
    """The first n entries; the tensor itself (no new view) when it has n."""
    return tensor if tensor.shape[0] == n else tensor[:n]


def _check_moe_lora_info_tensor(
    name: str,
    tensor: torch.Tensor,
    dtypes: Tuple[torch.dtype, ...],
    device: torch.device,
    device_index: int,
):
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(tensor).__name__}")
    if tensor.dtype not in dtypes:
        raise TypeError(
            f"{name} must have dtype {' or '.join(map(str, dtypes))}, got {tensor.dtype}"
        )
    # get_device() is -1 on the CPU; comparing it is cheaper than torch.device.
    if tensor.get_device() != device_index:
        raise ValueError(f"{name} is on {tensor.device}, but seg_indptr is on {device}")
    if tensor.dim() != 1 or (tensor.stride(0) != 1 and tensor.numel() > 1):
        raise ValueError(
            f"{name} must be a contiguous 1-D tensor, got shape "
            f"{tuple(tensor.shape)} with strides {tensor.stride()}"
        )


def _compute_moe_lora_info(
    num_tokens: int,
    seg_indptr: torch.Tensor,
    lora_ranks: torch.Tensor,
    weight_indices: torch.Tensor,
    adapter_enabled: Optional[torch.Tensor],
    token_lora_mapping: Optional[torch.Tensor],
    max_len: int,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Compute the per-batch MoE LoRA metadata.

    Returns (adapter_enabled, token_lora_mapping):
      adapter_enabled[i] = 1 if some segment uses adapter i and lora_ranks[i] > 0,
        else 0; int32 in shape (num_loras,).
      token_lora_mapping[t] = weight_indices[s] for the segment s holding token t,
        -1 for tokens past the last segment; int32 in shape (num_tokens,).

    Given buffers are written in place and views of them are returned; a
    token_lora_mapping buffer may be longer than num_tokens, and its tail is set
    to -1 so padded tokens of a CUDA graph batch never pick up an adapter.
    On CUDA this is a single kernel launch with no host synchronization.
    """
    if not isinstance(num_tokens, int) or not 0 <= num_tokens < 2**31:
        raise ValueError(
            f"num_tokens must be a non-negative int below 2**31, got {num_tokens!r}"
        )
    if not isinstance(max_len, int) or max_len < 0:
        raise ValueError(f"max_len must be a non-negative int, got {max_len!r}")
    if not isinstance(seg_indptr, torch.Tensor):
        raise TypeError(
            f"seg_indptr must be a torch.Tensor, got {type(seg_indptr).__name__}"
        )
    device = seg_indptr.device
    device_index = seg_indptr.get_device()
    _check_moe_lora_info_tensor(
        "seg_indptr", seg_indptr, (torch.int32,), device, device_index
    )
    _check_moe_lora_info_tensor(
        "weight_indices", weight_indices, (torch.int32,), device, device_index
    )
    _check_moe_lora_info_tensor(
        "lora_ranks", lora_ranks, (torch.int32, torch.int64), device, device_index
    )
    num_segments = weight_indices.numel()
    if seg_indptr.numel() != num_segments + 1:
        raise ValueError(
            f"seg_indptr must have num_segments + 1 = {num_segments + 1} entries "
            f"(one more than weight_indices), got {seg_indptr.numel()}"
        )
    if adapter_enabled is not None:
        _check_moe_lora_info_tensor(
            "adapter_enabled", adapter_enabled, (torch.int32,), device, device_index
        )
    if token_lora_mapping is not None:
        _check_moe_lora_info_tensor(
            "token_lora_mapping",
            token_lora_mapping,
            (torch.int32,),
            device,
            device_index,
        )
    return _compute_moe_lora_info_unchecked(
        num_tokens,
        seg_indptr,
        lora_ranks,
        weight_indices,
        adapter_enabled,
        token_lora_mapping,
        max_len,
    )


def _compute_moe_lora_info_unchecked(
    num_tokens: int,
    seg_indptr: torch.Tensor,
    lora_ranks: torch.Tensor,
    weight_indices: torch.Tensor,
    adapter_enabled: Optional[torch.Tensor],
    token_lora_mapping: Optional[torch.Tensor],
    max_len: int,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """_compute_moe_lora_info for arguments known to be well formed (dtypes,
    devices, shapes), such as a backend's own batch info: the per-tensor checks
    cost more host time than the launch. The coverage check stays."""
    num_segments = weight_indices.shape[0]
    num_loras = lora_ranks.shape[0]
    # Host-side ints only: checking this costs no synchronization.
    if num_segments * max_len < num_tokens:
        raise AssertionError(
            f"{num_segments} segments of at most max_len={max_len} tokens "
            f"under-covers tokens: num_tokens={num_tokens}"
        )
    device = seg_indptr.device
    if adapter_enabled is None:
        adapter_enabled = torch.empty(num_loras, dtype=torch.int32, device=device)
    elif adapter_enabled.shape[0] < num_loras:
        raise ValueError(
            f"adapter_enabled holds {adapter_enabled.shape[0]} entries, "
            f"fewer than num_loras={num_loras}"
        )
    if token_lora_mapping is None:
        token_lora_mapping = torch.empty(num_tokens, dtype=torch.int32, device=device)
    elif token_lora_mapping.shape[0] < num_tokens:
        raise ValueError(
            f"token_lora_mapping holds {token_lora_mapping.shape[0]} entries, "
            f"fewer than num_tokens={num_tokens}"
        )

    if device.type == "cuda" or not isinstance(
        _compute_moe_lora_info_kernel, JITFunction
    ):
        # CUDA/ROCm, or Triton's interpreter (TRITON_INTERPRET=1) on any device.
        _launch_moe_lora_info_kernel(
            num_tokens,
            seg_indptr,
            lora_ranks,
            weight_indices,
            adapter_enabled,
            token_lora_mapping,
            max_len,
        )
    else:
        _compute_moe_lora_info_native(
            num_tokens,
            seg_indptr,
            lora_ranks,
            weight_indices,
            adapter_enabled,
            token_lora_mapping,
        )
    # Views only where the buffers are longer: slicing costs host time.
    if adapter_enabled.numel() != num_loras:
        adapter_enabled = adapter_enabled[:num_loras]
    if token_lora_mapping.numel() != num_tokens:
        token_lora_mapping = token_lora_mapping[:num_tokens]
    return adapter_enabled, token_lora_mapping


# Compiled kernels by (device, lora_ranks dtype, tile shape), launched directly.
# Triton's JIT entry point binds and specializes every argument on each call,
# which costs several times the host time of the launch itself.
_moe_lora_info_kernels = {}


def _launch_moe_lora_info_kernel(
    num_tokens: int,
    seg_indptr: torch.Tensor,
    lora_ranks: torch.Tensor,
    weight_indices: torch.Tensor,
    adapter_enabled: torch.Tensor,
    token_lora_mapping: torch.Tensor,
    max_len: int,
):
    num_segments = weight_indices.numel()
    mapping_len = token_lora_mapping.numel()
    enabled_len = adapter_enabled.numel()
    block_s, block_t = (
        _MOE_LORA_INFO_DECODE_TILE if max_len <= 1 else _MOE_LORA_INFO_EXTEND_TILE
    )
    block_l = min(triton.next_power_of_2(max(enabled_len, 1)), 64)
    num_segment_programs = triton.cdiv(num_segments, block_s)
    grid = num_segment_programs + max(
        1, triton.cdiv(mapping_len, _MOE_LORA_INFO_FILL_BLOCK)
    )
    args = (
        seg_indptr,
        weight_indices,
        lora_ranks,
        adapter_enabled,
        token_lora_mapping,
        num_segments,
        num_tokens,
        mapping_len,
        lora_ranks.numel(),
        enabled_len,
        num_segment_programs,
        block_s,
        block_t,
        _MOE_LORA_INFO_FILL_BLOCK,
        _MOE_LORA_INFO_SCAN_BLOCK,
        block_l,
    )
    device_index = seg_indptr.get_device()
    key = (device_index, lora_ranks.dtype, block_s, block_t, block_l)
    kernel = _moe_lora_info_kernels.get(key)
    if (
        kernel is not None
        and device_index == torch.cuda.current_device()
        and not triton.knobs.runtime.launch_enter_hook.calls
    ):
        kernel.run(
            grid,
            1,
            1,
            triton.runtime.driver.active.get_current_stream(device_index),
            kernel.function,
            kernel.packed_metadata,
            None,  # launch metadata: only read by launch hooks
            None,
            None,
            *args,
        )
        return
    kernel = _compute_moe_lora_info_kernel[(grid,)](*args)
    if isinstance(_compute_moe_lora_info_kernel, JITFunction):
        _moe_lora_info_kernels[key] = kernel


def _compute_moe_lora_info_native(
    num_tokens: int,
    seg_indptr: torch.Tensor,
    lora_ranks: torch.Tensor,
    weight_indices: torch.Tensor,
    adapter_enabled: torch.Tensor,
    token_lora_mapping: torch.Tensor,
):
    """Same result as the Triton kernel with plain torch ops, for devices without
    Triton (CPU, NPU, XPU). Shapes never depend on data, so nothing syncs."""
    device = seg_indptr.device
    num_loras = lora_ranks.numel()
    lora_ids = torch.arange(adapter_enabled.numel(), dtype=torch.int32, device=device)
    used = (weight_indices[:, None] == lora_ids[None, :]).any(dim=0)
    ranks = torch.zeros(adapter_enabled.numel(), dtype=lora_ranks.dtype, device=device)
    ranks[:num_loras] = lora_ranks
    adapter_enabled.copy_(used & (ranks > 0))

    tokens = torch.arange(
        token_lora_mapping.numel(), dtype=seg_indptr.dtype, device=device
    )
    # The segment of each token: the first one that ends after it. Tokens past
    # the last segment get index num_segments, which looks up -1.
    segs = torch.searchsorted(seg_indptr[1:], tokens, right=True)
    lookup = torch.cat([weight_indices, weight_indices.new_full((1,), -1)])
    covered_start = seg_indptr[0].clamp(0, num_tokens)
    covered_end = torch.maximum(seg_indptr[-1].clamp(max=num_tokens), covered_start)
    covered = (tokens >= covered_start) & (tokens < covered_end)
    token_lora_mapping.copy_(torch.where(covered, lookup[segs], -1))


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
        self.init_lm_head_config()

    @property
    def is_moe_lora(self) -> bool:
        """Whether the model has MoE LoRA layers, which need batch_info.moe_lora_info."""
        return getattr(self, "_is_moe_lora", False)

    @is_moe_lora.setter
    def is_moe_lora(self, value: bool):
        self._is_moe_lora = value

    def _add_moe_lora_info(
        self, forward_batch: ForwardBatch, batch_info: LoRABatchInfo
    ) -> LoRABatchInfo:
        """Compute the MoE LoRA metadata of the batch once, for all MoE layers.

        Called at the end of prepare_lora_batch. MoE LoRA maps tokens to
        requests, so it uses the per-request segments when the backend keeps
        them apart from its own (chunked) segments.
        """
        if not self.is_moe_lora:
            return batch_info

        num_tokens = forward_batch.input_ids.shape[0]
        seg_indptr, req_to_lora, max_len = _get_moe_lora_segments(batch_info)
        if max_len is None:
            # Per-request segments: their longest is the longest extend length.
            if (
                forward_batch.forward_mode.is_extend()
                and forward_batch.extend_seq_lens_cpu
            ):
                max_len = max(forward_batch.extend_seq_lens_cpu)
            else:
                max_len = -(-num_tokens // max(req_to_lora.shape[0], 1))

        cg_buffers = getattr(self, "moe_cg_buffers", None)
        if batch_info.use_cuda_graph and cg_buffers is not None:
            # Graphs captured the addresses of these buffers: write in place.
            adapter_enabled = cg_buffers["adapter_enabled"]
            token_lora_mapping = cg_buffers["token_lora_mapping"]
        else:
            adapter_enabled = token_lora_mapping = None

        # The backend's own int32 tensors skip the per-tensor checks; anything
        # else goes through them, to fail with a clear error.
        compute = (
            _compute_moe_lora_info_unchecked
            if seg_indptr.dtype == req_to_lora.dtype == torch.int32
            and seg_indptr.shape[0] == req_to_lora.shape[0] + 1
            else _compute_moe_lora_info
        )
        adapter_enabled, token_lora_mapping = compute(
            num_tokens,
            seg_indptr,
            batch_info.lora_ranks,
            req_to_lora,
            adapter_enabled,
            token_lora_mapping,
            max_len,
        )
        batch_info.moe_lora_info = MoELoRABatchInfo(
            seg_indptr=seg_indptr,
            req_to_lora=req_to_lora,
            adapter_enabled=adapter_enabled,
            token_lora_mapping=token_lora_mapping,
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
            # Adapter of each token for virtual experts, written once per batch
            # by _add_moe_lora_info; -1 past the batch's tokens.
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
