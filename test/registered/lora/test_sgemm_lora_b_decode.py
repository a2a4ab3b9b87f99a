"""Tests for the decode path of sgemm_lora_b_fwd and qkv_lora_b_fwd
(_sgemm_lora_b_decode_kernel).

Checks it against a torch reference with the batch layouts the Triton backend
builds, and which kernel each entry point picks. Runs the Triton kernels
compiled on CUDA, or through Triton's interpreter on CPU tensors.
"""

import os
import unittest
from unittest import mock

import torch

if not torch.cuda.is_available():
    # Must be set before Triton kernels are defined, i.e. before importing sglang.
    os.environ.setdefault("TRITON_INTERPRET", "1")

from sglang.srt.lora.triton_ops import qkv_lora_b, sgemm_lora_b  # noqa: E402
from sglang.srt.lora.utils import LoRABatchInfo  # noqa: E402
from sglang.test.ci.ci_register import register_cuda_ci  # noqa: E402
from sglang.test.test_utils import CustomTestCase  # noqa: E402

register_cuda_ci(est_time=5, stage="base-b", runner_config="1-gpu-small")

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
RANKS = [32, 16, 0, 8]  # per adapter slot
SCALINGS = [0.5, 2.0, 1.0, 0.25]


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
        scalings=torch.tensor(SCALINGS, device=DEVICE),
        permutation=permutation,
    )


class TestSgemmLoRABDecode(CustomTestCase):
    def setUp(self):
        torch.manual_seed(0)

    def _check(self, loras, slices, merged, padding=0):
        """slices: the output width of each of q/k/v (one slice: o_proj)."""
        tokens, R = len(loras) + padding, max(RANKS)
        x = torch.randn(tokens, len(slices) * R, device=DEVICE).to(torch.bfloat16)
        weights = torch.randn(len(RANKS), sum(slices), R, device=DEVICE)
        weights = weights.to(torch.bfloat16)
        base = torch.randn(tokens, sum(slices), device=DEVICE).to(torch.bfloat16)
        info = _batch_info(loras, merged, tokens)
        if len(slices) == 1:
            out = sgemm_lora_b.sgemm_lora_b_fwd(x, weights, info, base.clone())
        else:
            offsets = [0]
            for n in slices:
                offsets.append(offsets[-1] + n)
            out = qkv_lora_b.qkv_lora_b_fwd(
                x, weights, info, _int32(offsets), max(slices), base.clone()
            )
        for t in range(tokens):
            lora = loras[t] if t < len(loras) else 2  # padding: as rank 0
            rank = RANKS[lora]
            if rank == 0:
                self.assertTrue(torch.equal(out[t], base[t]), f"token {t} written")
                continue
            # Slice j of this token's A output sits at columns j * rank.
            delta = torch.cat(
                [
                    x[t, j * rank : (j + 1) * rank].float() @ w[:, :rank].float().T
                    for j, w in enumerate(weights[lora].split(slices))
                ]
            )
            expected = (base[t].float() + SCALINGS[lora] * delta).to(torch.bfloat16)
            # Within one bf16 step (another summation order than tensor cores).
            torch.testing.assert_close(
                out[t].float(), expected.float(), atol=3e-2, rtol=1e-2
            )

    def test_o_and_qkv_merged_and_per_request(self):
        loras = [0, 3, 2, 0, 1, 3, 0]  # every slot, rank 0 included, unsorted
        for merged in (True, False):
            # q/k/v widths that do not fill the decode kernel's column blocks
            for slices in [(200,), (96, 32, 32), (40, 8, 24)]:
                with self.subTest(merged=merged, slices=slices):
                    self._check(loras, slices, merged)

    def test_single_token_and_graph_padding(self):
        self._check([0], (96, 32, 32), merged=True)
        self._check([3, 0], (200,), merged=True, padding=3)
        self._check([1, 2], (96, 32, 32), merged=False, padding=2)

    def test_largest_decode_batch(self):
        loras = [t % len(RANKS) for t in range(sgemm_lora_b._DECODE_MAX_TOKENS)]
        self._check(loras, (64, 16, 16), merged=True)

    def test_no_base_output(self):
        x = torch.randn(1, 32, device=DEVICE).to(torch.bfloat16)
        weights = torch.randn(len(RANKS), 64, 32, device=DEVICE).to(torch.bfloat16)
        out = sgemm_lora_b.sgemm_lora_b_fwd(x, weights, _batch_info([0], True, 1))
        expected = SCALINGS[0] * (x.float() @ weights[0].float().T)
        torch.testing.assert_close(out.float(), expected, atol=3e-2, rtol=1e-2)

    @unittest.skipUnless(
        DEVICE == "cuda", "Triton's interpreter cannot run the tiled kernels"
    )
    def test_tiled_path_past_the_bound(self):
        loras = [t % len(RANKS) for t in range(sgemm_lora_b._DECODE_MAX_TOKENS + 1)]
        self._check(loras, (200,), merged=True)
        self._check(loras, (96, 32, 32), merged=True)

    def test_dispatch(self):
        max_outputs = sgemm_lora_b._DECODE_MAX_OUTPUTS
        for tokens, N, R, decode in [
            (1, 48, 32, True),
            (sgemm_lora_b._DECODE_MAX_TOKENS, 48, sgemm_lora_b._DECODE_MAX_R, True),
            (sgemm_lora_b._DECODE_MAX_TOKENS + 1, 48, 32, False),
            (1, 48, sgemm_lora_b._DECODE_MAX_R * 2, False),
            (16, max_outputs // 16 - 1, 32, True),  # N divisible by 3: q/k/v
            (16, max_outputs // 16 + 32, 32, False),
        ]:
            info = _batch_info([0] * tokens, True, tokens)
            weights = torch.zeros(len(RANKS), N, R, dtype=torch.bfloat16)
            weights = weights.to(DEVICE)
            offsets = _int32([0, N // 3, 2 * N // 3, N])
            for name in ("o", "qkv"):
                with self.subTest(tokens=tokens, N=N, R=R, op=name), mock.patch.object(
                    sgemm_lora_b, "_sgemm_lora_b_decode_kernel"
                ) as dec, mock.patch.object(
                    sgemm_lora_b, "_sgemm_lora_b_kernel"
                ) as tiled, mock.patch.object(
                    qkv_lora_b, "_qkv_lora_b_kernel"
                ) as qkv_tiled:
                    if name == "o":
                        x = torch.zeros(tokens, R, dtype=weights.dtype, device=DEVICE)
                        sgemm_lora_b.sgemm_lora_b_fwd(x, weights, info)
                    else:
                        x = torch.zeros(tokens, 3 * R, dtype=weights.dtype)
                        qkv_lora_b.qkv_lora_b_fwd(
                            x.to(DEVICE), weights, info, offsets, N // 3
                        )
                        tiled = qkv_tiled
                    self.assertEqual(dec.__getitem__.called, decode)
                    self.assertEqual(tiled.__getitem__.called, not decode)


if __name__ == "__main__":
    unittest.main()
