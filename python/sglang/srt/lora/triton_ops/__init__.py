from .chunked_embedding_lora_a import chunked_embedding_lora_a_forward
from .chunked_sgmv_expand import chunked_sgmv_lora_expand_forward
from .chunked_sgmv_shrink import chunked_sgmv_lora_shrink_forward
from .embedding_lora_a import embedding_lora_a_fwd
from .fused_moe_lora_decode import fused_moe_lora_decode
from .fused_moe_lora_kernel import fused_moe_lora
from .gate_up_lora_b import gate_up_lora_b_fwd
from .kv_b_lora_absorbed import (
    step_a_q_fwd,
    step_a_v_fwd,
    step_b_q_fwd,
    step_b_v_fwd,
)
from .qkv_lora_b import qkv_lora_b_fwd
from .sgemm_lora_a import sgemm_lora_a_fwd
from .sgemm_lora_b import sgemm_lora_b_fwd
from .virtual_experts import merged_experts_fused_moe_lora_add

__all__ = [
    "gate_up_lora_b_fwd",
    "qkv_lora_b_fwd",
    "sgemm_lora_a_fwd",
    "sgemm_lora_b_fwd",
    "chunked_sgmv_lora_shrink_forward",
    "chunked_sgmv_lora_expand_forward",
    "fused_moe_lora",
    "fused_moe_lora_decode",
    "chunked_embedding_lora_a_forward",
    "embedding_lora_a_fwd",
    "merged_experts_fused_moe_lora_add",
    "step_a_q_fwd",
    "step_a_v_fwd",
    "step_b_q_fwd",
    "step_b_v_fwd",
]
