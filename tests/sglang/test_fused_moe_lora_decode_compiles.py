"""The MoE LoRA decode kernel compiles for Hopper at the shapes and tiles
fused_moe_lora_decode picks for real models, without a GPU.

As for the metadata kernel (test_moe_lora_info_compiles.py): the interpreter
runs programs the compiler may reject, so the launches the wrapper makes for
Qwen3-30B-A3B and a Kimi-K2-like layer, at ranks 8 to 128, are recorded and
each is compiled to an sm_90 cubin by Triton's compiler and ptxas, in a
process without the interpreter, with the launcher's 16-byte specialization
of pointers and strides.
"""

import importlib
import os

import torch
from sm90_compile import RecordingKernel, compile_for_sm90

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

# The module: triton_ops re-exports its function under the same name.
decode = importlib.import_module("sglang.srt.lora.triton_ops.fused_moe_lora_decode")

# name: (experts, hidden, moe_intermediate)
SHAPES = {"qwen3": (128, 2048, 768), "kimi": (384, 7168, 2048)}
RANKS = (8, 32, 128)
TOP_K = 8


def _hook_launches(experts, hidden, inter, rank, monkeypatch):
    """The gate_up and down launches of one decode token (meta tensors: no data)."""
    recorder = RecordingKernel()
    monkeypatch.setattr(decode, "_fused_moe_lora_decode_kernel", recorder)

    def empty(*shape, dtype=torch.bfloat16):
        return torch.empty(*shape, dtype=dtype, device="meta")

    ids, weights = empty(1, TOP_K, dtype=torch.int32), empty(
        1, TOP_K, dtype=torch.float32
    )
    mapping, enabled = empty(1, dtype=torch.int32), empty(4, dtype=torch.int32)
    common = (ids, weights, mapping, enabled)
    gate_up = (empty(4, experts, 2 * rank, hidden), empty(4, experts, 2 * inter, rank))
    decode.fused_moe_lora_decode(
        empty(1, TOP_K, 2 * inter), empty(1, hidden), *gate_up, *common, 2, False
    )
    down = (empty(4, experts, rank, inter), empty(4, experts, hidden, rank))
    decode.fused_moe_lora_decode(
        empty(1, TOP_K, hidden), empty(TOP_K, inter), *down, *common, 1, True
    )
    monkeypatch.undo()
    assert len(recorder.launches) == 2, "one launch per hook"
    return recorder.launches


# Runtime arguments: 8 pointers, num_loras, then 8 strides; all but
# topk_weights (5) and num_loras (8, here 4) are specialized as 16-byte
# aligned by the launcher at real shapes.
ARG_TYPES = ["*bf16"] * 4 + ["*i32", "*fp32", "*i32", "*i32"] + ["i32"] * 9
ALIGNED = [i for i in range(len(ARG_TYPES)) if i not in (5, 8)]


def test_kernel_compiles_for_sm90(monkeypatch, tmp_path):
    launches = {}
    for shape, (experts, hidden, inter) in SHAPES.items():
        for rank in RANKS:
            hooks = _hook_launches(experts, hidden, inter, rank, monkeypatch)
            for hook, (grid, _, meta) in zip(("gate_up", "down"), hooks):
                assert grid[0] == TOP_K and grid[1] == (2 if hook == "gate_up" else 1)
                assert grid[2] * meta["BLOCK_N"] >= meta["N"], (shape, rank, hook)
                warps = meta.pop("num_warps")
                launches[f"{shape} r{rank} {hook}"] = (ARG_TYPES, meta, warps, ALIGNED)
    spills = compile_for_sm90(
        decode.__name__, "_fused_moe_lora_decode_kernel", launches, tmp_path
    )
    # The default tiles fit the registers: a spill would put local memory
    # round trips inside the unrolled K loop.
    assert all(n == 0 for n in spills.values()), spills
