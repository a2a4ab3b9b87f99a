"""The LoRA B decode kernel compiles for Hopper, free of register spills, at
the shapes sgemm_lora_b_fwd and qkv_lora_b_fwd take it for, without a GPU.

The launches the wrappers make for Qwen3-30B-A3B's o_proj (2048) and q/k/v
(4096 + 2 x 512) expand, at ranks 8 to the rank bound, at 1 token and at the
most tokens the token and output bounds let through, are recorded and compiled
to sm_90 cubins (sm90_compile.py).
"""

import inspect
import os

import torch
from sm90_compile import RecordingKernel, compile_for_sm90, meta, meta_batch_info

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

from sglang.srt.lora.triton_ops import qkv_lora_b, sgemm_lora_b  # noqa: E402

SHAPES = {"o": (2048,), "qkv": (4096, 512, 512)}
RANKS = (8, 32, 128, sgemm_lora_b._DECODE_MAX_R)


def _token_counts(n):
    bound = sgemm_lora_b._DECODE_MAX_OUTPUTS // n
    return 1, min(sgemm_lora_b._DECODE_MAX_TOKENS, bound)


def _launch_of(tokens, slices, rank, monkeypatch):
    """The launch of one call (meta tensors: no data), with 8 adapter slots."""
    recorder = RecordingKernel()
    monkeypatch.setattr(sgemm_lora_b, "_sgemm_lora_b_decode_kernel", recorder)
    info = meta_batch_info(tokens)
    x = meta(tokens, len(slices) * rank, dtype=torch.bfloat16)
    weights = meta(8, sum(slices), rank, dtype=torch.bfloat16)
    base = meta(tokens, sum(slices), dtype=torch.bfloat16)
    if len(slices) == 1:
        sgemm_lora_b.sgemm_lora_b_fwd(x, weights, info, base)
    else:
        offsets = meta(len(slices) + 1)
        qkv_lora_b.qkv_lora_b_fwd(x, weights, info, offsets, max(slices), base)
    monkeypatch.undo()
    assert len(recorder.launches) == 1, "one launch per call"
    return recorder.launches[0]


def test_kernel_compiles_for_sm90_without_spills(monkeypatch, tmp_path):
    kernel = sgemm_lora_b._sgemm_lora_b_decode_kernel
    names = list(inspect.signature(kernel.fn).parameters)
    launches = {}
    for shape, slices in SHAPES.items():
        for rank in RANKS:
            for tokens in _token_counts(sum(slices)):
                grid, args, kwargs = _launch_of(tokens, slices, rank, monkeypatch)
                launch_args = {**dict(zip(names, args)), **kwargs}
                constexprs = {n: launch_args[n] for n in names if n.isupper()}
                assert grid[0] == tokens and constexprs["BLOCK_K"] == rank
                assert grid[1] * constexprs["BLOCK_N"] >= sum(slices)
                # o_proj passes no slice offsets: a None argument is a constant.
                n_offs = "*i32" if len(slices) > 1 else "constexpr"
                if len(slices) == 1:
                    constexprs["n_offs"] = None
                types = ["*bf16"] * 3 + ["i32"] * 2 + [n_offs] + ["i32"] * 7
                types += ["*i32"] * 3 + ["*fp32", "*i32", "i32"]
                assert len(types) == len(args) - 5
                # The launcher specializes pointers and multiples of 16.
                aligned = [
                    i
                    for i, t in enumerate(types)
                    if t.startswith("*") or (t == "i32" and args[i] % 16 == 0)
                ]
                launches[f"{shape} r{rank} tokens={tokens}"] = (
                    types,
                    constexprs,
                    kwargs.get("num_warps", 4),
                    aligned,
                )
    spills = compile_for_sm90(
        sgemm_lora_b.__name__, "_sgemm_lora_b_decode_kernel", launches, tmp_path
    )
    # A spill would put local-memory round trips on the path of every load.
    assert all(n == 0 for n in spills.values()), spills
