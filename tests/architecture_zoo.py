"""Every causal-LM architecture in transformers, built tiny from its config with random weights.

`tiny_config(model_type)` shrinks the config class's defaults (hidden size 32,
2 layers, 4 heads, a 400-token vocabulary, …) by setting whichever of the
usual names the config has. `build(model_type, directory, tokenizer)` makes the
model, gives every parameter that starts constant (norm weights of 1, biases of
0) random values so that a skipped norm or bias shows up in the numbers, and
saves it with the tokenizer as safetensors, ready for `lmviz.model.models.load`.
Architectures whose configs don't shrink this way raise `CannotBuild`.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

MAX_PARAMETERS = 5_000_000  # "tiny": anything bigger means the config did not shrink

SHRINK = dict(
    hidden_size=32, d_model=32, n_embd=32, num_hidden_layers=2, n_layer=2, num_layers=2,
    num_attention_heads=4, n_head=4, num_key_value_heads=2, head_dim=8, intermediate_size=64, ffn_dim=64,
    n_inner=64, moe_intermediate_size=32, shared_expert_intermediate_size=32, num_experts=4, num_local_experts=4,
    n_routed_experts=4, num_experts_per_tok=2, max_position_embeddings=128, n_positions=128, rotary_dim=4,
    decoder_layers=2, decoder_attention_heads=4, decoder_ffn_dim=64, encoder_layers=2, encoder_attention_heads=4,
    encoder_ffn_dim=64, kv_lora_rank=16, q_lora_rank=16, qk_rope_head_dim=4, qk_nope_head_dim=4, v_head_dim=8,
    first_k_dense_replace=1, n_group=1, topk_group=1, is_decoder=True,
)


class CannotBuild(Exception):
    """This architecture's config does not shrink to a tiny model here."""


def causal_model_types() -> list[str]:
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    return sorted(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES)


def tiny_config(model_type: str, vocab_size: int, special_id: int):
    from transformers import CONFIG_MAPPING

    try:
        default = CONFIG_MAPPING[model_type]()
        text = default.get_text_config() if hasattr(default, "get_text_config") else default
        names = set(text.to_dict()) | set(getattr(text, "attribute_map", {}))
        settings = {name: value for name, value in SHRINK.items() if name in names}
        specials = {name: special_id for name in ("bos_token_id", "eos_token_id", "pad_token_id")}
        return type(text)(**settings, vocab_size=vocab_size, **specials)
    except Exception as error:  # noqa: BLE001 - any failure means this config does not shrink
        raise CannotBuild(f"config: {type(error).__name__}: {str(error).splitlines()[0][:120] if str(error) else ''}")


def build(model_type: str, directory: Path, tokenizer) -> Path:
    """A tiny random `model_type` causal LM saved with `tokenizer` in `directory` (or CannotBuild)."""
    from transformers import AutoModelForCausalLM

    config = tiny_config(model_type, len(tokenizer), tokenizer.eos_token_id)
    try:
        with torch.device("meta"):
            size = sum(p.numel() for p in AutoModelForCausalLM.from_config(config).parameters())
        if size > MAX_PARAMETERS:
            raise CannotBuild(f"{size:,} parameters even when shrunk")
        torch.manual_seed(0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = AutoModelForCausalLM.from_config(config).eval()
            with torch.no_grad():  # constant parameters (norm weights, biases) get random values too
                for parameter in model.parameters():
                    flat = parameter.flatten()
                    if flat.numel() > 1 and bool((flat == flat[0]).all()):
                        parameter.add_(torch.randn_like(parameter) * 0.3)
                model(input_ids=torch.tensor([[1, 2, 3]]))  # it must at least run
            directory.mkdir(parents=True, exist_ok=True)
            model.save_pretrained(directory, safe_serialization=True)
        tokenizer.save_pretrained(directory)
    except CannotBuild:
        raise
    except Exception as error:  # noqa: BLE001 - a model transformers itself can't build or run tiny
        raise CannotBuild(f"{type(error).__name__}: {str(error).splitlines()[0][:120] if str(error) else ''}")
    return directory
