"""The per-batch MoE LoRA metadata kernel: ours vs upstream sglang 0.5.13 vs the
launch and load floors, side by side in one process on one card.

Variants, per batch, all writing preallocated outputs:
  ours      _compute_moe_lora_info of the patched tree (one launch)
  ours/bk   the same through TritonLoRABackend._add_moe_lora_info, as
            prepare_lora_batch calls it (host time only)
  upstream/bk  0.5.13's BaseLoRABackend._add_moe_lora_info on the same
            backend object (host time only)
  upstream  _compute_moe_lora_info of sglang 0.5.13 (zero_ + one launch), read
            from the release wheel that `make rebase UPSTREAM=0.5.13` caches
            (.cache/upstream/0.5.13/), extracted to build/ and imported as is
  empty     an empty Triton kernel with one argument: the launch floor
  load+store  one Triton kernel storing one loaded int: the floor of any
            kernel that reads seg_indptr before it writes
Batches: 8 adapters of ranks [0, 8, 16, 32, 64, 16, 0, 32]; request i on
adapter (i + 1) % 8.

GPU time: triton.testing.do_bench_cudagraph (one CUDA graph of as many calls as
fit in --rep ms, replayed 10 times; per call), in --rounds rounds that
interleave the variants; min / median / max over all replays of all rounds.
Host time: torch.utils.benchmark.Timer.blocked_autorange on eager calls,
interleaved the same way; median and IQR of its blocks, per call.
Before timing, ours and upstream must both equal a torch reference.

Run (GPU):   PYTHONPATH=build/sglang/python python bench/bench_moe_lora_info_kernel.py
Smoke (CPU): ... --smoke   checks the variants against the reference only.
"""

import argparse
import importlib.util
import os
import statistics
import sys
import zipfile
from pathlib import Path

if "--smoke" in sys.argv[1:]:
    os.environ["TRITON_INTERPRET"] = "1"

import torch
import triton
import triton.language as tl
import triton.testing
from common import (
    ADAPTER_RANKS,
    DEFAULT_SGLANG_DIR,
    ROOT,
    adapter_of_requests,
    decode_workload,
    launch_empty_kernel,
    make_backend,
    make_batch_info,
    make_forward_batch,
    mixed_workload,
    prefill_workload,
    print_record,
    print_table,
    require_device,
    run_record,
    write_json,
)
from torch.utils.benchmark import Timer

from sglang.srt.lora.backend.base_backend import _compute_moe_lora_info

UPSTREAM_FILE = "sglang/srt/lora/backend/base_backend.py"


@triton.jit
def _load_store_kernel(src_ptr, dst_ptr):
    tl.store(dst_ptr, tl.load(src_ptr))


def load_upstream(version: str):
    """0.5.13's base_backend module, from the cached release wheel."""
    wheels = sorted((ROOT / ".cache/upstream" / version).glob("sglang-*.whl"))
    if not wheels:
        raise SystemExit(
            f"error: no sglang {version} wheel in .cache/upstream/{version}/; "
            f"run 'make rebase UPSTREAM={version}' once to fetch it"
        )
    target = ROOT / "build/bench/upstream" / version / "base_backend.py"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(zipfile.ZipFile(wheels[-1]).read(UPSTREAM_FILE))
    spec = importlib.util.spec_from_file_location(f"upstream_{version}", target)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module, wheels[-1].name


def reference(seq_lens, weight_indices):
    mapping = torch.repeat_interleave(
        torch.tensor(weight_indices, dtype=torch.int32), torch.tensor(seq_lens)
    )
    enabled = torch.zeros(len(ADAPTER_RANKS), dtype=torch.int32)
    for lora in weight_indices:
        enabled[lora] = int(ADAPTER_RANKS[lora] > 0)
    return enabled.tolist(), mapping.tolist()


def make_case(workload, device):
    """The arguments of one batch and a call of each variant on them."""
    loras = adapter_of_requests(workload.bs, len(ADAPTER_RANKS))
    info = make_batch_info(workload, loras, ADAPTER_RANKS, device)
    info.lora_ranks = info.lora_ranks.to(torch.int32)
    outputs = (
        torch.empty(len(ADAPTER_RANKS), dtype=torch.int32, device=device),
        torch.empty(workload.num_tokens, dtype=torch.int32, device=device),
    )
    args = (workload.num_tokens, info.seg_indptr, info.lora_ranks)
    args += (info.weight_indices, *outputs, info.max_len)
    backend = make_backend(len(ADAPTER_RANKS), device, is_moe_lora=True)
    forward_batch = make_forward_batch(workload, device)
    return loras, args, backend, forward_batch, info


def spread(values):
    return {
        "min": min(values),
        "median": statistics.median(values),
        "max": max(values),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--upstream", default="0.5.13")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--rep", type=int, default=20, help="ms per graph")
    parser.add_argument("--out-dir", type=Path, default=ROOT / "build/bench")
    parser.add_argument("--sglang-dir", type=Path, default=DEFAULT_SGLANG_DIR)
    parser.add_argument("--base", default="v0.5.12", help="only recorded")
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--quick", action="store_true", help="2 rounds")
    parser.add_argument("--no-plot", action="store_true", help="(no plot here)")
    args = parser.parse_args()
    if args.quick:
        args.rounds = 2
    device = require_device(args.smoke)
    upstream, wheel = load_upstream(args.upstream)
    record = run_record(device, args.sglang_dir, args.base)
    record["upstream"] = wheel
    print_record(record)

    workloads = [decode_workload(bs) for bs in (1, 32, 128, 512)]
    workloads += [prefill_workload(8, 512), mixed_workload(64, 1024)]
    empty_buf = torch.zeros(1, dtype=torch.int32, device=device)
    rows = []
    for workload in workloads:
        loras, call_args, backend, forward_batch, info = make_case(workload, device)
        variants = {
            "ours": lambda: _compute_moe_lora_info(*call_args),
            "upstream": lambda: upstream._compute_moe_lora_info(*call_args),
            "empty": lambda: launch_empty_kernel(empty_buf),
            "load+store": lambda: _load_store_kernel[(1,)](call_args[1], empty_buf),
        }
        expected = reference(workload.seq_lens, loras)
        for name in ("ours", "upstream"):
            for out in call_args[4:6]:
                out.fill_(-7)
            enabled, mapping = variants[name]()
            got = (enabled.tolist(), mapping.tolist())
            assert got == expected, f"{name} is wrong on {workload.name}"
        host_variants = dict(variants)
        host_variants["ours/bk"] = lambda: backend._add_moe_lora_info(
            forward_batch, info
        )
        upstream_add = upstream.BaseLoRABackend._add_moe_lora_info
        host_variants["upstream/bk"] = lambda: upstream_add(
            backend, forward_batch, info
        )
        for name in ("ours/bk", "upstream/bk"):
            host_variants[name]()
            got = [t.tolist() for t in (info.moe_lora_info.adapter_enabled,)]
            got.append(info.moe_lora_info.token_lora_mapping.tolist())
            assert tuple(got) == expected, f"{name} is wrong on {workload.name}"
        if args.smoke:
            print(f"{workload.name}: ours and upstream match the reference")
            continue
        gpu = {name: [] for name in variants}
        host = {name: [] for name in host_variants}
        for _ in range(args.rounds):
            for name, fn in variants.items():
                gpu[name] += triton.testing.do_bench_cudagraph(
                    fn, rep=args.rep, return_mode="all"
                )
            for name, fn in host_variants.items():
                m = Timer("fn()", globals={"fn": fn}).blocked_autorange(
                    min_run_time=0.2
                )
                host[name].append((m.median, m.iqr))
        row = {"workload": workload.name, "gpu_us": {}, "host_us": {}}
        for name, samples in gpu.items():
            row["gpu_us"][name] = spread([t * 1e3 for t in samples])
        for name, samples in host.items():
            medians = [m * 1e6 for m, _ in samples]
            iqr = statistics.median(i * 1e6 for _, i in samples)
            row["host_us"][name] = {**spread(medians), "iqr": iqr}
        rows.append(row)
        print(f"  {workload.name}: done", flush=True)
    if args.smoke:
        return

    def gpu(r, n):
        g = r["gpu_us"][n]
        return f"{g['median']:.2f} [{g['min']:.2f}-{g['max']:.2f}]"

    def host(r, n):
        h = r["host_us"][n]
        return f"{h['median']:.1f} ±{h['iqr'] / 2:.1f}"

    med = lambda r, kind, n: r[kind][n]["median"]  # noqa: E731
    print_table(
        f"GPU µs per batch, median [min-max] over {args.rounds} rounds x 10 "
        f"replays of a CUDA graph of many calls ({record['device']})",
        ["workload", "ours", "upstream", "empty", "load+store"]
        + ["upstream/ours", "ours/empty"],
        [
            [r["workload"]]
            + [gpu(r, n) for n in ("ours", "upstream", "empty", "load+store")]
            + [
                f"{med(r, 'gpu_us', 'upstream') / med(r, 'gpu_us', 'ours'):.2f}x",
                f"{med(r, 'gpu_us', 'ours') / med(r, 'gpu_us', 'empty'):.2f}x",
            ]
            for r in rows
        ],
    )
    print_table(
        "Host µs per call, eager, median of rounds ± half the IQR of the blocks",
        ["workload", "ours", "upstream", "ours/bk", "upstream/bk", "empty"]
        + ["ours/upstream", "ours/bk / upstream/bk"],
        [
            [r["workload"]]
            + [
                host(r, n)
                for n in ("ours", "upstream", "ours/bk", "upstream/bk", "empty")
            ]
            + [
                f"{med(r, 'host_us', a) / med(r, 'host_us', b):.2f}x"
                for a, b in (("ours", "upstream"), ("ours/bk", "upstream/bk"))
            ]
            for r in rows
        ],
    )
    write_json(
        args.out_dir / "moe_lora_info_kernel.json",
        {"record": record, "adapter_ranks": ADAPTER_RANKS, "rows": rows},
    )


if __name__ == "__main__":
    main()
