"""A grid cell's status.json: the one file that says where a cell stands, written last and atomically.

`{"state": "pending" | "running" | "complete" | "failed", "time_utc": ..., ...}`; a `running` status records its
writer's pid, host and process start time, so a reader (`harness status`, the report) can tell a live cell from one
whose process is gone. Written by the runner; read by the runner, the launchers and the report.
"""
from __future__ import annotations

import fcntl
import json
import os
import platform
import time
from pathlib import Path

from harness.core.io import atomic_write_json

STATES = ("pending", "running", "complete", "failed")


def read_status(cdir: Path) -> dict:
    try:
        return json.loads((cdir / "status.json").read_text())
    except FileNotFoundError:
        return {"state": "pending"}
    except (json.JSONDecodeError, OSError) as e:
        return {"state": "failed", "error": f"unreadable status.json: {e}"}


def write_status(cdir: Path, state: str, **extra) -> None:
    assert state in STATES, state
    atomic_write_json(cdir / "status.json", {"state": state, "time_utc": time.strftime(
        "%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **extra})


class CellBusy(RuntimeError):
    """Another process holds the cell (two `harness run`s of one grid at once, or a job started twice)."""


BUSY_EXIT = 75  # exit status of a cell process that found its cell held by another (EX_TEMPFAIL)


def hold_cell(cdir: Path):
    """Take the cell's lock (flock on `<cell>/.lock`, released when the returned file is closed or the process
    ends, however it ends); raise CellBusy naming the holder when another process has it."""
    f = open(cdir / ".lock", "a+")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.close()
        st = read_status(cdir)
        raise CellBusy(f"{cdir.name} is being run by another process (status {st.get('state')}, pid "
                       f"{st.get('pid')} on {st.get('host')}); not started twice") from None
    return f


def this_process() -> dict:
    """What a `running` status records about its writer: pid, host and the process's start time (boot clock
    ticks, /proc), so that a later reader can tell a live cell from one whose process is gone; inside a SLURM job
    also the job's id."""
    job = {"slurm_job_id": os.environ["SLURM_JOB_ID"]} if os.environ.get("SLURM_JOB_ID") else {}
    return {"pid": os.getpid(), "host": platform.node(), "pid_start": _proc_stat(os.getpid())[1], **job}


def _proc_stat(pid: int) -> tuple[str | None, str | None]:
    """(state letter, start time) of a process on this host from /proc/<pid>/stat; (None, None) if unreadable."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None, None
    return fields[0], fields[19]  # stat fields 3 (state) and 22 (starttime)


def process_alive(status: dict) -> bool | None:
    """Whether the process a `running` status names still runs: True/False on its own host; None where that
    cannot be told (another host, e.g. a SLURM node seen from the login node, or no pid recorded)."""
    pid, host = status.get("pid"), status.get("host")
    if not isinstance(pid, int) or isinstance(pid, bool) or host != platform.node():
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it exists, under another user
    state, start = _proc_stat(pid)
    if state == "Z":  # exited, not yet reaped by its parent
        return False
    return not (start and status.get("pid_start") and start != status["pid_start"])  # pid reused by another


def cell_state(status: dict) -> tuple[str, str]:
    """(state to show, note) of a cell from its status.json: a `running` cell whose process is gone on this
    host is `interrupted` (the next `harness run` resumes it)."""
    state = str(status.get("state", "pending"))
    if state != "running":
        return state, str(status.get("error") or "")
    alive = process_alive(status)
    where = f"pid {status.get('pid')} on {status.get('host')}"
    if alive is False:
        return "interrupted", f"{where} is gone: killed or crashed before recording a result; harness run resumes it"
    if alive is None:
        return "running", (f"{where}: not checkable from {platform.node()}" if status.get("pid") is not None
                           else "no process recorded")
    return "running", where
