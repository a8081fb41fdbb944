"""The SLURM launcher on a real one-node SLURM cluster that these tests start (Debian's slurm-wlm 22.05 and munge;
.ci/run installs them): requests no node can satisfy are refused before anything is submitted; the shortened mini
grid submitted to SLURM returns at once and ends with exactly the results of the local launcher, with a cell
cancelled mid-training (`harness cancel`, then `harness run` again) and a cell preempted mid-training (submitit
requeues it) both resuming from their last checkpoint; `dry_run` prints exactly the scripts that are submitted.

Without the binaries (or without root, which slurmd needs to run jobs) the tests skip saying why; under CI=true
they fail instead.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.core.config import load_config
from harness.runner import plan, read_status
from test_runner_e2e import harness_run, results, tiny_grid

DAEMONS = ("munged", "slurmctld", "slurmd")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _unavailable() -> str | None:
    missing = [b for b in (*DAEMONS, "sbatch", "srun", "squeue", "sinfo", "scancel") if shutil.which(b) is None]
    if missing:
        return f"SLURM binaries not found: {', '.join(missing)} (apt-get install slurm-wlm munge)"
    if os.geteuid() != 0:
        return "the test cluster runs slurmd as root (SlurmUser=root); this is not root"
    return None


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory):
    """A one-node SLURM cluster on this machine: the node has this machine's CPUs and memory; proctrack/linuxproc
    and task/none (no cgroups); a generated munge key; state, logs and sockets in a temporary folder; free ports.
    SLURM_CONF points the client commands (and the harness) at it for the session."""
    reason = _unavailable()
    if reason:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{reason} (CI=true: tests that need it fail rather than skip)")
        pytest.skip(reason)
    d = tmp_path_factory.mktemp("slurm")
    host = socket.gethostname().split(".")[0]
    mem_mb = int(Path("/proc/meminfo").read_text().split()[1]) // 1024
    key = d / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o600)
    conf = d / "slurm.conf"
    conf.write_text(f"""ClusterName=harnesstest
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# cred_expire also sets how long a requeued job waits before it may start again (default 120 s)
AuthInfo=socket={d}/munge.socket,cred_expire=10
StateSaveLocation={d}/state
SlurmdSpoolDir={d}/spool
SlurmctldPidFile={d}/slurmctld.pid
SlurmdPidFile={d}/slurmd.pid
SlurmctldLogFile={d}/slurmctld.log
SlurmdLogFile={d}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MailProg=/bin/true
KillWait=5
MinJobAge=3600
NodeName={host} NodeAddr=127.0.0.1 CPUs={os.cpu_count()} RealMemory={mem_mb} State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
""")
    old = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(conf)
    try:
        subprocess.run(["munged", f"--socket={d}/munge.socket", f"--key-file={key}", f"--pid-file={d}/munged.pid",
                        f"--log-file={d}/munged.log", f"--seed-file={d}/munged.seed", "--force"], check=True)
        subprocess.run(["slurmctld", "-f", str(conf)], check=True)
        subprocess.run(["slurmd", "-f", str(conf)], check=True)
        deadline, state = time.time() + 60, ""
        while state != "idle":
            assert time.time() < deadline, f"the test cluster's node is {state!r}, not idle, after 60 s: {d}"
            time.sleep(0.5)
            state = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True).stdout.strip()
        yield d
    finally:
        subprocess.run(["scancel", "--user", "root"], capture_output=True)   # jobs end before their daemons
        deadline = time.time() + 60
        while time.time() < deadline and subprocess.run(["squeue", "-h"], capture_output=True, text=True).stdout:
            time.sleep(1)
        for name in reversed(DAEMONS):
            pid = d / f"{name}.pid"
            if pid.exists():
                try:
                    os.kill(int(pid.read_text().strip()), 15)
                except (ProcessLookupError, ValueError):
                    pass
        if old is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = old


def squeue() -> list[str]:
    return subprocess.run(["squeue", "-h", "-o", "%i %T"], capture_output=True, text=True, check=True).stdout.split("\n")[:-1]


def wait_queue_empty(timeout: float) -> None:
    deadline = time.time() + timeout
    while squeue():
        assert time.time() < deadline, f"jobs still queued after {timeout} s: {squeue()}"
        time.sleep(1)


def test_request_no_node_can_satisfy_is_refused(slurm_cluster, tmp_path):
    """With more CPUs per task than any node has, SLURM would keep the job pending forever (PartitionConfig): the
    launcher refuses it before any compute or submission, naming the key, its value and what the nodes have."""
    args = tiny_grid(tmp_path) + ["grid.variants=[top20]", "grid.base_eval=false", "launcher=slurm",
                                  "launcher.cpus_per_task=64"]
    proc = harness_run(args)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 2, out
    assert "launcher.cpus_per_task=64: no node of the default partition has that many cpus" in out, out
    assert f"{os.cpu_count()} CPUs" in out, out
    assert not squeue() and not (tmp_path / "base").exists(), "something was submitted or computed"


@pytest.mark.slow
def test_slurm_grid_equals_local_and_resumes(slurm_cluster, tmp_path):
    warm = tmp_path / "warm"   # one warm start for both: the same cell ids

    def grid(d: Path) -> list[str]:
        return tiny_grid(d, warm) + ["grid.base_eval=false"]   # full and top20, seed 0, 8 steps, 2 evaluations

    threads = max(1, (os.cpu_count() or 1) // 2)   # what the local launcher gives each of its jobs=2 cells
    local = harness_run(grid(tmp_path / "local") + ["jobs=2"])
    out, _ = local.communicate(timeout=900)
    assert local.returncode == 0, out

    sl_dir = tmp_path / "slurm"
    args = grid(sl_dir) + ["launcher=slurm", f"launcher.cpus_per_task={threads}"]
    dry = harness_run(args + ["dry_run=true"])
    dry_out, _ = dry.communicate(timeout=300)
    assert dry.returncode == 0, dry_out
    scripts = dict(re.findall(r"--- sbatch script: (\S+ phase=\w+) \(.*?\n(#!/bin/bash\n.*?\n)(?=---|\Z)",
                              dry_out, re.S))
    assert len(scripts) == 4, dry_out

    t0 = time.time()
    sub = harness_run(args)
    out, _ = sub.communicate(timeout=600)
    assert sub.returncode == 0, out
    full, top20 = (sl_dir / "runs" / "mini" / c.cell_id for c in plan(load_config("run", args).grid))
    assert not (full / "train" / "final").exists(), "harness run waited for the jobs"
    ids = {}
    for cdir in (full, top20):
        jobs = json.loads((cdir / "slurm" / "jobs.json").read_text())["jobs"]
        assert [j["phase"] for j in jobs] == ["train", "eval"]
        ids[cdir.name] = {j["phase"]: j["job_id"] for j in jobs}
        st = read_status(cdir)   # the job ids are in the cell's status: as submitted, or the running job's
        assert st.get("jobs") == jobs or st.get("slurm_job_id") == ids[cdir.name]["train"], st
        for j in jobs:   # dry_run printed exactly what was submitted
            submitted = (cdir / "slurm" / f"{j['job_id']}_submission.sh").read_text()
            assert submitted == scripts[f"{cdir.name} phase={j['phase']}"].replace("TRAIN_JOB_ID", ids[cdir.name]["train"])
        assert f"--dependency=afterok:{ids[cdir.name]['train']}" in \
            (cdir / "slurm" / f"{ids[cdir.name]['eval']}_submission.sh").read_text()
    status = subprocess.run([sys.executable, "-m", "harness.cli", "status", *args], capture_output=True, text=True)
    assert status.returncode == 0 and "PENDING (Dependency)" in status.stdout, status.stdout + status.stderr

    # both train at once; mid-training (after the step-4 checkpoint) top20 is preempted: SLURM signals the job
    # (USR2, as before a time limit or on preemption), submitit requeues it and it starts again by itself; full is
    # suspended at once (so that it cannot finish while `harness cancel` starts), then cancelled
    act = {top20: ["scancel", "--signal=USR2", ids[top20.name]["train"]],
           full: ["scontrol", "suspend", ids[full.name]["train"]]}
    deadline = time.time() + 600
    while act:   # each as soon as its checkpoint is complete
        for cdir in [c for c in act if (c / "train" / "checkpoints" / "checkpoint-4" / "trainer_state.json").exists()]:
            assert not (cdir / "train" / "final").exists(), "training ended before it could be interrupted"
            subprocess.run(act.pop(cdir), check=True)
        assert time.time() < deadline, f"no step-4 checkpoint after 600 s; queue: {squeue()}"
        time.sleep(0.1)
    cancel = subprocess.run([sys.executable, "-m", "harness.cli", "cancel", *args, "only=*full*"],
                            capture_output=True, text=True)
    assert cancel.returncode == 0 and f"cancelled {full.name}" in cancel.stdout, cancel.stdout + cancel.stderr
    wait_queue_empty(900)
    assert read_status(top20)["state"] == "complete"
    assert read_status(full)["state"] != "complete"
    status = subprocess.run([sys.executable, "-m", "harness.cli", "status", *args], capture_output=True, text=True).stdout
    assert re.search(rf"{full.name}\s+interrupted .*CANCELLED CANCELLED", status), status

    again = harness_run(args)   # resubmits the cancelled cell only
    out, _ = again.communicate(timeout=600)
    assert again.returncode == 0 and "2 cells, 1 to run" in out and f"submitted {full.name}" in out, out
    wait_queue_empty(900)
    print(f"slurm part: {time.time() - t0:.0f} s")

    for cdir in (full, top20):
        assert read_status(cdir)["state"] == "complete", (cdir / "log.txt").read_text()[-3000:]
        prov = json.loads((cdir / "train" / "provenance.json").read_text())
        assert prov["resumed_from"].endswith("checkpoint-4"), prov
        log = (cdir / "log.txt").read_text()
        assert re.search(rf"start {cdir.name} phase=train SLURM job \d+ \(restart 0\)", log), log[-2000:]
        assert f"end {cdir.name} phase=eval: complete" in log and "'train_loss'" in log, log[-2000:]
    assert "(restart 1)" in (top20 / "log.txt").read_text()   # requeued: the same job, started again

    a, b = results(tmp_path / "local"), results(sl_dir)
    assert a.keys() == b.keys() and len(a) == 2 * 2 + 2 + 4   # 2 cells x 2 steps, 2 metrics logs, overlap + shift x 2
    assert a == b
    for summary in sorted((tmp_path / "local" / "runs" / "mini").glob("*/eval/*/*/summary.csv")):
        other = sl_dir / summary.relative_to(tmp_path / "local")
        assert summary.read_text().replace(str(tmp_path / "local"), "DIR") == \
            other.read_text().replace(str(sl_dir), "DIR"), summary   # byte for byte but for the results folder
