"""The SLURM launcher (submitit): what `harness run grid=NAME launcher=slurm` submits and how it asks the cluster.

harness/runner.py drives it: it submits the jobs of every unfinished cell at once and returns; `harness status` adds
the scheduler's state (`scheduler_states`); `harness cancel grid=NAME` cancels a grid's jobs. A cell is two jobs
(harness.runner.cell_jobs): a training job (the grid's `resources`: nodes x gpus_per_node for `hours`), then an
evaluation job that starts only when the training job has succeeded (`--dependency=afterok:ID`;
`--kill-on-invalid-dep=yes` removes it when training failed or was cancelled). Each job is one submitit submission
of harness.runner.CellJob, its settings (cell folder, phase, launcher settings) pickled as its arguments. A
preempted or timed-out job is requeued by submitit (CellJob is checkpointable, `launcher.max_requeues` timeouts)
and resumes from its last complete checkpoint; a cancelled cell is resubmitted by the next `harness run`.

Per cell, `<cell>/slurm/` holds submitit's files (the sbatch scripts `<job id>_submission.sh`, the pickled calls
and results) and `jobs.json` (the job ids of the last submission); every job's output is appended to `<cell>/log.txt`.
This module does not import the runner (one-way: harness/runner.py imports it).
"""
from __future__ import annotations

import json
import math
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from harness.core.config import ConfigError
from harness.core.io import atomic_write_json
from harness.core.status import read_status, write_status

TRAIN_JOB_ID = "TRAIN_JOB_ID"   # what a dry run prints in place of the training job's id (known once submitted)
ACTIVE = ("PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESIZING",
          "SUSPENDED", "STOPPED", "SIGNALING", "STAGE_OUT", "RESV_DEL_HOLD", "SPECIAL_EXIT")


@dataclass(frozen=True)
class Job:
    """One sbatch submission: a phase of a cell with its sbatch parameters (submitit's names)."""

    cell: object                    # harness.runner.Cell
    cdir: Path
    phase: str                      # train | eval
    params: dict                    # submitit SlurmExecutor parameters (sbatch options, setup lines, srun args)
    gpus_per_node: int
    eval_overrides: tuple[str, ...]

    @property
    def folder(self) -> Path:
        return self.cdir / "slurm"


# ----------------------------------------------------------------------------------------------
# What is submitted


def _launcher(cfg: DictConfig) -> dict:
    return OmegaConf.to_container(cfg.launcher, resolve=True)


def cpus_per_task(cell, launcher: dict) -> tuple[int, str]:
    """(CPUs of a job's task, the key it comes from): `launcher.cpus_per_task` when set, else the grid's
    `resources.<model>.cpus_per_task`, else 1."""
    if launcher.get("cpus_per_task") is not None:
        return int(launcher["cpus_per_task"]), "launcher.cpus_per_task"
    return int(cell.resources.get("cpus_per_task", 1)), f"cpus_per_task (grid.resources of {cell.model})"


def plan_jobs(cells: list[tuple], cfg: DictConfig) -> list[Job]:
    """The jobs of the cells, given as (cell, its folder, harness.runner.cell_jobs of it), in submission order (a
    cell's training job before its evaluation job)."""
    launcher = _launcher(cfg)
    jobs = []
    for cell, cdir, phases in cells:
        cdir = Path(cdir).resolve()
        log = str(cdir / "log.txt")
        for phase, (nodes, gpus, hours, extra) in phases:
            params = {
                "job_name": f"{cell.cell_id}-{phase}", "time": max(1, math.ceil(hours * 60)), "nodes": int(nodes),
                "ntasks_per_node": 1, "cpus_per_task": cpus_per_task(cell, launcher)[0],
                "stderr_to_stdout": True, "srun_args": ["--output", log, "--open-mode=append"],
                "setup": list(launcher.get("setup") or []), "additional_parameters": {"output": log},
            }
            if gpus:
                params["gpus_per_node"] = int(gpus)
            for k in ("partition", "account", "qos", "constraint"):
                if launcher.get(k):
                    params[k] = str(launcher[k])
            if launcher.get("mem_gb"):
                params["mem"] = f"{int(launcher['mem_gb'])}GB"
            if phase == "eval" and any(j.cell is cell for j in jobs):
                params["dependency"] = f"afterok:{TRAIN_JOB_ID}"
                params["additional_parameters"]["kill-on-invalid-dep"] = "yes"
            jobs.append(Job(cell, cdir, phase, params, int(gpus), tuple(extra)))
    return jobs


def _with_train_id(params: dict, train_id: str) -> dict:
    return {**params, "dependency": params["dependency"].replace(TRAIN_JOB_ID, train_id)} \
        if "dependency" in params else params


def sbatch_script(job: Job, train_id: str = TRAIN_JOB_ID) -> str:
    """The sbatch script submitit writes for `job` (`<cell>/slurm/<job id>_submission.sh`): the same function of
    the same parameters as SlurmExecutor._make_submission_file_text, so a dry run prints what is submitted."""
    from submitit.slurm.slurm import _make_sbatch_string

    command = " ".join([shlex.quote(sys.executable), "-u -m submitit.core._submit", shlex.quote(str(job.folder))])
    return _make_sbatch_string(command=command, folder=job.folder, **_with_train_id(job.params, train_id))


def print_scripts(jobs: list[Job]) -> None:
    for job in jobs:
        print(f"--- sbatch script: {job.cell.cell_id} phase={job.phase} ({job.folder}/<job id>_submission.sh)")
        print(sbatch_script(job), end="")


# ----------------------------------------------------------------------------------------------
# The cluster: what it has, what is queued


def _run(cmd: list[str]) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    if proc.returncode:
        raise ConfigError(f"launcher=slurm: `{shlex.join(cmd)}` failed (exit {proc.returncode}): "
                          f"{proc.stderr.strip()[-300:]}")
    return proc.stdout


def nodes(partition: str | None) -> list[dict]:
    """The partition's nodes (the default partition when None) from `sinfo`: name, cpus, mem_mb, gpus, state."""
    out = []
    for line in _run(["sinfo", "-h", "-N", "-o", "%N|%c|%m|%G|%P|%t"]).splitlines():
        name, cpus, mem, gres, part, state = line.strip().split("|")
        if (partition is None and not part.endswith("*")) or (partition is not None and part.rstrip("*") != partition):
            continue
        gpus = sum(int(g.split("(")[0].split(":")[-1]) for g in gres.split(",")
                   if g.startswith("gpu:") and g.split("(")[0].split(":")[-1].isdigit())
        out.append({"name": name, "cpus": int(cpus.rstrip("+")), "mem_mb": int(mem.rstrip("+") or 0),
                    "gpus": gpus, "state": state})
    return out


def check_cluster(jobs: list[Job], cfg: DictConfig) -> None:
    """Refuse, before anything is submitted, a job that no node of the partition can run (SLURM would keep it
    pending forever): naming the key, its value and what the cluster's nodes have."""
    launcher = _launcher(cfg)
    for tool in ("sbatch", "sinfo", "squeue"):
        if shutil.which(tool) is None:
            raise ConfigError(f"launcher=slurm: `{tool}` is not on PATH: run `harness run ... launcher=slurm` on a "
                              "SLURM login node (or `launcher=local` on this machine)")
    part = launcher.get("partition")
    have = nodes(part)
    where = f"partition {part}" if part else "the default partition"
    if not have:
        raise ConfigError(f"launcher.partition={part!r}: `sinfo` lists no node in {where}")
    listing = "; ".join(f"{n['name']}: {n['cpus']} CPUs, {n['mem_mb']} MB, {n['gpus']} GPUs" for n in have[:8])
    for job in jobs:
        p, cell = job.params, job.cell
        cpus, cpus_key = cpus_per_task(cell, launcher)
        res = f"grid.resources of {cell.model}:"
        if job.gpus_per_node == 0 and p["nodes"] > 1:
            raise ConfigError(f"{res} nodes={p['nodes']} with gpus_per_node=0: a CPU cell runs in one process; "
                              "use nodes: 1")
        wants = [(cpus, "cpus", cpus_key), (job.gpus_per_node, "gpus",
                                           f"{res} {'gpus_per_node' if job.phase == 'train' else 'eval_gpus'}"),
                 (int(launcher.get("mem_gb") or 0) * 1024, "mem_mb", "launcher.mem_gb")]
        for value, what, key in wants:
            if not any(n[what] >= value for n in have):
                shown = value // 1024 if what == "mem_mb" else value
                raise ConfigError(f"{key}={shown}: no node of {where} has that many {what.split('_')[0]} "
                                  f"(cell {cell.cell_id}, {job.phase} job; the nodes: {listing})")
        fit = [n for n in have if all(n[what] >= value for value, what, _ in wants)]
        if len(fit) < p["nodes"]:
            raise ConfigError(f"{res} nodes={p['nodes']}: only {len(fit)} node(s) of {where} have {cpus} CPUs "
                              f"and {job.gpus_per_node} GPUs (cell {cell.cell_id}; the nodes: {listing})")


def scheduler_states(job_ids: list[str], strict: bool = False) -> dict[str, str]:
    """{job id: state} from `squeue` (pending jobs with their reason; finished ones while slurmctld still holds
    them, MinJobAge), then `sacct` for the others where accounting is on; an id neither knows is left out. When
    the scheduler cannot be asked, every id is `unknown`, or with `strict` a ConfigError says why."""
    if not job_ids:
        return {}
    proc = subprocess.run(["squeue", "-h", "-t", "all", "-j", ",".join(job_ids), "-o", "%i|%T|%r"],
                          capture_output=True, text=True, timeout=60) if shutil.which("squeue") else None
    # squeue fails (exit 1, "Invalid job id") when no id is known any more: that is an answer
    if proc is None or (proc.returncode and "Invalid job id" not in proc.stderr):
        why = "`squeue` is not on PATH" if proc is None else f"`squeue` failed: {proc.stderr.strip()[-300:]}"
        if strict:
            raise ConfigError(f"launcher=slurm: cannot tell which of the jobs {' '.join(job_ids)} are still queued "
                              f"({why}); run it where the grid was submitted")
        return {j: "unknown" for j in job_ids}
    out = {}
    for line in proc.stdout.splitlines():
        jid, state, reason = line.strip().split("|")
        out[jid] = state + (f" ({reason})" if state == "PENDING" and reason not in ("None", "") else "")
    rest = [j for j in job_ids if j not in out]
    if rest and shutil.which("sacct"):
        proc = subprocess.run(["sacct", "-n", "-X", "-P", "-o", "JobID,State", "-j", ",".join(rest)],
                              capture_output=True, text=True, timeout=60)
        for line in proc.stdout.splitlines() if proc.returncode == 0 else []:
            jid, state = line.split("|")[:2]
            out.setdefault(jid, state.split()[0])
    return out


def is_active(state: str | None) -> bool:
    return bool(state) and state.split()[0] in ACTIVE


def submitted(cdir: Path) -> list[dict]:
    """The jobs of the cell's last submission: [{"phase", "job_id", "submitted_utc"}] ([] when none)."""
    try:
        return json.loads((cdir / "slurm" / "jobs.json").read_text())["jobs"]
    except (FileNotFoundError, json.JSONDecodeError, KeyError):
        return []


def queued(cdirs: dict[str, Path]) -> dict[str, list[str]]:
    """{cell id: its job ids still in the queue (pending or running)} for the cells ({id: folder}) with any."""
    ids = {cid: [j["job_id"] for j in submitted(cdir)] for cid, cdir in cdirs.items()}
    states = scheduler_states(sorted({j for v in ids.values() for j in v}), strict=True)  # never submit twice
    return {cid: active for cid, v in ids.items() if (active := [j for j in v if is_active(states.get(j))])}


# ----------------------------------------------------------------------------------------------
# Submitting and cancelling


def submit(jobs: list[Job], cfg: DictConfig, job_fn) -> int:
    """Submit the jobs (non-blocking: sbatch returns at once), each a call `job_fn()(cell folder, phase,
    gpus_per_node, evaluation overrides, launcher settings)` pickled by submitit (harness.runner.CellJob); the ids go
    into each cell's `slurm/jobs.json` and `status.json`. Returns the number of cells whose submission failed."""
    import submitit

    launcher = _launcher(cfg)
    by_cell: dict[str, list[Job]] = {}
    for job in jobs:
        by_cell.setdefault(job.cell.cell_id, []).append(job)
    failed = 0
    for cell_id, cell_jobs_ in by_cell.items():
        cdir = cell_jobs_[0].cdir
        ids: list[dict] = []
        try:
            for job in cell_jobs_:
                train_id = next((j["job_id"] for j in ids if j["phase"] == "train"), TRAIN_JOB_ID)
                ex = submitit.SlurmExecutor(folder=job.folder, max_num_timeout=int(launcher.get("max_requeues", 3)))
                ex.update_parameters(**_with_train_id(job.params, train_id))
                sj = ex.submit(job_fn(), str(job.cdir), job.phase, job.gpus_per_node, job.eval_overrides, launcher)
                ids.append({"phase": job.phase, "job_id": str(sj.job_id),
                            "submitted_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
        except Exception as e:  # a submission sbatch refused: recorded, the other cells go on
            failed += 1
            atomic_write_json(cdir / "slurm" / "jobs.json", {"jobs": ids})  # what did go in (cancel finds it)
            write_status(cdir, "failed", error=f"submission failed: {type(e).__name__}: {e}", jobs=ids)
            print(f"FAILED to submit {cell_id}: {e}")
            continue
        atomic_write_json(cdir / "slurm" / "jobs.json", {"jobs": ids})
        note = "submitted to SLURM: " + ", ".join(f"{j['phase']} job {j['job_id']}" for j in ids)
        if read_status(cdir).get("slurm_job_id") not in [j["job_id"] for j in ids]:  # unless a job already started
            write_status(cdir, "pending", note=note, jobs=ids)
        print(f"submitted {cell_id}: " + ", ".join(f"{j['phase']} job {j['job_id']}" for j in ids))
    return failed
