"""`harness train ARGS` in one process of a launched run (accelerate launch / torchrun), recording what this rank's
trainer decided, for tests/test_processes.py to check against one process holding both ranks' data.

Recorded (nothing is replaced: each wrapper calls the real method and keeps copies of its inputs and result), saved
to $RECORD_DIR/rank<R>.pt when the run ends:
- `setup`: accelerate's distributed type, the torch.distributed backend, the DeepSpeed ZeRO stage (or None);
- `select`: every mask-pool selection (`DAPOTrainer._select`): step, pool index, the pool's entropies, valid
  tokens and the selected mask on this rank;
- `rounds`: every generation round of dynamic sampling: this rank's task rewards and completions (token lists);
- `batches`: every training batch dynamic sampling returned: its completions and fill flags.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

_CALLS: list[int] = []


def rank_staggered_reward(completions, **kw):
    """Rewards that need the cross-rank refill decision: rank 0 gets 0/1 alternating (every group of 4 kept) on every
    call; rank 1, on its first call, the same for its first group and all 0 for the rest (dropped), then
    alternating. So rank 0 is full after one round and must still take part in the second one rank 1 needs."""
    _CALLS.append(len(completions))
    alternating = [float(i % 2) for i in range(len(completions))]
    if os.environ.get("RANK") == "1" and len(_CALLS) == 1:
        return alternating[:4] + [0.0] * (len(completions) - 4)
    return alternating


def _tokens(batch: dict) -> list[list[int]]:
    ids, mask = batch["completion_ids"].cpu(), batch["completion_mask"].cpu().bool()
    return [row[m].tolist() for row, m in zip(ids, mask)]


def _install_recorders(record: dict) -> None:
    import torch
    from trl import GRPOTrainer

    from trainers import dapo

    select, generate, dapo_generate = (dapo.DAPOTrainer._select, GRPOTrainer._generate_and_score_completions,
                                       dapo.DAPOTrainer._generate_and_score_completions)

    def _select(self, entropy, valid, pool_index):
        mask = select(self, entropy, valid, pool_index)
        plugin = self.accelerator.state.deepspeed_plugin
        record["setup"] = {"distributed_type": str(self.accelerator.distributed_type),
                           "backend": str(torch.distributed.get_backend()),
                           "zero_stage": plugin.zero_stage if plugin else None}
        record["select"].append({"step": self.state.global_step, "pool": pool_index,
                                 "entropy": entropy.detach().float().cpu().clone(), "valid": valid.cpu().clone(),
                                 "mask": mask.cpu().clone()})
        return mask

    def _generate(self, inputs):  # one generation round (DAPOTrainer calls it through super())
        out = generate(self, inputs)
        if self.model.training:
            n = out["completion_mask"].size(0)
            record["rounds"].append({"step": self.state.global_step,
                                     "rewards": self._local_task_rewards(n).cpu().tolist(), "tokens": _tokens(out)})
        return out

    def _dapo_generate(self, inputs):  # the training batch dynamic sampling assembled
        out = dapo_generate(self, inputs)
        if self.model.training:
            record["batches"].append({"step": self.state.global_step, "tokens": _tokens(out),
                                      "fill": out[dapo.FILL].cpu().tolist()})
        return out

    dapo.DAPOTrainer._select = _select
    GRPOTrainer._generate_and_score_completions = _generate
    dapo.DAPOTrainer._generate_and_score_completions = _dapo_generate


def main(argv: list[str]) -> int:
    import torch

    from harness.cli import main as cli

    record: dict = {"select": [], "rounds": [], "batches": []}
    _install_recorders(record)
    status = cli(["train", *argv])
    torch.save(record, Path(os.environ["RECORD_DIR"]) / f"rank{os.environ.get('RANK', '0')}.pt")
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
