"""Tests for the decode path of sgemm_lora_a_fwd (_sgemm_lora_a_decode_kernel).

Checks it against a torch reference with the batch layouts the Triton backend
builds, and which kernel sgemm_lora_a_fwd picks. Runs the Triton kernels
compiled on CUDA, or through Triton's interpreter on CPU tensors.
"""

import os
import unittest
from unittest import mock

import torch

if not torch.cuda.is_available():
    # Must be set before Triton kernels are defined, i.e. before importing sglang.
    os.environ.setdefault("TRITON_INTERPRET", "1")

from sglang.srt.lora.triton_ops import sgemm_lora_a  # noqa: E402
from sglang.srt.lora.utils import LoRABatchInfo  # noqa: E402
from sglang.test.ci.ci_register import register_cuda_ci  # noqa: E402
from sglang.test.test_utils import CustomTestCase  # noqa: E402

register_cuda_ci(est_time=5, stage="base-b", runner_config="1-gpu-small")

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
RANKS = [32, 16, 0, 8]  # per adapter slot


def _int32(values):
    return torch.tensor(values, dtype=torch.int32, device=DEVICE)


def _batch_info(loras, merged, tokens):
    """merged: one segment per adapter slot over tokens sorted by adapter, as
    compute_sgemm_routing builds it; else one segment per request. Positions
    past the last request are graph padding."""
    if merged:
        perm = sorted(range(len(loras)), key=lambda t: loras[t])
        weight_indices = list(range(len(RANKS)))
        seg_lens = [loras.count(slot) for slot in weight_indices]
        permutation = _int32(perm + [0] * (tokens - len(loras)))
    else:
        weight_indices, seg_lens, permutation = loras, [1] * len(loras), None
    seg_indptr = [0]
    for n in seg_lens:
        seg_indptr.append(seg_indptr[-1] + n)
    return LoRABatchInfo(
        bs=len(seg_lens),
        use_cuda_graph=False,
        num_segments=len(seg_lens),
        seg_lens=_int32(seg_lens),
        seg_indptr=_int32(seg_indptr),
        max_len=max(seg_lens),
        weight_indices=_int32(weight_indices),
        lora_ranks=_int32(RANKS),
        scalings=torch.ones(len(RANKS), device=DEVICE),
        permutation=permutation,
    )


def _run_poisoned(x, weights, info, stack_num):
    """sgemm_lora_a_fwd with its output allocated full of NaN, so that an
    element it does not write shows."""
    empty = torch.empty

    def nan_empty(*args, **kwargs):
        return empty(*args, **kwargs).fill_(float("nan"))

    with mock.patch.object(sgemm_lora_a.torch, "empty", nan_empty):
        return sgemm_lora_a.sgemm_lora_a_fwd(x, weights, info, stack_num)


class TestSgemmLoRAADecode(CustomTestCase):
    def setUp(self):
        torch.manual_seed(0)

    def _check(self, loras, K, stack_num, merged, padding=0):
        tokens = len(loras) + padding
        x = torch.randn(tokens, K, device=DEVICE).to(torch.bfloat16)
        R = stack_num * max(RANKS)
        weights = torch.randn(len(RANKS), R, K, device=DEVICE).to(torch.bfloat16)
        out = _run_poisoned(x, weights, _batch_info(loras, merged, tokens), stack_num)
        for t in range(tokens):
            n = stack_num * RANKS[loras[t]] if t < len(loras) else 0
            expected = x[t].float() @ weights[loras[t] if n else 0, :n].float().T
            # Within one bf16 step of the fp32 product (another summation order).
            torch.testing.assert_close(
                out[t, :n].float(), expected, atol=2e-2, rtol=1e-2
            )
            # Columns past the adapter's rank, rank-0 and padding rows: untouched.
            self.assertTrue(out[t, n:].isnan().all(), f"token {t} wrote past {n}")

    def test_merged_and_per_request_segments(self):
        loras = [0, 3, 2, 0, 1, 3, 0]  # every slot, rank 0 included, unsorted
        for merged in (True, False):
            for K, stack_num in [(64, 3), (96, 1), (100, 2)]:
                with self.subTest(merged=merged, K=K, stack_num=stack_num):
                    self._check(loras, K, stack_num, merged)

    def test_single_token_and_graph_padding(self):
        self._check([0], 64, 3, merged=True)
        self._check([3, 0], 64, 1, merged=True, padding=3)
        self._check([1, 2], 64, 1, merged=False, padding=2)

    def test_largest_decode_batch(self):
        loras = [t % len(RANKS) for t in range(sgemm_lora_a._DECODE_MAX_TOKENS)]
        self._check(loras, 32, 1, merged=True)

    @unittest.skipUnless(
        DEVICE == "cuda", "Triton's interpreter cannot run the tiled kernel"
    )
    def test_tiled_path_past_the_bound(self):
        loras = [t % len(RANKS) for t in range(sgemm_lora_a._DECODE_MAX_TOKENS + 1)]
        self._check(loras, 64, 3, merged=True)

    def test_dispatch(self):
        for tokens, K, decode in [
            (1, 64, True),
            (sgemm_lora_a._DECODE_MAX_TOKENS, sgemm_lora_a._DECODE_MAX_K, True),
            (sgemm_lora_a._DECODE_MAX_TOKENS + 1, 64, False),
            (1, sgemm_lora_a._DECODE_MAX_K + 1, False),
        ]:
            with self.subTest(tokens=tokens, K=K), mock.patch.object(
                sgemm_lora_a, "_sgemm_lora_a_decode_kernel"
            ) as dec, mock.patch.object(sgemm_lora_a, "_sgemm_lora_a_kernel") as tiled:
                info = _batch_info([0] * tokens, True, tokens)
                x = torch.zeros(tokens, K, dtype=torch.bfloat16, device=DEVICE)
                weights = torch.zeros(len(RANKS), 32, K, dtype=x.dtype, device=DEVICE)
                sgemm_lora_a.sgemm_lora_a_fwd(x, weights, info)
                self.assertEqual(dec.__getitem__.called, decode)
                self.assertEqual(tiled.__getitem__.called, not decode)


if __name__ == "__main__":
    unittest.main()
