"""What the curves need apart from what resuming needs: weights/step-N (the weights alone, every save_weights_steps)
next to TRL's full checkpoints (every save_steps, the last save_total_limit kept)."""
import pytest
import torch
from safetensors.torch import load_file

from harness.core import rundir
from harness.core.config import load_config
from trainers.train import train

pytestmark = pytest.mark.slow


def test_weights_for_curves_apart_from_states_for_resuming(tmp_path):
    out = train(load_config("train", [f"out={tmp_path / 'run'}", "trainer.max_steps=4", "trainer.save_steps=1",
                                      "trainer.save_total_limit=3", "trainer.save_weights_steps=2",
                                      "trainer.max_completion_length=16", "trainer.overlong_buffer=4"]))
    # full states: steps 1..4 written, the last three kept, each with the optimizer
    assert sorted(rundir.complete_checkpoints(out)) == [2, 3, 4]
    assert all((p / "optimizer.pt").exists() for p in rundir.complete_checkpoints(out).values())
    # weights alone: step 2 only (step 4 is final/), no optimizer, a tokenizer so it evaluates on its own
    w = out / "weights"
    assert sorted(p.name for p in w.iterdir()) == ["step-2"]
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in (w / "step-2").iterdir()}
    assert not (w / "step-2" / "optimizer.pt").exists()
    # they are the model of step 2: equal to the full state's weights of that step
    a, b = load_file(w / "step-2" / "model.safetensors"), load_file(out / "checkpoints" / "checkpoint-2" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], v) for k, v in load_file(out / "final" / "model.safetensors").items())
    # what evaluation and analyses read: the weights folder where there is one, else the checkpoint
    assert rundir.saved_weights(out) == {2: w / "step-2", 3: out / "checkpoints" / "checkpoint-3",
                                         4: out / "checkpoints" / "checkpoint-4"}
