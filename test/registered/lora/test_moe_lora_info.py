"""Tests for the per-batch MoE LoRA metadata kernel (_compute_moe_lora_info).

Runs the Triton kernel compiled on CUDA, or through Triton's interpreter on
CPU tensors when there is no GPU.
"""

import os
import random
import unittest
from types import SimpleNamespace

import torch

if not torch.cuda.is_available():
    # Must be set before Triton kernels are defined, i.e. before importing sglang.
    os.environ.setdefault("TRITON_INTERPRET", "1")

from sglang.srt.lora.backend.base_backend import (  # noqa: E402
    _compute_moe_lora_info,
    _compute_moe_lora_info_native,
)
from sglang.srt.lora.backend.triton_backend import TritonLoRABackend  # noqa: E402
from sglang.srt.model_executor.forward_batch_info import ForwardMode  # noqa: E402
from sglang.test.ci.ci_register import register_cuda_ci  # noqa: E402
from sglang.test.test_utils import CustomTestCase  # noqa: E402

register_cuda_ci(est_time=5, stage="base-b", runner_config="1-gpu-small")

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
JUNK_ENABLED = 123
JUNK_MAPPING = 456


def _indptr(seg_lens):
    seg_indptr = torch.zeros(len(seg_lens) + 1, dtype=torch.int32)
    seg_indptr[1:] = torch.tensor(seg_lens, dtype=torch.int64).cumsum(0)
    return seg_indptr.to(DEVICE)


def _reference(num_tokens, seg_indptr, lora_ranks, weight_indices, mapping_len):
    """adapter_enabled and the full token_lora_mapping buffer, built on the CPU."""
    seg_lens = (seg_indptr[1:] - seg_indptr[:-1]).cpu().long()
    mapping = torch.repeat_interleave(weight_indices.cpu(), seg_lens)[:num_tokens]
    expected_mapping = torch.full((mapping_len,), -1, dtype=torch.int32)
    expected_mapping[: mapping.numel()] = mapping
    ranks = lora_ranks.cpu().tolist()
    expected_enabled = torch.zeros(len(ranks), dtype=torch.int32)
    for lora in weight_indices.cpu().tolist():
        if 0 <= lora < len(ranks) and ranks[lora] > 0:
            expected_enabled[lora] = 1
    return expected_enabled, expected_mapping


class TestMoELoRAInfo(CustomTestCase):
    def setUp(self):
        # The example of the reference: segments 5,1,7,3,9,2 with adapters
        # 2,0,5,2,3,7; adapters 0 and 6 have rank 0.
        self.seg_lens = [5, 1, 7, 3, 9, 2]
        self.seg_indptr = _indptr(self.seg_lens)
        self.weight_indices = torch.tensor(
            [2, 0, 5, 2, 3, 7], dtype=torch.int32, device=DEVICE
        )
        self.lora_ranks = torch.tensor(
            [0, 12, 16, 32, 24, 8, 0, 4], dtype=torch.int32, device=DEVICE
        )
        self.num_tokens = sum(self.seg_lens)

    def _assert_view_of(self, result, buffer):
        # An empty tensor reports data_ptr() 0, so compare storages as well.
        self.assertEqual(
            result.untyped_storage().data_ptr(), buffer.untyped_storage().data_ptr()
        )
        if result.numel() > 0:
            self.assertEqual(result.data_ptr(), buffer.data_ptr())

    def _check(
        self,
        num_tokens,
        seg_indptr,
        lora_ranks,
        weight_indices,
        max_len,
        mapping_len=None,
        enabled_len=None,
    ):
        """Run with fresh outputs and with junk-filled buffers; check every entry."""
        mapping_len = num_tokens if mapping_len is None else mapping_len
        enabled_len = lora_ranks.numel() if enabled_len is None else enabled_len
        expected_enabled, expected_mapping = _reference(
            num_tokens, seg_indptr, lora_ranks, weight_indices, mapping_len
        )
        num_loras = lora_ranks.numel()

        adapter_enabled, token_lora_mapping = _compute_moe_lora_info(
            num_tokens, seg_indptr, lora_ranks, weight_indices, None, None, max_len
        )
        self.assertEqual(adapter_enabled.dtype, torch.int32)
        self.assertEqual(token_lora_mapping.dtype, torch.int32)
        self.assertEqual(adapter_enabled.device, seg_indptr.device)
        self.assertEqual(token_lora_mapping.shape, (num_tokens,))
        self.assertEqual(adapter_enabled.cpu().tolist(), expected_enabled.tolist())
        self.assertEqual(
            token_lora_mapping.cpu().tolist(), expected_mapping[:num_tokens].tolist()
        )

        enabled_buf = torch.full(
            (enabled_len,), JUNK_ENABLED, dtype=torch.int32, device=DEVICE
        )
        mapping_buf = torch.full(
            (mapping_len,), JUNK_MAPPING, dtype=torch.int32, device=DEVICE
        )
        adapter_enabled, token_lora_mapping = _compute_moe_lora_info(
            num_tokens,
            seg_indptr,
            lora_ranks,
            weight_indices,
            enabled_buf,
            mapping_buf,
            max_len,
        )
        self._assert_view_of(adapter_enabled, enabled_buf)
        self._assert_view_of(token_lora_mapping, mapping_buf)
        self.assertEqual(adapter_enabled.shape, (num_loras,))
        self.assertEqual(token_lora_mapping.shape, (num_tokens,))
        expected_buf = torch.zeros(enabled_len, dtype=torch.int32)
        expected_buf[:num_loras] = expected_enabled
        self.assertEqual(enabled_buf.cpu().tolist(), expected_buf.tolist())
        # The whole buffer, tail included: padded tokens must read -1.
        self.assertEqual(mapping_buf.cpu().tolist(), expected_mapping.tolist())

    def test_example_fresh_and_preallocated(self):
        self._check(
            self.num_tokens,
            self.seg_indptr,
            self.lora_ranks,
            self.weight_indices,
            max_len=max(self.seg_lens),
            mapping_len=self.num_tokens + 37,
        )

    def test_example_values(self):
        adapter_enabled, token_lora_mapping = _compute_moe_lora_info(
            self.num_tokens,
            self.seg_indptr,
            self.lora_ranks,
            self.weight_indices,
            None,
            None,
            max(self.seg_lens),
        )
        expected_mapping = torch.repeat_interleave(
            self.weight_indices.cpu(), torch.tensor(self.seg_lens)
        )
        self.assertTrue(torch.equal(token_lora_mapping.cpu(), expected_mapping))
        # Adapters 2, 3, 5, 7 are used with a nonzero rank; 0 is used with rank 0.
        self.assertEqual(adapter_enabled.cpu().tolist(), [0, 0, 1, 1, 0, 1, 0, 1])

    def test_under_covered_tokens_raise(self):
        for adapter_enabled, token_lora_mapping in [
            (None, None),
            (
                torch.full((8,), JUNK_ENABLED, dtype=torch.int32, device=DEVICE),
                torch.full((300,), JUNK_MAPPING, dtype=torch.int32, device=DEVICE),
            ),
        ]:
            with self.assertRaisesRegex(AssertionError, "under-covers tokens"):
                _compute_moe_lora_info(
                    300,
                    _indptr([300]),
                    self.lora_ranks,
                    torch.zeros(1, dtype=torch.int32, device=DEVICE),
                    adapter_enabled,
                    token_lora_mapping,
                    1,
                )
            if token_lora_mapping is not None:
                # Raised before any work: the buffers are untouched.
                self.assertTrue(bool((token_lora_mapping == JUNK_MAPPING).all()))
                self.assertTrue(bool((adapter_enabled == JUNK_ENABLED).all()))

    def test_no_adapter_index_stays_in_bounds(self):
        # Requests without adapter (-1) map to -1. Guards around the inputs and
        # outputs catch a read of lora_ranks[-1] or a write to adapter_enabled[-1].
        ranks = torch.tensor([5, 99, 7, 0, 4, 99], dtype=torch.int32, device=DEVICE)
        lora_ranks = ranks[1:5]  # 99 on both sides would enable a phantom adapter
        enabled_guarded = torch.full(
            (6,), JUNK_ENABLED, dtype=torch.int32, device=DEVICE
        )
        adapter_enabled = enabled_guarded[1:5]
        mapping_guarded = torch.full(
            (12,), JUNK_MAPPING, dtype=torch.int32, device=DEVICE
        )
        seg_lens = [2, 3, 1, 4]
        weight_indices = torch.tensor([-1, 1, -1, 3], dtype=torch.int32, device=DEVICE)
        adapter_enabled, token_lora_mapping = _compute_moe_lora_info(
            10,
            _indptr(seg_lens),
            lora_ranks,
            weight_indices,
            adapter_enabled,
            mapping_guarded[1:11],
            4,
        )
        self.assertEqual(
            token_lora_mapping.cpu().tolist(), [-1, -1, 1, 1, 1, -1, 3, 3, 3, 3]
        )
        self.assertEqual(adapter_enabled.cpu().tolist(), [0, 1, 0, 1])
        self.assertEqual(
            enabled_guarded.cpu().tolist(), [JUNK_ENABLED, 0, 1, 0, 1, JUNK_ENABLED]
        )
        self.assertEqual(mapping_guarded[0].item(), JUNK_MAPPING)
        self.assertEqual(mapping_guarded[11].item(), JUNK_MAPPING)

    def test_edge_cases(self):
        ranks = self.lora_ranks
        cases = [
            # (seg_lens, weight_indices, num_tokens, max_len, mapping_len)
            ([], [], 0, 0, 0),  # empty batch
            ([], [], 0, 1, 16),  # empty batch, padded buffer
            ([0, 0], [1, 2], 0, 1, 4),  # only empty segments: still enabled
            ([1] * 9, [1, 2, 3, 4, 5, 6, 7, 0, -1], 9, 1, 9),  # decode
            ([1] * 5, [3, 3, -1, 7, 5], 5, 1, 32),  # decode, graph-padded
            ([0, 4, 0, 0, 3, 0], [1, 2, 3, 4, 5, 6], 7, 4, 7),  # empty segments
            ([3, 2], [1, 2], 7, 4, 9),  # tokens past the last segment get -1
            ([3, 2], [1, 2], 3, 3, 5),  # fewer tokens than the segments hold
            ([1, 1, 1, 1], [1, 2, 3, 4], 4, 1000, 4),  # max_len larger than needed
            ([600, 1, 700], [4, -1, 2], 1301, 700, 1400),  # long segments
        ]
        for seg_lens, weight_indices, num_tokens, max_len, mapping_len in cases:
            with self.subTest(seg_lens=seg_lens, num_tokens=num_tokens):
                self._check(
                    num_tokens,
                    _indptr(seg_lens),
                    ranks,
                    torch.tensor(weight_indices, dtype=torch.int32, device=DEVICE),
                    max_len,
                    mapping_len,
                )

    def test_max_len_too_small_but_covering_is_still_right(self):
        # max_len is below the longest segment but the check passes
        # (num_segments * max_len >= num_tokens): the result must still be exact.
        seg_lens = [1, 1, 1, 9]
        self._check(12, _indptr(seg_lens), self.lora_ranks, self.weight_indices[:4], 3)
        seg_lens = [0, 0, 0, 2]  # a decode-sized max_len over uneven segments
        self._check(2, _indptr(seg_lens), self.lora_ranks, self.weight_indices[:4], 1)

    def test_random_batches(self):
        rng = random.Random(1234)
        for _ in range(40):
            num_loras = rng.randint(1, 16)
            num_segments = rng.randint(1, 70)
            decode = rng.random() < 0.3
            seg_lens = [
                1 if decode else rng.choice([0, 1, 2, rng.randint(0, 300)])
                for _ in range(num_segments)
            ]
            weight_indices = torch.tensor(
                [rng.randint(-1, num_loras - 1) for _ in range(num_segments)],
                dtype=torch.int32,
                device=DEVICE,
            )
            rank_dtype = rng.choice([torch.int32, torch.int64])
            lora_ranks = torch.tensor(
                [rng.choice([0, 8, 16, 64]) for _ in range(num_loras)],
                dtype=rank_dtype,
                device=DEVICE,
            )
            total = sum(seg_lens)
            num_tokens = rng.choice([total, total, max(total - 3, 0), total + 5])
            max_len = max(max(seg_lens), -(-num_tokens // num_segments))
            with self.subTest(seg_lens=seg_lens, num_tokens=num_tokens):
                self._check(
                    num_tokens,
                    _indptr(seg_lens),
                    lora_ranks,
                    weight_indices,
                    max_len,
                    mapping_len=num_tokens + rng.choice([0, 0, 1, 64]),
                    enabled_len=num_loras + rng.choice([0, 0, 3]),
                )

    def test_native_path_matches_kernel(self):
        rng = random.Random(99)
        for _ in range(20):
            num_segments = rng.randint(0, 40)
            seg_lens = [rng.randint(0, 40) for _ in range(num_segments)]
            seg_indptr = _indptr(seg_lens)
            weight_indices = torch.tensor(
                [rng.randint(-1, 7) for _ in range(num_segments)],
                dtype=torch.int32,
                device=DEVICE,
            )
            num_tokens = sum(seg_lens) + rng.choice([0, 4])
            if num_segments == 0:
                num_tokens = 0
            mapping_len = num_tokens + rng.choice([0, 9])
            enabled, mapping = _compute_moe_lora_info(
                num_tokens,
                seg_indptr,
                self.lora_ranks,
                weight_indices,
                None,
                torch.full(
                    (mapping_len,), JUNK_MAPPING, dtype=torch.int32, device=DEVICE
                ),
                max(seg_lens + [num_tokens]),
            )
            native_enabled = torch.full((8,), JUNK_ENABLED, dtype=torch.int32)
            native_mapping = torch.full((mapping_len,), JUNK_MAPPING, dtype=torch.int32)
            _compute_moe_lora_info_native(
                num_tokens,
                seg_indptr.cpu(),
                self.lora_ranks.cpu(),
                weight_indices.cpu(),
                native_enabled,
                native_mapping,
            )
            self.assertEqual(enabled.cpu().tolist(), native_enabled.tolist())
            self.assertEqual(
                mapping.cpu().tolist(), native_mapping[:num_tokens].tolist()
            )

    def test_inconsistent_arguments_assert(self):
        args = (self.seg_indptr, self.lora_ranks, self.weight_indices)
        short_enabled = torch.zeros(7, dtype=torch.int32, device=DEVICE)
        short_mapping = torch.zeros(26, dtype=torch.int32, device=DEVICE)
        for message, call_args in [
            ("seg_indptr has 6 entries", (self.seg_indptr[:-1], *args[1:])),
            ("adapter_enabled too short: 7", (*args, short_enabled, None)),
            ("token_lora_mapping too short: 26", (*args, None, short_mapping)),
        ]:
            call_args += (None,) * (5 - len(call_args))
            with self.subTest(message=message):
                with self.assertRaisesRegex(AssertionError, message):
                    _compute_moe_lora_info(self.num_tokens, *call_args, 9)

    def test_large_batches_and_many_adapters(self):
        # More segments than one program's block and than one adapter scan
        # step (1024), 600 adapters (32 per step), tokens over several
        # programs: every loop of the kernel runs more than once.
        rng = random.Random(7)
        for num_segments, num_loras, seg_len in [(5000, 8, 1), (40, 600, 70)]:
            seg_lens = [rng.choice([seg_len, 0, 1]) for _ in range(num_segments)]
            lora_ranks = torch.tensor(
                [rng.choice([0, 16]) for _ in range(num_loras)],
                dtype=torch.int32,
                device=DEVICE,
            )
            # The last adapter only past the first scan step, with a nonzero rank.
            loras = [rng.randint(-1, num_loras - 2) for _ in range(num_segments)]
            loras[4096:] = [num_loras - 1] * len(loras[4096:])
            lora_ranks[-1] = 16
            weight_indices = torch.tensor(loras, dtype=torch.int32, device=DEVICE)
            num_tokens = sum(seg_lens)
            with self.subTest(num_segments=num_segments, num_loras=num_loras):
                self._check(
                    num_tokens,
                    _indptr(seg_lens),
                    lora_ranks,
                    weight_indices,
                    max(seg_lens),
                    mapping_len=num_tokens + 1100,
                    enabled_len=num_loras + 5,
                )


@unittest.skipUnless(
    torch.cuda.is_available(), "CUDA graphs and stream syncs need CUDA"
)
class TestMoELoRAInfoCUDA(CustomTestCase):
    """The CUDA path: graph-capturable and free of host synchronization."""

    def _capture(self, fn):
        # Warm up (compiles the kernel) on a side stream, then capture.
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            fn()
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            fn()
        return graph

    def _replay_and_check(self, graph, inputs, outputs, num_tokens, batches):
        seg_indptr, weight_indices, lora_ranks = inputs
        adapter_enabled, token_lora_mapping = outputs
        for seg_lens, loras, ranks in batches:
            seg_indptr.copy_(_indptr(seg_lens))
            weight_indices.copy_(torch.tensor(loras, dtype=torch.int32))
            lora_ranks.copy_(torch.tensor(ranks, dtype=lora_ranks.dtype))
            adapter_enabled.fill_(JUNK_ENABLED)
            token_lora_mapping.fill_(JUNK_MAPPING)
            graph.replay()
            torch.cuda.synchronize()
            expected_enabled, expected_mapping = _reference(
                num_tokens,
                seg_indptr,
                lora_ranks,
                weight_indices,
                token_lora_mapping.numel(),
            )
            self.assertEqual(adapter_enabled.tolist(), expected_enabled.tolist())
            self.assertEqual(token_lora_mapping.tolist(), expected_mapping.tolist())

    def test_graph_replays_new_batches(self):
        rng = random.Random(5)
        for bs, max_len in [(16, 1), (6, 12)]:
            num_tokens = bs * max_len
            seg_indptr = _indptr([max_len] * bs)
            weight_indices = torch.zeros(bs, dtype=torch.int32, device=DEVICE)
            lora_ranks = torch.zeros(8, dtype=torch.int32, device=DEVICE)
            adapter_enabled = torch.empty(8, dtype=torch.int32, device=DEVICE)
            token_lora_mapping = torch.empty(
                num_tokens + 40, dtype=torch.int32, device=DEVICE
            )
            graph = self._capture(
                lambda: _compute_moe_lora_info(
                    num_tokens,
                    seg_indptr,
                    lora_ranks,
                    weight_indices,
                    adapter_enabled,
                    token_lora_mapping,
                    max_len,
                )
            )
            batches = []
            for _ in range(6):
                # Same shapes as captured, new contents: other adapters and
                # ranks, and (for extend) other lengths, some empty or short.
                cuts = sorted(rng.randint(0, num_tokens) for _ in range(bs - 1))
                seg_lens = (
                    [1] * bs
                    if max_len == 1
                    else [b - a for a, b in zip([0] + cuts, cuts + [num_tokens])]
                )
                if max_len > 1 and rng.random() < 0.5:
                    seg_lens[-1] -= min(seg_lens[-1], 3)  # fewer tokens in use
                loras = [rng.randint(-1, 7) for _ in range(bs)]
                ranks = [rng.choice([0, 4, 16]) for _ in range(8)]
                batches.append((seg_lens, loras, ranks))
            with self.subTest(bs=bs, max_len=max_len):
                self._replay_and_check(
                    graph,
                    (seg_indptr, weight_indices, lora_ranks),
                    (adapter_enabled, token_lora_mapping),
                    num_tokens,
                    batches,
                )

    def test_one_kernel_per_call(self):
        seg_indptr = _indptr([1] * 32)
        weight_indices = torch.zeros(32, dtype=torch.int32, device=DEVICE)
        lora_ranks = torch.ones(8, dtype=torch.int32, device=DEVICE)
        outputs = (
            torch.empty(8, dtype=torch.int32, device=DEVICE),
            torch.empty(64, dtype=torch.int32, device=DEVICE),
        )
        for _ in range(2):  # the first call compiles the kernel
            with torch.profiler.profile(
                activities=[torch.profiler.ProfilerActivity.CUDA]
            ) as prof:
                _compute_moe_lora_info(
                    32, seg_indptr, lora_ranks, weight_indices, *outputs, 1
                )
                torch.cuda.synchronize()
            kernels = [
                e.name
                for e in prof.events()
                if e.device_type == torch.autograd.DeviceType.CUDA
            ]
            self.assertEqual(len(kernels), 1, kernels)
            self.assertIn("_compute_moe_lora_info_kernel", kernels[0])

    def test_no_host_synchronization(self):
        seg_indptr = _indptr([3, 0, 5, 1])
        weight_indices = torch.tensor([1, 2, -1, 7], dtype=torch.int32, device=DEVICE)
        outputs = (
            torch.empty(8, dtype=torch.int32, device=DEVICE),
            torch.empty(16, dtype=torch.int32, device=DEVICE),
        )
        lora_ranks = torch.tensor([0, 12, 16, 32, 24, 8, 0, 4], device=DEVICE)
        for buffers in [(None, None), outputs]:
            # Warm up outside the check: the first call compiles the kernel.
            _compute_moe_lora_info(
                9, seg_indptr, lora_ranks, weight_indices, *buffers, 5
            )
            torch.cuda.synchronize()
            torch.cuda.set_sync_debug_mode("error")
            try:
                _compute_moe_lora_info(
                    9, seg_indptr, lora_ranks, weight_indices, *buffers, 5
                )
            finally:
                torch.cuda.set_sync_debug_mode("default")

    def test_backend_graph_buffers(self):
        # _add_moe_lora_info as the triton backend runs it under CUDA graphs:
        # captured at the graph's batch size, then refreshed eagerly for a
        # smaller real batch whose padded tokens must read -1.
        max_bs = 16
        backend = TritonLoRABackend(8, torch.device(DEVICE))
        backend.is_moe_lora = True
        backend.init_cuda_graph_batch_info(
            max_bs_in_cuda_graph=max_bs, num_tokens_per_bs=1
        )
        moe_layer = SimpleNamespace(
            base_layer=SimpleNamespace(top_k=2, num_experts=4),
            _quant_info=SimpleNamespace(
                w13_weight=torch.empty(4, 16, 8, device=DEVICE),
                w2_weight=torch.empty(4, 8, 8, device=DEVICE),
            ),
        )
        backend.init_cuda_graph_moe_buffers(max_bs, 8, torch.bfloat16, moe_layer)
        batch_info = backend.cuda_graph_batch_info
        cg_buffers = backend.moe_cg_buffers

        # Made outside the graph: allocating during capture is not allowed
        # (without the caching allocator, under compute-sanitizer).
        forward_batches = {
            bs: SimpleNamespace(
                input_ids=torch.empty(bs, dtype=torch.int64, device=DEVICE),
                forward_mode=ForwardMode.DECODE,
                extend_seq_lens_cpu=None,
            )
            for bs in (1, 5, max_bs)
        }

        def add_info(bs):
            batch_info.bs = batch_info.num_segments = bs
            backend._add_moe_lora_info(forward_batches[bs], batch_info)

        graph = self._capture(lambda: add_info(max_bs))
        rng = random.Random(11)
        for bs, replay in [(max_bs, True), (5, False), (max_bs, True), (1, False)]:
            loras = [rng.randint(-1, 7) for _ in range(max_bs)]
            ranks = [rng.choice([0, 8, 32]) for _ in range(8)]
            batch_info.weight_indices.copy_(torch.tensor(loras, dtype=torch.int32))
            batch_info.lora_ranks.copy_(torch.tensor(ranks, dtype=torch.int32))
            cg_buffers["adapter_enabled"].fill_(JUNK_ENABLED)
            cg_buffers["token_lora_mapping"].fill_(JUNK_MAPPING)
            if replay:
                graph.replay()
            else:
                torch.cuda.set_sync_debug_mode("error")
                try:
                    add_info(bs)
                finally:
                    torch.cuda.set_sync_debug_mode("default")
            torch.cuda.synchronize()
            expected_enabled, expected_mapping = _reference(
                bs,
                _indptr([1] * bs),
                batch_info.lora_ranks,
                batch_info.weight_indices[:bs],
                max_bs,
            )
            with self.subTest(bs=bs, replay=replay):
                info = batch_info.moe_lora_info
                self.assertEqual(
                    info.adapter_enabled.data_ptr(),
                    cg_buffers["adapter_enabled"].data_ptr(),
                )
                self.assertEqual(
                    cg_buffers["adapter_enabled"].tolist(), expected_enabled.tolist()
                )
                self.assertEqual(
                    cg_buffers["token_lora_mapping"].tolist(),
                    expected_mapping.tolist(),
                )


if __name__ == "__main__":
    unittest.main()
