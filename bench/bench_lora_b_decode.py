"""sglang's LoRA B (expand) at decode: 0.5.12's tiled kernels against the
tree's sgemm_lora_b_fwd / qkv_lora_b_fwd (the decode kernel up to 32 tokens and 64K outputs)
and other tile sizes of the decode kernel, side by side in one run.

At decode `_sgemm_lora_b_kernel` (o) runs cdiv(N, 256) programs per adapter
segment and `_qkv_lora_b_kernel` 3 x cdiv(max(N_q, N_kv), 64), each a 16-row
tensor-core tile of which one row is real at bs 1. The decode kernel runs one
program per (token, BLOCK_N columns) and sums the rank in fp32.

Variants, per (shape, tokens):
  pre          the tiled kernel with sglang 0.5.12's launch
  ours         sgemm_lora_b_fwd / qkv_lora_b_fwd as the tree has them
  dec tT wW    _sgemm_lora_b_decode_kernel with BLOCK_N * BLOCK_K = T on W warps
Every variant's output is compared with an fp32 torch reference before timing.
GPU time: triton.testing.do_bench_cudagraph, per call; median of --rounds
interleaved rounds. --cold: triton.testing.do_bench instead, which flushes L2
before every call, as a decode step's layer finds its weights.

Run (GPU):   PYTHONPATH=build/sglang/python python bench/bench_lora_b_decode.py
Smoke (CPU): ... --smoke   checks the decode variants only (tiny shapes).
"""

import argparse
import os
import sys

if "--smoke" in sys.argv[1:]:
    os.environ["TRITON_INTERPRET"] = "1"

import torch
import triton
from bench_lora_a_decode import merged_info
from common import median_gpu_us, print_table, require_device

from sglang.srt.lora.triton_ops.qkv_lora_b import _qkv_lora_b_kernel, qkv_lora_b_fwd
from sglang.srt.lora.triton_ops.sgemm_lora_b import (
    _sgemm_lora_b_decode_kernel,
    _sgemm_lora_b_kernel,
    sgemm_lora_b_fwd,
)


def launch_pre(x, weights, info, out, offsets, max_out):
    """0.5.12's sgemm_lora_b_fwd / qkv_lora_b_fwd launch of the tiled kernels;
    max_out is the widest slice (a host int: no device read under capture)."""
    N, R = weights.shape[-2], weights.shape[-1]
    common = [*x.stride(), *weights.stride(), *out.stride()]
    common += [info.seg_lens, info.seg_indptr, info.weight_indices, info.lora_ranks]
    if offsets is None:
        grid = (triton.cdiv(info.max_len, 16) * triton.cdiv(N, 256), info.bs)
        _sgemm_lora_b_kernel[grid](
            x,
            weights,
            out,
            N,
            R,
            *common,
            info.permutation,
            True,
            16,
            256,
            16,
            info.scalings,
        )
    else:
        grid = (triton.cdiv(info.max_len, 16) * triton.cdiv(max_out, 64), 3, info.bs)
        _qkv_lora_b_kernel[grid](
            x,
            weights,
            out,
            R,
            max_out,
            *common,
            offsets,
            info.permutation,
            True,
            16,
            64,
            16,
            info.scalings,
        )
    return out


def launch_decode(x, weights, info, out, offsets, tile, num_warps):
    N, R = weights.shape[-2], weights.shape[-1]
    block_k = triton.next_power_of_2(R)
    block_n = max(tile // block_k, 8)
    _sgemm_lora_b_decode_kernel[(x.shape[0], triton.cdiv(N, block_n))](
        x,
        weights,
        out,
        N,
        R,
        offsets,
        *x.stride(),
        *weights.stride(),
        *out.stride(),
        info.seg_indptr,
        info.weight_indices,
        info.lora_ranks,
        info.scalings,
        info.permutation,
        info.bs,
        1 if offsets is None else 3,
        True,
        triton.next_power_of_2(info.bs),
        block_n,
        block_k,
        num_warps=num_warps,
    )
    return out


def reference(x, weights, ranks, loras, slices, base):
    out = base.float().cpu().clone()
    for t, lora in enumerate(loras):
        r = ranks[lora]
        parts = weights[lora].float().cpu().split(slices)
        out[t] += torch.cat(
            [
                x[t, j * r : (j + 1) * r].float().cpu() @ w[:, :r].T
                for j, w in enumerate(parts)
            ]
        )
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument(
        "--cold", action="store_true", help="flush L2 before each call (no graph)"
    )
    args = parser.parse_args()
    device = require_device(args.smoke)
    ranks = [32, 16, 0, 8]  # the rank-32 slot takes the tokens
    if args.smoke:
        shapes = [("qkv", (64, 16, 16)), ("o", (96,))]
        token_counts = [1, 5]
        tiles = [(1024, 4)]
    else:
        print(torch.cuda.get_device_name(device), "triton", triton.__version__)
        # Qwen3-30B-A3B: 32 q heads and 4 kv heads of 128; hidden 2048.
        shapes = [("qkv", (4096, 512, 512)), ("o", (2048,))]
        token_counts = [1, 8, 12, 16, 32, 64]
        tiles = [(t, w) for t in (1024, 2048, 4096) for w in (4, 8)]
    torch.manual_seed(0)
    rows = []
    for shape, slices in shapes:
        R, N = max(ranks), sum(slices)
        weights = torch.randn(len(ranks), N, R, device=device).to(torch.bfloat16)
        offsets = None
        if len(slices) > 1:
            offsets = torch.tensor(
                [0, slices[0], slices[0] + slices[1], N], dtype=torch.int32
            ).to(device)
        for tokens in token_counts:
            loras = [0] * tokens
            if tokens > 4:
                loras[1], loras[3] = 1, 2  # a rank-16 and a rank-0 request
            x = torch.randn(tokens, len(slices) * R, device=device).to(torch.bfloat16)
            base = torch.randn(tokens, N, device=device).to(torch.bfloat16)
            info = merged_info(tokens, ranks, loras, device)
            out = base.clone()
            variants = {}
            if not args.smoke:
                variants["pre"] = lambda: launch_pre(
                    x, weights, info, out, offsets, max(slices)
                )
            if offsets is None:
                variants["ours"] = lambda: sgemm_lora_b_fwd(x, weights, info, out)
            else:
                variants["ours"] = lambda: qkv_lora_b_fwd(
                    x, weights, info, offsets, max(slices), out
                )
            for tile, w in tiles:
                variants[f"dec t{tile} w{w}"] = lambda t=tile, w=w: launch_decode(
                    x, weights, info, out, offsets, t, w
                )
            ref = reference(x, weights, ranks, loras, slices, base)
            for name, fn in variants.items():
                out.copy_(base)
                err = (fn().float().cpu() - ref).abs().max().item()
                assert err <= 0.02 * ref.abs().max().item(), f"{name}: {err}"
            if args.smoke:
                print(f"{shape} tokens={tokens}: ok ({', '.join(variants)})")
                continue
            med = median_gpu_us(variants, args.rounds, args.cold)
            best = min((n for n in med if n not in ("pre", "ours")), key=med.get)
            rows.append(
                [f"{shape} N={N}", tokens, f"{med['pre']:.2f}", f"{med['ours']:.2f}"]
                + [f"{med['pre'] / med['ours']:.2f}x", best, f"{med[best]:.2f}"]
            )
            print(
                f"{shape} tokens={tokens}: "
                + " ".join(f"{n}={v:.2f}" for n, v in med.items()),
                flush=True,
            )
    if not args.smoke:
        print_table(
            f"LoRA B at decode, GPU µs per call{', L2 flushed' if args.cold else ''}, "
            f"median of {args.rounds} rounds "
            f"({torch.cuda.get_device_name(device)})",
            ["shape", "tokens", "pre", "ours", "pre/ours", "best other", "its µs"],
            rows,
        )


if __name__ == "__main__":
    main()
