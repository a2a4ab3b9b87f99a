"""Designs of the per-batch MoE LoRA metadata kernel, side by side in one run:
the patched tree's kernel against earlier designs and other launch shapes, so
that the one in patch 0002 is a measured choice.

Variants (all write the same preallocated outputs, checked against
_compute_moe_lora_info before timing):
  ours        _compute_moe_lora_info of the patched tree: program 0 scans the
              adapters (a 32-bit mask of the adapters in use, one integer OR
              reduction, each entry stored once) while the other programs store
              the tokens, at most 256 tokens and 32 segments each, 4 warps
  ours/wN     the same kernel on N warps
  ours t1024  up to 1024 tokens per program (fewer, bigger programs)
  inline      patch 0002's kernel up to 2026-12-07: the same scan, in program 0
              after its own token stores, up to 1024 tokens per program
  scatter     the kernel up to 2026-12-06: program 0 zeroes adapter_enabled,
              sets the used adapters, clears rank-0 ones, with a CTA barrier
              between the phases, up to 128 segments per program
  tile        the kernel before that: adapter_enabled from a (segments x
              adapters) compare tile, up to 1024 segments per program
  empty       an empty Triton kernel: the launch floor
  load+store  one Triton kernel storing one loaded int: the floor of any
              kernel that reads seg_indptr before it writes
GPU time: triton.testing.do_bench_cudagraph (per call), --rounds rounds that
interleave the variants; median [min-max].

Run (GPU):   PYTHONPATH=build/sglang/python python bench/bench_moe_lora_info_variants.py
Smoke (CPU): ... --smoke   checks every variant against ours only.
"""

import argparse
import os
import statistics
import sys

if "--smoke" in sys.argv[1:]:
    os.environ["TRITON_INTERPRET"] = "1"

import torch
import triton
import triton.language as tl
import triton.testing
from bench_moe_lora_info_kernel import _load_store_kernel, make_case
from common import (
    decode_workload,
    launch_empty_kernel,
    mixed_workload,
    prefill_workload,
    print_table,
    require_device,
)

from sglang.srt.lora.backend.base_backend import (
    _adapter_bits,
    _compute_moe_lora_info,
    _compute_moe_lora_info_kernel,
)


@triton.jit
def _load_segments(
    pid,
    seg_indptr_ptr,
    weight_indices_ptr,
    num_segments,
    num_tokens,
    num_chunks,
    BLOCK_S,
):
    """The segment loads of the scatter and tile kernels: num_chunks programs
    write a block of BLOCK_S segments over their tokens."""
    segs = (pid // num_chunks) * BLOCK_S + tl.arange(0, BLOCK_S)
    seg_mask = segs < num_segments
    starts = tl.maximum(tl.load(seg_indptr_ptr + segs, mask=seg_mask, other=0), 0)
    ends = tl.minimum(tl.load(seg_indptr_ptr + segs + 1, seg_mask, other=0), num_tokens)
    loras = tl.load(weight_indices_ptr + segs, mask=seg_mask, other=-1)
    first = tl.minimum(tl.maximum(tl.load(seg_indptr_ptr), 0), num_tokens)
    last = tl.load(seg_indptr_ptr + num_segments)
    last = tl.minimum(tl.maximum(last, first), num_tokens)
    return starts, ends, loras, first, last


@triton.jit
def _store_tokens(
    pid, mapping_ptr, starts, ends, loras, first, last, mapping_len, num_chunks, BLOCK_T
):
    """The token stores of the scatter and tile kernels: each segment's adapter
    over its tokens, up to the longest segment as seg_indptr says, then -1 for
    tokens no segment covers, 1024 per program."""
    # The loop ends where seg_indptr says: a wrong max_len costs time, not tokens.
    longest = tl.max(ends - starts, axis=0)
    offset = (pid % num_chunks) * BLOCK_T
    while offset < longest:
        tokens = starts[:, None] + offset + tl.arange(0, BLOCK_T)[None, :]
        tl.store(mapping_ptr + tokens, loras[:, None], mask=tokens < ends[:, None])
        offset += num_chunks * BLOCK_T
    # Tokens no segment covers (past seg_indptr[-1], a graph buffer's padded
    # tail) get -1, so they never pick up an adapter. 1024 per program.
    tokens = pid * 1024 + tl.arange(0, 1024)
    uncovered = ((tokens < first) | (tokens >= last)) & (tokens < mapping_len)
    tl.store(mapping_ptr + tokens, -1, mask=uncovered)


# Patch 0002's kernel up to 2026-12-07: program 0 scans the adapters after
# its own token stores, so the scan is on that program's path.
@triton.jit(do_not_specialize=range(5, 11))
def _inline_kernel(
    seg_indptr_ptr,  # (num_segments + 1,)
    weight_indices_ptr,  # (num_segments,), -1 for no adapter
    lora_ranks_ptr,  # (num_loras,)
    adapter_enabled_ptr,  # out: (enabled_len,), enabled_len >= num_loras
    mapping_ptr,  # out: token_lora_mapping (mapping_len,), >= num_tokens
    num_segments,
    num_tokens,
    num_loras,
    enabled_len,
    mapping_len,
    num_chunks,
    BLOCK_S: tl.constexpr,
    BLOCK_T: tl.constexpr,
    BLOCK_W: tl.constexpr,
):
    pid = tl.program_id(0)
    starts, ends, loras, first, last = _load_segments(
        pid,
        seg_indptr_ptr,
        weight_indices_ptr,
        num_segments,
        num_tokens,
        num_chunks,
        BLOCK_S,
    )
    scan = tl.arange(0, BLOCK_W)
    used_by = tl.load(weight_indices_ptr + scan, (scan < num_segments) & (pid == 0), -1)
    bit_ids = tl.arange(0, 32)
    ranks = tl.load(lora_ranks_ptr + bit_ids, bit_ids < num_loras, other=0)

    # The first tokens go out before the reduction that bounds the loop.
    offset = (pid % num_chunks) * BLOCK_T
    tokens = starts[:, None] + offset + tl.arange(0, BLOCK_T)[None, :]
    tl.store(mapping_ptr + tokens, loras[:, None], mask=tokens < ends[:, None])
    longest = tl.max(ends - starts, axis=0)
    offset += num_chunks * BLOCK_T
    while offset < longest:
        tokens = starts[:, None] + offset + tl.arange(0, BLOCK_T)[None, :]
        tl.store(mapping_ptr + tokens, loras[:, None], mask=tokens < ends[:, None])
        offset += num_chunks * BLOCK_T
    tokens = pid * 1024 + tl.arange(0, 1024)
    uncovered = ((tokens < first) | (tokens >= last)) & (tokens < mapping_len)
    tl.store(mapping_ptr + tokens, -1, mask=uncovered)

    base = tl.where(pid == 0, 0, enabled_len)
    while base < enabled_len:
        bits = _adapter_bits(used_by, base)
        start = BLOCK_W
        while start < num_segments:
            scan = start + tl.arange(0, BLOCK_W)
            more = tl.load(weight_indices_ptr + scan, scan < num_segments, other=-1)
            bits |= _adapter_bits(more, base)
            start += BLOCK_W
        enabled = ((bits >> bit_ids) & 1) & (ranks > 0).to(tl.int32)
        ids = base + bit_ids
        tl.store(adapter_enabled_ptr + ids, enabled, mask=ids < enabled_len)
        base += 32
        ranks = tl.load(lora_ranks_ptr + ids + 32, ids + 32 < num_loras, other=0)


# The kernel of the series before the scatter design (patch 0002 up to
# 2026-12-02): adapter_enabled from a (segments x adapters) compare tile.
@triton.jit(do_not_specialize=range(5, 11))
def _tile_kernel(
    seg_indptr_ptr,  # (num_segments + 1,)
    weight_indices_ptr,  # (num_segments,), -1 for no adapter
    lora_ranks_ptr,  # (num_loras,)
    adapter_enabled_ptr,  # out: (enabled_len,), enabled_len >= num_loras
    mapping_ptr,  # out: token_lora_mapping (mapping_len,), >= num_tokens
    num_segments,
    num_tokens,
    num_loras,
    enabled_len,
    mapping_len,
    num_chunks,
    BLOCK_S: tl.constexpr,
    BLOCK_T: tl.constexpr,
    BLOCK_W: tl.constexpr,
    BLOCK_L: tl.constexpr,
):
    pid = tl.program_id(0)
    # Every load comes before the first store (which it could alias), so the
    # loads share one round trip to memory.

    starts, ends, loras, first, last = _load_segments(
        pid,
        seg_indptr_ptr,
        weight_indices_ptr,
        num_segments,
        num_tokens,
        num_chunks,
        BLOCK_S,
    )

    # Program 0 finds the adapters in use; -1 matches none, is never an address.
    lora_ids = tl.arange(0, BLOCK_L)
    ranks = tl.load(lora_ranks_ptr + lora_ids, lora_ids < num_loras, other=0)
    scan_len = tl.where(pid == 0, num_segments, 0)
    scan = tl.arange(0, BLOCK_W)
    used_by = tl.load(weight_indices_ptr + scan, scan < scan_len, other=-1)
    used = tl.max((used_by[:, None] == lora_ids[None, :]).to(tl.int32), axis=0)
    start = BLOCK_W
    while start < scan_len:
        scan = start + tl.arange(0, BLOCK_W)
        used_by = tl.load(weight_indices_ptr + scan, scan < scan_len, other=-1)
        hits = (used_by[:, None] == lora_ids[None, :]).to(tl.int32)
        used = tl.maximum(used, tl.max(hits, axis=0))
        start += BLOCK_W

    _store_tokens(
        pid,
        mapping_ptr,
        starts,
        ends,
        loras,
        first,
        last,
        mapping_len,
        num_chunks,
        BLOCK_T,
    )
    # Every entry is written, so no zeroing launch.
    enabled = ((used > 0) & (ranks > 0)).to(tl.int32)
    store_mask = (lora_ids < enabled_len) & (pid == 0)
    tl.store(adapter_enabled_ptr + lora_ids, enabled, mask=store_mask)


# Patch 0002's kernel up to 2026-12-06: adapter_enabled by scatter (program 0
# zeroes it, sets the used adapters, clears rank-0 ones, a CTA barrier
# between the phases).
@triton.jit(do_not_specialize=range(5, 11))
def _scatter_kernel(
    seg_indptr_ptr,  # (num_segments + 1,)
    weight_indices_ptr,  # (num_segments,), -1 for no adapter
    lora_ranks_ptr,  # (num_loras,)
    adapter_enabled_ptr,  # out: (enabled_len,), enabled_len >= num_loras
    mapping_ptr,  # out: token_lora_mapping (mapping_len,), >= num_tokens
    num_segments,
    num_tokens,
    num_loras,
    enabled_len,
    mapping_len,
    num_chunks,
    BLOCK_S: tl.constexpr,
    BLOCK_T: tl.constexpr,
    BLOCK_W: tl.constexpr,
    BLOCK_L: tl.constexpr,
):
    pid = tl.program_id(0)
    # The loads share one round trip to memory, before the first store.

    starts, ends, loras, first, last = _load_segments(
        pid,
        seg_indptr_ptr,
        weight_indices_ptr,
        num_segments,
        num_tokens,
        num_chunks,
        BLOCK_S,
    )
    lora_ids = tl.arange(0, BLOCK_L)
    ranks = tl.load(lora_ranks_ptr + lora_ids, lora_ids < num_loras, other=0)
    scan_len = tl.where(pid == 0, num_segments, 0)
    scan = tl.arange(0, BLOCK_W)
    used_by = tl.load(weight_indices_ptr + scan, scan < scan_len, other=-1)

    _store_tokens(
        pid,
        mapping_ptr,
        starts,
        ends,
        loras,
        first,
        last,
        mapping_len,
        num_chunks,
        BLOCK_T,
    )

    # Program 0 writes adapter_enabled in three phases, ordered by barriers
    # within its CTA: 0 everywhere (so no zeroing launch), 1 where a segment's
    # adapter is, 0 again where the rank is 0. -1 fails `valid`: never an address.
    if pid == 0:
        in_range = lora_ids < enabled_len
        tl.store(adapter_enabled_ptr + lora_ids, 0, mask=in_range)
        tl.debug_barrier()
        start = 0
        while start < scan_len:
            valid = (used_by >= 0) & (used_by < enabled_len)
            tl.store(adapter_enabled_ptr + tl.where(valid, used_by, 0), 1, mask=valid)
            start += BLOCK_W
            scan = start + tl.arange(0, BLOCK_W)
            used_by = tl.load(weight_indices_ptr + scan, scan < scan_len, other=-1)
        tl.debug_barrier()
        tl.store(adapter_enabled_ptr + lora_ids, 0, mask=in_range & (ranks <= 0))


def launch(kernel, args, num_warps, max_tokens, max_block_s, block_l=False):
    """kernel over _compute_moe_lora_info's grid rule with up to max_tokens
    tokens and max_block_s segments per program; ours also takes BLOCK_U, its
    scan program and a 2D grid (segment block, token chunk), the others
    num_chunks; the scatter and tile kernels (block_l=True) take BLOCK_L, the
    adapters' tile, and the tile kernel scans at most 4096 // BLOCK_L segments
    a step."""
    num_tokens, seg_indptr, lora_ranks, weight_indices, enabled, mapping, max_len = args
    num_segments, num_loras = weight_indices.shape[0], lora_ranks.shape[0]
    max_len = max(min(max_len, num_tokens), 1)
    block_t = min(triton.next_power_of_2(max_len), 256)
    pow2_segments = triton.next_power_of_2(max(num_segments, 1))
    block_s = min(pow2_segments, max_tokens // block_t, max_block_s)
    num_chunks = triton.cdiv(max_len, block_t)
    seg_blocks = triton.cdiv(num_segments, block_s)
    meta = {"BLOCK_S": block_s, "BLOCK_T": block_t, "num_warps": num_warps}
    meta["BLOCK_W"] = min(pow2_segments, 1024)
    if kernel is _compute_moe_lora_info_kernel:
        meta["BLOCK_U"] = min(triton.next_power_of_2(mapping.shape[0]), max_tokens)
        tail = triton.cdiv(mapping.shape[0], meta["BLOCK_U"] * num_chunks)
        grid, chunks = (1 + max(seg_blocks, tail, 1), num_chunks), ()
    else:
        programs = max(seg_blocks * num_chunks, triton.cdiv(mapping.shape[0], 1024))
        grid, chunks = (max(programs, 1),), (num_chunks,)
    if block_l:
        meta["BLOCK_L"] = triton.next_power_of_2(max(enabled.shape[0], 1))
        tile = 4096 if kernel is _tile_kernel else 4096 * meta["BLOCK_L"]
        meta["BLOCK_W"] = max(min(pow2_segments, tile // meta["BLOCK_L"]), 1)
    kernel[grid](
        seg_indptr,
        weight_indices,
        lora_ranks,
        enabled,
        mapping,
        num_segments,
        num_tokens,
        num_loras,
        enabled.shape[0],
        mapping.shape[0],
        *chunks,
        **meta,
    )


def variants_of(call_args, empty_buf):
    ours = _compute_moe_lora_info_kernel
    v = {"ours": lambda: _compute_moe_lora_info(*call_args)}
    for w in (1, 2, 8):
        v[f"ours/w{w}"] = lambda w=w: launch(ours, call_args, w, 256, 32)
    v["ours t1024"] = lambda: launch(ours, call_args, 4, 1024, 32)
    v["inline"] = lambda: launch(_inline_kernel, call_args, 4, 1024, 32)
    v["scatter"] = lambda: launch(_scatter_kernel, call_args, 4, 1024, 128, True)
    v["tile"] = lambda: launch(_tile_kernel, call_args, 4, 1024, 1024, True)
    v["empty"] = lambda: launch_empty_kernel(empty_buf)
    v["load+store"] = lambda: _load_store_kernel[(1,)](call_args[1], empty_buf)
    return v


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args()
    device = require_device(args.smoke)
    if not args.smoke:
        print(torch.cuda.get_device_name(device), "triton", triton.__version__)
    workloads = [decode_workload(bs) for bs in (1, 32, 128, 512)]
    workloads += [prefill_workload(8, 512), mixed_workload(64, 1024)]
    empty_buf = torch.zeros(1, dtype=torch.int32, device=device)
    rows = []
    for workload in workloads:
        call_args = make_case(workload, device)[1]
        expected = [t.tolist() for t in _compute_moe_lora_info(*call_args)]
        variants = variants_of(call_args, empty_buf)
        for name, fn in variants.items():
            if name in ("empty", "load+store"):
                continue
            for out in call_args[4:6]:
                out.fill_(-7)
            fn()
            got = [call_args[4].tolist(), call_args[5].tolist()]
            assert got == expected, f"{name} is wrong on {workload.name}"
        if args.smoke:
            print(f"{workload.name}: every variant matches ours")
            continue
        times = {name: [] for name in variants}
        for _ in range(args.rounds):
            for name, fn in variants.items():
                times[name] += triton.testing.do_bench_cudagraph(
                    fn, rep=20, return_mode="all"
                )
        rows.append([workload.name] + [times[n] for n in variants])
        print(f"  {workload.name}: done", flush=True)
    if args.smoke:
        return
    names = list(variants)
    cells = [
        [r[0]]
        + [
            f"{statistics.median(t) * 1e3:.2f} [{min(t) * 1e3:.2f}-{max(t) * 1e3:.2f}]"
            for t in r[1:]
        ]
        for r in rows
    ]
    print_table(
        "GPU µs per call, median [min-max] over rounds x replays of a CUDA graph",
        ["workload"] + names,
        cells,
    )


if __name__ == "__main__":
    main()
