"""The LoRA A decode kernel compiles for Hopper, free of register spills, at
the shapes sgemm_lora_a_fwd takes it for, without a GPU.

Each program holds a whole input row and BLOCK_N weight rows in registers, so
the launches the wrapper makes for Qwen3-30B-A3B's q/k/v (K 2048) and o
(K 4096) shrink and at the K bound, at ranks 8 to 128 and 1 and 32 tokens,
are recorded and compiled to sm_90 cubins (sm90_compile.py).
"""

import inspect
import os

import torch
from sm90_compile import RecordingKernel, compile_for_sm90, meta, meta_batch_info

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

from sglang.srt.lora.triton_ops import sgemm_lora_a  # noqa: E402

# name: (stack_num, K)
SHAPES = {"qkv": (3, 2048), "o": (1, 4096), "bound": (1, sgemm_lora_a._DECODE_MAX_K)}
RANKS = (8, 32, 128)
TOKENS = (1, sgemm_lora_a._DECODE_MAX_TOKENS)


def _launch_of(tokens, stack_num, K, rank, monkeypatch):
    """The launch of one call (meta tensors: no data), with 8 adapter slots."""
    recorder = RecordingKernel()
    monkeypatch.setattr(sgemm_lora_a, "_sgemm_lora_a_decode_kernel", recorder)
    info = meta_batch_info(tokens)
    x = meta(tokens, K, dtype=torch.bfloat16)
    weights = meta(8, stack_num * rank, K, dtype=torch.bfloat16)
    sgemm_lora_a.sgemm_lora_a_fwd(x, weights, info, stack_num)
    monkeypatch.undo()
    assert len(recorder.launches) == 1, "one launch per call"
    return recorder.launches[0]


def test_kernel_compiles_for_sm90_without_spills(monkeypatch, tmp_path):
    kernel = sgemm_lora_a._sgemm_lora_a_decode_kernel
    names = list(inspect.signature(kernel.fn).parameters)
    types = ["*bf16"] * 3 + ["i32"] * 10 + ["*i32"] * 4 + ["i32"]
    launches = {}
    for shape, (stack_num, K) in SHAPES.items():
        for rank in RANKS:
            for tokens in TOKENS:
                grid, args, kwargs = _launch_of(tokens, stack_num, K, rank, monkeypatch)
                assert grid == (tokens, stack_num * rank // 2), (shape, rank, tokens)
                launch_args = {**dict(zip(names, args)), **kwargs}
                constexprs = {n: launch_args[n] for n in names if n.isupper()}
                assert constexprs["BLOCK_K"] >= K and len(types) == len(args) - 4
                # The launcher specializes pointers and multiples of 16.
                aligned = [
                    i
                    for i, t in enumerate(types)
                    if t.startswith("*") or args[i] % 16 == 0
                ]
                label = f"{shape} r{rank} tokens={tokens}"
                launches[label] = (
                    types,
                    constexprs,
                    kwargs.get("num_warps", 4),
                    aligned,
                )
    spills = compile_for_sm90(
        sgemm_lora_a.__name__, "_sgemm_lora_a_decode_kernel", launches, tmp_path
    )
    # A spill would put local-memory round trips on the path of every load.
    assert all(n == 0 for n in spills.values()), spills
