"""vLLM rollouts through TRL (`trainer.use_vllm`, colocate mode), with two departures from TRL 1.16's code.

1. The engine runs in the trainer's dtype. TRL builds `vllm.LLM` without a dtype, and vLLM's "auto" runs a
   float32 checkpoint in bfloat16 (its CPU backend) or float16, so the rollouts would come from a rounded copy
   of the policy (measured on the mini model: |log p_trainer - log p_engine| = 2e-3 per token before any update,
   against ~1e-6 in float32).
2. On vLLM's CPU backend the weights are synced with vLLM's own in-place reload. TRL pushes one parameter at a
   time with `model.load_weights([(name, tensor)])`; the CPU backend repacks each linear layer's weight into a
   oneDNN or SGL kernel after loading and replaces the parameter by an empty one, so that call fails there (vLLM
   0.31/0.32 CPU: `AttributeError: 'Parameter' object has no attribute 'weight_loader'`).
   `model_runner.reload_weights` restores each layer, loads it and repacks it again; a tied lm_head (the
   embedding's weight) is repacked after it, which the reload does not do (without it the engine samples from
   the old output embedding: measured, log p of the top token -0.18 in the engine against -1.28 in the trainer
   after scaling the embedding). GPU engines keep TRL's path.

Both live in `HarnessVLLMGeneration`, a subclass of TRL's `VLLMGeneration`; `harness_engine(dtype)` makes
GRPOTrainer build that class while it is constructed (TRL offers no hook for either).
"""
from __future__ import annotations

import functools
from contextlib import contextmanager

from trl.generation import vllm_generation
from trl.generation.vllm_generation import VLLMGeneration


def engine_repacks_weights() -> bool:
    """True on vLLM's CPU backend (linear weights are repacked into kernels after loading)."""
    from vllm.platforms import current_platform

    return current_platform.is_cpu()


class HarnessVLLMGeneration(VLLMGeneration):
    """TRL's VLLMGeneration with the engine in `engine_dtype` and, where vLLM repacks weights, a reload-based
    weight sync (module docstring)."""

    engine_dtype: str = "auto"

    def _init_vllm(self):
        llm = vllm_generation.LLM
        vllm_generation.LLM = functools.partial(llm, dtype=self.engine_dtype)
        try:
            super()._init_vllm()
        finally:
            vllm_generation.LLM = llm

    def sync_weights(self):
        if self.mode != "colocate" or not engine_repacks_weights():
            return super().sync_weights()
        runner = self.llm.llm_engine.model_executor.driver_worker.model_runner
        runner.reload_weights(weights_iterator=self._iter_named_params(), is_checkpoint_format=True)
        repack_tied_modules(runner.get_model())
        self.llm.reset_prefix_cache()


def repack_tied_modules(model) -> list[str]:
    """Repack the kernels of modules whose weight is another module's (a tied lm_head): vLLM's reload processes
    only the module the checkpoint names (embed_tokens), and on the CPU backend the lm_head keeps a packed copy of
    the old embedding otherwise. Returns the names of the modules repacked."""
    import torch

    owners, done = set(), []
    for name, module in model.named_modules():
        w = getattr(module, "weight", None)
        if not isinstance(w, torch.nn.Parameter):
            continue
        method = getattr(module, "quant_method", None)
        if id(w) in owners and hasattr(method, "process_weights_after_loading"):
            method.process_weights_after_loading(module)
            done.append(name)
        owners.add(id(w))
    return done


@contextmanager
def harness_engine(dtype: str):
    """While active, TRL's GRPOTrainer builds `HarnessVLLMGeneration` with its engine in `dtype`
    (e.g. "float32", "bfloat16": the training model's)."""
    from trl.trainer import grpo_trainer

    cls = type("HarnessVLLMGeneration", (HarnessVLLMGeneration,), {"engine_dtype": dtype})
    built = grpo_trainer.VLLMGeneration
    grpo_trainer.VLLMGeneration = cls
    try:
        yield
    finally:
        grpo_trainer.VLLMGeneration = built
