"""Where the host time of one _compute_moe_lora_info call goes, on a GPU.

Times, side by side and interleaved, the layers of one call:
  full       _compute_moe_lora_info with buffers (checks + launch + views)
  unchecked  what _add_moe_lora_info runs for a backend's tensors (no checks)
  fresh      _compute_moe_lora_info allocating its outputs
  launch     _launch_moe_lora_info_kernel (direct launch after the first call)
  direct     the compiled kernel's run() with prebuilt arguments
  empty      an empty Triton kernel through the JIT entry point (launch floor)
  views      two tensor slices;  alloc  two torch.empty calls Prints one table; medians of many
rounds, microseconds per call, measured with a host clock around back-to-back
calls (the GPU keeps up, so this is the host cost).

Usage: PYTHONPATH=build/sglang/python python bench/bench_launch_paths.py
"""

import statistics
import sys
import time

import torch
import triton

from sglang.srt.lora.backend.base_backend import (
    _compute_moe_lora_info,
    _compute_moe_lora_info_kernel,
    _compute_moe_lora_info_unchecked,
    _launch_moe_lora_info_kernel,
)


@triton.jit
def _empty_kernel(x):
    pass


def _median_us(fn, calls=200, rounds=50):
    samples = []
    for _ in range(rounds):
        torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        torch.cuda.synchronize()
        samples.append((time.perf_counter() - start) / calls * 1e6)
    return statistics.median(samples)


def main() -> int:
    if not torch.cuda.is_available():
        print("error: this benchmark needs a CUDA GPU", file=sys.stderr)
        return 1
    device = "cuda"
    rows = []
    for bs, max_len in [(1, 1), (32, 1), (512, 1), (8, 512)]:
        num_tokens = bs * max_len
        seg_indptr = torch.arange(0, num_tokens + 1, max_len, device=device).to(
            torch.int32
        )
        weight_indices = torch.randint(0, 8, (bs,), dtype=torch.int32, device=device)
        lora_ranks = torch.tensor(
            [0, 8, 16, 32, 64, 16, 0, 32], dtype=torch.int32, device=device
        )
        adapter_enabled = torch.empty(8, dtype=torch.int32, device=device)
        mapping = torch.empty(num_tokens, dtype=torch.int32, device=device)
        args = (num_tokens, seg_indptr, lora_ranks, weight_indices)
        full = lambda: _compute_moe_lora_info(  # noqa: E731
            *args, adapter_enabled, mapping, max_len
        )
        fresh = lambda: _compute_moe_lora_info(*args, None, None, max_len)  # noqa
        # What _add_moe_lora_info runs for a backend's own tensors.
        unchecked = lambda: _compute_moe_lora_info_unchecked(  # noqa: E731
            *args, adapter_enabled, mapping, max_len
        )
        launch = lambda: _launch_moe_lora_info_kernel(  # noqa: E731
            *args, adapter_enabled, mapping, max_len
        )
        # The compiled kernel of this configuration, launched directly: the
        # JIT entry point returns it; run() takes every argument, constexprs too.
        num_fill = max(1, triton.cdiv(num_tokens, 1024))
        block_s, block_t = (512, 1) if max_len == 1 else (4, 256)
        num_seg_programs = triton.cdiv(bs, block_s)
        grid = (num_seg_programs + num_fill,)
        kernel_args = (
            seg_indptr,
            weight_indices,
            lora_ranks,
            adapter_enabled,
            mapping,
            bs,
            num_tokens,
            num_tokens,
            8,
            8,
            num_seg_programs,
        )
        constexprs = dict(
            BLOCK_S=block_s, BLOCK_T=block_t, BLOCK_F=1024, BLOCK_W=1024, BLOCK_L=8
        )
        compiled = _compute_moe_lora_info_kernel[grid](*kernel_args, **constexprs)
        stream = torch.cuda.current_stream().cuda_stream
        all_args = kernel_args + tuple(constexprs.values())

        def direct():
            compiled.run(
                grid[0],
                1,
                1,
                stream,
                compiled.function,
                compiled.packed_metadata,
                None,
                None,
                None,
                *all_args,
            )

        empty = lambda: _empty_kernel[(1,)](mapping)  # noqa: E731
        views = lambda: (mapping[:num_tokens], adapter_enabled[:8])  # noqa: E731
        alloc = lambda: (  # noqa: E731
            torch.empty(8, dtype=torch.int32, device=device),
            torch.empty(num_tokens, dtype=torch.int32, device=device),
        )
        variants = dict(
            full=full,
            unchecked=unchecked,
            fresh=fresh,
            launch=launch,
            direct=direct,
            empty=empty,
            views=views,
            alloc=alloc,
        )
        for fn in variants.values():
            fn()
        # Interleave the variants round by round so drift hits all alike.
        samples = {name: [] for name in variants}
        for _ in range(15):
            for name, fn in variants.items():
                samples[name].append(_median_us(fn, calls=100, rounds=3))
        rows.append(
            (bs, max_len, {k: statistics.median(v) for k, v in samples.items()})
        )

    print(
        f"card: {torch.cuda.get_device_name()}  torch {torch.__version__}  triton {triton.__version__}"
    )
    print(f"{'batch':>10} " + " ".join(f"{n:>8}" for n in rows[0][2]))
    for bs, max_len, result in rows:
        label = f"{bs}x{max_len}"
        print(f"{label:>10} " + " ".join(f"{v:8.2f}" for v in result.values()))
    print("microseconds of host time per call (median)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
