"""The MoE LoRA metadata kernel compiles for Hopper in every tile shape that
_compute_moe_lora_info picks, without a GPU.

The interpreter accepted a loop-carried shape change that the compiler
rejects; so the tile shapes the launcher picks for a range of batches are
recorded and each is compiled to an sm_90 cubin (sm90_compile.py).
"""

import inspect
import os

import torch
from sm90_compile import RecordingKernel, compile_for_sm90

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


def _launch_of(seg_lens, num_loras, monkeypatch):
    seg_indptr = torch.zeros(len(seg_lens) + 1, dtype=torch.int32)
    seg_indptr[1:] = torch.tensor(seg_lens).cumsum(0)
    recorder = RecordingKernel()
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


def test_kernel_compiles_for_sm90(monkeypatch, tmp_path):
    kernel = base_backend._compute_moe_lora_info_kernel
    names = list(inspect.signature(kernel.fn).parameters)
    constexprs = [n for n in names if n.isupper()]
    launches = {}
    for batch, (seg_lens, num_loras) in BATCHES.items():
        grid, args, kwargs = _launch_of(seg_lens, num_loras, monkeypatch)
        meta = {**dict(zip(names, args)), **kwargs}
        # One launch whose grid covers every token; the first adapter scan
        # step holds the whole batch up to 1024 segments.
        assert grid[0] * 1024 >= sum(seg_lens), batch
        assert meta["BLOCK_W"] >= min(len(seg_lens), 1024), batch
        pointers = ["*i32" if a.dtype == torch.int32 else "*i64" for a in args[:5]]
        meta = {n: meta[n] for n in constexprs}
        ints = ["i32"] * (len(names) - 5 - len(constexprs))
        launches[batch] = (pointers + ints, meta, kwargs.get("num_warps", 4), [])
    assert sorted(launches) == sorted(BATCHES)
    module = base_backend.__name__
    compile_for_sm90(module, "_compute_moe_lora_info_kernel", launches, tmp_path)
