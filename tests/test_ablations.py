"""The entropy analyses (ablations/): chunked entropy vs a plain reference, Table 1 overlap, Fig. 4/5 shift and the
Fig. 3 two-temperature processor, on hand-made tensors and on a tiny random Qwen3 (trainers.tiny.build_tiny)."""
from __future__ import annotations

import json
import math

import pandas as pd
import pytest
import torch

from ablations.token_entropy import (EntropyTemperatureProcessor, chunked_entropy, entropy_from_logits,
                                     entropy_summary, naive_entropy, overlap_pct, percentile_bins,
                                     top_fraction_mask)
from harness.cli import main as cli
from harness.core.io import read_jsonl

# ---------------------------------------------------------------- pure math


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("impl", ["torch", "trl"])
def test_chunked_entropy_matches_full_softmax_reference(seed, impl):
    g = torch.Generator().manual_seed(seed)
    n, h, v = 37 + seed, 16, 300
    hidden = torch.randn(n, h, generator=g)
    weight = torch.randn(v, h, generator=g) * (seed + 1)  # seed 2: peaky rows (entropy near 0)
    bias = torch.randn(v, generator=g) if seed == 1 else None
    for temperature in (1.0, 0.7):
        ref = naive_entropy(hidden, weight, bias, temperature)
        got = chunked_entropy(hidden, weight, bias, temperature, chunk_size=5, impl=impl)
        torch.testing.assert_close(got, ref, atol=2e-5, rtol=1e-5)


def test_entropy_hand_computed_and_masked_vocabulary():
    # uniform over 4 -> log 4; one-hot -> 0; -inf entries are excluded: [0, 0, -inf] -> log 2
    logits = torch.tensor([[1.0, 1.0, 1.0, 1.0], [100.0, 0.0, 0.0, 0.0], [0.0, 0.0, -math.inf, -math.inf]])
    torch.testing.assert_close(entropy_from_logits(logits), torch.tensor([math.log(4), 0.0, math.log(2)]))
    assert logits[2, 2] == -math.inf  # input untouched


def test_entropy_summary_hand_computed():
    h = torch.tensor([0.0, 0.005, 0.5, 1.0, 2.0])
    s = entropy_summary(h, low=0.01, high=0.672, percentiles=(50,))
    assert s["n_tokens"] == 5
    assert s["share_below_0.01_pct"] == pytest.approx(40.0)  # 0 and 0.005
    assert s["share_above_0.672_pct"] == pytest.approx(40.0)  # 1.0 and 2.0
    assert s["p50"] == pytest.approx(0.5)
    assert s["mean"] == pytest.approx(3.505 / 5)


def test_top_fraction_mask_and_overlap_hand_computed():
    h = torch.tensor([0.1, 0.9, 0.5, 0.3, 0.8])
    m = top_fraction_mask(h, 0.4)  # k = ceil(0.4 * 5) = 2 -> positions 1 (0.9) and 4 (0.8)
    assert m.tolist() == [False, True, False, False, True]
    other = torch.tensor([False, True, True, False, False])
    assert overlap_pct(other, m) == pytest.approx(50.0)  # 1 of the reference's 2 positions
    assert overlap_pct(m, m) == 100.0
    with pytest.raises(ValueError):
        top_fraction_mask(h, 0.0)


def test_percentile_bins_equal_count():
    base = torch.tensor([5.0, 1.0, 4.0, 2.0, 3.0, 0.0, 7.0, 6.0])
    bins = percentile_bins(base, 4)  # ranks 0..7 -> bins of 2: {0,1}->0 ... {6,7}->3
    assert bins.tolist() == [2, 0, 2, 1, 1, 0, 3, 3]


def test_processor_identity_and_greedy_on_hand_logits():
    logits = torch.tensor([[5.0, 0.0, 0.0], [0.3, 0.2, 0.1]])  # row 0: H ~ 0.09 (low), row 1: H ~ 1.09 (high)
    assert torch.equal(EntropyTemperatureProcessor(1.0, 1.0)(None, logits), logits)
    out = EntropyTemperatureProcessor(t_high=2.0, t_low=0.0, threshold=0.672)(None, logits)
    assert out[0].tolist() == [5.0, -math.inf, -math.inf]  # greedy
    torch.testing.assert_close(out[1], logits[1] / 2)
    # vLLM per-request form: (list of generated ids, 1-D logits)
    assert EntropyTemperatureProcessor(2.0, 0.0)([1, 2], logits[0]).tolist() == [5.0, -math.inf, -math.inf]


# ---------------------------------------------------------------- tiny model

@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from trainers.tiny import build_tiny

    root = tmp_path_factory.mktemp("abl")
    paths = {"a": build_tiny(root / "a", seed=0), "b": build_tiny(root / "b", seed=1), "root": root}
    # "peaky": model a with its (tied) lm_head scaled by 25, so token entropies spread over ~[0, 4] nats
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(paths["a"])
    with torch.no_grad():
        model.lm_head.weight.mul_(25.0)
    model.save_pretrained(root / "peaky")
    AutoTokenizer.from_pretrained(paths["a"]).save_pretrained(root / "peaky")
    return {**paths, "peaky": root / "peaky"}


@pytest.fixture(scope="module")
def problems(tiny):
    path = tiny["root"] / "toy.jsonl"
    rows = [{"problem": "1+1?", "answer": "2"}, {"problem": "2+3?", "answer": "5"},
            {"problem": "Name x.", "answer": "7"}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def run_dir(tiny):
    """A training run layout: final = a, checkpoint-2 = a (same weights), checkpoint-1 = b."""
    import shutil

    run = tiny["root"] / "cell" / "train"
    shutil.copytree(tiny["a"], run / "final")
    shutil.copytree(tiny["a"], run / "checkpoints" / "checkpoint-2")
    shutil.copytree(tiny["b"], run / "checkpoints" / "checkpoint-1")
    for step in (1, 2):  # transformers writes trainer_state.json last: it marks a checkpoint as complete
        (run / "checkpoints" / f"checkpoint-{step}" / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    shutil.copytree(tiny["b"], run / "checkpoints" / "checkpoint-3")  # cut off by a kill: no trainer_state.json
    (run.parent / "cell.json").write_text("{}")  # a grid cell: <cell>/cell.json, <cell>/train/
    (run / "metrics.jsonl").write_text("".join(json.dumps({"step": s}) + "\n" for s in (1, 2, 3)))
    (run / "summary.json").write_text(json.dumps({"global_step": 3}))  # written last: the run has finished
    return run


def _logits_entropy(model, prompt_ids, response_ids):
    """Plain reference: full logits from the model's own forward, log-softmax, -sum p log p."""
    ids = torch.tensor([prompt_ids + response_ids])
    with torch.no_grad():
        logits = model(ids).logits[0, len(prompt_ids) - 1:-1].double()  # [L, V]
    logp = logits.log_softmax(-1)
    return -(logp.exp() * logp).sum(-1)


def test_analyze_entropy_statistics_match_plain_reference(tiny, problems, tmp_path):
    from transformers import AutoModelForCausalLM

    out = tmp_path / "ent"
    rc = cli(["analyze", "entropy", f"model_path={tiny['peaky']}", f"problems={problems}", "k=2", "max_new_tokens=12",
              "min_count=2", "top_n=3", "chunk_size=4", f"out={out}"])
    assert rc == 0
    model = AutoModelForCausalLM.from_pretrained(tiny["peaky"]).eval()
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny["peaky"])
    rows = read_jsonl(out / "entropy_responses.jsonl")
    assert len(rows) == 6  # 3 problems x k=2
    template = ("User:\n{question}\nPlease reason step by step, and put your final answer within \\boxed{}."
                "\n\nAssistant:\n")
    ref = torch.cat([_logits_entropy(model, tok(template.replace("{question}", r["problem"]),
                                                add_special_tokens=False).input_ids, r["response_ids"])
                     for r in rows])
    stats = pd.read_csv(out / "entropy.csv").set_index("statistic").value
    expect = entropy_summary(ref.float())
    assert stats["n_tokens"] == ref.numel() > 0
    torch.testing.assert_close(torch.tensor([e for r in rows for e in r["entropy"]], dtype=torch.float64), ref,
                               atol=1e-4, rtol=1e-4)  # per token too
    for key in ("mean", "p10", "p50", "p80", "p99", "share_below_0.01_pct", "share_above_0.672_pct"):
        assert stats[key] == pytest.approx(expect[key], abs=1e-4), key
    tokens = pd.read_csv(out / "entropy_tokens.csv", keep_default_na=False)
    assert set(tokens.kind) <= {"most_entropic", "least_entropic"} and (tokens["count"] >= 2).all()
    assert (out / "entropy.png").stat().st_size > 0
    prov = json.loads((out / "entropy.provenance.json").read_text())
    assert prov["config"]["k"] == 2 and "git_hash" in prov


def test_analyze_entropy_reads_saved_samples_with_their_prompt(tiny, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    samples = tmp_path / "eval" / "samples_toy.jsonl"
    samples.parent.mkdir()
    line = {"task": "toy", "problem": "1+1?", "prompt": "Q: 1+1?\nA:", "gold": "2",
            "responses": ["It is \\boxed{2}.", "2", "One plus one: 1 + 1 = 2, so \\boxed{2}. Wait, check: yes."],
            "correct": [True, False, True]}
    samples.write_text(json.dumps(line) + "\n")
    rc = cli(["analyze", "entropy", f"model_path={tiny['peaky']}", f"samples={samples.parent}", "min_count=1",
              f"out={tmp_path / 'o'}"])
    assert rc == 0
    stats = pd.read_csv(tmp_path / "o" / "entropy.csv").set_index("statistic").value
    tok = AutoTokenizer.from_pretrained(tiny["peaky"])
    model = AutoModelForCausalLM.from_pretrained(tiny["peaky"]).eval()
    ref = torch.cat([_logits_entropy(model, tok(line["prompt"]).input_ids, tok(r).input_ids)
                     for r in line["responses"]])
    assert stats["n_tokens"] == ref.numel() == sum(len(r.encode()) for r in line["responses"])  # one token a byte
    assert ref.max() - ref.min() > 1.0  # a real spread of entropies (teacher-forced varied text)
    assert stats["p80"] == pytest.approx(torch.quantile(ref, 0.8).item(), abs=1e-4)
    assert stats["mean"] == pytest.approx(ref.mean().item(), abs=1e-4)  # scored after the line's own prompt
    other = torch.cat([_logits_entropy(model, tok("User:\\n1+1?\\n").input_ids, tok(r).input_ids)
                       for r in line["responses"]])
    assert abs(other.mean().item() - ref.mean().item()) > 1e-2  # so the prompt matters at this tolerance


def test_analyze_overlap_self_is_100_and_writes_next_to_run(tiny, problems, run_dir):
    rc = cli(["analyze", "overlap", f"run={run_dir.parent}", f"base={tiny['b']}", f"problems={problems}", "k=2",
              "max_new_tokens=10", "rho=0.2"])
    assert rc == 0
    out = run_dir.parent / "analysis"  # grid cell layout: <cell>/analysis
    df = pd.read_csv(out / "overlap.csv").set_index("checkpoint")
    assert list(df.index) == ["base", "checkpoint-1", "checkpoint-2", "final"]
    assert list(df.step) == [0, 1, 2, 3]  # final's step from metrics.jsonl
    assert df.loc["final", "overlap_vs_final_pct"] == 100.0
    assert df.loc["checkpoint-2", "overlap_vs_final_pct"] == 100.0  # same weights as final
    assert df.loc["base", "overlap_vs_base_pct"] == 100.0
    assert df.loc["checkpoint-1", "overlap_vs_base_pct"] == 100.0  # checkpoint-1 is the base's weights (seed 1)
    assert df.loc["base", "overlap_vs_final_pct"] < 100.0  # different random model
    assert (out / "overlap.png").exists() and (out / "overlap.provenance.json").exists()


def test_analyze_shift_bins_and_percentiles(tiny, problems, run_dir, tmp_path):
    rc = cli(["analyze", "shift", f"run={run_dir}", f"base={tiny['b']}", f"problems={problems}", "k=2",
              "max_new_tokens=10", "n_bins=5", f"out={tmp_path}"])
    assert rc == 0
    bins = pd.read_csv(tmp_path / "shift_bins.csv")
    pct = pd.read_csv(tmp_path / "shift.csv")
    assert len(bins) == 5 and (pct.n_tokens == bins.n_tokens.sum()).all()  # every token in one bin
    assert bins.base_entropy_mean.is_monotonic_increasing  # bins are ordered by base entropy
    torch.testing.assert_close(torch.tensor(bins.entropy_change_mean.values),
                               torch.tensor((bins.after_entropy_mean - bins.base_entropy_mean).values))
    assert list(pct.checkpoint) == ["base", "checkpoint-1", "checkpoint-2", "final"]
    row = pct.set_index("checkpoint")
    assert row.loc["checkpoint-2", "p80"] == pytest.approx(row.loc["final", "p80"])  # same weights
    assert row.loc["checkpoint-1", "p80"] == pytest.approx(row.loc["base", "p80"])
    assert (tmp_path / "shift.png").exists()


def test_shift_with_base_equal_final_has_zero_change(tiny, problems, run_dir, tmp_path):
    rc = cli(["analyze", "shift", f"run={run_dir}", f"base={tiny['a']}", f"problems={problems}", "k=1",
              "max_new_tokens=8", "n_bins=4", "entropy_impl=trl", f"out={tmp_path}"])  # TRL's path end to end
    assert rc == 0
    bins = pd.read_csv(tmp_path / "shift_bins.csv")
    assert bins.entropy_change_mean.abs().max() < 1e-6


def _tiny_logits(path):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path).eval()
    with torch.no_grad():
        model.lm_head.weight.mul_(40.0)  # spread the entropies of the random model (tied: embeddings too)
        return model, model(torch.tensor([list(range(4, 60))])).logits[0]  # [56, V]


def test_processor_on_tiny_model_identity_and_low_entropy_greedy(tiny):
    _, logits = _tiny_logits(tiny["a"])
    h = entropy_from_logits(logits)
    assert h.min() < h.median() < h.max()
    assert torch.equal(EntropyTemperatureProcessor(1.0, 1.0)(None, logits), logits)
    thr = float(h.median())
    out = EntropyTemperatureProcessor(t_high=1.0, t_low=0.0, threshold=thr)(None, logits)
    probs = out.softmax(-1)
    low = h <= thr
    assert low.any() and (~low).any()
    onehot = torch.nn.functional.one_hot(logits.argmax(-1), logits.shape[-1]).float()
    torch.testing.assert_close(probs[low], onehot[low])  # low-entropy positions: greedy
    torch.testing.assert_close(probs[~low], logits[~low].softmax(-1))  # high-entropy positions: unchanged at T=1


def test_processor_in_hf_generate(tiny):
    from transformers import AutoTokenizer, LogitsProcessorList

    model, _ = _tiny_logits(tiny["a"])
    tok = AutoTokenizer.from_pretrained(tiny["a"])
    ids = torch.tensor([tok("User:\nhi\nAssistant:\n").input_ids])
    kw = dict(attention_mask=torch.ones_like(ids), max_new_tokens=12, pad_token_id=tok.pad_token_id)

    def sample(procs):
        torch.manual_seed(3)
        return model.generate(ids, do_sample=True, temperature=1.0, top_k=0, top_p=1.0, num_return_sequences=3,
                              logits_processor=LogitsProcessorList(procs), **kw)
    assert torch.equal(sample([EntropyTemperatureProcessor(1.0, 1.0)]), sample([]))  # T_high = T_low = 1: unchanged
    greedy = model.generate(ids, do_sample=False, **kw)
    all_low = sample([EntropyTemperatureProcessor(t_high=1.0, t_low=0.0, threshold=1e9)])  # every position is "low"
    assert all(torch.equal(row, greedy[0]) for row in all_low)


def test_analyze_temperature_scores_each_setting_through_evaluate(tiny, math_data_dir, tmp_path):
    rc = cli(["analyze", "temperature", f"model_path={tiny['a']}", "tasks=[aime2024]", f"data_dir={math_data_dir}",
              "n_problems=2", "k=2", "max_new_tokens=6", "t_high=[1.0]", "t_low=[0.0,1.0]", f"out={tmp_path}"])
    assert rc == 0
    df = pd.read_csv(tmp_path / "temperature.csv")
    acc = df[df.metric.str.startswith("avg@")]
    assert sorted(zip(acc.t_high, acc.t_low)) == [(1.0, 0.0), (1.0, 1.0)]
    assert acc.value.between(0, 100).all() and (acc.n_problems == 2).all()
    replay = read_jsonl(tmp_path / "temperature" / "th1_tl0" / "replay.jsonl")
    assert len(replay) == 2 and all(len(r["responses"]) == 2 and r["task"] == "aime2024" for r in replay)
    assert (tmp_path / "temperature" / "th1_tl0" / "summary.csv").exists()  # written by evaluate()
    assert (tmp_path / "temperature.png").exists()


@pytest.mark.parametrize("args", [
    ["overlap"],  # run is required
    ["overlap", "run=/nonexistent/run", "problems=/nonexistent.jsonl"],
    ["entropy", "model_path=x", "problems=/nonexistent.jsonl", "out=/tmp/x"],
    ["entropy", "model_path=x", "samples=/nonexistent/dir", "out=/tmp/x"],
    ["temperature", "model_path=x", "data_dir=/nonexistent", "out=/tmp/x"],
    ["temperature", "model_path=x", "sweep=diagonal", "out=/tmp/x"],
    ["shift", "run=/tmp", "n_bins=0", "out=/tmp/x"],
    ["entropy", "model_path=x", "k=0", "out=/tmp/x"],
    ["entropy", "model_path=x", "problems=/dev/null", "entropy_impl=fused", "out=/tmp/x"],
])
def test_bad_config_fails_before_loading_a_model(args, capsys):
    assert cli(["analyze", *args]) == 2
    assert "config error" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["entropy", "overlap", "shift", "temperature"])
def test_analyze_config_composes_and_every_key_is_documented(name):
    from harness.core.config import load_config
    from harness.core.io import CONFIG_DIR

    cfg = load_config(f"analyze/{name}", ["out=/tmp/x"])
    assert cfg.out == "/tmp/x"
    lines = (CONFIG_DIR / "analyze" / f"{name}.yaml").read_text().splitlines()
    for key in cfg:
        line = next(x for x in lines if x.startswith(f"{key}:"))
        assert "  # " in line, f"configs/analyze/{name}.yaml: key {key!r} has no comment"


@pytest.mark.slow
def test_overlap_on_a_real_tiny_training_run(math_data_dir, tmp_path):
    """trainers/train.py writes checkpoints/, final/, base_model/ (tiny) and metrics.jsonl; overlap reads them."""
    run = tmp_path / "run"
    assert cli(["train", "model=tiny", "trainer=dapo_cpu", "data=local", "trainer.max_steps=2", "trainer.save_steps=1",
                f"data.path={math_data_dir / 'math500.jsonl'}", f"out={run}"]) == 0
    assert cli(["analyze", "overlap", f"run={run}", f"problems={math_data_dir / 'math500.jsonl'}", "n_problems=2",
                "k=2", "max_new_tokens=16"]) == 0  # base model found at <run>/base_model
    df = pd.read_csv(run / "analysis" / "overlap.csv").set_index("checkpoint")
    # checkpoint-2 holds the final model's weights: scored once, as `final`
    assert list(df.index) == ["base", "checkpoint-1", "final"]
    assert df.loc["final", "overlap_vs_final_pct"] == 100.0 and df.loc["base", "overlap_vs_base_pct"] == 100.0
