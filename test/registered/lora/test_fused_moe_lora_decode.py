"""Tests for the MoE LoRA decode path (fused_moe_lora_decode).

Checks the kernel against a torch reference, and the decode path of
build_lora_hooks against its fused_moe_lora path. Runs the Triton kernels
compiled on CUDA, or through Triton's interpreter on CPU tensors.
"""

import os
import random
import unittest
from unittest import mock

import torch

if not torch.cuda.is_available():
    # Must be set before Triton kernels are defined, i.e. before importing sglang.
    os.environ.setdefault("TRITON_INTERPRET", "1")

from sglang.srt.lora import lora_moe_runners  # noqa: E402
from sglang.srt.lora.lora_moe_runners import LoRAInfo, build_lora_hooks  # noqa: E402
from sglang.srt.lora.triton_ops import fused_moe_lora_decode  # noqa: E402
from sglang.test.ci.ci_register import register_cuda_ci  # noqa: E402
from sglang.test.test_utils import CustomTestCase  # noqa: E402

register_cuda_ci(est_time=10, stage="base-b", runner_config="1-gpu-small")

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
DTYPE = torch.bfloat16


def _randn(*shape, std=1.0):
    return (torch.randn(*shape, device=DEVICE) * std).to(DTYPE)


def _reference(out, x, lora_a, lora_b, ids, weights, mapping, enabled, slices, mul):
    """The decode path in plain torch, with fused_moe_lora's rounding; and which
    (token, expert) pairs it adds to."""
    out = out.clone()
    M, top_k, _ = out.shape
    touched = torch.zeros(M, top_k, dtype=torch.bool, device=out.device)
    rank, N = lora_b.shape[3], lora_b.shape[2] // slices
    for t in range(M):
        lora = int(mapping[t])
        for k in range(top_k):
            expert = int(ids[t, k])
            if lora < 0 or expert < 0 or not enabled[lora]:
                continue
            touched[t, k] = True
            row = x[t] if x.shape[0] == M else x[t * top_k + k]
            a = lora_a[lora, expert if lora_a.shape[1] > 1 else 0].float()
            b = lora_b[lora, expert if lora_b.shape[1] > 1 else 0].float()
            for s in range(slices):
                inter = (a[s * rank : (s + 1) * rank] @ row.float()).to(DTYPE)
                delta = b[s * N : (s + 1) * N] @ inter.float()
                if mul:
                    delta = delta * weights[t, k]
                cols = slice(s * N, (s + 1) * N)
                total = out[t, k, cols].float() + delta.to(DTYPE).float()
                out[t, k, cols] = total.to(DTYPE)
    return out, touched


def _case(M, top_k, experts, K, N, rank, slices, shared_a, shared_b, per_pair):
    num_loras = 4
    x = _randn(M * top_k if per_pair else M, K)
    lora_a = _randn(num_loras, 1 if shared_a else experts, slices * rank, K, std=0.1)
    lora_b = _randn(num_loras, 1 if shared_b else experts, slices * N, rank, std=0.1)
    ids = torch.stack([torch.randperm(experts)[:top_k] for _ in range(M)])
    ids = ids.to(torch.int32).to(DEVICE)
    weights = torch.rand(M, top_k, device=DEVICE)
    mapping = torch.randint(-1, num_loras, (M,), dtype=torch.int32, device=DEVICE)
    mapping[0] = 0  # at least one token on an enabled adapter
    enabled = torch.tensor([1, 0, 1, 1], dtype=torch.int32, device=DEVICE)
    return x, lora_a, lora_b, ids, weights, mapping, enabled


class TestFusedMoELoRADecode(CustomTestCase):
    def setUp(self):
        torch.manual_seed(0)
        random.seed(0)

    def _check(
        self,
        M,
        top_k,
        experts,
        K,
        N,
        rank,
        slices=1,
        shared_a=False,
        shared_b=False,
        per_pair=False,
        mul=False,
        invalid_expert=False,
        config=None,
    ):
        x, lora_a, lora_b, ids, weights, mapping, enabled = _case(
            M, top_k, experts, K, N, rank, slices, shared_a, shared_b, per_pair
        )
        if invalid_expert:
            ids[0, -1] = -1  # an expert this rank does not hold
        out = _randn(M, top_k, slices * N)  # random: unwritten entries show
        before = out.clone()
        expected, touched = _reference(
            out, x, lora_a, lora_b, ids, weights, mapping, enabled, slices, mul
        )
        fused_moe_lora_decode(
            out, x, lora_a, lora_b, ids, weights, mapping, enabled, slices, mul, config
        )
        # Pairs without an enabled adapter keep their values bit for bit.
        self.assertTrue(torch.equal(out[~touched], before[~touched]))
        self.assertTrue(touched.any())
        self.assertFalse(torch.equal(out[touched], before[touched]))
        # The rest within one bf16 step of the reference (another summation order).
        torch.testing.assert_close(out, expected, atol=2e-2, rtol=1e-2)
        return out

    def test_ranks_and_top_k(self):
        for rank, top_k in [(8, 1), (16, 2), (32, 8), (64, 4), (128, 2)]:
            with self.subTest(rank=rank, top_k=top_k):
                self._check(M=3, top_k=top_k, experts=8, K=96, N=40, rank=rank)

    def test_block_configs(self):
        # Tiles smaller and larger than the data, a K and N not a multiple of them.
        for config in (
            {"BLOCK_K": 16, "BLOCK_N": 16, "num_warps": 1},
            {"BLOCK_K": 256, "BLOCK_N": 128, "num_warps": 8},
        ):
            with self.subTest(config=config):
                self._check(
                    M=2,
                    top_k=2,
                    experts=4,
                    K=72,
                    N=40,
                    rank=16,
                    slices=2,
                    config=config,
                )

    def test_gate_up_slices_and_shared_outer(self):
        self._check(M=4, top_k=2, experts=6, K=64, N=48, rank=16, slices=2)
        self._check(
            M=2, top_k=4, experts=5, K=64, N=24, rank=8, slices=2, shared_a=True
        )

    def test_down_rows_per_pair_with_routed_weight(self):
        self._check(
            M=3, top_k=4, experts=8, K=40, N=72, rank=32, per_pair=True, mul=True
        )
        self._check(
            M=2,
            top_k=2,
            experts=3,
            K=48,
            N=32,
            rank=16,
            per_pair=True,
            mul=True,
            shared_b=True,
        )

    def test_invalid_expert_is_skipped(self):
        self._check(M=2, top_k=4, experts=8, K=32, N=32, rank=8, invalid_expert=True)

    def test_no_adapter_leaves_output_unchanged(self):
        x, lora_a, lora_b, ids, weights, mapping, enabled = _case(
            4, 2, 4, 32, 32, 16, 1, False, False, False
        )
        out = _randn(4, 2, 32)
        before = out.clone()
        mapping[:] = torch.tensor([-1, 1, -1, 1], dtype=torch.int32)  # 1: rank 0
        fused_moe_lora_decode(
            out, x, lora_a, lora_b, ids, weights, mapping, enabled, 1, False
        )
        self.assertTrue(torch.equal(out, before))


class TestDecodeHooks(CustomTestCase):
    """build_lora_hooks: the decode path gives what its fused_moe_lora path gives."""

    def _lora_info(self, M, top_k, experts, hidden, inter, rank, shared):
        num_loras = 4
        mapping = torch.tensor(
            [i % num_loras - 1 for i in range(M)], dtype=torch.int32, device=DEVICE
        )  # -1 (no adapter), 0, 1 (rank 0), 2, ...
        ranks = torch.tensor([rank, 0, rank // 2, rank], device=DEVICE)
        outer = 1 if shared else experts
        gate_up_a = _randn(num_loras, outer, 2 * rank, hidden, std=0.1)
        gate_up_b = _randn(num_loras, experts, 2 * inter, rank, std=0.1)
        down_a = _randn(num_loras, experts, rank, inter, std=0.1)
        down_b = _randn(num_loras, outer, hidden, rank, std=0.1)
        # The memory pool zero-pads an adapter below the buffers' rank.
        gate_up_a[2, :, rank // 2 : rank] = gate_up_a[2, :, rank + rank // 2 :] = 0
        down_a[2, :, rank // 2 :] = 0
        gate_up_b[2, :, :, rank // 2 :] = down_b[2, :, :, rank // 2 :] = 0
        return LoRAInfo(
            gate_up_lora_a_weights=gate_up_a,
            gate_up_lora_b_weights=gate_up_b,
            down_lora_a_weights=down_a,
            down_lora_b_weights=down_b,
            seg_indptr=torch.arange(M + 1, dtype=torch.int32, device=DEVICE),
            req_to_lora=mapping.clone(),
            lora_ranks=ranks,
            adapter_enabled=(ranks > 0).to(torch.int32),
            max_lora_rank=rank,
            num_experts=experts,
            experts_shared_outer_loras=shared,
            token_lora_mapping=mapping,
        )

    def _run_hooks(self, info, x, inter_in, cache1, cache3, ids, weights):
        hooks = build_lora_hooks(x, info, ids)
        cache1, cache3 = cache1.clone(), cache3.clone()
        hooks.after_gate_up(x, cache1, weights, ids)
        hooks.after_down(inter_in, cache3, weights, ids)
        return cache1, cache3

    def _inputs(self, M, top_k, experts, hidden, inter):
        ids = torch.stack([torch.randperm(experts)[:top_k] for _ in range(M)])
        return (
            _randn(M, hidden),
            _randn(M * top_k, inter),
            _randn(M, top_k, 2 * inter),
            _randn(M, top_k, hidden),
            ids.to(torch.int32).to(DEVICE),
            torch.rand(M, top_k, device=DEVICE),
        )

    def test_decode_hooks_match_reference(self):
        M, top_k, experts, hidden, inter, rank = 5, 4, 8, 64, 32, 16
        for shared in (False, True):
            with self.subTest(shared=shared):
                info = self._lora_info(M, top_k, experts, hidden, inter, rank, shared)
                args = self._inputs(M, top_k, experts, hidden, inter)
                x, inter_in, cache1, cache3, ids, weights = args
                got1, got3 = self._run_hooks(info, *args)
                common = (ids, weights, info.token_lora_mapping, info.adapter_enabled)
                want1, touched = _reference(
                    cache1,
                    x,
                    info.gate_up_lora_a_weights,
                    info.gate_up_lora_b_weights,
                    *common,
                    2,
                    False,
                )
                want3, _ = _reference(
                    cache3,
                    inter_in,
                    info.down_lora_a_weights,
                    info.down_lora_b_weights,
                    *common,
                    1,
                    True,
                )
                self.assertTrue(touched.any() and not touched.all())
                torch.testing.assert_close(got1, want1, atol=2e-2, rtol=1e-2)
                torch.testing.assert_close(got3, want3, atol=2e-2, rtol=1e-2)

    @unittest.skipUnless(torch.cuda.is_available(), "fused_moe_lora is a CUDA op")
    def test_decode_matches_fused_moe_lora(self):
        for M, top_k, experts, hidden, inter, rank, shared in [
            (6, 8, 64, 256, 96, 32, False),
            (6, 8, 64, 256, 96, 32, True),
            (3, 8, 128, 2048, 768, 32, False),  # Qwen3-30B-A3B's layer
        ]:
            with self.subTest(hidden=hidden, shared=shared):
                info = self._lora_info(M, top_k, experts, hidden, inter, rank, shared)
                args = self._inputs(M, top_k, experts, hidden, inter)
                decode = self._run_hooks(info, *args)
                with mock.patch.object(lora_moe_runners, "_DECODE_MAX_PAIRS", 0):
                    classic = self._run_hooks(info, *args)
                for got, want, before in zip(decode, classic, args[2:4]):
                    self.assertFalse(torch.equal(want, before))  # the LoRA did add
                    torch.testing.assert_close(got, want, atol=2e-2, rtol=1e-2)

    def test_path_selection(self):
        """Decode path up to _DECODE_MAX_PAIRS pairs, fewer past hidden 4096;
        never under virtual experts or a fully sharded LoRA across ranks."""
        cases = [
            ({}, 64, 32, "fused_moe_lora_decode"),
            ({}, 0, 32, "fused_moe_lora"),
            ({}, 4, 4096, "fused_moe_lora_decode"),  # 4 pairs
            ({}, 4, 4097, "fused_moe_lora"),
            (
                {"lora_use_virtual_experts": True},
                64,
                32,
                "merged_experts_fused_moe_lora_add",
            ),
            ({"fully_sharded": True, "tp_size": 2}, 64, 32, "fused_moe_lora"),
        ]
        names = [
            "fused_moe_lora",
            "fused_moe_lora_decode",
            "merged_experts_fused_moe_lora_add",
        ]
        for fields, max_pairs, hidden, expected in cases:
            with self.subTest(fields=fields, max_pairs=max_pairs, hidden=hidden):
                info = self._lora_info(2, 2, 16, hidden, 16, 8, False)
                for key, value in fields.items():
                    setattr(info, key, value)
                args = self._inputs(2, 2, 16, hidden, 16)
                with mock.patch.object(
                    lora_moe_runners, "_DECODE_MAX_PAIRS", max_pairs
                ), mock.patch.multiple(
                    "sglang.srt.lora.triton_ops", **{n: mock.DEFAULT for n in names}
                ) as kernels:
                    self._run_hooks(info, *args)
                calls = {n: kernels[n].call_count for n in names}
                self.assertEqual(calls, {n: 2 * (n == expected) for n in names})

    def test_mapping_shorter_than_the_batch_asserts(self):
        info = self._lora_info(4, 2, 8, 32, 16, 8, False)
        info.token_lora_mapping = info.token_lora_mapping[:3]
        with self.assertRaises(AssertionError):
            self._run_hooks(info, *self._inputs(4, 2, 8, 32, 16))

    def test_graph_capture_builds_hooks_without_active_adapter(self):
        # Capture batches have no adapter; the lora graph must record the kernels.
        info = self._lora_info(2, 2, 4, 32, 16, 8, False)
        info.has_active_lora = False
        ids = torch.zeros(2, 2, dtype=torch.int32, device=DEVICE)
        runner = "sglang.srt.model_executor.cuda_graph_runner"
        for variant, has_hooks in (("lora", True), ("nolora", False)):
            with self.subTest(variant=variant), mock.patch.object(
                lora_moe_runners, "get_is_capture_mode", return_value=True
            ), mock.patch(f"{runner}.get_capture_lora_variant", return_value=variant):
                hooks = build_lora_hooks(_randn(2, 32), info, ids)
                self.assertEqual(hooks.after_down is not None, has_hooks)

    def test_batch_without_active_adapter_has_no_hooks(self):
        info = self._lora_info(2, 2, 4, 32, 16, 8, False)
        ids = torch.zeros(2, 2, dtype=torch.int32, device=DEVICE)
        self.assertIsNotNone(build_lora_hooks(_randn(2, 32), info, ids).after_down)
        info.has_active_lora = False
        hooks = build_lora_hooks(_randn(2, 32), info, ids)
        self.assertIsNone(hooks.after_gate_up)
        self.assertIsNone(hooks.after_down)


if __name__ == "__main__":
    unittest.main()
