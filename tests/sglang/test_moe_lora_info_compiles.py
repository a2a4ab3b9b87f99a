"""The MoE LoRA metadata kernel compiles for Hopper in every tile shape that
_compute_moe_lora_info picks, without a GPU.

Triton's interpreter (the CPU test mode) runs the kernel's Python, which
accepts programs the compiler rejects (a loop-carried variable changing
shape, for one). So the tile shapes the launcher picks for a range of batches
are recorded and each is compiled to a cubin for sm_90 with Triton's own
compiler and ptxas, which need no GPU, in a process without the interpreter.
"""

import inspect
import json
import os
import subprocess
import sys

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import sglang.srt.lora.backend.base_backend as base_backend  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"

# (segment lengths, adapters): decode of several sizes, prefill, mixed, many adapters.
BATCHES = {
    "decode bs=1": ([1], 8),
    "decode bs=32": ([1] * 32, 8),
    "decode bs=512": ([1] * 512, 8),
    "decode bs=3000": ([1] * 3000, 8),
    "prefill 8x512": ([512] * 8, 8),
    "mixed": ([1, 1024, 7, 300] * 16, 8),
    "many adapters": ([3] * 40, 600),
}


class _RecordingKernel:
    """Stands in for the kernel object during one call: records the launch."""

    def __init__(self):
        self.launches = []

    def __getitem__(self, grid):
        def launch(*args, **meta):
            self.launches.append((grid, args, meta))

        return launch


def _launch_of(seg_lens, num_loras, monkeypatch):
    seg_indptr = torch.zeros(len(seg_lens) + 1, dtype=torch.int32)
    seg_indptr[1:] = torch.tensor(seg_lens).cumsum(0)
    recorder = _RecordingKernel()
    monkeypatch.setattr(base_backend, "_compute_moe_lora_info_kernel", recorder)
    base_backend._compute_moe_lora_info(
        sum(seg_lens),
        seg_indptr.to(DEVICE),
        torch.ones(num_loras, dtype=torch.int32, device=DEVICE),
        torch.zeros(len(seg_lens), dtype=torch.int32, device=DEVICE),
        None,
        None,
        max(seg_lens),
    )
    monkeypatch.undo()
    assert len(recorder.launches) == 1, "one launch per call"
    return recorder.launches[0]


# Run without TRITON_INTERPRET, which swaps Triton's own jit helpers for
# interpreted ones: {"name": (pointer dtypes, int args, meta)} -> cubin sizes.
COMPILE = """
import json, sys, triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from sglang.srt.lora.backend.base_backend import _compute_moe_lora_info_kernel as k
sizes = {}
for name, (pointers, num_ints, meta) in json.loads(sys.stdin.read()).items():
    num_warps = meta.pop("num_warps")
    signature = dict(zip(k.arg_names, pointers + ["i32"] * num_ints))
    signature.update({c: "constexpr" for c in meta})
    compiled = triton.compile(
        ASTSource(k, signature, constexprs=meta),
        target=GPUTarget("cuda", 90, 32),
        options={"num_warps": num_warps},
    )
    sizes[name] = len(compiled.asm["cubin"])
print(json.dumps(sizes))
"""


def test_kernel_compiles_for_sm90(monkeypatch, tmp_path):
    kernel = base_backend._compute_moe_lora_info_kernel
    names = list(inspect.signature(kernel.fn).parameters)
    constexprs = [n for n in names if n.isupper()]
    launches = {}
    for batch, (seg_lens, num_loras) in BATCHES.items():
        grid, args, kwargs = _launch_of(seg_lens, num_loras, monkeypatch)
        meta = {**dict(zip(names, args)), **kwargs}
        # One launch whose grid covers every token; a tile for every adapter.
        assert grid[0] * 1024 >= sum(seg_lens), batch
        assert meta["BLOCK_L"] >= num_loras, batch
        pointers = ["*i32" if a.dtype == torch.int32 else "*i64" for a in args[:5]]
        meta = {n: meta[n] for n in constexprs} | {
            "num_warps": kwargs.get("num_warps", 4)
        }
        launches[batch] = (pointers, len(names) - 5 - len(constexprs), meta)
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
    assert sorted(sizes) == sorted(BATCHES)
    assert all(size > 0 for size in sizes.values()), sizes
