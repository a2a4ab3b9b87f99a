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
import json
import os
import subprocess
import sys

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

# The module: triton_ops re-exports its function under the same name.
decode = importlib.import_module("sglang.srt.lora.triton_ops.fused_moe_lora_decode")

# name: (experts, hidden, moe_intermediate)
SHAPES = {"qwen3": (128, 2048, 768), "kimi": (384, 7168, 2048)}
RANKS = (8, 32, 128)
TOP_K = 8


class _RecordingKernel:
    def __init__(self):
        self.launches = []

    def __getitem__(self, grid):
        return lambda *args, **meta: self.launches.append((grid, args, meta))


def _hook_launches(experts, hidden, inter, rank, monkeypatch):
    """The gate_up and down launches of one decode token (meta tensors: no data)."""
    recorder = _RecordingKernel()
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


COMPILE = """
import json, sys, triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from sglang.srt.lora.triton_ops.fused_moe_lora_decode import (
    _fused_moe_lora_decode_kernel as k,
)
pointers = ["*bf16"] * 4 + ["*i32", "*fp32", "*i32", "*i32"]
sizes = {}
for name, meta in json.loads(sys.stdin.read()).items():
    num_warps = meta.pop("num_warps")
    ints = len(k.arg_names) - len(pointers) - len(meta)
    signature = dict(zip(k.arg_names, pointers + ["i32"] * ints))
    signature.update({c: "constexpr" for c in meta})
    # The launcher's specialization: 16-byte aligned pointers and strides.
    aligned = [i for i in range(len(pointers) + ints) if i != 5]
    compiled = triton.compile(
        ASTSource(k, signature, constexprs=meta,
                  attrs={(i,): [["tt.divisibility", 16]] for i in aligned}),
        target=GPUTarget("cuda", 90, 32),
        options={"num_warps": num_warps},
    )
    sizes[name] = len(compiled.asm["cubin"])
print(json.dumps(sizes))
"""


def test_kernel_compiles_for_sm90(monkeypatch, tmp_path):
    launches = {}
    for shape, (experts, hidden, inter) in SHAPES.items():
        for rank in RANKS:
            hooks = _hook_launches(experts, hidden, inter, rank, monkeypatch)
            for hook, (grid, _, meta) in zip(("gate_up", "down"), hooks):
                assert grid[0] == TOP_K and grid[1] == (2 if hook == "gate_up" else 1)
                assert grid[2] * meta["BLOCK_N"] >= meta["N"], (shape, rank, hook)
                launches[f"{shape} r{rank} {hook}"] = meta
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_CACHE_DIR"] = str(tmp_path)
    proc = subprocess.run(
        [sys.executable, "-c", COMPILE],
        input=json.dumps(launches),
        capture_output=True,
        text=True,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    sizes = json.loads(proc.stdout.splitlines()[-1])
    assert sorted(sizes) == sorted(launches)
    assert all(size > 0 for size in sizes.values()), sizes
