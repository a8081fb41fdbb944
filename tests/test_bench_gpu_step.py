"""benchmarks/bench_gpu_step.py: the reduced (--cpu-smoke) mode runs the whole path on the CPU; sizes and guards."""
import importlib.util
import json
import math
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


def _bench(name="bench_gpu_step"):
    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_cpu_smoke_writes_every_measurement(tmp_path):
    bench = _bench()
    out = tmp_path / "gpu_step.json"
    assert bench.main(["--cpu-smoke", "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["benchmark"] == "bench_gpu_step" and "git_hash" in res and res["stopped_early"] is False
    assert res["gradient_checkpointing_on"] == {"smoke": True}
    (row,) = res["results"]
    assert (row["model"], row["length"], row["tokens"]) == ("smoke", 64, 2 * (16 + 64))
    assert set(row["variants"]) == {"full", "top20", "top20_quantile"}
    for v in row["variants"].values():
        assert v["n"] == 2 and 0 < v["min_s"] <= v["median_s"] and v["tokens_per_s"] > 0
        assert v["peak_gib"] is None  # CPU: no CUDA memory statistics
    m = row["micro"]
    assert "head_error" not in m, m.get("head_error")
    for k in ("head_logp_s", "head_logp_entropy_s", "entropy_from_logits_s", "select_topk_s", "select_quantile_s"):
        assert m[k] > 0, k


def test_budget_guard_stops_early_and_still_writes(tmp_path):
    out = tmp_path / "cut.json"
    assert _bench().main(["--cpu-smoke", "--max-seconds", "1e-9", "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["stopped_early"] is True and res["results"] == []


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message shown without CUDA")
def test_without_cuda_exits_nonzero_with_a_message(tmp_path, capsys):
    assert _bench().main(["--out", str(tmp_path / "x.json")]) == 2
    assert "CUDA is not available" in capsys.readouterr().err
    assert not (tmp_path / "x.json").exists()


def test_loss_path_sends_gradient_through_checkpointed_layers(tmp_path):
    bench = _bench()
    model = bench.build_model("smoke", torch.device("cpu"), "sdpa")
    trainer = bench.make_dapo_trainer(model, 2, 64, str(tmp_path / "run"), cuda=False)
    assert bench.checkpointing_on(trainer.model)
    batch = _bench("bench_step").synthetic_batch(1000, 2, 16, 64, torch.device("cpu"))
    trainer.dapo.mask_mode, trainer.dapo.mask_rho, trainer.dapo.mask_selection = bench.VARIANTS["top20"]
    trainer._plan_mini_batch([batch])
    trainer._compute_loss(trainer.model, batch).backward()
    g = trainer.model.model.layers[0].mlp.down_proj.weight.grad
    assert g is not None and g.abs().sum() > 0


@pytest.mark.parametrize("name,non_embedding", [("qwen3-0.6b", 0.44e9), ("qwen3-1.7b", 1.4e9)])
def test_model_sizes_match_published_qwen3(name, non_embedding):
    bench = _bench()
    from transformers import Qwen3Config, Qwen3ForCausalLM

    with torch.device("meta"):
        model = Qwen3ForCausalLM(Qwen3Config(**bench.MODELS[name]))
    n = sum(p.numel() for p in model.parameters())  # tied: the embedding is counted once
    emb = 151936 * model.config.hidden_size
    assert math.isclose(n - emb, non_embedding, rel_tol=0.03), (n, emb)
    # the default run (micro-batch 2 x (512 + 8192) tokens) is estimated to fit an H200 (~139 GiB) with room
    assert bench.estimate_step_bytes(n, bench.MODELS[name], 2, 512 + 8192) < 100 * bench.GIB
