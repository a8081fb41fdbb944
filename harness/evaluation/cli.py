"""`harness eval` and `harness tasks`: thin entry points over `evaluate()` and `list_tasks()`."""
from __future__ import annotations

import sys

from omegaconf import DictConfig, OmegaConf

from harness.core.config import ConfigError


def _kwargs(cfg: DictConfig, need_out: bool = True) -> dict:
    c = OmegaConf.to_container(cfg, resolve=True)
    if need_out and not c.get("out"):
        raise ConfigError("out is required: the folder for summary.csv and the per-benchmark files (out=DIR)")
    tasks, pass_ks = c["tasks"], c["pass_ks"]
    return dict(
        model=c.get("checkpoint"), tasks=tasks if isinstance(tasks, str) else list(tasks), out_dir=c.get("out"),
        backend=c["backend"], k=c["k"], tokenizer=c.get("tokenizer"), data_dir=c.get("data_dir"),
        limit=c.get("limit"), temperature=c["generation"]["temperature"], top_p=c["generation"]["top_p"],
        max_gen_toks=c["generation"].get("max_gen_toks"), seed=c["seed"],
        pass_ks=tuple(pass_ks) if isinstance(pass_ks, list) else pass_ks, timeout_s=c["scoring"]["timeout_s"],
        bootstrap_iters=c["bootstrap"]["iters"], confidence=c["bootstrap"]["confidence"],
        replay_file=c.get("replay_file"), model_name=c.get("model_name"),
        allow_code_execution=c.get("allow_code_execution"),
        hf_options={k: v for k, v in c["hf"].items() if v is not None},
        vllm_options={k: v for k, v in c["vllm"].items() if v is not None}, config=c)


def check_config(cfg: DictConfig, check_model: bool = True) -> dict:
    """`harness eval`'s whole config checked without loading anything (a grid checks its evaluation settings this
    way, with check_model=False, before its first cell trains); returns evaluate()'s keyword arguments."""
    from harness.evaluation.core import check_inputs

    kwargs = _kwargs(cfg, need_out=check_model)
    names = {"tokenizer", "model_name", "config"}
    try:
        check_inputs(**{k: v for k, v in kwargs.items() if k not in names}, check_model=check_model)
    except (ValueError, FileNotFoundError) as e:
        raise ConfigError(str(e)) from e
    return kwargs


def main(cfg: DictConfig) -> int:
    from harness.evaluation.core import evaluate

    kwargs = check_config(cfg)  # everything, before any model or dataset is loaded
    try:
        df = evaluate(**kwargs)
    except (ValueError, FileNotFoundError) as e:
        raise ConfigError(str(e)) from e
    show = df[df.metric.isin(["avg@k", "len@k"]) | ((df.metric == "pass@k") & (df.k == 1))]
    print(show.to_string(index=False, float_format=lambda x: f"{x:.2f}"))
    print(f"wrote {kwargs['out_dir']}/summary.csv", file=sys.stderr)
    return 0


def tasks_main(cfg: DictConfig) -> int:
    from harness.evaluation.tasks import list_tasks

    rows = list_tasks(data_dir=cfg.get("data_dir"))
    cols = ["task", "size", "version", "groups", "source", "scorer"]
    widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in cols}
    print("  ".join(c.ljust(widths[c]) for c in cols))
    for r in rows:
        print("  ".join(str(r[c]).ljust(widths[c]) for c in cols))
    return 0
