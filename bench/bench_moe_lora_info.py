"""Per-batch MoE LoRA metadata cost: pristine sglang 0.5.12 ("pre") vs the
patch series ("ours"), side by side in one process.

Per batch of an L-layer MoE model:
  pre  = L x FusedMoEWithLoRA._get_lora_info as in 0.5.12 (adapter_enabled
         built per layer: zeros + long() + index_fill_, or under a CUDA graph
         zero_ + copy into weight_indices_long + index_fill_)
         [+ L x _compute_token_lora_mapping (arange + searchsorted + gather)
         with virtual experts]
  ours = 1 x backend._add_moe_lora_info (one Triton kernel)
         + L x the patched _get_lora_info (reads the batch's metadata)
         [+ L x _get_token_lora_mapping (a slice) with virtual experts]

The pre code is upstream's exact source: read from the sglang git tree at the
base tag (--base, default v0.5.12) with ast and exec'd against the patched
modules' globals. Both run on a minimal layer object holding what
_get_lora_info reads, with a real TritonLoRABackend, batch infos built as its
prepare_lora_batch builds them, and CUDA-graph buffers from each version's own
init_cuda_graph_moe_buffers.

Measurements (one row per workload x L x virtual experts):
  host: each version's per-batch work run eagerly, pre and ours interleaved
        round by round; per repetition: synchronize, perf_counter and CUDA
        events around the call, synchronize. "wall" ends after the final
        synchronize, "issue" when the call returns (host work alone).
  GPU:  the same work captured into a CUDA graph, GRAPH_REPEATS copies back
        to back (a replay's fixed cost would swamp one kernel); median of CUDA
        events around each replay / copies. "gpu" = the eager branch; "cg" = the
        CUDA-graph branch (use_cuda_graph=True, decode only). In sglang our
        kernel runs in prepare_lora_batch, eagerly before the replay, while
        pre's per-layer ops are nodes of the model's graph; both are counted
        here as GPU time of the batch's metadata.
  ops:  GPU activities (kernels, memsets, copies) per batch, counted with
        torch.profiler on one eager call: the node count in a graph.
Then the launch floor on the same card (an empty Triton kernel, a torch
zero_(), the timing harness itself). bench_moe_lora_info_kernel.py compares
the kernel alone with upstream 0.5.13's.

Before timing each case, pre and ours must produce the same metadata (ours
leaves rank-0 adapters disabled, the one intended difference).

Run (GPU):  PYTHONPATH=build/sglang/python python bench/bench_moe_lora_info.py
            [--quick: L=48 only, fewer rounds] -> moe_lora_info.json and .png
            in --out-dir (the quick run took under a minute on an H100).
Smoke test (CPU, Triton interpreter, tiny sizes, no GPU timings):
            PYTHONPATH=build/sglang/python python bench/bench_moe_lora_info.py --smoke
"""

import argparse
import os
import sys

if "--smoke" in sys.argv[1:]:
    # Triton reads this when sglang's kernels are defined, i.e. at import.
    os.environ["TRITON_INTERPRET"] = "1"

import dataclasses
import types
from pathlib import Path
from typing import List

import torch
from common import (
    ADAPTER_RANKS,
    DEFAULT_BASE,
    DEFAULT_SGLANG_DIR,
    adapter_of_requests,
    check_same_metadata,
    count_gpu_ops,
    decode_workload,
    launch_empty_kernel,
    load_pristine,
    make_backend,
    make_batch_info,
    make_forward_batch,
    make_graph_batch_info,
    mixed_workload,
    prefill_workload,
    print_record,
    print_table,
    require_device,
    run_record,
    summarize_interleaved,
    time_graph,
    time_host_per_call,
    time_interleaved,
    write_json,
)

from sglang.srt.lora import lora_moe_runners
from sglang.srt.lora.layers import FusedMoEWithLoRA

# Copies of a batch's work in one timed CUDA graph.
GRAPH_REPEATS = 10


@dataclasses.dataclass
class Config:
    layers: List[int]
    decode_bs: List[int]
    workloads: list
    rounds: int
    warmup: int
    replays: int
    calls: int  # host-time samples per launch-floor / isolation measurement
    max_bs: int  # CUDA-graph buffers (sglang's cuda_graph_max_bs)
    # Model dims: only shapes passed through to LoRAInfo; Qwen3-30B-A3B's.
    num_experts: int = 128
    top_k: int = 8
    hidden: int = 2048
    inter: int = 768


def make_config(args) -> Config:
    if args.smoke:
        return Config(
            layers=[2, 3],
            decode_bs=[1, 4],
            workloads=[prefill_workload(2, 8), mixed_workload(3, 16)],
            rounds=3,
            warmup=1,
            replays=0,
            calls=5,
            max_bs=8,
            num_experts=4,
            top_k=2,
            hidden=16,
            inter=8,
        )
    decode_bs = [1, 8, 32, 128, 512]
    return Config(
        layers=[48] if args.quick else [48, 60],
        decode_bs=decode_bs,
        workloads=[prefill_workload(8, 512), mixed_workload(64, 1024, seed=0)],
        rounds=args.rounds or (50 if args.quick else 200),
        warmup=20,
        replays=args.replays or (50 if args.quick else 200),
        calls=2000,
        max_bs=max(decode_bs),
    )


def make_fake_layer(backend, cfg: Config, device, dtype=torch.bfloat16):
    """The attributes FusedMoEWithLoRA._get_lora_info and
    init_cuda_graph_moe_buffers read. Weights are zero-stride views: both only
    read their shapes or pass them on, so they cost no memory."""

    def shaped(*shape):
        return torch.empty((), dtype=dtype, device=device).expand(*shape)

    num_loras, rank, experts = len(ADAPTER_RANKS), max(ADAPTER_RANKS), cfg.num_experts
    return types.SimpleNamespace(
        lora_backend=backend,
        gate_up_lora_a_weights=shaped(num_loras, experts, 2 * rank, cfg.hidden),
        gate_up_lora_b_weights=shaped(num_loras, experts, 2 * cfg.inter, rank),
        down_lora_a_weights=shaped(num_loras, experts, rank, cfg.inter),
        down_lora_b_weights=shaped(num_loras, experts, cfg.hidden, rank),
        base_layer=types.SimpleNamespace(
            num_experts=experts, hidden_size=cfg.hidden, top_k=cfg.top_k
        ),
        _quant_info=types.SimpleNamespace(
            w13_weight=shaped(experts, 2 * cfg.inter, cfg.hidden),
            w2_weight=shaped(experts, cfg.hidden, cfg.inter),
        ),
        experts_shared_outer_loras=False,
        tp_size=1,
        tp_rank=0,
        lora_use_virtual_experts=False,
    )


class Bench:
    def __init__(self, cfg: Config, pristine, device):
        self.cfg, self.pristine, self.device = cfg, pristine, device
        num_loras = len(ADAPTER_RANKS)
        self.pre_backend = make_backend(num_loras, device, is_moe_lora=False)
        self.ours_backend = make_backend(num_loras, device, is_moe_lora=True)
        self.pre_layer = make_fake_layer(self.pre_backend, cfg, device)
        self.ours_layer = make_fake_layer(self.ours_backend, cfg, device)
        # Each version's own CUDA-graph buffers (pre: weight_indices_long,
        # ours: token_lora_mapping), sized as sglang sizes them.
        pristine.init_cuda_graph_moe_buffers(
            self.pre_backend, cfg.max_bs, num_loras, torch.bfloat16, self.pre_layer
        )
        self.ours_backend.init_cuda_graph_moe_buffers(
            cfg.max_bs, num_loras, torch.bfloat16, self.ours_layer
        )

    def fns(self, workload, num_layers: int, virtual_experts: bool, graph: bool):
        """(pre, ours, check) doing one batch's metadata work for num_layers."""
        cfg, device = self.cfg, self.device
        weight_indices = adapter_of_requests(workload.bs, len(ADAPTER_RANKS))
        if graph:
            pre_info, ours_info = (
                make_graph_batch_info(
                    workload.bs, cfg.max_bs, weight_indices, ADAPTER_RANKS, device
                )
                for _ in range(2)
            )
        else:
            pre_info, ours_info = (
                make_batch_info(workload, weight_indices, ADAPTER_RANKS, device)
                for _ in range(2)
            )
        self.pre_backend.batch_info = pre_info
        self.ours_backend.batch_info = ours_info
        self.pre_layer.lora_use_virtual_experts = virtual_experts
        self.ours_layer.lora_use_virtual_experts = virtual_experts
        forward_batch = make_forward_batch(workload, device)
        # Only its shape is read: the number of tokens.
        hidden_states = torch.empty((), dtype=torch.bfloat16, device=device).expand(
            workload.num_tokens, cfg.hidden
        )
        pristine, pre_layer, ours_layer = self.pristine, self.pre_layer, self.ours_layer
        ours_backend = self.ours_backend

        def pre_one_layer():
            info = pristine.get_lora_info(pre_layer)
            mapping = None
            if virtual_experts:
                mapping = pristine.compute_token_lora_mapping(hidden_states, info)
            return info, mapping

        def ours_one_layer():
            info = FusedMoEWithLoRA._get_lora_info(ours_layer)
            mapping = None
            if virtual_experts:
                mapping = lora_moe_runners._get_token_lora_mapping(hidden_states, info)
            return info, mapping

        def pre():
            for _ in range(num_layers):
                pre_one_layer()

        def ours():
            ours_backend._add_moe_lora_info(forward_batch, ours_info)
            for _ in range(num_layers):
                ours_one_layer()

        def check():
            ours_backend._add_moe_lora_info(forward_batch, ours_info)
            assert ours_info.moe_lora_info is not None, "ours computed no metadata"
            pre_result, ours_result = pre_one_layer(), ours_one_layer()
            check_same_metadata(
                pre_result[0],
                ours_result[0],
                workload.bs,
                pre_result[1],
                ours_result[1],
            )

        return pre, ours, check

    def run_case(self, workload, num_layers: int, virtual_experts: bool) -> dict:
        cfg, cuda = self.cfg, self.device.type == "cuda"
        row = {
            "workload": workload.name,
            "decode_bs": workload.bs if workload.is_decode else None,
            "num_tokens": workload.num_tokens,
            "layers": num_layers,
            "virtual_experts": virtual_experts,
        }
        pre, ours, check = self.fns(workload, num_layers, virtual_experts, graph=False)
        check()
        samples = time_interleaved(
            {"pre": pre, "ours": ours}, cfg.rounds, cfg.warmup, self.device
        )
        row["host"] = summarize_interleaved(samples)
        row["gpu"] = row["ops"] = row["gpu_cg"] = row["ops_cg"] = None
        if cuda:
            row["ops"] = {"pre": count_gpu_ops(pre), "ours": count_gpu_ops(ours)}
            row["gpu"] = self.graph_pair(pre, ours)
        if workload.is_decode and workload.bs <= cfg.max_bs:
            pre, ours, check = self.fns(
                workload, num_layers, virtual_experts, graph=True
            )
            check()
            if cuda:
                row["ops_cg"] = {"pre": count_gpu_ops(pre), "ours": count_gpu_ops(ours)}
                row["gpu_cg"] = self.graph_pair(pre, ours)
        return row

    def graph_pair(self, pre, ours) -> dict:
        result = {
            "pre": time_graph(pre, self.cfg.replays, GRAPH_REPEATS),
            "ours": time_graph(ours, self.cfg.replays, GRAPH_REPEATS),
        }
        result["ratio"] = result["pre"]["median_us"] / result["ours"]["median_us"]
        return result

    def launch_floor(self) -> dict:
        """What one launch costs on this card, for scale."""
        cfg, device = self.cfg, self.device
        buf = torch.zeros(16, dtype=torch.int32, device=device)
        floor = {
            "empty_triton_host_us": time_host_per_call(
                lambda: launch_empty_kernel(buf), cfg.calls, device
            ),
            "torch_zero_host_us": time_host_per_call(buf.zero_, cfg.calls, device),
        }
        # The harness alone: what every host number above includes.
        harness = time_interleaved(
            {"pre": lambda: None, "ours": lambda: None},
            cfg.rounds,
            cfg.warmup,
            device,
        )
        floor["harness"] = summarize_interleaved(harness)["pre"]
        if device.type == "cuda":
            nodes = 100
            floor["empty_triton_graph_us"] = time_graph(
                lambda: launch_empty_kernel(buf), cfg.replays
            )["median_us"]
            floor["empty_triton_graph_per_node_us"] = time_graph(
                lambda: launch_empty_kernel(buf), cfg.replays, nodes
            )["median_us"]
            floor["torch_zero_graph_us"] = time_graph(buf.zero_, cfg.replays)[
                "median_us"
            ]
        return floor


def print_results(rows, floor):
    def key(r):
        return [r["workload"], r["layers"], "on" if r["virtual_experts"] else "off"]

    def get(d, *path):
        for p in path:
            if d is None:
                return None
            d = d[p]
        return d

    def times(ratio):
        return "-" if ratio is None else f"{ratio:.2f}x"

    def ops(r, name):
        o = r[name]
        return f"{o['pre']}/{o['ours']}" if o else "-"

    head = ["workload", "L", "VE"]
    print_table(
        "Per-batch MoE LoRA metadata, pre (0.5.12) vs ours, µs per batch. host: "
        "eager, wall time incl. synchronize, median; GPU: CUDA-graph replay, "
        "median; x = pre/ours (host: median of per-round ratios)",
        head
        + ["pre host", "ours host", "host x", "pre GPU", "ours GPU", "GPU x"]
        + ["ops pre/ours"],
        [
            key(r)
            + [
                get(r, "host", "pre", "wall_us"),
                get(r, "host", "ours", "wall_us"),
                times(get(r, "host", "ratio_wall")),
                get(r, "gpu", "pre", "median_us"),
                get(r, "gpu", "ours", "median_us"),
                times(get(r, "gpu", "ratio")),
                ops(r, "ops"),
            ]
            for r in rows
        ],
    )
    print_table(
        "Host detail (eager, µs per batch, medians; x = median of per-round "
        "pre/ours): issue = until the call returns; event = CUDA events around it",
        head
        + ["pre issue", "ours issue", "issue x"]
        + ["pre event", "ours event", "event x", "rounds"],
        [
            key(r)
            + [
                get(r, "host", "pre", "issue_us"),
                get(r, "host", "ours", "issue_us"),
                times(get(r, "host", "ratio_issue")),
                get(r, "host", "pre", "event_us"),
                get(r, "host", "ours", "event_us"),
                times(get(r, "host", "ratio_event")),
                get(r, "host", "rounds"),
            ]
            for r in rows
        ],
    )
    print_table(
        "CUDA-graph branch (use_cuda_graph=True, graph buffers; decode): "
        "GPU µs per batch, median replay",
        head + ["pre GPU", "ours GPU", "GPU x", "ops pre/ours"],
        [
            key(r)
            + [
                get(r, "gpu_cg", "pre", "median_us"),
                get(r, "gpu_cg", "ours", "median_us"),
                times(get(r, "gpu_cg", "ratio")),
                ops(r, "ops_cg"),
            ]
            for r in rows
            if r["decode_bs"] is not None
        ],
    )
    harness = floor["harness"]
    print_table(
        "Launch floor on this card (µs)",
        ["what", "host", "GPU"],
        [
            [
                "empty Triton kernel, 1 launch / 1-node graph",
                floor["empty_triton_host_us"],
                floor.get("empty_triton_graph_us"),
            ],
            [
                "empty Triton kernel, per node of a 100-node graph",
                None,
                floor.get("empty_triton_graph_per_node_us"),
            ],
            [
                "torch zero_() of 16 ints",
                floor["torch_zero_host_us"],
                floor.get("torch_zero_graph_us"),
            ],
            ["timing harness alone: wall", harness["wall_us"], None],
            ["timing harness alone: issue", harness["issue_us"], None],
            ["timing harness alone: event", None, harness["event_us"]],
        ],
    )


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sglang-dir", type=Path, default=DEFAULT_SGLANG_DIR)
    parser.add_argument(
        "--base", default=DEFAULT_BASE, help="git ref of the pristine sglang"
    )
    parser.add_argument("--out-dir", type=Path, default=Path("build/bench"))
    parser.add_argument(
        "--smoke", action="store_true", help="tiny sizes on CPU, no GPU timings"
    )
    parser.add_argument("--quick", action="store_true", help="L=48, fewer rounds")
    parser.add_argument("--rounds", type=int, help="interleaved host rounds")
    parser.add_argument("--replays", type=int, help="graph replays per timing")
    parser.add_argument("--no-plot", action="store_true")
    return parser.parse_args()


def main():
    args = parse_args()
    if not args.no_plot:
        # Fail now rather than after the run.
        from plot import plot_lora_info
    device = require_device(args.smoke)
    cfg = make_config(args)
    pristine = load_pristine(args.sglang_dir, args.base)
    record = run_record(device, args.sglang_dir, args.base)
    print_record(record)

    bench = Bench(cfg, pristine, device)
    workloads = [decode_workload(bs) for bs in cfg.decode_bs] + cfg.workloads
    rows = []
    for workload in workloads:
        for num_layers in cfg.layers:
            for virtual_experts in (False, True):
                rows.append(bench.run_case(workload, num_layers, virtual_experts))
                r = rows[-1]
                print(
                    f"  {workload.name:<18} L={num_layers} VE={virtual_experts!s:<5} "
                    f"host pre/ours {r['host']['pre']['wall_us']:.1f}/"
                    f"{r['host']['ours']['wall_us']:.1f} µs",
                    flush=True,
                )
    print()
    floor = bench.launch_floor()
    print_results(rows, floor)

    args.out_dir.mkdir(parents=True, exist_ok=True)
    payload = {
        "record": record,
        "config": {
            k: v for k, v in dataclasses.asdict(cfg).items() if k != "workloads"
        },
        "adapter_ranks": ADAPTER_RANKS,
        "rows": rows,
        "launch_floor": floor,
    }
    payload["config"]["workloads"] = [w.name for w in workloads]
    write_json(args.out_dir / "moe_lora_info.json", payload)
    if not args.no_plot:
        plot_lora_info(payload, args.out_dir / "moe_lora_info.png")


if __name__ == "__main__":
    main()
