"""Which (token, adapter) pairs sglang 0.5.12's MoE LoRA alignment assigns
under a CUDA graph, against the adapters the batch really uses.

Under a graph, 0.5.12's FusedMoEWithLoRA._get_lora_info hands
moe_lora_align_block_size the graph buffers whole: seg_indptr has
max_bs + 1 entries (0, 1, ..., max_bs: one token per request at decode) and
req_to_lora max_bs entries, of which prepare_lora_batch wrote only the first
bs (the rest keep zeros or an earlier, larger batch's adapters). The kernel
walks every one of those segments, and each adapter block writes
token_mask[adapter * num_tokens + token]: a segment past num_tokens lands
in a later adapter's row, so real tokens get adapters they do not use. The
series passes seg_indptr[: bs + 1] and req_to_lora[:bs] instead.

This script calls the pin's kernel with both argument sets, the way a graph
replay runs it, and counts wrong pairs. Run it with the pin's python/ (and
the e2e wheelhouse) on PYTHONPATH, on a CUDA GPU:

    PYTHONPATH=build/e2e-site:build/sglang-pin/python python3 bench/e2e/graph_padding.py
"""

import argparse
import json
import sys

import torch

NUM_EXPERTS, BLOCK_M = 128, 64  # Qwen3-30B-A3B's experts; 0.5.12's BLOCK_SIZE_M


def assigned_pairs(topk_ids, seg_indptr, req_to_lora, adapter_enabled, max_loras):
    """{(token, adapter)} the pin's moe_lora_align_block_size sorts in."""
    from sglang.jit_kernel.moe_lora_align import moe_lora_align_block_size

    top_k = topk_ids.shape[1]
    padded = -(-(topk_ids.numel() + NUM_EXPERTS * (BLOCK_M - 1)) // BLOCK_M) * BLOCK_M
    blocks = -(-padded // BLOCK_M)
    dev = topk_ids.device
    sorted_ids = torch.full((max_loras * padded,), -7, dtype=torch.int32, device=dev)
    expert_ids = torch.full((max_loras * blocks,), -7, dtype=torch.int32, device=dev)
    post_pad = torch.full((max_loras,), -7, dtype=torch.int32, device=dev)
    # Sized like 0.5.12's graph buffer (max_loras * max_bs * top_k), so the
    # writes past num_tokens stay inside it, as they do in the engine.
    token_mask = torch.zeros(
        max_loras * seg_indptr.numel() * top_k, dtype=torch.int32, device=dev
    )
    moe_lora_align_block_size(
        topk_ids,
        seg_indptr,
        req_to_lora,
        NUM_EXPERTS,
        BLOCK_M,
        max_loras,
        padded,
        blocks,
        sorted_ids,
        expert_ids,
        post_pad,
        adapter_enabled,
        torch.arange(max_loras, dtype=torch.int32, device=dev),
        token_mask=token_mask,
    )
    torch.cuda.synchronize()
    pairs = set()
    for lora in range(max_loras):
        if not adapter_enabled[lora]:
            continue
        row = sorted_ids.view(max_loras, -1)[lora, : int(post_pad[lora])].tolist()
        pairs |= {(i // top_k, lora) for i in row if 0 <= i < topk_ids.numel()}
    return pairs


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--max-bs", type=int, default=32, help="largest graph batch")
    parser.add_argument("--max-loras", type=int, default=5)
    parser.add_argument("--top-k", type=int, default=8)
    parser.add_argument("--json", help="write the rows here too")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    dev = "cuda"
    rows = []
    # Tail of the graph's weight_indices buffer: zeros (fresh) or what a batch
    # of max_bs requests on every adapter left there.
    stale = torch.arange(args.max_bs, dtype=torch.int32) % args.max_loras
    for tail_name, tail in (("zeros", torch.zeros_like(stale)), ("stale", stale)):
        for bs in (1, 2, 4, 8, 16):
            # Request i on adapter i mod max_loras: slot 0 is one like the others
            # (sglang puts the no-adapter request in a rank-0 slot).
            used = torch.arange(bs, dtype=torch.int32) % args.max_loras
            weight_indices = tail.clone()
            weight_indices[:bs] = used
            weight_indices = weight_indices.to(dev)
            seg_indptr = torch.arange(args.max_bs + 1, dtype=torch.int32, device=dev)
            topk_ids = torch.stack(
                [torch.randperm(NUM_EXPERTS)[: args.top_k] for _ in range(bs)]
            ).to(device=dev, dtype=torch.int32)
            # 0.5.12's graph path: adapter_enabled from the first bs entries only.
            enabled = torch.zeros(args.max_loras, dtype=torch.int32, device=dev)
            enabled[used.long().unique().to(dev)] = 1
            want = {(t, int(used[t])) for t in range(bs)}
            pin = assigned_pairs(
                topk_ids, seg_indptr, weight_indices, enabled, args.max_loras
            )
            ours = assigned_pairs(
                topk_ids,
                seg_indptr[: bs + 1],
                weight_indices[:bs],
                enabled,
                args.max_loras,
            )
            rows.append(
                {
                    "tail": tail_name,
                    "bs": bs,
                    "pin_wrong": sorted(pin - want),
                    "pin_missing": sorted(want - pin),
                    "sliced_wrong": sorted(ours - want),
                    "sliced_missing": sorted(want - ours),
                }
            )
    print(
        f"# 0.5.12 moe_lora_align_block_size, graph buffers for max_bs={args.max_bs}, "
        f"{args.max_loras} adapter slots, top-{args.top_k}; {torch.cuda.get_device_name()}"
    )
    print(
        "| weight_indices tail | bs | pin's graph arguments: wrong / missing "
        "(token, adapter) pairs | sliced to bs: wrong / missing |"
    )
    print("|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['tail']} | {r['bs']} | {len(r['pin_wrong'])} / {len(r['pin_missing'])} "
            f"{r['pin_wrong'][:4]} | {len(r['sliced_wrong'])} / {len(r['sliced_missing'])} |"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    # The sliced arguments must be exact; the pin's rows are what they are.
    return 1 if any(r["sliced_wrong"] or r["sliced_missing"] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
