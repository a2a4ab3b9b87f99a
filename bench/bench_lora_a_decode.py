"""sglang's LoRA A (shrink) at decode: 0.5.12's tiled kernel against the
tree's sgemm_lora_a_fwd (patch 0009's decode kernel up to 32 tokens) and other
tile and block choices of both kernels, side by side in one run.

At decode the Triton backend merges a batch's tokens by adapter, so
`_sgemm_lora_a_kernel` runs cdiv(tokens, 16) x cdiv(stack * rank, 16) programs
that each walk the whole input dimension in 256-wide steps: at bs 1 and rank 32
that is 6 programs for q/k/v (K 2048) and 2 for o (K 4096), bound by one SM's
memory latency, not by the card. The decode kernel sums each output in another
order than the tensor-core chain (every BLOCK_K and warp choice of the tiled
kernel gives its exact bits), so about 0.1-0.4% of its outputs are one bf16
rounding step apart.

Variants, per (shape, tokens):
  pre            _sgemm_lora_a_kernel with sglang 0.5.12's launch (BLOCK_K 256,
                 Triton's default 4 warps and 3 stages)
  ours           sgemm_lora_a_fwd as the tree has it
  kK wW sS       _sgemm_lora_a_kernel with BLOCK_K=K, num_warps=W, num_stages=S
  dec nN wW      _sgemm_lora_a_decode_kernel with BLOCK_N=N on W warps
Every variant's output is compared with pre's (share of bitwise-equal
outputs) and with an fp32 torch reference before timing.
GPU time: triton.testing.do_bench_cudagraph, per call; median of --rounds
interleaved rounds. --cold: triton.testing.do_bench instead, which flushes L2
before every call, as a decode step's layer finds its weights.

Run (GPU):   PYTHONPATH=build/sglang/python python bench/bench_lora_a_decode.py
Smoke (CPU): ... --smoke   checks the decode variants only (tiny shapes).
"""

import argparse
import os
import sys

if "--smoke" in sys.argv[1:]:
    os.environ["TRITON_INTERPRET"] = "1"

import torch
import triton
from common import median_gpu_us, print_table, require_device

from sglang.srt.lora.triton_ops.sgemm_lora_a import (
    _sgemm_lora_a_decode_kernel,
    _sgemm_lora_a_kernel,
    sgemm_lora_a_fwd,
)
from sglang.srt.lora.utils import LoRABatchInfo


def launch_tiles(x, weights, info, stack_num, block_k, num_warps, num_stages):
    S, R, K = x.shape[0], weights.shape[-2], weights.shape[-1]
    output = torch.empty((S, R), device=x.device, dtype=x.dtype)
    grid = (triton.cdiv(info.max_len, 16) * triton.cdiv(R, 16), info.bs)
    _sgemm_lora_a_kernel[grid](
        x,
        weights,
        output,
        R,
        K,
        stack_num,
        *x.stride(),
        *weights.stride(),
        *output.stride(),
        info.seg_lens,
        info.seg_indptr,
        info.weight_indices,
        info.lora_ranks,
        info.permutation,
        info.permutation is not None,
        16,
        16,
        block_k,
        num_warps=num_warps,
        num_stages=num_stages,
    )
    return output


def launch_decode(x, weights, info, stack_num, block_n, num_warps):
    S, R, K = x.shape[0], weights.shape[-2], weights.shape[-1]
    output = torch.empty((S, R), device=x.device, dtype=x.dtype)
    grid = (S, triton.cdiv(R, block_n))
    _sgemm_lora_a_decode_kernel[grid](
        x,
        weights,
        output,
        R,
        K,
        stack_num,
        *x.stride(),
        *weights.stride(),
        *output.stride(),
        info.seg_indptr,
        info.weight_indices,
        info.lora_ranks,
        info.permutation,
        info.bs,
        info.permutation is not None,
        triton.next_power_of_2(info.bs),
        block_n,
        triton.next_power_of_2(K),
        num_warps=num_warps,
    )
    return output


def merged_info(tokens, ranks, loras, device):
    """The sgemm batch info TritonLoRABackend.compute_sgemm_routing builds:
    one segment per adapter slot, tokens sorted by adapter."""
    wi = torch.tensor(loras, dtype=torch.int32, device=device)
    perm = torch.argsort(wi, stable=True).to(torch.int32)
    slots = torch.arange(len(ranks), dtype=torch.int32, device=device)
    sorted_wi = wi[perm]
    seg_lens = (
        torch.searchsorted(sorted_wi, slots, right=True)
        - torch.searchsorted(sorted_wi, slots)
    ).to(torch.int32)
    seg_indptr = torch.zeros(len(ranks) + 1, dtype=torch.int32, device=device)
    seg_indptr[1:] = torch.cumsum(seg_lens, 0)
    return LoRABatchInfo(
        bs=len(ranks),
        use_cuda_graph=False,
        num_segments=len(ranks),
        seg_lens=seg_lens,
        seg_indptr=seg_indptr,
        max_len=tokens,
        weight_indices=slots,
        lora_ranks=torch.tensor(ranks, dtype=torch.int32, device=device),
        scalings=torch.ones(len(ranks), device=device),
        permutation=perm,
    )


def reference(x, weights, ranks, loras, stack_num):
    out = torch.zeros(x.shape[0], weights.shape[-2], dtype=torch.float32)
    for t, lora in enumerate(loras):
        n = min(weights.shape[-2], ranks[lora] * stack_num)
        out[t, :n] = x[t].float().cpu() @ weights[lora, :n].float().cpu().T
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
        shapes = [("qkv", 3, 64), ("o", 1, 128)]
        token_counts = [1, 5]
        # Triton's interpreter cannot run the tiled kernel: the smoke run checks
        # the decode kernel only.
        configs = [("dec n4 w4", "dec", 4, 4, 0), ("dec n8 w4", "dec", 8, 4, 0)]
    else:
        print(torch.cuda.get_device_name(device), "triton", triton.__version__)
        shapes = [("qkv", 3, 2048), ("o", 1, 4096)]
        token_counts = [1, 8, 32, 64]
        # The best tiles of an earlier sweep (BLOCK_K 256-1024, 4-8 warps,
        # 2-4 stages) and the decode kernel's neighbours.
        configs = [("k256 w4 s4", "tiles", 256, 4, 4)]
        configs += [
            (f"dec n{n} w{w}", "dec", n, w, 0) for n in (2, 4, 8) for w in (4, 8)
        ]
    torch.manual_seed(0)
    rows = []
    for shape, stack_num, K in shapes:
        R = stack_num * max(ranks)
        weights = torch.randn(len(ranks), R, K, device=device).to(torch.bfloat16)
        for tokens in token_counts:
            loras = [0] * tokens
            if tokens > 4:
                loras[1], loras[3] = 1, 2  # a rank-16 and a rank-0 request
            x = torch.randn(tokens, K, device=device).to(torch.bfloat16)
            info = merged_info(tokens, ranks, loras, device)
            variants = {}
            if not args.smoke:
                variants["pre"] = lambda: launch_tiles(
                    x, weights, info, stack_num, 256, 4, 3
                )
            variants["ours"] = lambda: sgemm_lora_a_fwd(x, weights, info, stack_num)
            for name, kind, a, w, s in configs:
                if kind == "tiles":
                    variants[name] = lambda a=a, w=w, s=s: launch_tiles(
                        x, weights, info, stack_num, a, w, s
                    )
                else:
                    variants[name] = lambda a=a, w=w: launch_decode(
                        x, weights, info, stack_num, a, w
                    )
            ref = reference(x, weights, ranks, loras, stack_num)
            valid = ref != 0
            pre = variants["pre"]().float().cpu() if "pre" in variants else ref
            checks = {}
            for name, fn in variants.items():
                got = fn().float().cpu()
                err = (got - ref)[valid].abs().max().item()
                assert err <= 0.02 * ref.abs().max().item(), f"{name}: {err}"
                same = (got[valid] == pre[valid]).float().mean().item()
                checks[name] = same
            if args.smoke:
                print(f"{shape} tokens={tokens}: ok, bitwise = reference: {checks}")
                continue
            med = median_gpu_us(variants, args.rounds, args.cold)
            best = min((n for n in med if n not in ("pre", "ours")), key=med.get)
            rows.append(
                [f"{shape} K={K}", tokens, f"{med['pre']:.2f}", f"{med['ours']:.2f}"]
                + [f"{med['pre'] / med['ours']:.2f}x", f"{checks['ours']:.3f}"]
                + [best, f"{med[best]:.2f}"]
            )
            print(
                f"{shape} tokens={tokens}: "
                + " ".join(f"{n}={v:.2f}" for n, v in med.items())
                + " | bitwise=pre: "
                + " ".join(f"{n}={v:.2f}" for n, v in checks.items()),
                flush=True,
            )
    if not args.smoke:
        print_table(
            f"LoRA A at decode, GPU µs per call{', L2 flushed' if args.cold else ''}, "
            f"median of {args.rounds} rounds "
            f"({torch.cuda.get_device_name(device)})",
            ["shape", "tokens", "pre", "ours", "pre/ours", "ours bitwise=pre"]
            + ["best other", "its µs"],
            rows,
        )


if __name__ == "__main__":
    main()
