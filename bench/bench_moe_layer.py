"""The whole MoE LoRA layer, pre (pristine sglang 0.5.12) vs ours: time of
FusedMoEWithLoRA.forward, one layer and a stack of L layers per decode step.

What runs (all real sglang objects, single process, one GPU):
- FusedMoE with UnquantizedFusedMoEMethod (bf16, random weights) and sglang's
  Triton fused-MoE runner, wrapped in FusedMoEWithLoRA with a TritonLoRABackend;
  LoRA buffers (rank 32, 4 adapters, random) set with set_lora_info as the
  memory pool does. sglang's state is set up as a one-process server would:
  ServerArgs as the global server args, a world-size-1 (gloo) process group and
  initialize_model_parallel(1, 1); the MoE runner backend is left at auto.
  (Without flashinfer, which only the sampler needs, a stand-in sampler module
  gives initialize_model_parallel its one flag; a NOTE says so.)
- pre  = the same wrapper with _get_lora_info replaced on the instance by
         upstream's 0.5.12 source; while pre runs, lora_moe_runners' decode path
         is off (0.5.12 runs fused_moe_lora at every size) and its token
         mapping is 0.5.12's _compute_token_lora_mapping (virtual experts);
         the CUDA-graph buffers of 0.5.12's init_cuda_graph_moe_buffers.
         The pre code is read from the sglang git tree at --base with ast.
  ours = the patched code: backend._add_moe_lora_info once per step, then the
         layers read the batch's metadata; up to _DECODE_MAX_PAIRS (token,
         expert) pairs, the hooks run fused_moe_lora_decode.
- Shapes: Qwen3-30B-A3B (128 experts, top-8, hidden 2048, moe_intermediate
  768, L=48) and Kimi-K2-like (384 experts, top-8, hidden 7168,
  moe_intermediate 2048, L=60); the expert count is trimmed (and said so) only
  when the layer does not fit in GPU memory. --moe-tp N divides the
  intermediate size as one rank of N-way MoE tensor parallelism holds it (no
  all-reduce). Decode batches of 1, 8, 32, 64, 128 requests, one token each,
  request i on adapter i % 4; virtual experts off and on.
- Steps: eager (pre and ours interleaved round by round; wall time with a
  synchronize before and after, and CUDA events) and CUDA graph, as sglang
  decodes: the L forwards captured in one graph (under model_capture_mode, so
  the LoRA alignment uses the graph buffers); ours launches _add_moe_lora_info
  eagerly before each replay, as prepare_lora_batch does. Graph steps are
  timed with CUDA events around (launch +) replay, interleaved too, behind a
  GPU sleep queued first, so the events see GPU execution alone, not the host
  queueing our launch into an idle GPU (in sglang, other host work hides it).
- Before timing each configuration: pre and ours must hand the kernels the
  same metadata (exactly) and give the same layer output (to bf16 rounding).

Eager steps of small batches run sglang's CPU alignment path (host loops and
synchronizations) in both versions; an eager L-layer step then takes tens of
ms, so it gets few rounds in the time budget and is the noisiest number. The
graph rows are the decode path of production.

Not included: the router GEMM and top-k (a fixed random top-k per layer), the
rest of the decoder layer (attention, norms, shared experts), TP/EP
communication, and prepare_lora_batch's MoE-unrelated work. Layers of a stack
rotate over a few distinct weight sets (together well over L2) and all read the
same random input: chaining random layers shrinks activations toward zero, and
zeros run faster on tensor cores.

Upstream reported 136 us -> 110 us per MoE layer (~20%) on Kimi K2.5 with
rank 32 (their setup; not necessarily this card, dtype or parallelism).

Run (GPU):   PYTHONPATH=build/sglang/python python bench/bench_moe_layer.py
             [--quick: bs 1 and 32, 1 s per measurement] [--shapes qwen3|kimi]
             Writes moe_layer.json and moe_layer.png to --out-dir. On an H100
             the quick Qwen3 run took about 1.5 min; the full run is several
             minutes, most of it the Kimi-like layer (34 GB of weights).
Smoke (CPU): ... bench/bench_moe_layer.py --smoke  builds the layers, pre and
             ours, and checks their metadata and LoRA hooks; forward, graphs
             and timings need a GPU.
"""

import argparse
import os
import sys

if "--smoke" in sys.argv[1:]:
    # Triton reads this when sglang's kernels are defined, i.e. at import.
    os.environ["TRITON_INTERPRET"] = "1"

import contextlib
import dataclasses
import importlib.util
import socket
import types
from pathlib import Path
from typing import List

import torch
from common import (
    DEFAULT_BASE,
    DEFAULT_SGLANG_DIR,
    capture_graph,
    check_same_metadata,
    decode_workload,
    load_pristine,
    make_backend,
    make_batch_info,
    make_forward_batch,
    make_graph_batch_info,
    print_record,
    print_table,
    require_device,
    run_record,
    summarize_interleaved,
    time_interleaved,
    write_json,
)

from sglang.srt.distributed.parallel_state import (
    init_distributed_environment,
    initialize_model_parallel,
)
from sglang.srt.layers.moe.fused_moe_triton.layer import FusedMoE
from sglang.srt.layers.moe.topk import StandardTopKOutput
from sglang.srt.lora import lora_moe_runners
from sglang.srt.lora.layers import FusedMoEWithLoRA
from sglang.srt.model_executor.cuda_graph_runner import model_capture_mode
from sglang.srt.server_args import ServerArgs, set_global_server_args_for_scheduler

UPSTREAM_REFERENCE = "Kimi K2.5, rank 32: 136 us -> 110 us per MoE layer (-19%)"
RANK = 32
NUM_ADAPTERS = 4
DTYPE = torch.bfloat16
# Distinct weight sets of a stack: as many as fit in this many bytes.
ROTATION_BYTES = 8 << 30
# GPU memory kept free for activations, graph pools and CUDA-graph buffers.
HEADROOM_BYTES = 6 << 30
# GPU sleep queued before a timed graph step: longer than the host takes to
# queue the step (tens of µs), so the GPU never waits for it.
LEAD_IN_CYCLES = 1_000_000


@dataclasses.dataclass
class Shape:
    name: str
    num_experts: int
    top_k: int
    hidden: int
    inter: int
    layers: int  # MoE layers of the model: the stack of a decode step

    def layer_bytes(self, num_experts: int) -> int:
        base = num_experts * 3 * self.hidden * self.inter
        lora = (
            NUM_ADAPTERS
            * num_experts
            * RANK
            * (2 * self.hidden + 2 * self.inter + self.inter + self.hidden)
        )
        return (base + lora) * DTYPE.itemsize


SHAPES = {
    "qwen3": Shape("Qwen3-30B-A3B", 128, 8, 2048, 768, 48),
    "kimi": Shape("Kimi-K2-like", 384, 8, 7168, 2048, 60),
}
SMOKE_SHAPE = Shape("smoke", 8, 2, 64, 32, 2)


def init_sglang():
    """The global state a one-GPU sglang server sets up before it builds layers."""
    if importlib.util.find_spec("flashinfer") is None:
        # initialize_model_parallel imports the sampler (which needs flashinfer
        # on CUDA) for one flag alone; the MoE path never samples.
        print("NOTE: no flashinfer: a stand-in sglang.srt.layers.sampler module")
        sampler = types.ModuleType("sglang.srt.layers.sampler")
        sampler.SYNC_TOKEN_IDS_ACROSS_TP = False
        sys.modules.setdefault(sampler.__name__, sampler)
    # "dummy": ServerArgs skips its model-config and GPU-memory resolution.
    set_global_server_args_for_scheduler(ServerArgs(model_path="dummy"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    init_distributed_environment(
        world_size=1,
        rank=0,
        local_rank=0,
        distributed_init_method=f"tcp://127.0.0.1:{port}",
        backend="gloo",
    )
    initialize_model_parallel(1, 1)


@contextlib.contextmanager
def pristine_hooks(pristine, virtual_experts: bool):
    """build_lora_hooks as 0.5.12 runs it: no decode path (fused_moe_lora at every
    size), and under virtual experts _compute_token_lora_mapping where the patched
    one calls _get_token_lora_mapping (same signature)."""
    saved = lora_moe_runners._get_token_lora_mapping, lora_moe_runners._DECODE_MAX_PAIRS
    if virtual_experts:
        lora_moe_runners._get_token_lora_mapping = pristine.compute_token_lora_mapping
    lora_moe_runners._DECODE_MAX_PAIRS = 0
    try:
        yield
    finally:
        lora_moe_runners._get_token_lora_mapping, lora_moe_runners._DECODE_MAX_PAIRS = (
            saved
        )


class Model:
    """Distinct MoE layers, each wrapped twice: pre and ours."""

    def __init__(
        self,
        shape: Shape,
        num_experts: int,
        inter: int,
        distinct: int,
        max_bs: int,
        pristine,
        device,
    ):
        self.shape, self.pristine, self.device = shape, pristine, device
        self.num_experts, self.inter = num_experts, inter
        self.pre_backend = make_backend(NUM_ADAPTERS, device, is_moe_lora=False)
        self.ours_backend = make_backend(NUM_ADAPTERS, device, is_moe_lora=True)
        self.pre_layers, self.ours_layers = [], []
        generator = torch.Generator(device=device).manual_seed(0)
        for layer_id in range(distinct):
            with torch.device(device):
                base = FusedMoE(
                    num_experts=num_experts,
                    hidden_size=shape.hidden,
                    intermediate_size=inter,
                    layer_id=layer_id,
                    top_k=shape.top_k,
                    params_dtype=DTYPE,
                    # Every layer reads the same input: see the module docstring.
                    inplace=False,
                )
            for weight in (base.w13_weight, base.w2_weight):
                weight.data.normal_(0, 0.02, generator=generator)
            base.quant_method.process_weights_after_loading(base)
            lora = [
                torch.empty(size, dtype=DTYPE, device=device).normal_(
                    0, 0.02, generator=generator
                )
                for size in (
                    (NUM_ADAPTERS, num_experts, 2 * RANK, shape.hidden),
                    (NUM_ADAPTERS, num_experts, 2 * inter, RANK),
                    (NUM_ADAPTERS, num_experts, RANK, inter),
                    (NUM_ADAPTERS, num_experts, shape.hidden, RANK),
                )
            ]
            pre = FusedMoEWithLoRA(base, self.pre_backend)
            ours = FusedMoEWithLoRA(base, self.ours_backend)
            for layer in (pre, ours):
                assert layer._lora_runner.runner_backend.is_triton(), (
                    f"expected the Triton MoE runner, got "
                    f"{layer._lora_runner.runner_backend}"
                )
                layer.set_lora_info(*lora)
            pre._get_lora_info = types.MethodType(pristine.get_lora_info, pre)
            self.pre_layers.append(pre)
            self.ours_layers.append(ours)
        # FusedMoEWithLoRA set it; 0.5.12 had no such flag.
        self.pre_backend.is_moe_lora = False
        pristine.init_cuda_graph_moe_buffers(
            self.pre_backend, max_bs, NUM_ADAPTERS, DTYPE, self.pre_layers[0]
        )
        self.ours_backend.init_cuda_graph_moe_buffers(
            max_bs, NUM_ADAPTERS, DTYPE, self.ours_layers[0]
        )
        self.max_bs = max_bs
        self.generator = generator

    def batch(self, bs: int, virtual_experts: bool, graph: bool):
        """Set both backends up for a decode batch; return its inputs."""
        workload = decode_workload(bs)
        weight_indices = [i % NUM_ADAPTERS for i in range(bs)]
        ranks = [RANK] * NUM_ADAPTERS
        if graph:
            pre_info, ours_info = (
                make_graph_batch_info(
                    bs, self.max_bs, weight_indices, ranks, self.device
                )
                for _ in range(2)
            )
        else:
            pre_info, ours_info = (
                make_batch_info(workload, weight_indices, ranks, self.device)
                for _ in range(2)
            )
        # Every request is on an adapter of nonzero rank (LoRAManager's flag).
        pre_info.has_active_lora = ours_info.has_active_lora = True
        self.pre_backend.batch_info = pre_info
        self.ours_backend.batch_info = ours_info
        for layer in self.pre_layers + self.ours_layers:
            layer.lora_use_virtual_experts = virtual_experts
        forward_batch = make_forward_batch(workload, self.device)
        hidden_states = torch.empty(
            bs, self.shape.hidden, dtype=DTYPE, device=self.device
        ).normal_(generator=self.generator)
        topk = []
        for _ in self.pre_layers:
            logits = torch.empty(
                bs, self.num_experts, dtype=torch.float32, device=self.device
            ).normal_(generator=self.generator)
            weights, ids = torch.topk(torch.softmax(logits, dim=-1), self.shape.top_k)
            topk.append(StandardTopKOutput(weights, ids.to(torch.int32), logits))
        return forward_batch, ours_info, hidden_states, topk

    def steps(self, bs: int, num_layers: int, virtual_experts: bool, graph: bool):
        """(pre, ours, check): one decode step of num_layers layers each;
        check() compares their metadata and one layer's output."""
        forward_batch, ours_info, hidden_states, topk = self.batch(
            bs, virtual_experts, graph
        )
        pristine, ours_backend = self.pristine, self.ours_backend
        distinct = len(self.pre_layers)

        def add():
            ours_backend._add_moe_lora_info(forward_batch, ours_info)

        def run_layers(layers, count):
            out = None
            for i in range(count):
                out = layers[i % distinct].forward(hidden_states, topk[i % distinct])
            return out

        def pre_layers(count=num_layers):
            with pristine_hooks(pristine, virtual_experts):
                return run_layers(self.pre_layers, count)

        def ours_layers(count=num_layers):
            return run_layers(self.ours_layers, count)

        def check():
            add()
            pre_info = self.pre_layers[0]._get_lora_info()
            ours_layer_info = self.ours_layers[0]._get_lora_info()
            maps = (None, None)
            if virtual_experts:
                maps = (
                    pristine.compute_token_lora_mapping(hidden_states, pre_info),
                    lora_moe_runners._get_token_lora_mapping(
                        hidden_states, ours_layer_info
                    ),
                )
            check_same_metadata(pre_info, ours_layer_info, bs, *maps)
            if self.device.type != "cuda":
                return None
            with model_capture_mode() if graph else contextlib.nullcontext():
                pre_out, ours_out = pre_layers(1), ours_layers(1)
            torch.cuda.synchronize()
            diff = (pre_out.float() - ours_out.float()).abs().max().item()
            scale = ours_out.float().abs().max().item()
            # A few bf16 ulps: the LoRA kernels' accumulation order may vary.
            assert diff <= 2e-2 * max(
                scale, 1e-3
            ), f"pre and ours outputs differ: max |diff| {diff} (max |out| {scale})"
            return diff

        if not graph:
            return pre_layers, lambda: (add(), ours_layers()), check
        add()  # before capture, as prepare_lora_batch runs before it
        with model_capture_mode():
            pre_graph = capture_graph(pre_layers)
            ours_graph = capture_graph(ours_layers)

        def ours_step():
            add()
            ours_graph.replay()

        return pre_graph.replay, ours_step, check


def plan_model(shape: Shape, moe_tp: int, device):
    """(num_experts, inter, distinct layers, note): trims experts only if one
    layer does not fit."""
    if shape.inter % moe_tp:
        raise SystemExit(f"error: --moe-tp {moe_tp} does not divide {shape.inter}")
    inter = shape.inter // moe_tp
    sized = dataclasses.replace(shape, inter=inter)
    num_experts, note = shape.num_experts, None
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        while (
            num_experts > 8 and sized.layer_bytes(num_experts) + HEADROOM_BYTES > free
        ):
            num_experts -= 8
        if num_experts != shape.num_experts:
            note = (
                f"{shape.name}: trimmed to {num_experts} of {shape.num_experts} "
                f"experts to fit {free / 2**30:.1f} GiB free"
            )
            print(f"NOTE: {note}", flush=True)
    distinct = max(
        1, min(shape.layers, ROTATION_BYTES // sized.layer_bytes(num_experts))
    )
    return num_experts, inter, distinct, note


@dataclasses.dataclass
class Config:
    shapes: List[Shape]
    batch_sizes: List[int]
    max_rounds: int
    budget_s: float  # per measurement: rounds stop once it is spent


def run_shape(shape: Shape, cfg: Config, args, pristine, device) -> dict:
    num_experts, inter, distinct, note = plan_model(shape, args.moe_tp, device)
    print(
        f"== {shape.name}: {num_experts} experts, top-{shape.top_k}, hidden "
        f"{shape.hidden}, intermediate {inter} (moe-tp {args.moe_tp}), rank {RANK}, "
        f"{NUM_ADAPTERS} adapters, L={shape.layers}, {distinct} distinct layer(s)",
        flush=True,
    )
    model = Model(
        shape, num_experts, inter, distinct, max(cfg.batch_sizes), pristine, device
    )
    result = {
        "shape": dataclasses.asdict(shape),
        "num_experts": num_experts,
        "inter_per_partition": inter,
        "distinct_layers": distinct,
        "note": note,
        "rows": [],
    }
    for virtual_experts in (False, True):
        for bs in cfg.batch_sizes:
            if device.type != "cuda":
                smoke_check(model, bs, virtual_experts)
                continue
            for num_layers in (1, shape.layers):
                for graph in (False, True):
                    result["rows"].append(
                        measure(model, cfg, bs, num_layers, virtual_experts, graph)
                    )
    del model
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return result


def smoke_check(model: Model, bs: int, virtual_experts: bool):
    """The CPU part of a step, for both batch kinds: pre and ours metadata
    agree, and building the LoRA hooks through the real runner module gives
    pre 0.5.12's token mapping (ours takes the batch's). Under a graph without
    virtual experts the hooks need the CUDA alignment kernel: not built here."""
    model.steps(bs, 1, virtual_experts, graph=False)[2]()
    for graph in (False, True):
        forward_batch, ours_info, hidden_states, topk = model.batch(
            bs, virtual_experts, graph
        )
        model.ours_backend._add_moe_lora_info(forward_batch, ours_info)
        pre_info = model.pre_layers[0]._get_lora_info()
        ours_info = model.ours_layers[0]._get_lora_info()
        check_same_metadata(pre_info, ours_info, bs)
        if graph and not virtual_experts:
            continue
        calls = []

        def spy(*args):
            calls.append(args)
            return model.pristine.compute_token_lora_mapping(*args)

        spying = dataclasses.replace(model.pristine, compute_token_lora_mapping=spy)
        topk_ids = topk[0].topk_ids
        with pristine_hooks(spying, virtual_experts):
            pre_hooks = lora_moe_runners.build_lora_hooks(
                hidden_states, pre_info, topk_ids
            )
        ours_hooks = lora_moe_runners.build_lora_hooks(
            hidden_states, ours_info, topk_ids
        )
        assert pre_hooks.after_down and ours_hooks.after_down, "no LoRA hooks"
        assert len(calls) == int(virtual_experts), "pre missed 0.5.12's mapping"
        assert lora_moe_runners._get_token_lora_mapping is not spy, "not restored"


def measure(model: Model, cfg: Config, bs, num_layers, virtual_experts, graph) -> dict:
    pre, ours, check = model.steps(bs, num_layers, virtual_experts, graph)
    max_diff = check()
    samples = time_interleaved(
        {"pre": pre, "ours": ours},
        rounds=cfg.max_rounds,
        warmup=2,
        device=model.device,
        time_budget_s=cfg.budget_s,
        lead_in=(lambda: torch.cuda._sleep(LEAD_IN_CYCLES)) if graph else None,
    )
    summary = summarize_interleaved(samples)
    # Eager decode is host-bound: the wall time is what a step costs. Under a
    # graph the host only launches: the GPU time is.
    metric = "event" if graph else "wall"
    row = {
        "bs": bs,
        "layers": num_layers,
        "virtual_experts": virtual_experts,
        "mode": "graph" if graph else "eager",
        "metric": metric,
        "pre_us": summary["pre"][f"{metric}_us"],
        "ours_us": summary["ours"][f"{metric}_us"],
        "ratio": summary[f"ratio_{metric}"],
        "max_abs_diff": max_diff,
        "timing": summary,
    }
    print(
        f"  VE={'on ' if virtual_experts else 'off'} bs={bs:<4} L={num_layers:<3} "
        f"{row['mode']:<5} pre {row['pre_us']:9.1f} us  ours {row['ours_us']:9.1f} us"
        f"  x{row['ratio']:.3f}  ({summary['rounds']} rounds)",
        flush=True,
    )
    return row


def print_results(results: List[dict]):
    for result in results:
        shape = result["shape"]
        title = (
            f"{shape['name']} ({result['num_experts']} experts, intermediate "
            f"{result['inter_per_partition']}, rank {RANK}, {NUM_ADAPTERS} adapters): "
            "µs per decode step of L layers; eager = wall incl. synchronize, "
            "graph = GPU time of (ours: _add_moe_lora_info +) replay; "
            "x = median per-round pre/ours"
        )
        rows = []
        for r in result["rows"]:
            pre_layer = r["pre_us"] / r["layers"]
            ours_layer = r["ours_us"] / r["layers"]
            rows.append(
                [
                    "on" if r["virtual_experts"] else "off",
                    r["bs"],
                    r["layers"],
                    r["mode"],
                    r["pre_us"],
                    r["ours_us"],
                    f"{r['ratio']:.3f}x",
                    pre_layer,
                    ours_layer,
                    pre_layer - ours_layer,
                    f"{100 * (ours_layer - pre_layer) / pre_layer:+.1f}%",
                ]
            )
        print_table(
            title,
            ["VE", "bs", "L", "mode", "pre", "ours", "x"]
            + ["pre/layer", "ours/layer", "saved/layer", "change"],
            rows,
        )
        if result["note"]:
            print(f"NOTE: {result['note']}\n")
    print(f"Upstream reference: {UPSTREAM_REFERENCE}.")
    for result in results:
        for virtual_experts in (False, True):
            stack = [
                r
                for r in result["rows"]
                if r["layers"] > 1
                and r["mode"] == "graph"
                and r["virtual_experts"] == virtual_experts
            ]
            print(
                f"  here, {result['shape']['name']}, L-stack, graph, "
                f"VE {'on' if virtual_experts else 'off'}, per layer: "
                + ", ".join(
                    f"bs={r['bs']} {r['pre_us'] / r['layers']:.1f} -> "
                    f"{r['ours_us'] / r['layers']:.1f} us"
                    for r in stack
                )
            )
    print()


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sglang-dir", type=Path, default=DEFAULT_SGLANG_DIR)
    parser.add_argument(
        "--base", default=DEFAULT_BASE, help="git ref of the pristine sglang"
    )
    parser.add_argument("--out-dir", type=Path, default=Path("build/bench"))
    parser.add_argument(
        "--smoke", action="store_true", help="CPU: build and check, no forward"
    )
    parser.add_argument(
        "--quick", action="store_true", help="bs 1 and 32, short time budget"
    )
    parser.add_argument(
        "--shapes", nargs="+", choices=sorted(SHAPES), default=["qwen3", "kimi"]
    )
    parser.add_argument(
        "--moe-tp", type=int, default=1, help="divide moe_intermediate as N-way MoE TP"
    )
    parser.add_argument(
        "--budget", type=float, help="seconds per measurement (default 3, quick 1)"
    )
    parser.add_argument("--no-plot", action="store_true")
    return parser.parse_args()


def main():
    args = parse_args()
    if not args.no_plot:
        # Fail now rather than after the run.
        from plot import plot_layer
    device = require_device(args.smoke)
    if args.smoke:
        cfg = Config([SMOKE_SHAPE], [1, 2], max_rounds=1, budget_s=0)
    else:
        cfg = Config(
            shapes=[SHAPES[name] for name in args.shapes],
            batch_sizes=[1, 32] if args.quick else [1, 8, 32, 64, 128],
            max_rounds=200,
            budget_s=args.budget or (1.0 if args.quick else 3.0),
        )
    pristine = load_pristine(args.sglang_dir, args.base)
    record = run_record(device, args.sglang_dir, args.base)
    print_record(record)
    init_sglang()

    results = [run_shape(shape, cfg, args, pristine, device) for shape in cfg.shapes]
    if args.smoke:
        print(
            "smoke: built FusedMoE + FusedMoEWithLoRA (pre and ours) and the "
            "CUDA-graph buffers of both versions; for every batch pre and ours "
            "metadata agree and the LoRA hooks build (pre on 0.5.12's token "
            "mapping). Not run without a GPU: forward, graph capture, timings, plot."
        )
        return
    print_results(results)
    payload = {
        "record": record,
        "config": {
            "batch_sizes": cfg.batch_sizes,
            "max_rounds": cfg.max_rounds,
            "budget_s": cfg.budget_s,
            "moe_tp": args.moe_tp,
            "rank": RANK,
            "adapters": NUM_ADAPTERS,
            "upstream_reference": UPSTREAM_REFERENCE,
        },
        "results": results,
    }
    write_json(args.out_dir / "moe_layer.json", payload)
    if not args.no_plot:
        plot_layer(payload, args.out_dir / "moe_layer.png")


if __name__ == "__main__":
    main()
