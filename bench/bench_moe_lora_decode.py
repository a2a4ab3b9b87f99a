"""The MoE LoRA hooks of one layer at decode: fused_moe_lora (0.5.12's path)
vs fused_moe_lora_decode (patch 0007), side by side in one process on one card.

Per shape and batch size, both hooks of one layer (gate_up, then down) as
build_lora_hooks runs them, on the same inputs (rank 32, 4 adapters, request
i on adapter i % 4, distinct random experts per token):
  classic  _add_lora_*_delta with fused_moe_lora; its alignment
           (moe_lora_align_block_size) is computed once beforehand, so only
           its kernels are timed
  decode   the same functions on the decode path, one launch per hook
Floors: memory = the LoRA bytes the batch touches (its distinct (adapter,
expert) pairs) over the device-to-device copy bandwidth measured in the same
run; launch = two empty Triton kernels.
GPU time: triton.testing.do_bench_cudagraph (one CUDA graph of as many calls
as fit in --rep ms, per call), --rounds rounds interleaving the variants;
min / median / max. Before timing, decode must equal classic to bf16 rounding.
--sweep also times decode under other (BLOCK_K, BLOCK_N, num_warps), each
with the kernel as written (its K loop unrolled with tl.static_range) and as
VARIANTS edit it (a plain loop; one reduction after the loop), from copies of
its source written to --out-dir: the product kernel is not changed.

Run (GPU):   PYTHONPATH=build/sglang/python python bench/bench_moe_lora_decode.py
             [--shapes qwen3,kimi] [--batch-sizes 1,8,32,64] [--sweep]
Smoke (CPU): ... --smoke   a tiny shape, decode only, through the interpreter.
"""

import argparse
import functools
import importlib.util
import inspect
import os
import statistics
import sys
from pathlib import Path

if "--smoke" in sys.argv[1:]:
    os.environ["TRITON_INTERPRET"] = "1"

import torch
import triton
import triton.testing
from common import (
    DEFAULT_SGLANG_DIR,
    ROOT,
    launch_empty_kernel,
    print_record,
    print_table,
    require_device,
    run_record,
    write_json,
)

from sglang.srt.lora import lora_moe_runners, triton_ops
from sglang.srt.lora.lora_moe_runners import LoRAInfo

DECODE = triton_ops.fused_moe_lora_decode
# The module (triton_ops re-exports its function under the same name).
decode_module = importlib.import_module(DECODE.__module__)

RANK, NUM_ADAPTERS, TOP_K = 32, 4, 8
# name: (experts, hidden, moe_intermediate)
SHAPES = {
    "qwen3": (128, 2048, 768),  # Qwen3-30B-A3B
    "kimi": (384, 7168, 2048),  # Kimi-K2-like
    "smoke": (8, 64, 32),
}
SWEEP = [
    {"BLOCK_K": 128, "BLOCK_N": 256, "num_warps": 4},  # the first default (rank 32)
    {"BLOCK_K": 256, "BLOCK_N": 128, "num_warps": 4},
    {"BLOCK_K": 512, "BLOCK_N": 128, "num_warps": 8},
    {"BLOCK_K": 512, "BLOCK_N": 256, "num_warps": 16},
    {"BLOCK_K": 1024, "BLOCK_N": 256, "num_warps": 16},
]


class Layer:
    """One layer's LoRA buffers and a decode batch's hook inputs."""

    def __init__(self, shape, bs, device):
        experts, hidden, inter = SHAPES[shape]
        top_k = min(TOP_K, experts)

        def randn(*size):
            return (torch.randn(*size, device=device) * 0.05).to(torch.bfloat16)

        mapping = torch.arange(bs, device=device, dtype=torch.int32) % NUM_ADAPTERS
        ranks = torch.full((NUM_ADAPTERS,), RANK, device=device)
        self.info = LoRAInfo(
            gate_up_lora_a_weights=randn(NUM_ADAPTERS, experts, 2 * RANK, hidden),
            gate_up_lora_b_weights=randn(NUM_ADAPTERS, experts, 2 * inter, RANK),
            down_lora_a_weights=randn(NUM_ADAPTERS, experts, RANK, inter),
            down_lora_b_weights=randn(NUM_ADAPTERS, experts, hidden, RANK),
            seg_indptr=torch.arange(bs + 1, dtype=torch.int32, device=device),
            req_to_lora=mapping.clone(),
            lora_ranks=ranks,
            adapter_enabled=torch.ones(NUM_ADAPTERS, dtype=torch.int32, device=device),
            max_lora_rank=RANK,
            num_experts=experts,
            token_lora_mapping=mapping,
        )
        ids = torch.stack([torch.randperm(experts)[:top_k] for _ in range(bs)])
        self.topk_ids = ids.to(torch.int32).to(device)
        self.topk_weights = torch.rand(bs, top_k, device=device)
        self.x = randn(bs, hidden) * 20
        self.inter_in = randn(bs * top_k, inter) * 20
        self.cache1 = torch.zeros(bs, top_k, 2 * inter, dtype=torch.bfloat16)
        self.cache3 = torch.zeros(bs, top_k, hidden, dtype=torch.bfloat16)
        self.cache1, self.cache3 = self.cache1.to(device), self.cache3.to(device)
        pairs = {
            (int(m) % NUM_ADAPTERS, int(e)) for m, row in zip(mapping, ids) for e in row
        }
        per_expert = 2 * RANK * hidden + 2 * inter * RANK + RANK * inter + hidden * RANK
        self.lora_bytes = 2 * per_expert * len(pairs)
        self.alignment = None

    def hooks(self, decode, impl=None):
        """Both hooks, in place on the caches (they accumulate: timing only);
        impl replaces fused_moe_lora_decode."""
        info, args = self.info, (self.topk_weights, self.topk_ids, self.info)
        if decode:
            extra = (info.token_lora_mapping, None, None, None, None)
        else:
            if self.alignment is None:
                self.alignment = lora_moe_runners._compute_lora_alignment(
                    self.topk_ids, info
                )
            extra = (None, *self.alignment)

        def run():
            # The hooks import fused_moe_lora_decode when called: swap in impl.
            if impl is not None:
                triton_ops.fused_moe_lora_decode = impl
            try:
                lora_moe_runners._add_lora_gate_up_delta(
                    self.x, self.cache1, *args, *extra, decode=decode
                )
                lora_moe_runners._add_lora_down_delta(
                    self.inter_in, self.cache3, *args, *extra, decode=decode
                )
            finally:
                triton_ops.fused_moe_lora_decode = DECODE

        return run

    def outputs(self, run):
        self.cache1.zero_()
        self.cache3.zero_()
        run()
        return self.cache1.clone(), self.cache3.clone()


LOOP = "    for k in tl.static_range(0, K, BLOCK_K):"
# Kernel variants for --sweep: edits of the kernel's source (each must match once).
VARIANTS = {
    "looped": [(LOOP, LOOP.replace("tl.static_range", "range"))],
    "one reduction": [
        ("acc = tl.zeros((BLOCK_R,),", "acc = tl.zeros((BLOCK_R, BLOCK_K),"),
        (
            "acc += tl.sum(a.to(tl.float32) * x.to(tl.float32)[None, :], axis=1)",
            "acc += a.to(tl.float32) * x.to(tl.float32)[None, :]",
        ),
        ("inter = acc.to(", "inter = tl.sum(acc, axis=1).to("),
    ],
}


def decode_variant(name, out_dir):
    """fused_moe_lora_decode from an edited copy of its module, written to
    out_dir and imported: the product kernel itself is not changed."""
    source = inspect.getsource(decode_module)
    for old, new in VARIANTS[name]:
        assert source.count(old) == 1, f"{name}: the kernel no longer has {old!r}"
        source = source.replace(old, new)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = (
        out_dir
        / f"fused_moe_lora_decode_{name.replace(', ', '_').replace(' ', '_')}.py"
    )
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.fused_moe_lora_decode


def spread(values):
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


def copy_bandwidth(device):
    """Device-to-device copy bandwidth (bytes/s), read + write, 1 GiB."""
    src = torch.empty(1 << 30, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    ms = triton.testing.do_bench_cudagraph(lambda: dst.copy_(src), rep=50)
    return 2 * src.numel() / (ms * 1e-3)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shapes", default="qwen3,kimi")
    parser.add_argument("--batch-sizes", default="1,8,32,64")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rep", type=int, default=20, help="ms per graph")
    parser.add_argument("--sweep", action="store_true")
    parser.add_argument("--out-dir", type=Path, default=ROOT / "build/bench")
    parser.add_argument("--sglang-dir", type=Path, default=DEFAULT_SGLANG_DIR)
    parser.add_argument("--base", default="v0.5.12", help="only recorded")
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--quick", action="store_true", help="qwen3, bs 1 and 32")
    parser.add_argument("--no-plot", action="store_true", help="(no plot here)")
    args = parser.parse_args()
    if args.quick:
        args.shapes, args.batch_sizes, args.rounds = "qwen3", "1,32", 2
    device = require_device(args.smoke)
    torch.manual_seed(0)
    record = run_record(device, args.sglang_dir, args.base)
    print_record(record)
    if args.smoke:
        layer = Layer("smoke", 3, device)
        first = layer.outputs(layer.hooks(decode=True))
        assert all(t.abs().sum() > 0 for t in first), "decode added nothing"
        impls = [decode_variant(name, args.out_dir) for name in VARIANTS]
        for impl in [functools.partial(DECODE, config=SWEEP[-1])] + impls:
            for a, b in zip(first, layer.outputs(layer.hooks(True, impl))):
                torch.testing.assert_close(a, b, atol=2e-2, rtol=1e-2)
        print("smoke: decode hooks ran (a config and the kernel variants agree)")
        return

    bandwidth = copy_bandwidth(device)
    empty_buf = torch.zeros(1, dtype=torch.int32, device=device)
    launch_floor = triton.testing.do_bench_cudagraph(
        lambda: (launch_empty_kernel(empty_buf), launch_empty_kernel(empty_buf))
    )
    print(
        f"copy bandwidth {bandwidth / 1e12:.2f} TB/s; two empty launches "
        f"{launch_floor * 1e3:.2f} µs",
        flush=True,
    )
    variants_of = (
        {n: decode_variant(n, args.out_dir) for n in VARIANTS} if args.sweep else {}
    )
    rows = []
    for shape in args.shapes.split(","):
        for bs in map(int, args.batch_sizes.split(",")):
            layer = Layer(shape, bs, device)
            variants = {
                "classic": layer.hooks(decode=False),
                "decode": layer.hooks(decode=True),
            }
            for label, impl in variants_of.items():
                variants[f"decode {label}"] = layer.hooks(True, impl)
            for config in SWEEP if args.sweep else []:
                name = "decode K{BLOCK_K} N{BLOCK_N} w{num_warps}".format(**config)
                for label, impl in {"": DECODE, **variants_of}.items():
                    variants[f"{name} {label}".rstrip()] = layer.hooks(
                        True, functools.partial(impl, config=config)
                    )
            want = layer.outputs(variants["classic"])
            for name, run in variants.items():
                got = layer.outputs(run)
                for g, w in zip(got, want):
                    torch.testing.assert_close(g, w, atol=5e-2, rtol=2e-2, msg=name)
            times = {name: [] for name in variants}
            for _ in range(args.rounds):
                for name, run in variants.items():
                    times[name] += triton.testing.do_bench_cudagraph(
                        run, rep=args.rep, return_mode="all"
                    )
            row = {
                "shape": shape,
                "bs": bs,
                "lora_mb": layer.lora_bytes / 1e6,
                "memory_floor_us": layer.lora_bytes / bandwidth * 1e6,
                "launch_floor_us": launch_floor * 1e3,
                "gpu_us": {n: spread([t * 1e3 for t in ts]) for n, ts in times.items()},
            }
            rows.append(row)
            print(f"  {shape} bs={bs}: done", flush=True)
            del layer

    def cell(r, n):
        g = r["gpu_us"][n]
        return f"{g['median']:.1f} [{g['min']:.1f}-{g['max']:.1f}]"

    med = lambda r, n: r["gpu_us"][n]["median"]  # noqa: E731
    names = list(rows[0]["gpu_us"])
    print_table(
        f"GPU µs per layer (both hooks), median [min-max], {record['device']}",
        ["shape", "bs", "LoRA MB", "memory floor", "launch floor"]
        + names
        + ["classic/decode"],
        [
            [r["shape"], r["bs"], f"{r['lora_mb']:.1f}"]
            + [f"{r['memory_floor_us']:.2f}", f"{r['launch_floor_us']:.2f}"]
            + [cell(r, n) for n in names]
            + [f"{med(r, 'classic') / med(r, 'decode'):.1f}x"]
            for r in rows
        ],
    )
    write_json(
        args.out_dir / "moe_lora_decode.json",
        {"record": record, "bandwidth_bytes_s": bandwidth, "rows": rows},
    )


if __name__ == "__main__":
    main()
