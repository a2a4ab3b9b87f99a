"""Tests for the per-batch MoE LoRA metadata kernel (_compute_moe_lora_info).

Runs the Triton kernel compiled on CUDA, or through Triton's interpreter on
CPU tensors when there is no GPU.
"""

import os
import random
import unittest

import torch

if not torch.cuda.is_available():
    # Must be set before Triton kernels are defined, i.e. before importing sglang.
    os.environ.setdefault("TRITON_INTERPRET", "1")

from sglang.srt.lora.backend.base_backend import (  # noqa: E402
    _compute_moe_lora_info,
    _compute_moe_lora_info_native,
)
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

    def test_bad_arguments_raise_clear_errors(self):
        args = dict(
            num_tokens=self.num_tokens,
            seg_indptr=self.seg_indptr,
            lora_ranks=self.lora_ranks,
            weight_indices=self.weight_indices,
            adapter_enabled=None,
            token_lora_mapping=None,
            max_len=9,
        )
        bad_cases = [
            (
                TypeError,
                "weight_indices must have dtype",
                dict(weight_indices=self.weight_indices.long()),
            ),
            (
                TypeError,
                "seg_indptr must have dtype",
                dict(seg_indptr=self.seg_indptr.float()),
            ),
            (
                TypeError,
                "lora_ranks must have dtype",
                dict(lora_ranks=self.lora_ranks.float()),
            ),
            (
                TypeError,
                "adapter_enabled must have dtype",
                dict(adapter_enabled=torch.zeros(8, device=DEVICE)),
            ),
            (
                ValueError,
                "must be a contiguous 1-D tensor",
                dict(weight_indices=self.weight_indices.view(2, 3)),
            ),
            (
                ValueError,
                "must be a contiguous 1-D tensor",
                dict(
                    weight_indices=torch.zeros(12, dtype=torch.int32, device=DEVICE)[
                        ::2
                    ]
                ),
            ),
            (
                ValueError,
                "seg_indptr must have num_segments \\+ 1",
                dict(seg_indptr=self.seg_indptr[:-1]),
            ),
            (
                ValueError,
                "fewer than num_tokens",
                dict(
                    token_lora_mapping=torch.zeros(5, dtype=torch.int32, device=DEVICE)
                ),
            ),
            (
                ValueError,
                "fewer than num_loras",
                dict(adapter_enabled=torch.zeros(3, dtype=torch.int32, device=DEVICE)),
            ),
            (ValueError, "num_tokens must be a non-negative int", dict(num_tokens=-1)),
            (
                ValueError,
                "num_tokens must be a non-negative int",
                dict(num_tokens=torch.tensor(27)),
            ),
            (ValueError, "max_len must be a non-negative int", dict(max_len=None)),
        ]
        if DEVICE == "cuda":
            bad_cases.append(
                (
                    ValueError,
                    "is on cpu, but seg_indptr is on cuda",
                    dict(weight_indices=self.weight_indices.cpu()),
                )
            )
        for error, message, override in bad_cases:
            with self.subTest(message=message):
                with self.assertRaisesRegex(error, message):
                    _compute_moe_lora_info(**{**args, **override})


if __name__ == "__main__":
    unittest.main()
