"""`harness train ...`: one DAPO run with an entropy token mask into a run directory.

`train(cfg) -> Path` validates the whole config before any model is loaded (ConfigError naming the problem and
listing the valid choices), then writes into `cfg.out`:
    config.yaml, provenance.json              resolved config; provenance (git hash, versions, host, config sha256)
    metrics.jsonl                             one line per optimiser step (docs/training.md lists the fields)
    checkpoints/checkpoint-N/                 TRL checkpoints (full state, for resuming) every `trainer.save_steps`
                                              steps (0 = none), the last `trainer.save_total_limit` kept
    weights/step-N/                           the weights alone every `trainer.save_weights_steps` steps (0 = none):
                                              what evaluation curves and analyses read
    final/                                    save_pretrained layout of the final model + tokenizer
    summary.json                              written last: steps, wall time, provenance (harness/core/rundir.py)
    base_model/                               only for model=tiny: the random model it starts from
`resume=true` continues from the last checkpoint in `out/checkpoints` (metrics lines after it are dropped);
a run whose `final/` and `summary.json` exist is returned as it is.

The trainer preset schema is `TrainerSpec` below; each field is documented in docs/training.md.
"""
from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from harness.core.config import ConfigError, require_choice, require_output_dir, require_seed, to_dict
from harness.core import rundir
from harness.core.io import (atomic_write_json, atomic_write_jsonl, atomic_write_text, progress_bars,
                             provenance, read_jsonl)

DTYPES = ("float32", "bfloat16", "float16")


@dataclass
class TrainerSpec:
    """A trainer preset (configs/trainer/*.yaml): every field is required (a preset may inherit another with a
    Hydra defaults list); values live in the YAML files, meanings in docs/training.md."""
    name: str
    prompts_per_rollout: int  # prompts per generation batch
    prompts_per_update: int  # prompts per optimiser step (mini-batch)
    num_generations: int  # responses per prompt (G)
    micro_batch_size: int  # completions per forward/backward per device (memory only)
    micro_batching: str  # fixed | token_budget: what a mask pool and a token mean span (docs/training.md)
    micro_batch_tokens: int | None  # token_budget: tokens per pool and rank (prompt + response)
    num_iterations: int  # passes over each rollout batch
    max_steps: int  # optimiser steps
    learning_rate: float
    lr_scheduler_type: str
    warmup_steps: int
    warmup_unit: str  # step | rollout: what warmup_steps counts
    weight_decay: float
    max_grad_norm: float
    adam_beta1: float
    adam_beta2: float
    max_completion_length: int
    temperature: float
    top_p: float
    epsilon_low: float
    epsilon_high: float
    dual_clip: float | None
    log_ratio_clamp: float | None
    dynamic_sampling: bool
    max_num_gen_batches: int
    prompts_per_generation: int | None  # prompts per generation round of dynamic sampling; null = the rollout batch
    overlong_buffer: int  # 0 = no overlong shaping
    overlong_penalty: float
    mask_truncated: bool
    mask_selection: str
    mask_scope: str
    loss_normalizer: str
    scale_rewards: str
    bf16: bool
    fp32_master_weights: bool  # load the weights in float32 whatever model.dtype says (bf16 = compute only)
    gradient_checkpointing: bool
    use_vllm: bool
    vllm_mode: str  # colocate (the only mode: docs/runner.md says why)
    vllm: dict  # the rollout engine's settings (VLLMRollouts)
    save_steps: int  # full resumable state every N steps; 0 = none
    save_total_limit: int | None  # full states kept (the last ones); null = all
    save_weights_steps: int  # the weights alone every N steps, for evaluation and analyses; 0 = none
    report_to: str  # none | tensorboard | wandb (TRL's report_to)


@dataclass
class VLLMRollouts:
    """`trainer.vllm`: the rollout engine when `use_vllm` is true (TRL's colocate mode: one engine per group of
    `tensor_parallel_size` training processes, on their GPUs). Every field is required; meanings in
    docs/training.md."""
    tensor_parallel_size: int  # GPUs per engine (TRL vllm_tensor_parallel_size); divides the number of processes
    gpu_memory_utilization: float  # share of each GPU's memory the engine takes (vLLM's CPU backend: of the RAM)
    max_model_length: int | None  # context (prompt + response); null = the model's
    enable_sleep_mode: bool  # free the engine's weights and KV cache during the optimiser step
    cpu_kv_cache_gib: int | None  # vLLM's CPU backend only: KV cache size (VLLM_CPU_KVCACHE_SPACE); null = vLLM's


def check_vllm(v: dict, spec: TrainerSpec, world: int) -> VLLMRollouts:
    """`trainer.vllm` as VLLMRollouts; ConfigError naming the key, the value and what is valid."""
    if not isinstance(v, dict):
        raise ConfigError(f"trainer.vllm={v!r} must be a mapping of {', '.join(VLLMRollouts.__annotations__)}")
    valid = [f.name for f in dataclasses.fields(VLLMRollouts)]
    unknown, missing = sorted(set(v) - set(valid)), [k for k in valid if k not in v]
    if unknown:
        raise ConfigError(f"unknown trainer.vllm keys: {', '.join(unknown)}; valid keys: {', '.join(valid)}")
    if missing:
        raise ConfigError(f"trainer.vllm lacks keys: {', '.join(missing)}")
    r = VLLMRollouts(**v)
    tp = r.tensor_parallel_size
    if isinstance(tp, bool) or not isinstance(tp, int) or tp < 1:
        raise ConfigError(f"trainer.vllm.tensor_parallel_size={tp!r} must be a positive integer")
    if spec.use_vllm and "WORLD_SIZE" in os.environ and world % tp:  # a launched run (a grid plans in one process)
        raise ConfigError(f"trainer.vllm.tensor_parallel_size={tp} must divide the number of training processes "
                          f"({world})")
    g = r.gpu_memory_utilization
    if isinstance(g, bool) or not isinstance(g, (int, float)) or not 0 < g <= 1:
        raise ConfigError(f"trainer.vllm.gpu_memory_utilization={g!r} must be in (0, 1]")
    m = r.max_model_length
    if m is not None and (isinstance(m, bool) or not isinstance(m, int) or m <= spec.max_completion_length):
        raise ConfigError(f"trainer.vllm.max_model_length={m!r} must be null or an integer above "
                          f"trainer.max_completion_length={spec.max_completion_length} (prompt + response)")
    if not isinstance(r.enable_sleep_mode, bool):
        raise ConfigError(f"trainer.vllm.enable_sleep_mode={r.enable_sleep_mode!r} must be true or false")
    k = r.cpu_kv_cache_gib
    if k is not None and (isinstance(k, bool) or not isinstance(k, int) or k < 1):
        raise ConfigError(f"trainer.vllm.cpu_kv_cache_gib={k!r} must be null or a positive integer (GiB)")
    return r


@dataclass
class Plan:
    """Everything `train` needs, checked before any model is loaded."""
    out: Path
    spec: TrainerSpec
    dapo: Any  # trainers.dapo.DAPOOptions
    model: dict
    loader: Callable
    reward: Callable
    grad_accum: int
    steps_per_generation: int
    log: dict  # run_name, group, project (configs/train.yaml `log`)
    vllm: VLLMRollouts


def import_path(spec: str, what: str) -> Callable:
    """`module:function` -> the function; ConfigError naming `what` when it cannot be imported."""
    if not isinstance(spec, str) or spec.count(":") != 1:
        raise ConfigError(f"{what}={spec!r} must be an import path 'module:function'")
    mod, fn = spec.split(":")
    try:
        obj = getattr(importlib.import_module(mod), fn)
    except (ImportError, AttributeError) as e:
        raise ConfigError(f"{what}={spec!r} cannot be imported: {e}") from e
    if not callable(obj):
        raise ConfigError(f"{what}={spec!r} is not callable")
    return obj


def _positive_int(spec: TrainerSpec, *names: str) -> None:
    for n in names:
        v = getattr(spec, n)
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ConfigError(f"trainer.{n}={v!r} must be a positive integer")


def validate(cfg, files: bool = True) -> Plan:
    """Check every part of the config; raise ConfigError naming the first problem. `files=False` (a grid checked
    before its first cell runs, or its dry run) leaves out what depends on this machine: the output folder, the
    model folder and the data file."""
    from trainers.dapo import DAPOOptions

    c = to_dict(cfg)
    for key in ("out", "model", "trainer", "mask", "data", "seed"):
        if c.get(key) is None:
            raise ConfigError(f"{key} is required" + (" (the run directory: out=DIR)" if key == "out" else ""))
    if files:
        require_output_dir(c["out"], "out")
    require_seed(c["seed"])
    valid = [f.name for f in dataclasses.fields(TrainerSpec)]
    unknown = sorted(set(c["trainer"]) - set(valid))
    if unknown:
        raise ConfigError(f"unknown trainer keys: {', '.join(unknown)}; valid keys: {', '.join(valid)}")
    missing = [k for k in valid if k not in c["trainer"]]
    if missing:
        raise ConfigError(f"trainer preset {c['trainer'].get('name')!r} lacks keys: {', '.join(missing)} "
                          "(start it with `defaults: [dapo_cpu, _self_]` to inherit them)")
    spec = TrainerSpec(**c["trainer"])
    _positive_int(spec, "prompts_per_rollout", "prompts_per_update", "num_generations", "micro_batch_size",
                  "num_iterations", "max_steps", "max_completion_length", "max_num_gen_batches")
    for n in ("learning_rate", "temperature", "top_p", "epsilon_low", "epsilon_high", "max_grad_norm"):
        v = getattr(spec, n)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0:
            raise ConfigError(f"trainer.{n}={v!r} must be a positive number")
    if spec.num_generations < 2:
        raise ConfigError("trainer.num_generations must be >= 2 (group-relative advantages)")
    if not 0 <= spec.overlong_buffer <= spec.max_completion_length:
        raise ConfigError(f"trainer.overlong_buffer={spec.overlong_buffer} must be in [0, max_completion_length]")
    for n in ("save_steps", "save_weights_steps"):
        v = getattr(spec, n)
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise ConfigError(f"trainer.{n}={v!r} must be an integer >= 0 (0 = none)")
    require_choice(spec.scale_rewards, ("group", "batch", "none"), "trainer.scale_rewards")
    if spec.vllm_mode != "colocate":
        raise ConfigError(f"trainer.vllm_mode={spec.vllm_mode!r} is not supported; the only mode is colocate (vLLM "
                          "on the training GPUs, as the released code). TRL's server mode syncs weights only over "
                          "NCCL and needs a server the launcher does not start (docs/runner.md)")
    require_choice(spec.report_to, ("none", "tensorboard", "wandb", "trackio"), "trainer.report_to")
    if spec.report_to != "none" and importlib.util.find_spec(spec.report_to) is None:
        raise ConfigError(f"trainer.report_to={spec.report_to} needs the {spec.report_to} package (pip install "
                          f"{spec.report_to}; tensorboard and wandb come with pip install -e '.[log]'), "
                          "or pass trainer.report_to=none")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if spec.prompts_per_rollout % spec.prompts_per_update:
        raise ConfigError(f"trainer.prompts_per_rollout={spec.prompts_per_rollout} must be a multiple of "
                          f"trainer.prompts_per_update={spec.prompts_per_update}")
    per_update = spec.prompts_per_update * spec.num_generations
    if per_update % (spec.micro_batch_size * world):
        raise ConfigError(f"prompts_per_update * num_generations = {per_update} completions must be a multiple of "
                          f"micro_batch_size * processes = {spec.micro_batch_size} * {world}")
    if spec.prompts_per_rollout % world:
        raise ConfigError(f"trainer.prompts_per_rollout={spec.prompts_per_rollout} must be a multiple of the "
                          f"number of processes ({world}) so each rank holds whole prompt groups")
    grad_accum = per_update // (spec.micro_batch_size * world)
    gen = spec.prompts_per_generation
    if gen is not None and (isinstance(gen, bool) or not isinstance(gen, int) or gen < spec.prompts_per_rollout
                            or gen % world):
        raise ConfigError(f"trainer.prompts_per_generation={gen!r} must be null (the rollout batch) or an integer at "
                          f"least trainer.prompts_per_rollout={spec.prompts_per_rollout} and a multiple of the number "
                          f"of processes ({world})")
    if not spec.dynamic_sampling and gen not in (None, spec.prompts_per_rollout):
        raise ConfigError(f"trainer.prompts_per_generation={spec.prompts_per_generation} must equal "
                          f"trainer.prompts_per_rollout={spec.prompts_per_rollout} when dynamic_sampling=false "
                          "(nothing would choose among the extra groups)")
    if spec.warmup_unit == "rollout" and spec.lr_scheduler_type != "constant_with_warmup":
        raise ConfigError(f"trainer.warmup_unit=rollout is the released constant schedule with warm-up: it needs "
                          f"trainer.lr_scheduler_type=constant_with_warmup, got {spec.lr_scheduler_type!r}")
    if spec.micro_batching == "token_budget" and isinstance(spec.micro_batch_tokens, int) and \
            spec.micro_batch_tokens < spec.max_completion_length:
        raise ConfigError(f"trainer.micro_batch_tokens={spec.micro_batch_tokens} must hold at least one response "
                          f"(>= max_completion_length={spec.max_completion_length}; released: 22528 x 8)")
    steps_per_generation = grad_accum * (spec.prompts_per_rollout // spec.prompts_per_update)
    rollouts = check_vllm(spec.vllm, spec, world)

    m = c["mask"]
    try:
        dapo = DAPOOptions(mask_mode=m.get("mode"), mask_rho=m.get("rho"), mask_selection=spec.mask_selection,
                           mask_scope=spec.mask_scope, loss_normalizer=spec.loss_normalizer,
                           micro_batching=spec.micro_batching, micro_batch_tokens=spec.micro_batch_tokens,
                           dual_clip=spec.dual_clip, log_ratio_clamp=spec.log_ratio_clamp,
                           dynamic_sampling=spec.dynamic_sampling, max_num_gen_batches=spec.max_num_gen_batches,
                           generation_prompts=(gen or spec.prompts_per_rollout) // world,
                           warmup_unit=spec.warmup_unit,
                           updates_per_rollout=spec.prompts_per_rollout // spec.prompts_per_update
                           * spec.num_iterations, seed=int(c["seed"]))
    except ValueError as e:
        raise ConfigError(str(e)) from e

    model = c["model"]
    require_choice(model.get("dtype", "float32"), DTYPES, "model.dtype")
    path = model.get("path")
    if model.get("prepare"):
        import_path(model["prepare"], "model.prepare")
    elif not files:
        pass
    elif not path and not model.get("tiny"):
        raise ConfigError(model.get("path_hint") or f"model={model.get('name')}: model.path is required")
    elif path and _is_local(path) and not _local(path).exists():
        raise ConfigError(f"model.path={path} does not exist")

    data = c["data"]
    loader = import_path(data.get("loader"), "data.loader")
    reward = import_path(data.get("reward"), "data.reward")
    if files:
        _check_data_file(data)
    return Plan(Path(c["out"]), spec, dapo, model, loader, reward, grad_accum, steps_per_generation,
                dict(c.get("log") or {}), rollouts)


def _check_data_file(data: dict) -> None:
    """A data preset that reads a file (`data.path`): the file is given (unless a hub copy is), exists and has
    rows, before the run folder is written."""
    if "path" not in data:
        return
    path = data.get("path")
    if path in (None, ""):
        if not data.get("hub_id"):
            raise ConfigError("data.path is required: a local JSONL or parquet file of problem/answer rows "
                              "(data.path=FILE)")
        return
    p = Path(str(path)).expanduser()  # as the loaders read it (relative: to the current directory)
    if not p.is_file():
        raise ConfigError(f"data.path={str(path)!r} does not exist" + (" (it is a folder)" if p.is_dir() else "")
                          + ": give a JSONL or parquet file of problem/answer rows")
    if p.stat().st_size == 0 or (p.suffix in (".jsonl", ".json") and not p.read_text(encoding="utf-8").strip()):
        raise ConfigError(f"data.path={str(path)!r} is empty: no training problems")


def _is_local(path: str) -> bool:
    return str(path).startswith(("/", ".", "~"))


def _local(path: str) -> Path:
    """A local model path; relative paths are relative to the current directory."""
    return Path(path).expanduser().absolute()


def resolve_model_path(model_cfg, out_dir: str | Path | None = None, cache_dir: str | Path | None = None) -> str:
    """The model a run starts from, as a local folder or a hub id, prepared on demand.

    - `model.prepare: module:function` (e.g. a warm start): called as `fn(model_cfg)`, returns the folder;
    - `model.tiny` (and no `path`): `build_tiny(**model.tiny)` into `out_dir/base_model`, or, without `out_dir`,
      into `cache_dir` (default `results/cache/tiny` in the current directory) under a name made of the seed and sizes (built once);
    - otherwise `model.path`: a hub id, or a local folder (relative paths are relative to the current directory).
    """
    m = to_dict(model_cfg) if not isinstance(model_cfg, dict) else model_cfg
    if m.get("prepare"):
        return str(import_path(m["prepare"], "model.prepare")(model_cfg))
    path = m.get("path")
    if not path and m.get("tiny"):
        from trainers.tiny import build_tiny

        spec = dict(m["tiny"])
        if out_dir is not None:
            return str(build_tiny(Path(out_dir) / "base_model", **spec))
        root = Path(cache_dir if cache_dir else "results/cache/tiny").absolute()
        cache = root / "-".join(f"{k}{v}" for k, v in sorted(spec.items()))
        if not (cache / "model.safetensors").exists():
            build_tiny(cache, **spec)
        return str(cache)
    if not path:
        raise ConfigError(m.get("path_hint") or f"model={m.get('name')}: model.path is required")
    return str(_local(path)) if _is_local(path) else str(path)


def grpo_args(plan: Plan, seed: int):
    """TRL GRPOConfig from the validated plan."""
    import torch
    from trl import GRPOConfig

    s = plan.spec
    if s.use_vllm and importlib.util.find_spec("vllm") is None:
        raise ConfigError("trainer.use_vllm=true needs vLLM (pip install -e '.[gpu]' on a GPU machine, "
                          "README.md for its CPU build); or pass trainer.use_vllm=false")
    v = plan.vllm
    cpu = not torch.cuda.is_available()
    if cpu:  # DeepSpeed (ZeRO-3 on CPU processes, or only imported by accelerate's unwrap in save_pretrained) takes
        os.environ.setdefault("DS_ACCELERATOR", "cpu")  # its CPU accelerator, named here: no "unable to detect" warning
    return GRPOConfig(
        use_cpu=cpu,  # also makes `torchrun --nproc_per_node N` on CPU a real data-parallel (gloo) run
        **({"ddp_backend": "gloo"} if cpu and int(os.environ.get("WORLD_SIZE", "1")) > 1 else {}),
        output_dir=str(plan.out / "checkpoints"),
        seed=seed,
        per_device_train_batch_size=s.micro_batch_size,
        gradient_accumulation_steps=plan.grad_accum,
        steps_per_generation=plan.steps_per_generation,
        num_generations=s.num_generations,
        num_iterations=s.num_iterations,
        max_steps=s.max_steps,
        learning_rate=s.learning_rate,
        lr_scheduler_type=s.lr_scheduler_type,
        warmup_steps=s.warmup_steps,
        weight_decay=s.weight_decay,
        max_grad_norm=s.max_grad_norm,
        adam_beta1=s.adam_beta1,
        adam_beta2=s.adam_beta2,
        max_completion_length=s.max_completion_length,
        temperature=s.temperature,
        top_p=s.top_p,
        top_k=0,
        loss_type="dapo",
        beta=0.0,
        epsilon=s.epsilon_low,
        epsilon_high=s.epsilon_high,
        scale_rewards=s.scale_rewards,
        mask_truncated_completions=s.mask_truncated,
        bf16=s.bf16,
        **({"gradient_checkpointing": True} if s.gradient_checkpointing else {}),
        use_vllm=s.use_vllm,
        vllm_mode=s.vllm_mode,  # colocate: the released code's layout (verl's hybrid engine)
        vllm_tensor_parallel_size=v.tensor_parallel_size,
        vllm_gpu_memory_utilization=v.gpu_memory_utilization,
        vllm_max_model_length=v.max_model_length,
        vllm_enable_sleep_mode=v.enable_sleep_mode,
        # released code: no correction for the engine's probabilities differing from the trainer's (TRL's default
        # applies one); trainers/dapo.py logs the difference as sampler_logp_diff
        vllm_importance_sampling_correction=False,
        save_strategy="steps" if s.save_steps else "no",
        save_steps=s.save_steps or 500,
        save_total_limit=s.save_total_limit,
        logging_steps=1,
        report_to=[] if s.report_to == "none" else [s.report_to],
        run_name=plan.log.get("run_name") or plan.out.name,
        disable_tqdm=not progress_bars(),  # a bar on a terminal; in a log file one line of metrics per step
        log_completions=False,
        dataloader_num_workers=0,
    )


def _prepare_out(plan: Plan, cfg, resume: bool, write: bool = True) -> str | None:
    """Create the run directory (files only when `write`: the main process); return the checkpoint to resume:
    the last complete one (a half-written one left by a kill is deleted by the main process)."""
    out = plan.out
    metrics = out / "metrics.jsonl"
    if metrics.exists() and not resume:
        raise ConfigError(f"{out} already holds a run (metrics.jsonl); pass resume=true or choose another out=")
    ckpts = rundir.complete_checkpoints(out, drop_partial=write) if resume else {}
    ckpt = str(ckpts[max(ckpts)]) if ckpts else None
    if not write:
        return ckpt
    out.mkdir(parents=True, exist_ok=True)
    if metrics.exists():  # drop lines the resumed run will write again
        last = int(Path(ckpt).name.split("-")[-1]) if ckpt else 0
        atomic_write_jsonl(metrics, [r for r in read_jsonl(metrics) if r.get("step", 0) <= last])
    from omegaconf import OmegaConf

    atomic_write_text(out / rundir.CONFIG, OmegaConf.to_yaml(cfg, resolve=True))
    atomic_write_json(out / rundir.PROVENANCE, provenance(config_sha256=rundir.config_sha256(out), resumed_from=ckpt))
    return ckpt


def save_model_to(trainer, dest: Path) -> None:
    """The trainer's model and tokenizer into `dest` (save_pretrained layout, the model's dtype: 16-bit for the Qwen3
    presets; under ZeRO-3 the shards are gathered, configs/deepspeed/zero3.json), via `.<name>.tmp` and a rename so a
    `dest` on disk is complete. Every rank calls it; the main one writes."""
    from accelerate import PartialState

    state = PartialState()
    tmp = dest.parent / f".{dest.name}.tmp"
    if state.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
    state.wait_for_everyone()
    trainer.save_model(str(tmp))  # gathers sharded weights on every rank, writes on the main one
    if state.is_main_process:
        trainer.processing_class.save_pretrained(str(tmp))
        shutil.rmtree(dest, ignore_errors=True)
        tmp.rename(dest)
    state.wait_for_everyone()


def save_weights_callback(trainer, out: Path, every: int):
    """A TrainerCallback: every `every` optimiser steps (the last step excepted: final/ is that model), the weights
    alone into weights/step-N/ for evaluation curves and analyses. They are kept apart from TRL's checkpoints (full
    states with the optimizer, for resuming, of which `save_total_limit` are kept): a 32B model's weights are 66 GB in
    bf16, its full state about 525 GB (docs/runner.md, "Checkpoints and disk")."""
    from transformers import TrainerCallback

    class SaveWeights(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            step = state.global_step
            if step % every == 0 and step < args.max_steps and not rundir.weights_dir(out, step).exists():
                save_model_to(trainer, rundir.weights_dir(out, step))

    return SaveWeights()


def _logging_env(plan: Plan) -> None:
    """Where TRL's report_to writes: TensorBoard event files in <out>/tensorboard/, W&B files under <out>/wandb/ in
    the run's group and project (transformers' callbacks read these variables when the trainer is built)."""
    if plan.spec.report_to == "tensorboard":
        os.environ["TENSORBOARD_LOGGING_DIR"] = str(plan.out / "tensorboard")
    if plan.spec.report_to == "wandb":
        os.environ["WANDB_DIR"] = str(plan.out)
        os.environ.setdefault("WANDB_PROJECT", str(plan.log.get("project") or "entropy-harness"))
        if plan.log.get("group"):
            os.environ["WANDB_RUN_GROUP"] = str(plan.log["group"])


def _check_vllm_context(dataset, tokenizer, max_model_length: int, max_completion_length: int) -> None:
    """The longest training prompt + max_completion_length must fit trainer.vllm.max_model_length (vLLM would
    otherwise refuse the prompt or cut responses short), checked before the engine starts."""
    prompts = dataset["prompt"]
    if prompts and not isinstance(prompts[0], str):  # conversational: as TRL renders it
        prompts = [tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True) for p in prompts]
    longest = max((len(ids) for ids in tokenizer(list(prompts), add_special_tokens=False)["input_ids"]), default=0)
    if longest + max_completion_length > max_model_length:
        raise ConfigError(f"trainer.vllm.max_model_length={max_model_length} is below the longest training prompt "
                          f"({longest} tokens) + trainer.max_completion_length ({max_completion_length}) = "
                          f"{longest + max_completion_length}")


def make_trainer(cfg, plan: Plan | None = None, reward_funcs: list | None = None, args=None):
    """A ready DAPOTrainer for a validated config (the model is loaded here). `reward_funcs` replaces the data
    config's reward (and the overlong reward) for tests and scripted experiments."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from trainers.dapo import DAPOTrainer
    from trainers.rewards import overlong_reward

    plan = plan or validate(cfg)
    out = plan.out
    args = args or grpo_args(plan, int(cfg.seed))  # TRL's own checks run before the model is loaded
    from accelerate import PartialState

    with PartialState().main_process_first():  # the main process builds or prepares the model first
        model_path = resolve_model_path(cfg.model, out)
    try:
        dataset = plan.loader(cfg.data)  # before the weights: a data problem fails fast
    except (ValueError, FileNotFoundError) as e:
        raise ConfigError(f"data: {e}") from e
    if len(dataset) < plan.spec.prompts_per_rollout:
        raise ConfigError(f"the training set has {len(dataset)} problems, fewer than one rollout batch "
                          f"(trainer.prompts_per_rollout={plan.spec.prompts_per_rollout}): nothing would be trained")
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    s = plan.spec
    # fp32 master weights: the optimiser updates float32 weights and `bf16` only sets the compute dtype (autocast),
    # as the released actor (FSDP: float32 parameters, bf16 mixed precision); else the weights are model.dtype
    dtype = "float32" if s.fp32_master_weights else plan.model.get("dtype", "float32")
    plan.dapo.engine_dtype = plan.model.get("dtype", "float32")  # the rollout engine keeps model.dtype (released: bf16)
    model = AutoModelForCausalLM.from_pretrained(
        model_path, dtype=getattr(torch, dtype),
        **({"attn_implementation": plan.model["attn_implementation"]}
           if plan.model.get("attn_implementation") else {}))
    if s.use_vllm and plan.vllm.max_model_length:
        _check_vllm_context(dataset, tokenizer, plan.vllm.max_model_length, s.max_completion_length)
    if reward_funcs is None:
        reward_funcs = [plan.reward]
        if s.overlong_buffer:
            reward_funcs.append(overlong_reward(s.max_completion_length, s.overlong_buffer, s.overlong_penalty))
    plan.dapo.metrics_path = str(out / "metrics.jsonl")
    _logging_env(plan)
    if s.use_vllm and plan.vllm.cpu_kv_cache_gib:  # read by vLLM's CPU backend when TRL builds the engine
        os.environ["VLLM_CPU_KVCACHE_SPACE"] = str(plan.vllm.cpu_kv_cache_gib)
    trainer = DAPOTrainer(model=model, reward_funcs=reward_funcs, args=args, train_dataset=dataset,
                          processing_class=tokenizer, dapo=plan.dapo)
    if s.save_weights_steps:
        trainer.add_callback(save_weights_callback(trainer, out, s.save_weights_steps))
    return trainer


def train(cfg, reward_funcs: list | None = None) -> Path:
    """Train one run into `cfg.out`; return the run directory."""
    plan = validate(cfg)
    out = plan.out
    if cfg.get("resume") and rundir.is_finished(out):
        return out  # already complete
    from accelerate import PartialState

    args = grpo_args(plan, int(cfg.seed))  # TRL's checks (bf16 support, vLLM) before anything is written
    state = PartialState()  # one process, or the ranks of `accelerate launch` / torchrun
    with state.main_process_first():  # the main process writes the run directory first; the others only read
        ckpt = _prepare_out(plan, cfg, bool(cfg.get("resume")), write=state.is_main_process)
    t0 = time.time()
    trainer = make_trainer(cfg, plan, reward_funcs, args)
    trainer.train(resume_from_checkpoint=ckpt)
    if trainer.state.global_step < plan.spec.max_steps:
        raise RuntimeError(f"training stopped at step {trainer.state.global_step} of {plan.spec.max_steps}")

    save_model_to(trainer, out / rundir.FINAL)
    if state.is_main_process:
        atomic_write_json(out / rundir.SUMMARY, provenance(
            config_sha256=rundir.config_sha256(out), global_step=trainer.state.global_step, wall_time_s=round(time.time() - t0, 2), resumed_from=ckpt,
            processes=state.num_processes))
    state.wait_for_everyone()
    return out


def main(cfg) -> int:
    path = train(cfg)
    if os.environ.get("RANK", "0") == "0":  # once, not per process of a launched run
        print(f"training run written to {path}")
    return 0
