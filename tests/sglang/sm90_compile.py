"""Shared by the *_compiles tests: record a Triton kernel's launches without
running it, and compile them for Hopper (sm_90) without a GPU.

Triton's interpreter (the CPU test mode) runs a kernel's Python, which accepts
programs the compiler rejects, so the recorded launches are compiled to cubins
with Triton's own compiler and ptxas, in a process without TRITON_INTERPRET
(which swaps Triton's jit helpers for interpreted ones).
"""

import json
import os
import subprocess
import sys

import torch


class RecordingKernel:
    """Stands in for a kernel object: records (grid, args, meta) per launch."""

    def __init__(self):
        self.launches = []

    def __getitem__(self, grid):
        return lambda *args, **meta: self.launches.append((grid, args, meta))


def meta(*shape, dtype=torch.int32):
    """A tensor without data: the launch is recorded, never run."""
    return torch.empty(*shape, dtype=dtype, device="meta")


def meta_batch_info(tokens, slots=8):
    """The sgemm LoRABatchInfo of a decode batch of `tokens` positions merged
    into `slots` adapter segments, in meta tensors."""
    # Imported here: the caller settles TRITON_INTERPRET before sglang loads.
    from sglang.srt.lora.utils import LoRABatchInfo

    return LoRABatchInfo(
        bs=slots,
        use_cuda_graph=False,
        num_segments=slots,
        seg_lens=meta(slots),
        seg_indptr=meta(slots + 1),
        max_len=tokens,
        weight_indices=meta(slots),
        lora_ranks=meta(slots),
        scalings=meta(slots, dtype=torch.float32),
        permutation=meta(tokens),
    )


COMPILE = """
import importlib, json, os, re, shutil, subprocess, sys, tempfile, triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
module, name, launches = json.loads(sys.stdin.read())
kernel = getattr(importlib.import_module(module), name)
# The ptxas Triton compiles with: its own unless TRITON_PTXAS_PATH names one.
ptxas = os.environ.get("TRITON_PTXAS_PATH") or os.path.join(
    os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "ptxas"
)
if not os.path.exists(ptxas):
    ptxas = shutil.which("ptxas")
result = {}
for label, (types, meta, num_warps, aligned) in launches.items():
    signature = dict(zip(kernel.arg_names, types))
    signature.update({c: "constexpr" for c in meta})
    attrs = {(i,): [["tt.divisibility", 16]] for i in aligned}
    compiled = triton.compile(
        ASTSource(kernel, signature, constexprs=meta, attrs=attrs),
        target=GPUTarget("cuda", 90, 32),
        options={"num_warps": num_warps},
    )
    with tempfile.NamedTemporaryFile("w", suffix=".ptx") as ptx:
        ptx.write(compiled.asm["ptx"])
        ptx.flush()
        report = subprocess.run(
            [ptxas, "-v", "--gpu-name", "sm_90a", ptx.name, "-o", os.devnull],
            capture_output=True, text=True, check=True,
        ).stderr
    spills = re.search(r"(\\d+) bytes spill stores", report)
    result[label] = {
        "cubin": len(compiled.asm["cubin"]),
        "spill_bytes": int(spills.group(1)) if spills else None,
    }
print(json.dumps(result))
"""


def compile_for_sm90(module, name, launches, tmp_path):
    """Compile kernel `name` of `module` once per launch; launches maps a label
    to (runtime argument types, constexprs, num_warps, indices of the
    arguments specialized as 16-byte aligned). Asserts every cubin was built;
    returns {label: bytes of register spill stores, from ptxas -v}."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_CACHE_DIR"] = str(tmp_path)
    proc = subprocess.run(
        [sys.executable, "-c", COMPILE],
        input=json.dumps([module, name, launches]),
        capture_output=True,
        text=True,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.splitlines()[-1])
    assert sorted(result) == sorted(launches)
    assert all(r["cubin"] > 0 for r in result.values()), result
    assert all(r["spill_bytes"] is not None for r in result.values()), result
    return {label: r["spill_bytes"] for label, r in result.items()}
