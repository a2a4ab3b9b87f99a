"""The engine benchmark's inputs: a Qwen3-MoE config and synthetic PEFT adapters.

The base model is Qwen3-30B-A3B's config (weights come from sglang's dummy
loader); the adapters are written in the PEFT format that sglang loads from
disk, with seeded random weights, so every run on every host sees the same
adapters.
"""

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

# Qwen3-30B-A3B's config.json (Qwen/Qwen3-30B-A3B), the fields sglang reads.
QWEN3_30B_A3B = {
    "architectures": ["Qwen3MoeForCausalLM"],
    "model_type": "qwen3_moe",
    "attention_bias": False,
    "attention_dropout": 0.0,
    "bos_token_id": 151643,
    "decoder_sparse_step": 1,
    "eos_token_id": 151645,
    "head_dim": 128,
    "hidden_act": "silu",
    "hidden_size": 2048,
    "initializer_range": 0.02,
    "intermediate_size": 6144,
    "max_position_embeddings": 40960,
    "max_window_layers": 48,
    "mlp_only_layers": [],
    "moe_intermediate_size": 768,
    "norm_topk_prob": True,
    "num_attention_heads": 32,
    "num_experts": 128,
    "num_experts_per_tok": 8,
    "num_hidden_layers": 48,
    "num_key_value_heads": 4,
    "output_router_logits": False,
    "rms_norm_eps": 1e-06,
    "rope_scaling": None,
    "rope_theta": 1000000.0,
    "router_aux_loss_coef": 0.001,
    "sliding_window": None,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
    "transformers_version": "4.51.0",
    "use_cache": True,
    "use_sliding_window": False,
    "vocab_size": 151936,
}

ATTENTION_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj")
EXPERT_MODULES = ("gate_proj", "up_proj", "down_proj")


def model_config(layers=None, experts=None, topk=None):
    """Qwen3-30B-A3B's config, optionally with fewer layers or experts."""
    config = dict(QWEN3_30B_A3B)
    if layers is not None:
        config["num_hidden_layers"] = config["max_window_layers"] = layers
    if experts is not None:
        config["num_experts"] = experts
    if topk is not None:
        config["num_experts_per_tok"] = topk
    assert (
        config["num_experts_per_tok"] <= config["num_experts"]
    ), f"top-{config['num_experts_per_tok']} of {config['num_experts']} experts"
    return config


def write_model(directory, config):
    """A model directory that sglang's dummy loader serves: config.json only."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    return directory


def _module_shapes(config):
    """(in_features, out_features) of every LoRA target of one decoder layer."""
    hidden, head_dim = config["hidden_size"], config["head_dim"]
    q = config["num_attention_heads"] * head_dim
    kv = config["num_key_value_heads"] * head_dim
    inter = config["moe_intermediate_size"]
    return {
        "self_attn.q_proj": (hidden, q),
        "self_attn.k_proj": (hidden, kv),
        "self_attn.v_proj": (hidden, kv),
        "self_attn.o_proj": (q, hidden),
        "gate_proj": (hidden, inter),
        "up_proj": (hidden, inter),
        "down_proj": (inter, hidden),
    }


def write_adapter(directory, config, rank, seed, std, expert_std=None, device="cpu"):
    """A PEFT LoRA adapter of `rank` on attention and on every expert.

    A and B are N(0, std^2) in bf16 on attention, N(0, expert_std^2) on the
    experts (default std; PEFT initialises B to zero, which would make the
    adapter a no-op); lora_alpha = rank, so the scaling is 1. The
    numbers are drawn per layer from one generator seeded with `seed` on
    `device` (a GPU draws them in milliseconds; the same device type gives
    the same adapter).
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator(device=device).manual_seed(seed)
    shapes = _module_shapes(config)
    names = [f"self_attn.{m}" for m in ATTENTION_MODULES] + [
        f"mlp.experts.{e}.{m}"
        for e in range(config["num_experts"])
        for m in EXPERT_MODULES
    ]
    tensors = {}
    for layer in range(config["num_hidden_layers"]):
        base = f"base_model.model.model.layers.{layer}"
        layout = []
        for name in names:
            attention = name.startswith("self_attn.")
            module = name if attention else name.rsplit(".", 1)[1]
            fan_in, fan_out = shapes[module]
            scale = std if attention or expert_std is None else expert_std
            layout += [
                (f"{base}.{name}.lora_A.weight", (rank, fan_in), scale),
                (f"{base}.{name}.lora_B.weight", (fan_out, rank), scale),
            ]
        total = sum(a * b for _, (a, b), _ in layout)
        flat = torch.randn(total, generator=gen, device=device, dtype=torch.float32)
        offset = 0
        for key, (a, b), scale in layout:
            part = flat[offset : offset + a * b] * scale
            tensors[key] = part.to(torch.bfloat16).cpu().view(a, b)
            offset += a * b
    save_file(tensors, str(directory / "adapter_model.safetensors"))
    adapter_config = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": "Qwen/Qwen3-30B-A3B",
        "r": rank,
        "lora_alpha": rank,
        "lora_dropout": 0.0,
        "bias": "none",
        "target_modules": list(ATTENTION_MODULES + EXPERT_MODULES),
    }
    (directory / "adapter_config.json").write_text(
        json.dumps(adapter_config, indent=2) + "\n"
    )
    return directory


def adapter_bytes(config, rank):
    """Bytes of one adapter's weights (bf16), to size the LoRA buffers."""
    shapes = _module_shapes(config)
    per_layer = sum(
        rank * (shapes[f"self_attn.{m}"][0] + shapes[f"self_attn.{m}"][1])
        for m in ATTENTION_MODULES
    ) + config["num_experts"] * sum(rank * sum(shapes[m]) for m in EXPERT_MODULES)
    return 2 * per_layer * config["num_hidden_layers"]
