"""The per-batch MoE LoRA metadata as the patched sglang code paths produce it.

Drives BaseLoRABackend._add_moe_lora_info through the real prepare_lora_batch
of each of the four LoRA backends, and FusedMoEWithLoRA._get_lora_info /
build_lora_hooks reading it. Runs against the patched tree on PYTHONPATH
(make test sets it): on CUDA when there is a GPU, else on the CPU with the
Triton kernel in the interpreter.
"""

import dataclasses
import os
import random
from types import SimpleNamespace

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

from sglang.srt.lora.backend.ascend_backend import AscendLoRABackend  # noqa: E402
from sglang.srt.lora.backend.chunked_backend import ChunkedSgmvLoRABackend  # noqa: E402
from sglang.srt.lora.backend.torch_backend import TorchNativeLoRABackend  # noqa: E402
from sglang.srt.lora.backend.triton_backend import TritonLoRABackend  # noqa: E402
from sglang.srt.lora.layers import FusedMoEWithLoRA  # noqa: E402
from sglang.srt.lora.lora_moe_runners import (  # noqa: E402
    LoRAInfo,
    _get_token_lora_mapping,
)
from sglang.srt.model_executor.forward_batch_info import (  # noqa: E402
    ForwardBatch,
    ForwardMode,
)

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
MAX_LORAS = 8
LORA_RANKS = [0, 8, 16, 0, 32, 8, 64, 16]


@pytest.fixture(autouse=True)
def host_pinning_without_driver(monkeypatch):
    """All four backends stage host data in pinned memory, which needs a CUDA
    driver. Without a GPU, make pinning a no-op: it only speeds up copies and
    never changes values, so the code under test runs as it is."""
    if torch.cuda.is_available():
        return
    monkeypatch.setattr(torch.Tensor, "pin_memory", lambda self, *a, **k: self)
    for name in ("tensor", "zeros", "arange", "empty", "full"):
        original = getattr(torch, name)

        def unpinned(*args, _original=original, **kwargs):
            kwargs.pop("pin_memory", None)
            return _original(*args, **kwargs)

        monkeypatch.setattr(torch, name, unpinned)


def _backends():
    server_args = SimpleNamespace(max_lora_chunk_size=16)
    return {
        "triton": TritonLoRABackend(MAX_LORAS, DEVICE),
        "chunked": ChunkedSgmvLoRABackend(MAX_LORAS, DEVICE, server_args),
        "torch": TorchNativeLoRABackend(MAX_LORAS, DEVICE),
        "ascend": AscendLoRABackend(MAX_LORAS, DEVICE),
    }


def _forward_batch(seq_lens, decode):
    bs = len(seq_lens)
    num_tokens = sum(seq_lens)
    batch = ForwardBatch(
        forward_mode=ForwardMode.DECODE if decode else ForwardMode.EXTEND,
        batch_size=bs,
        input_ids=torch.zeros(num_tokens, dtype=torch.int64, device=DEVICE),
        req_pool_indices=torch.arange(bs, device=DEVICE),
        seq_lens=torch.tensor(seq_lens, dtype=torch.int32, device=DEVICE),
        out_cache_loc=torch.zeros(num_tokens, dtype=torch.int64, device=DEVICE),
        seq_lens_sum=num_tokens,
    )
    if not decode:
        batch.extend_seq_lens = torch.tensor(seq_lens, dtype=torch.int32, device=DEVICE)
        batch.extend_seq_lens_cpu = list(seq_lens)
        batch.extend_num_tokens = num_tokens
    return batch


def _expected(seq_lens, weight_indices):
    mapping = torch.repeat_interleave(
        torch.tensor(weight_indices, dtype=torch.int32), torch.tensor(seq_lens)
    )
    enabled = [0] * MAX_LORAS
    for lora in weight_indices:
        if 0 <= lora < MAX_LORAS and LORA_RANKS[lora] > 0:
            enabled[lora] = 1
    return mapping.tolist(), enabled


def _prepare(backend, seq_lens, weight_indices, decode):
    """The backend's real prepare_lora_batch, eager, for one batch."""
    backend.prepare_lora_batch(
        forward_batch=_forward_batch(seq_lens, decode),
        weight_indices=list(weight_indices),
        lora_ranks=list(LORA_RANKS),
        scalings=[1.0] * MAX_LORAS,
        use_cuda_graph=False,
    )


BATCHES = {
    "decode": ([1] * 11, [1, 1, 0, 4, 6, 6, 6, 2, 3, 7, 5], True),
    "extend": ([5, 1, 7, 3, 9, 2], [2, 0, 5, 2, 3, 7], False),
    # Long requests: the chunked backend splits them into several segments.
    "extend-long": ([40, 3, 33, 1], [4, 4, 1, 6], False),
    "extend-same-adapter": ([3, 5, 2], [2, 2, 2], False),
}


@pytest.mark.parametrize("backend_name", ["triton", "chunked", "torch", "ascend"])
@pytest.mark.parametrize("batch_name", sorted(BATCHES))
def test_prepare_lora_batch_fills_moe_lora_info(backend_name, batch_name):
    seq_lens, weight_indices, decode = BATCHES[batch_name]
    backend = _backends()[backend_name]
    backend.is_moe_lora = True
    _prepare(backend, seq_lens, weight_indices, decode)
    info = backend.batch_info.moe_lora_info
    assert info is not None
    expected_mapping, expected_enabled = _expected(seq_lens, weight_indices)
    assert info.token_lora_mapping.dtype == torch.int32
    assert info.token_lora_mapping.device.type == DEVICE.type
    assert info.token_lora_mapping.tolist() == expected_mapping
    assert info.adapter_enabled.tolist() == expected_enabled
    # The segments MoE LoRA uses cover the batch's tokens request by request
    # (or by runs of one adapter, for the torch backend's merged segments).
    seg_indptr = info.seg_indptr.tolist()
    assert seg_indptr[0] == 0 and seg_indptr[-1] == sum(seq_lens)
    seg_lens_of_info = [b - a for a, b in zip(seg_indptr, seg_indptr[1:])]
    rebuilt = torch.repeat_interleave(
        info.req_to_lora.cpu(), torch.tensor(seg_lens_of_info)
    )
    assert rebuilt.tolist() == expected_mapping
    if backend_name == "chunked":
        # Per-request segments, not the backend's chunks.
        assert info.req_to_lora.tolist() == weight_indices


@pytest.mark.parametrize("backend_name", ["triton", "chunked", "torch", "ascend"])
def test_no_moe_lora_layers_no_metadata(backend_name):
    seq_lens, weight_indices, decode = BATCHES["extend"]
    backend = _backends()[backend_name]
    assert backend.is_moe_lora is False
    _prepare(backend, seq_lens, weight_indices, decode)
    assert backend.batch_info.moe_lora_info is None


def _moe_layer(backend, virtual_experts=False, num_experts=4, rank=16):
    """A FusedMoEWithLoRA with the attributes _get_lora_info reads.

    __init__ needs a real FusedMoE with quantized weights and a GPU runner;
    _get_lora_info itself only reads these, so they are set directly."""
    layer = FusedMoEWithLoRA.__new__(FusedMoEWithLoRA)
    torch.nn.Module.__init__(layer)
    layer.lora_backend = backend
    layer.base_layer = SimpleNamespace(num_experts=num_experts, hidden_size=32)
    weights = torch.zeros(MAX_LORAS, num_experts, rank, 8, device=DEVICE)
    layer.set_lora_info(weights, weights, weights, weights)
    layer.experts_shared_outer_loras = False
    layer.lora_use_virtual_experts = virtual_experts
    layer.tp_size, layer.tp_rank = 1, 0
    return layer


def test_get_lora_info_reads_the_shared_batch_info():
    seq_lens, weight_indices, decode = BATCHES["extend"]
    backend = TritonLoRABackend(MAX_LORAS, DEVICE)
    layers = [_moe_layer(backend, virtual_experts=True) for _ in range(3)]
    backend.is_moe_lora = True
    _prepare(backend, seq_lens, weight_indices, decode)
    shared = backend.batch_info.moe_lora_info
    for layer in layers:
        lora_info = layer._get_lora_info()
        assert isinstance(lora_info, LoRAInfo)
        # The very tensors computed once per batch: nothing rebuilt per layer.
        assert lora_info.adapter_enabled is shared.adapter_enabled
        assert lora_info.token_lora_mapping is shared.token_lora_mapping
        assert lora_info.seg_indptr is shared.seg_indptr
        assert lora_info.req_to_lora is shared.req_to_lora
        assert lora_info.lora_ranks is backend.batch_info.lora_ranks
        assert lora_info.max_lora_rank == 16
        assert lora_info.lora_use_virtual_experts is True
        hidden_states = torch.zeros(sum(seq_lens), 32, device=DEVICE)
        mapping = _get_token_lora_mapping(hidden_states, lora_info)
        assert mapping.data_ptr() == shared.token_lora_mapping.data_ptr()
        assert mapping.tolist() == shared.token_lora_mapping.tolist()


def test_missing_shared_info_asserts():
    # Every backend fills moe_lora_info: a batch or a LoRAInfo without it is a
    # bug, not a reason to redo the work per layer.
    seq_lens, weight_indices, _ = BATCHES["extend"]
    backend = TritonLoRABackend(MAX_LORAS, DEVICE)
    layer = _moe_layer(backend, virtual_experts=True)
    backend.is_moe_lora = True
    _prepare(backend, seq_lens, weight_indices, decode=False)
    lora_info = dataclasses.replace(layer._get_lora_info(), token_lora_mapping=None)
    hidden_states = torch.zeros(sum(seq_lens), 32, device=DEVICE)
    with pytest.raises(AssertionError, match="no token_lora_mapping"):
        _get_token_lora_mapping(hidden_states, lora_info)
    backend.batch_info.moe_lora_info = None
    with pytest.raises(AssertionError, match="prepare_lora_batch set no moe_lora_info"):
        layer._get_lora_info()


def test_token_mapping_longer_than_hidden_states_is_sliced():
    rng = random.Random(7)
    seq_lens = [rng.randint(1, 9) for _ in range(6)]
    weight_indices = [rng.randint(0, MAX_LORAS - 1) for _ in seq_lens]
    backend = TritonLoRABackend(MAX_LORAS, DEVICE)
    backend.is_moe_lora = True
    _prepare(backend, seq_lens, weight_indices, decode=False)
    lora_info = _moe_layer(backend, virtual_experts=True)._get_lora_info()
    hidden_states = torch.zeros(sum(seq_lens) - 2, 32, device=DEVICE)
    mapping = _get_token_lora_mapping(hidden_states, lora_info)
    expected_mapping, _ = _expected(seq_lens, weight_indices)
    assert mapping.tolist() == expected_mapping[:-2]
    assert mapping.data_ptr() == lora_info.token_lora_mapping.data_ptr()
