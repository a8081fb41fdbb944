"""Small, dependable file helpers: atomic writes and provenance.

Every number the harness writes carries its provenance (`provenance()`), and every file is
written atomically (`atomic_write_*`): a reader sees the old file or the new one, never half.
"""
from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable

# Where the packages were imported from: the checkout in a source tree or an editable install; site-packages (or
# pip's --target folder) in a regular install. Nothing is read from it or written into it at run time: relative
# paths a user gives (results_dir, out, model.path, data.path) mean the current directory.
REPO_ROOT = Path(__file__).resolve().parents[2]
# The Hydra configs, shipped as package data: harness/configs is a link to the top-level configs/ in the checkout,
# and setuptools copies the files behind it into the wheel (pyproject.toml), so an installed package has them too.
CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"


def shipped_config(path: str | os.PathLike) -> Path:
    """A config file named like `configs/accelerate/zero3.yaml` (a launcher's accelerate or DeepSpeed file): the
    path as given when it exists (absolute, or relative to the current directory), else the package's copy."""
    p = Path(path).expanduser()
    if p.is_absolute() or p.exists() or p.parts[:1] != ("configs",):
        return p.absolute()
    return CONFIG_DIR.joinpath(*p.parts[1:])

_LIBS = ("torch", "transformers", "trl", "lm_eval", "math-verify", "latex2sympy2_extended", "hydra-core", "tokenizers",
         "accelerate", "vllm", "deepspeed", "pandas", "entropy-harness")


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write `text` to `path` via a temporary file in the same folder and os.replace."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def atomic_write_jsonl(path: str | os.PathLike, rows: Iterable[dict]) -> Path:
    return atomic_write_text(path, "".join(json.dumps(r, default=str) + "\n" for r in rows))


def append_jsonl(path: str | os.PathLike, row: dict) -> None:
    """Append one line and flush it (metrics logs: a crash loses at most the line being written)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(row, default=str) + "\n")
        f.flush()


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def git_hash(short: bool = False) -> str:
    """The repository's HEAD commit, with '+dirty' when the tree has uncommitted changes; 'unknown' outside git and for
    an installed package (whose folder may sit inside some other repository: its version is in library_versions)."""
    if not (REPO_ROOT / ".git").exists():
        return "unknown"
    try:
        h = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True,
                           timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO_ROOT,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except Exception:
        return "unknown"
    h = h[:10] if short else h
    return h + ("+dirty" if dirty else "")


def library_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in _LIBS:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


_ISA = re.compile(r"^(avx|amx|fma|f16c|sse4|vnni|neon|sve|asimd)")  # flags that change which kernels run
_THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "TORCH_NUM_THREADS",
               "NUMEXPR_NUM_THREADS", "VECLIB_MAXIMUM_THREADS", "CUBLAS_WORKSPACE_CONFIG")
# Settings that pick the kernels themselves: ATen's vector level, oneDNN's and MKL's instruction set, MKL's
# conditional numerical reproducibility mode, OpenBLAS's core type. Unset on an ordinary machine.
_KERNEL_ENV = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "MKL_CBWR", "MKL_ENABLE_INSTRUCTIONS",
               "OPENBLAS_CORETYPE")


@lru_cache(maxsize=1)
def cpu_info() -> dict:
    """CPU model and its vector instruction-set flags (avx512*, amx*, ...), from /proc/cpuinfo where it exists."""
    model, flags = None, []
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                key, _, value = (x.strip() for x in line.partition(":"))
                if key in ("model name", "Model", "cpu model") and model is None:
                    model = value
                elif key in ("flags", "Features") and not flags:
                    flags = sorted(x for x in value.split() if _ISA.match(x))
    except OSError:
        pass
    model = model or platform.processor() or platform.machine()
    try:  # the CPUs this process may run on (a container or taskset can hold fewer): torch's default thread count
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count()
    return {"model": model, "isa_flags": " ".join(flags), "logical_cpus": os.cpu_count(), "usable_cpus": usable}


def torch_runtime() -> dict | None:
    """torch's thread counts, the ATen CPU kernel level in use, MKL / oneDNN builds; None if torch is not imported
    in this process (provenance never imports it: a process that did not load torch computed nothing with it)."""
    torch = sys.modules.get("torch")
    if torch is None or not hasattr(torch, "get_num_threads"):
        return None
    out: dict[str, Any] = {"num_threads": torch.get_num_threads(),
                           "num_interop_threads": torch.get_num_interop_threads()}
    try:
        out["cpu_capability"] = torch.backends.cpu.get_cpu_capability()  # e.g. AVX512, AVX2, DEFAULT
        out["mkl"] = bool(torch.backends.mkl.is_available())
        out["mkldnn"] = bool(torch.backends.mkldnn.is_available())
        out["deterministic_algorithms"] = bool(torch.are_deterministic_algorithms_enabled())
        config = torch.__config__.show()
        for name, pattern in (("mkl_version", r"Math Kernel Library Version ([\d.]+)"),
                              ("onednn_version", r"MKL-DNN (v[\d.]+)")):
            m = re.search(pattern, config)
            if m:
                out[name] = m.group(1)
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            out["cuda"] = torch.version.cuda
            out["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    except Exception as e:  # an exotic build: record what went wrong, never fail a result file over it
        out["error"] = f"{type(e).__name__}: {e}"
    return out


def machine() -> dict:
    """What decides bit-for-bit repeatability of a number: CPU model and instruction set, thread settings, torch's
    kernels. Same values (and library versions) -> the same bits; different ones -> the same only statistically."""
    return {"cpu": cpu_info(), "thread_env": {k: os.environ[k] for k in _THREAD_ENV if k in os.environ},
            "kernel_env": {k: os.environ[k] for k in _KERNEL_ENV if k in os.environ}, "torch": torch_runtime()}


def provenance(config: Any = None, **extra: Any) -> dict:
    """Provenance block attached to every result file: git hash, versions, host, machine, time, and the config (left out
    when the file sits next to the config it names, e.g. a run directory's config.yaml by its sha256)."""
    if config is not None and not isinstance(config, dict):
        from omegaconf import OmegaConf
        config = OmegaConf.to_container(config, resolve=True)
    return {
        "git_hash": git_hash(),
        "versions": library_versions(),
        "host": platform.node(),
        "platform": platform.platform(),
        "machine": machine(),
        "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **({"config": config} if config is not None else {}),
        **extra,
    }


# Progress bars (tqdm: transformers' Trainer and model loading, lm-eval's generation, datasets) are for a person at a
# terminal; in log files and CI they are noise. tqdm reads TQDM_DISABLE when it is imported.
QUIET_PROGRESS_ENV = {"TQDM_DISABLE": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1", "HF_DATASETS_DISABLE_PROGRESS_BARS": "1"}


def quiet_progress_unless_terminal() -> None:
    """Turn the libraries' progress bars off unless stderr is a terminal (call before they are imported)."""
    import sys

    if not sys.stderr.isatty():
        for k, v in QUIET_PROGRESS_ENV.items():
            os.environ.setdefault(k, v)


def progress_bars() -> bool:
    """Whether this process shows progress bars: stderr is a terminal and TQDM_DISABLE is not set."""
    import sys

    return sys.stderr.isatty() and os.environ.get("TQDM_DISABLE", "").lower() not in ("1", "true", "yes")
