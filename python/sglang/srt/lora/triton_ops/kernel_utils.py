import triton
import triton.language as tl


@triton.jit
def _resolve_token_positions(
    sorted_token_ids, seg_start, s_offset, seg_len, SORTED_BY_ADAPTER: tl.constexpr
):
    """Map logical segment offsets to physical token positions.

    When SORTED_BY_ADAPTER is True, segments are grouped by adapter and
    sorted_token_ids provides the indirection to the original token rows.
    When False, tokens are already contiguous starting at seg_start.
    """
    if SORTED_BY_ADAPTER:
        return tl.load(
            sorted_token_ids + seg_start + s_offset, mask=s_offset < seg_len
        ).to(tl.int64)
    return (seg_start + s_offset).to(tl.int64)


@triton.jit
def _segment_of_position(pos, seg_indptr, num_segs, BLOCK_SEG: tl.constexpr):
    """The segment holding token position pos; num_segs for padding past the
    last one."""
    segs = tl.arange(0, BLOCK_SEG)
    ends = tl.load(seg_indptr + 1 + segs, mask=segs < num_segs, other=pos + 1)
    return tl.sum((ends <= pos).to(tl.int32), axis=0)
