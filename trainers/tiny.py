"""Tiny, offline, deterministic models: a byte-level tokenizer and a random Qwen3ForCausalLM.

`build_tiny(out_dir, seed)` writes a tokenizer and a randomly initialised model with `save_pretrained`, so
every test and smoke run can load a real Qwen3 architecture without touching a hub. The tokenizer is byte-level
(256 byte symbols, no merges), so any text round-trips; it has `<|pad|>`, `<|endoftext|>` (eos) and a ChatML chat
template with `<|im_start|>`/`<|im_end|>`. The same seed and sizes give byte-identical weights.
"""
from __future__ import annotations

from pathlib import Path

CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIAL_TOKENS = ("<|pad|>", "<|endoftext|>", "<|im_start|>", "<|im_end|>")


def build_tokenizer():
    """A byte-level PreTrainedTokenizerFast: ids 0..3 are SPECIAL_TOKENS, then the 256 byte symbols."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    vocab.update({ch: len(SPECIAL_TOKENS) + i for i, ch in enumerate(alphabet)})
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(list(SPECIAL_TOKENS))
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<|pad|>", eos_token="<|endoftext|>",
        additional_special_tokens=["<|im_start|>", "<|im_end|>"], chat_template=CHAT_TEMPLATE,
        model_max_length=1 << 20, padding_side="left",
    )


def build_tiny(out_dir: str | Path, seed: int = 0, hidden_size: int = 16, num_layers: int = 2,
               num_heads: int = 2, num_kv_heads: int = 1, head_dim: int = 8, intermediate_size: int = 32,
               max_position_embeddings: int = 2048) -> Path:
    """Write tokenizer + random Qwen3ForCausalLM (tied embeddings, float32) to `out_dir`; return the path.

    The defaults give about 14k parameters (~60 KB of safetensors); weights depend only on `seed` and sizes.
    """
    import torch
    from transformers import GenerationConfig, Qwen3Config, Qwen3ForCausalLM

    for name, v in dict(hidden_size=hidden_size, num_layers=num_layers, num_heads=num_heads,
                        num_kv_heads=num_kv_heads, head_dim=head_dim, intermediate_size=intermediate_size).items():
        if not isinstance(v, int) or v < 1:
            raise ValueError(f"build_tiny: {name} must be a positive integer, got {v!r}")
    if num_heads % num_kv_heads:
        raise ValueError(f"build_tiny: num_heads={num_heads} must be a multiple of num_kv_heads={num_kv_heads}")
    out = Path(out_dir)
    tokenizer = build_tokenizer()
    pad_id, eos_id = tokenizer.pad_token_id, tokenizer.eos_token_id
    config = Qwen3Config(
        vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=intermediate_size,
        num_hidden_layers=num_layers, num_attention_heads=num_heads, num_key_value_heads=num_kv_heads,
        head_dim=head_dim, max_position_embeddings=max_position_embeddings, tie_word_embeddings=True,
        pad_token_id=pad_id, eos_token_id=eos_id, bos_token_id=eos_id, dtype="float32",
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen3ForCausalLM(config)
    model.generation_config = GenerationConfig(pad_token_id=pad_id, eos_token_id=eos_id, bos_token_id=eos_id)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def main(cfg) -> int:
    """`harness tiny out=DIR seed=0 hidden_size=16 ...` (configs/tiny.yaml)."""
    from harness.core.config import ConfigError, require_output_dir, require_seed, to_dict

    args = to_dict(cfg)
    out = args.pop("out", None)
    if not out:
        raise ConfigError("out=DIR is required: the folder to write the model and tokenizer to")
    require_output_dir(out, "out")
    require_seed(args.get("seed"))
    try:
        path = build_tiny(out, **args)
    except (TypeError, ValueError) as e:
        raise ConfigError(str(e)) from e
    print(f"tiny model written to {path}")
    return 0
