"""Tile and warp choices of _compute_moe_lora_info_kernel: GPU time per call of
the kernel launched with each choice, beside the one _compute_moe_lora_info
makes, so that the defaults are a measured choice.

Each variant launches the kernel as _compute_moe_lora_info does (same grid
rule), with BLOCK_T capped at --block-t values and num_warps forced; outputs
are checked against _compute_moe_lora_info's before timing.
GPU time: triton.testing.do_bench_cudagraph, median of 10 replays per round,
median over --rounds rounds.

Run (GPU): PYTHONPATH=build/sglang/python python bench/bench_moe_lora_info_tiles.py
"""

import argparse
import statistics

import torch
import triton
import triton.testing
from bench_moe_lora_info_kernel import make_case
from common import decode_workload, mixed_workload, prefill_workload, print_table

from sglang.srt.lora.backend.base_backend import (
    _compute_moe_lora_info,
    _compute_moe_lora_info_kernel,
)


def launch(args, max_block_t, num_warps):
    num_tokens, seg_indptr, lora_ranks, weight_indices, enabled, mapping, max_len = args
    num_segments, num_loras = weight_indices.shape[0], lora_ranks.shape[0]
    max_len = max(min(max_len, num_tokens), 1)
    block_t = min(triton.next_power_of_2(max_len), max_block_t)
    pow2_segments = triton.next_power_of_2(max(num_segments, 1))
    block_s = min(pow2_segments, 1024 // block_t)
    block_l = triton.next_power_of_2(max(enabled.shape[0], 1))
    block_w = max(min(pow2_segments, 4096 // block_l), 1)
    num_chunks = triton.cdiv(max_len, block_t)
    seg_programs = triton.cdiv(num_segments, block_s) * num_chunks
    grid = (max(seg_programs, triton.cdiv(mapping.shape[0], 1024), 1),)
    _compute_moe_lora_info_kernel[grid](
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
        num_chunks,
        block_s,
        block_t,
        block_w,
        block_l,
        num_warps=num_warps,
    )
    return grid[0]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    device = torch.device("cuda")
    print(torch.cuda.get_device_name(device), triton.__version__)
    workloads = [decode_workload(bs) for bs in (1, 32, 128, 512)]
    workloads += [prefill_workload(8, 512), mixed_workload(64, 1024)]
    variants = [("default", None, None)]
    variants += [(f"T<={t} w={w}", t, w) for t in (64, 256) for w in (1, 2, 4, 8)]
    rows = []
    for workload in workloads:
        call_args = make_case(workload, device)[1]
        expected = [t.tolist() for t in _compute_moe_lora_info(*call_args)]
        times = {}
        for name, max_block_t, num_warps in variants:
            if max_block_t is None:
                fn = lambda: _compute_moe_lora_info(*call_args)  # noqa: E731
            else:
                fn = lambda: launch(call_args, max_block_t, num_warps)  # noqa: E731
                for out in call_args[4:6]:
                    out.fill_(-7)
                fn()
                got = [call_args[4].tolist(), call_args[5].tolist()]
                assert got == expected, f"{name} is wrong on {workload.name}"
            times[name] = []
        for _ in range(args.rounds):
            for name, max_block_t, num_warps in variants:
                if max_block_t is None:
                    fn = lambda: _compute_moe_lora_info(*call_args)  # noqa: E731
                else:
                    fn = lambda: launch(call_args, max_block_t, num_warps)  # noqa
                times[name].append(
                    triton.testing.do_bench_cudagraph(fn, return_mode="median") * 1e3
                )
        rows.append(
            [workload.name] + [statistics.median(times[n]) for n, *_ in variants]
        )
    print_table(
        "GPU µs per call, median (CUDA graph of many calls)",
        ["workload"] + [n for n, *_ in variants],
        rows,
    )


if __name__ == "__main__":
    main()
