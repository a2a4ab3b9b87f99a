"""Shared pieces of the MoE LoRA benchmarks.

- The pristine (sglang 0.5.12) per-layer code, read from the sglang git tree's
  base tag and exec'd against the patched modules' globals, so "pre" runs
  upstream's exact source next to "ours" in one process.
- Batches built the way TritonLoRABackend.prepare_lora_batch builds them.
- Timers: interleaved host timing, CUDA-graph replay timing, kernel counts.

Import this only after TRITON_INTERPRET is settled (the scripts set it for
--smoke): Triton reads it when sglang's kernels are defined.
"""

import __future__

import ast
import dataclasses
import datetime
import json
import os
import platform
import random
import shlex
import statistics
import subprocess
import sys
import time
import types
from pathlib import Path
from typing import Callable, Dict, List, Optional

import torch
import triton
import triton.testing

import sglang.srt.lora.backend.base_backend as base_backend_module
import sglang.srt.lora.layers as layers_module
import sglang.srt.lora.lora_moe_runners as runners_module
from sglang.srt.lora.utils import LoRABatchInfo
from sglang.srt.model_executor.forward_batch_info import ForwardBatch, ForwardMode

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SGLANG_DIR = ROOT / "build" / "sglang"
DEFAULT_BASE = "v0.5.12"

LAYERS_PY = "python/sglang/srt/lora/layers.py"
RUNNERS_PY = "python/sglang/srt/lora/lora_moe_runners.py"
BACKEND_PY = "python/sglang/srt/lora/backend/base_backend.py"


# --------------------------------------------------------------------------
# The pristine per-layer code
# --------------------------------------------------------------------------


def _git_show(sglang_dir: Path, ref: str, path: str) -> str:
    proc = subprocess.run(
        ["git", "-C", str(sglang_dir), "show", f"{ref}:{path}"],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise SystemExit(
            f"error: cannot read {path} at {ref} in {sglang_dir}: "
            f"{proc.stderr.strip()} (run 'make apply', or pass --sglang-dir/--base)"
        )
    return proc.stdout


def _find_def(tree: ast.Module, qualname: str, where: str) -> ast.FunctionDef:
    body = tree.body
    *classes, func = qualname.split(".")
    for name in classes:
        node = next(
            (n for n in body if isinstance(n, ast.ClassDef) and n.name == name), None
        )
        if node is None:
            raise SystemExit(f"error: no class {name} in {where}")
        body = node.body
    node = next(
        (n for n in body if isinstance(n, ast.FunctionDef) and n.name == func), None
    )
    if node is None:
        raise SystemExit(f"error: no function {qualname} in {where}")
    return node


def load_pristine_function(
    sglang_dir: Path, ref: str, path: str, qualname: str, module: types.ModuleType
) -> Callable:
    """Exec the source of `qualname` from `path` at `ref` with a copy of the
    patched `module`'s globals, so the names it uses resolve as upstream's did
    (LoRAInfo, torch, ...). Tracebacks point at `ref:path` and its line numbers."""
    where = f"{ref}:{path}"
    source = _git_show(sglang_dir, ref, path)
    node = _find_def(ast.parse(source, where), qualname, where)
    code = compile(
        ast.Module(body=[node], type_ignores=[]),
        where,
        "exec",
        # Annotations stay strings, as in the modules that import annotations.
        flags=__future__.annotations.compiler_flag,
        dont_inherit=True,
    )
    namespace = dict(vars(module))
    exec(code, namespace)
    function = namespace[node.name]
    function.__qualname__ = f"{qualname} [{ref}]"
    function.pristine_source = ast.get_source_segment(source, node)
    return function


@dataclasses.dataclass
class Pristine:
    """The 0.5.12 code that ran per MoE layer (and its CUDA-graph buffers)."""

    get_lora_info: Callable  # FusedMoEWithLoRA._get_lora_info
    compute_token_lora_mapping: Callable  # lora_moe_runners._compute_token_lora_mapping
    init_cuda_graph_moe_buffers: Callable  # BaseLoRABackend.init_cuda_graph_moe_buffers


def load_pristine(sglang_dir: Path, ref: str) -> Pristine:
    check_patched_tree()
    pristine = Pristine(
        get_lora_info=load_pristine_function(
            sglang_dir,
            ref,
            LAYERS_PY,
            "FusedMoEWithLoRA._get_lora_info",
            layers_module,
        ),
        compute_token_lora_mapping=load_pristine_function(
            sglang_dir, ref, RUNNERS_PY, "_compute_token_lora_mapping", runners_module
        ),
        init_cuda_graph_moe_buffers=load_pristine_function(
            sglang_dir,
            ref,
            BACKEND_PY,
            "BaseLoRABackend.init_cuda_graph_moe_buffers",
            base_backend_module,
        ),
    )
    # Guard against a base that is not the per-layer version.
    for needle in ("index_fill_", "weight_indices_long"):
        if needle not in pristine.get_lora_info.pristine_source:
            raise SystemExit(
                f"error: {ref}:{LAYERS_PY} _get_lora_info has no {needle}; "
                "is --base the pristine 0.5.12?"
            )
    return pristine


def check_patched_tree():
    """The imported sglang must be the patched one: 'ours' calls its new code."""
    missing = [
        name
        for module, name in (
            (base_backend_module.BaseLoRABackend, "_add_moe_lora_info"),
            (base_backend_module, "_compute_moe_lora_info"),
            (runners_module, "_get_token_lora_mapping"),
        )
        if not hasattr(module, name)
    ]
    if missing:
        raise SystemExit(
            f"error: the sglang imported from {Path(layers_module.__file__).parents[3]} "
            f"lacks {', '.join(missing)}: the patch series is not applied "
            "(run 'make apply' and put build/sglang/python on PYTHONPATH)"
        )


# --------------------------------------------------------------------------
# Batches
# --------------------------------------------------------------------------

# Eight adapter slots; rank 0 ones are in the batch but contribute nothing.
ADAPTER_RANKS = [0, 8, 16, 32, 64, 16, 0, 32]


@dataclasses.dataclass
class Workload:
    name: str
    mode: ForwardMode
    seq_lens: List[int]  # tokens of each request in this forward

    @property
    def bs(self) -> int:
        return len(self.seq_lens)

    @property
    def num_tokens(self) -> int:
        return sum(self.seq_lens)

    @property
    def is_decode(self) -> bool:
        return self.mode == ForwardMode.DECODE


def decode_workload(bs: int) -> Workload:
    return Workload(f"decode bs={bs}", ForwardMode.DECODE, [1] * bs)


def prefill_workload(bs: int, length: int) -> Workload:
    return Workload(f"prefill {bs}x{length}", ForwardMode.EXTEND, [length] * bs)


def mixed_workload(bs: int, max_len: int, seed: int = 0) -> Workload:
    rng = random.Random(seed)
    lens = [rng.randint(1, max_len) for _ in range(bs)]
    return Workload(f"mixed {bs}x[1,{max_len}]", ForwardMode.MIXED, lens)


def adapter_of_requests(bs: int, num_loras: int) -> List[int]:
    # Request i uses slot (i + 1) % num_loras: bs=1 gets a LoRA, bs >= 8 uses all.
    return [(i + 1) % num_loras for i in range(bs)]


def make_forward_batch(workload: Workload, device: torch.device) -> ForwardBatch:
    lens = workload.seq_lens
    kwargs = {}
    if not workload.is_decode:
        kwargs = dict(
            extend_num_tokens=workload.num_tokens,
            extend_seq_lens=torch.tensor(lens, dtype=torch.int32, device=device),
            extend_seq_lens_cpu=list(lens),
            extend_prefix_lens_cpu=[0] * workload.bs,
        )
    return ForwardBatch(
        forward_mode=workload.mode,
        batch_size=workload.bs,
        input_ids=torch.zeros(workload.num_tokens, dtype=torch.int64, device=device),
        req_pool_indices=torch.arange(workload.bs, dtype=torch.int64, device=device),
        seq_lens=torch.tensor(lens, dtype=torch.int64, device=device),
        out_cache_loc=torch.zeros(
            workload.num_tokens, dtype=torch.int64, device=device
        ),
        seq_lens_sum=workload.num_tokens,
        **kwargs,
    )


def make_batch_info(
    workload: Workload,
    weight_indices: List[int],
    lora_ranks: List[int],
    device: torch.device,
) -> LoRABatchInfo:
    """The LoRABatchInfo TritonLoRABackend.prepare_lora_batch builds without a
    CUDA graph (its MoE-unrelated sgemm/lm_head routing left out)."""
    bs = workload.bs
    is_extend = workload.mode.is_extend()
    seg_lens = torch.tensor(workload.seq_lens, dtype=torch.int32, device=device)
    seg_indptr = torch.zeros((bs + 1,), dtype=torch.int32, device=device)
    seg_indptr[1:] = torch.cumsum(seg_lens, dim=0)
    return LoRABatchInfo(
        bs=bs,
        num_segments=bs,
        max_len=max(workload.seq_lens) if is_extend else 1,
        use_cuda_graph=False,
        seg_lens=seg_lens,
        seg_indptr=seg_indptr,
        weight_indices=torch.tensor(weight_indices, dtype=torch.int32, device=device),
        lora_ranks=torch.tensor(lora_ranks, dtype=torch.int64, device=device),
        scalings=torch.ones(len(lora_ranks), dtype=torch.float, device=device),
        permutation=None,
    )


def make_graph_batch_info(
    bs: int,
    max_bs: int,
    weight_indices: List[int],
    lora_ranks: List[int],
    device: torch.device,
) -> LoRABatchInfo:
    """The decode batch info of a CUDA graph: TritonLoRABackend's
    init_cuda_graph_batch_info(max_bs, 1) buffers, filled for `bs` requests as
    prepare_lora_batch(use_cuda_graph=True) fills them."""
    seg_lens = torch.ones(max_bs, dtype=torch.int32, device=device)
    seg_indptr = torch.zeros(max_bs + 1, dtype=torch.int32, device=device)
    torch.cumsum(seg_lens, dim=0, out=seg_indptr[1:])
    indices = torch.zeros(max_bs, dtype=torch.int32, device=device)
    indices[:bs] = torch.tensor(weight_indices, dtype=torch.int32, device=device)
    return LoRABatchInfo(
        bs=bs,
        use_cuda_graph=True,
        num_segments=bs,
        seg_lens=seg_lens,
        seg_indptr=seg_indptr,
        max_len=1,
        weight_indices=indices,
        lora_ranks=torch.tensor(lora_ranks, dtype=torch.int32, device=device),
        scalings=torch.ones(len(lora_ranks), dtype=torch.float, device=device),
        permutation=None,
    )


def make_backend(max_loras: int, device: torch.device, is_moe_lora: bool):
    from sglang.srt.lora.backend.triton_backend import TritonLoRABackend

    backend = TritonLoRABackend(max_loras_per_batch=max_loras, device=device)
    backend.is_moe_lora = is_moe_lora
    return backend


# --------------------------------------------------------------------------
# Checks that pre and ours computed the same metadata
# --------------------------------------------------------------------------


def check_same_metadata(pre_info, ours_info, bs: int, pre_map=None, ours_map=None):
    """Pre and ours must hand the MoE kernels the same metadata; the only
    intended difference: ours leaves rank-0 adapters disabled."""

    def same(name, a, b):
        if not torch.equal(a.cpu().to(torch.int64), b.cpu().to(torch.int64)):
            raise AssertionError(f"pre and ours differ in {name}: {a} vs {b}")

    same("seg_indptr", pre_info.seg_indptr[: bs + 1], ours_info.seg_indptr[: bs + 1])
    same("req_to_lora", pre_info.req_to_lora[:bs], ours_info.req_to_lora[:bs])
    n = ours_info.adapter_enabled.numel()
    ranks = ours_info.lora_ranks[:n].cpu()
    same(
        "adapter_enabled (rank > 0)",
        pre_info.adapter_enabled[:n].cpu() * (ranks > 0),
        ours_info.adapter_enabled,
    )
    if pre_map is not None or ours_map is not None:
        same("token_lora_mapping", pre_map, ours_map)


# --------------------------------------------------------------------------
# Timers
# --------------------------------------------------------------------------


def sync(device: torch.device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median(values: List[float]) -> float:
    return statistics.median(values)


def time_interleaved(
    fns: Dict[str, Callable[[], None]],
    rounds: int,
    warmup: int,
    device: torch.device,
    min_rounds: int = 3,
    time_budget_s: Optional[float] = None,
    lead_in: Optional[Callable[[], None]] = None,
) -> Dict[str, Dict[str, List[float]]]:
    """Run fns round-robin (a, b, a, b, ...), each repetition timed alone:
    synchronize, then perf_counter and a CUDA event around the call, then
    synchronize again. Returns per fn the lists (µs) of
      wall:  perf_counter from before the call to after the final synchronize
      issue: perf_counter from before the call to its return (host work only)
      event: CUDA event time around the call (CUDA only)
    lead_in, if given, queues GPU work (a sleep) before the first event, so
    the GPU is still busy while the host queues the call: the event time is
    then the GPU's execution alone, without host launch gaps. wall, which
    would include the lead-in, is not kept then.
    With time_budget_s, stops after min_rounds once the budget is spent."""
    cuda = device.type == "cuda"
    out = {name: {"wall": [], "issue": [], "event": []} for name in fns}
    start_all = time.perf_counter()
    for r in range(warmup + rounds):
        for name, fn in fns.items():
            if cuda:
                begin, end = (torch.cuda.Event(enable_timing=True) for _ in range(2))
            sync(device)
            if lead_in is not None:
                lead_in()
            t0 = time.perf_counter()
            if cuda:
                begin.record()
            fn()
            if cuda:
                end.record()
            t1 = time.perf_counter()
            sync(device)
            t2 = time.perf_counter()
            if r >= warmup:
                if lead_in is None:
                    out[name]["wall"].append((t2 - t0) * 1e6)
                out[name]["issue"].append((t1 - t0) * 1e6)
                if cuda:
                    out[name]["event"].append(begin.elapsed_time(end) * 1e3)
        if (
            time_budget_s is not None
            and r + 1 >= warmup + min_rounds
            and time.perf_counter() - start_all > time_budget_s
        ):
            break
    return out


def summarize_interleaved(samples, pre: str = "pre", ours: str = "ours") -> dict:
    """Medians per fn and metric, and the median of per-round pre/ours ratios."""
    summary = {"rounds": len(samples[pre]["issue"])}
    for name in (pre, ours):
        summary[name] = {
            f"{metric}_us": median(values) if values else None
            for metric, values in samples[name].items()
        }
    for metric in ("wall", "issue", "event"):
        a, b = samples[pre][metric], samples[ours][metric]
        summary[f"ratio_{metric}"] = (
            median([x / y for x, y in zip(a, b)]) if a and b else None
        )
    return summary


def capture_graph(fn: Callable[[], None], warmup: int = 2) -> "torch.cuda.CUDAGraph":
    """Capture fn into a CUDA graph after warming it up on a side stream
    (Triton compiles there, not inside the capture)."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(warmup):
            fn()
    torch.cuda.current_stream().wait_stream(stream)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    torch.cuda.synchronize()
    return graph


def time_replays(replay: Callable[[], None], replays: int) -> dict:
    """GPU time of replay() (a graph replay, possibly with eager launches
    around it): median of CUDA events around each call, and the mean of a
    back-to-back run (which also shows host-bound gaps)."""
    for _ in range(3):
        replay()
    torch.cuda.synchronize()
    events = [
        (torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
        for _ in range(replays)
    ]
    for begin, end in events:
        begin.record()
        replay()
        end.record()
    torch.cuda.synchronize()
    per_call = [begin.elapsed_time(end) * 1e3 for begin, end in events]
    begin, end = events[0]
    begin.record()
    for _ in range(replays):
        replay()
    end.record()
    torch.cuda.synchronize()
    return {
        "median_us": median(per_call),
        "back_to_back_mean_us": begin.elapsed_time(end) * 1e3 / replays,
        "replays": replays,
    }


def time_graph(fn: Callable[[], None], replays: int, repeats: int = 1) -> dict:
    """GPU time of fn from a CUDA graph holding `repeats` back-to-back copies
    of it: per call = per replay / repeats. A graph replay has a fixed cost
    (about one empty kernel's launch latency); repeats keep a one-kernel fn
    from being measured as mostly that."""

    def body():
        for _ in range(repeats):
            fn()

    graph = capture_graph(body)
    result = time_replays(graph.replay, replays)
    del graph
    result["repeats"] = repeats
    result["replay_median_us"] = result["median_us"]
    result["median_us"] /= repeats
    result["back_to_back_mean_us"] /= repeats
    return result


def count_gpu_ops(fn: Callable[[], None]) -> int:
    """GPU activities (kernels, memsets, memcpys) of one eager call of fn, as
    the profiler records them: the nodes the same work has in a CUDA graph."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    fn()  # allocator and Triton warm
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    return sum(1 for e in prof.events() if e.device_type == DeviceType.CUDA)


@triton.jit
def _empty_kernel(x_ptr):
    pass


def launch_empty_kernel(buf: torch.Tensor):
    _empty_kernel[(1,)](buf)


def time_host_per_call(
    fn: Callable[[], None], calls: int, device: torch.device, sync_every: int = 64
) -> float:
    """Median host time (µs) of one call of fn, calls issued back to back with
    a synchronize every sync_every calls (so the launch queue never fills)."""
    fn()
    sync(device)
    times = []
    for i in range(calls):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e6)
        if (i + 1) % sync_every == 0:
            sync(device)
    sync(device)
    return median(times)


# --------------------------------------------------------------------------
# Run record, output
# --------------------------------------------------------------------------


def run_record(device: torch.device, sglang_dir: Path, base: str) -> dict:
    """What ran where: printed at the top and stored with the results."""

    def git(*args):
        proc = subprocess.run(
            ["git", "-C", str(sglang_dir), *args], capture_output=True, text=True
        )
        return proc.stdout.strip() if proc.returncode == 0 else None

    return {
        "date_utc": datetime.datetime.now(datetime.timezone.utc).strftime(
            "%Y-%m-%d %H:%M:%S UTC"
        ),
        "command": shlex.join(sys.orig_argv),
        "cwd": os.getcwd(),
        "device": (
            torch.cuda.get_device_name(device)
            if device.type == "cuda"
            else f"CPU ({platform.processor() or platform.machine()}), smoke only"
        ),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "triton": triton.__version__,
        "python": platform.python_version(),
        "triton_interpret": os.environ.get("TRITON_INTERPRET", ""),
        "sglang_dir": str(sglang_dir),
        "sglang_head": git("rev-parse", "--short", "HEAD"),
        "sglang_head_subject": git("log", "-1", "--format=%s"),
        "base": base,
        "base_commit": git("rev-parse", "--short", f"{base}^{{commit}}"),
    }


def print_record(record: dict):
    for key in ("date_utc", "device", "torch", "torch_cuda", "triton", "python"):
        print(f"{key:>12}: {record[key]}")
    print(f"{'sglang':>12}: {record['sglang_dir']} HEAD {record['sglang_head']}")
    print(f"{'pre':>12}: {record['base']} ({record['base_commit']}) per-layer code")
    print(f"{'command':>12}: {record['command']}")
    print()


def fmt(value, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def median_gpu_us(
    variants: Dict[str, Callable[[], object]], rounds: int, cold: bool
) -> Dict[str, float]:
    """Median GPU µs per call of each variant over `rounds` interleaved rounds:
    replayed in a CUDA graph with its operands warm in L2, or (cold) timed
    call by call with L2 flushed before each, as a layer of a decode step
    finds its weights."""
    times = {name: [] for name in variants}
    for _ in range(rounds):
        for name, fn in variants.items():
            if cold:
                times[name].append(triton.testing.do_bench(fn, rep=20) * 1e3)
            else:
                times[name].append(triton.testing.do_bench_cudagraph(fn, rep=20) * 1e3)
    return {name: statistics.median(t) for name, t in times.items()}


def print_table(title: str, headers: List[str], rows: List[List]):
    cells = [[fmt(c) if not isinstance(c, str) else c for c in row] for row in rows]
    widths = [
        max(len(h), *(len(r[i]) for r in cells)) if cells else len(h)
        for i, h in enumerate(headers)
    ]
    print(title)
    print("  ".join(h.rjust(w) for h, w in zip(headers, widths)))
    print("  ".join("-" * w for w in widths))
    for row in cells:
        print("  ".join(c.rjust(w) for c, w in zip(row, widths)))
    print()


def write_json(path: Path, payload: dict):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"wrote {path}")


def require_device(smoke: bool) -> torch.device:
    """CPU for --smoke; else a CUDA GPU, or a loud stop."""
    if smoke:
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise SystemExit(
            "error: no CUDA GPU visible; this benchmark times GPU kernels. "
            "Run it with --smoke for the CPU check of everything else."
        )
    return torch.device("cuda", torch.cuda.current_device())
