"""Tiny offline models: deterministic from the seed, a real Qwen3 architecture, a tokenizer any text survives."""
import hashlib

import pytest

from harness.cli import main as cli
from trainers.tiny import build_tiny


def _digest(path) -> str:
    return hashlib.sha256((path / "model.safetensors").read_bytes()).hexdigest()


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    a = build_tiny(tmp_path / "a", seed=0)
    b = build_tiny(tmp_path / "b", seed=0)
    c = build_tiny(tmp_path / "c", seed=1)
    assert _digest(a) == _digest(b) != _digest(c)
    assert (a / "model.safetensors").stat().st_size < 1_000_000


def test_loads_as_qwen3_with_tokenizer(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = build_tiny(tmp_path / "m", seed=3, hidden_size=32, num_layers=1)
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path)
    assert type(model).__name__ == "Qwen3ForCausalLM" and model.config.hidden_size == 32
    assert tok.pad_token == "<|pad|>" and tok.eos_token == "<|endoftext|>" and tok.pad_token_id != tok.eos_token_id
    assert model.config.vocab_size == len(tok) == 260  # 4 special tokens + 256 bytes
    text = "User:\nSolve $x^2 = 4$ (é, ∑, 数学)\nAssistant:\n"
    assert tok.decode(tok(text).input_ids) == text  # byte-level: any text round-trips
    chat = tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)
    assert chat == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    out = model.generate(**tok(["1+1="], return_tensors="pt"), max_new_tokens=4, do_sample=False)
    assert out.shape == (1, 4 + 4)


def test_bad_size_rejected(tmp_path):
    with pytest.raises(ValueError, match="num_heads=3 must be a multiple of num_kv_heads=2"):
        build_tiny(tmp_path / "x", num_heads=3, num_kv_heads=2)
    with pytest.raises(ValueError, match="hidden_size"):
        build_tiny(tmp_path / "x", hidden_size=0)


def test_cli(tmp_path, capsys):
    assert cli(["tiny", f"out={tmp_path / 'cli'}", "seed=2"]) == 0
    assert (tmp_path / "cli" / "config.json").exists() and (tmp_path / "cli" / "tokenizer.json").exists()
    assert cli(["tiny"]) == 2
    assert "out=DIR is required" in capsys.readouterr().err
