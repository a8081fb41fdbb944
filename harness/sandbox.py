"""Run untrusted Python programs (model-generated code) in a contained child process.

`run_python(main, stdin, files, limits)` runs one program and returns a `RunResult`; it never raises on
anything the program does (the program's failure is a status with a reason). Running code needs an explicit
opt-in, as in lm-eval: `allow_code_execution=True` or the environment variable `HF_ALLOW_CODE_EVAL=1`;
without it `CodeExecutionNotAllowed` is raised before anything runs.

How a program is contained (each run, one fresh process tree):
- limits (setrlimit, applied in the child before exec): CPU seconds, address space (memory), file size,
  number of processes, open files, no core dumps; the parent enforces wall time and caps stdout/stderr,
  which it reads incrementally (a program printing gigabytes is killed once it passes the cap).
- the interpreter runs with -s (no user site-packages) in the environment below only (PYTHONHASHSEED=0, so a
  program that prints a set prints it the same way every run); the work dir holds main.py and the caller's
  `files`, importable by name.
- scrubbed environment (PATH, LANG, HOME=the work dir, thread counts = 1; nothing of the caller's).
- when running as root (the usual case in containers), the launcher (this file, run as a script) does, before
  exec:
  * `unshare(CLONE_NEWNET | CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWUTS)`: no network at all
    (the new network namespace has only a loopback device that is down, so even 127.0.0.1 is unreachable),
    a private mount table, its own process-id space (the program cannot see or signal any outside process,
    and when the sandbox's first process dies the kernel kills every process left in it);
  * private tmpfs mounts (size-limited) over /tmp, /var/tmp, /run/lock and /dev/shm, and a fresh /proc: the
    program's work dir is on that tmpfs, so everything it writes disappears with the namespace;
  * switches to a fresh unprivileged uid/gid (never used by anything else on the machine) with no
    supplementary groups and no_new_privs: the program cannot write anything owned by other users, read
    root-only files, or signal other users' processes, and RLIMIT_NPROC (which root ignores) counts only its
    own processes, so a fork bomb stops at `limits.nproc`.
  If a namespace or a mount cannot be created (a container without CAP_SYS_ADMIN), the run goes on with what
  is available and `RunResult.isolation` says what was applied (`writable:/dev/shm` and the like for a tmpfs
  that could not be mounted); a failed uid switch is a `setup_error` (a fork bomb would not be contained); without root there are no namespaces and no uid
  switch: limits, scrubbed environment, a temporary work dir and the process group only (a program can then
  reach the network, write to world-writable places and escape the process-group kill with setsid).
- after the run, the whole process tree is killed (the pid namespace's init, and everything the sandbox uid
  still runs), and the host-side temporary directory is removed.

What is NOT isolated even as root: the program can read world-readable files (the Python installation, the
repository source), use the CPU for up to its CPU limit, and, as `nproc` processes, use up to
`nproc * memory_mb` of memory. This is a containment layer for model-generated code, not a defence against a
determined attacker with kernel exploits; run real evaluations on a disposable machine or container.
"""
from __future__ import annotations

import ctypes
import itertools
import json
import os
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace

OPT_IN_ENV = "HF_ALLOW_CODE_EVAL"
UID_BASE = 1_600_000_000  # sandbox uids: UID_BASE + (pid % 100000) * 1000 + counter % 1000; no passwd entry
SETUP_ERROR_RC = 125  # the launcher exits with this when it could not set the sandbox up
STATUSES = ("ok", "error", "timeout", "memory", "output_limit", "setup_error")


class CodeExecutionNotAllowed(RuntimeError):
    """Raised before any code runs when the caller did not opt in to running untrusted code."""


@dataclass(frozen=True)
class Limits:
    """Resource limits for one program run (per process for cpu/memory/file size)."""
    wall_s: float = 10.0  # wall-clock seconds, enforced by the parent (kill of the whole tree)
    cpu_s: int = 10  # RLIMIT_CPU seconds per process (SIGKILL at the hard limit, cpu_s + 1)
    memory_mb: int = 1024  # RLIMIT_AS per process, MiB
    nproc: int = 8  # RLIMIT_NPROC: processes + threads of the sandbox uid (only enforced after a uid switch)
    fsize_mb: int = 64  # RLIMIT_FSIZE: largest file the program may write, MiB; also each tmpfs size
    nofile: int = 64  # RLIMIT_NOFILE
    output_bytes: int = 16 << 20  # stdout cap (and stderr cap / 16); more -> killed, status "output_limit"
    namespaces: bool = True  # try the namespaces / tmpfs / uid switch when running as root
    python: str | None = None  # interpreter for the program; default: python3 on /usr/local/bin:/usr/bin:/bin

    def __post_init__(self):
        for name in ("wall_s", "cpu_s", "memory_mb", "nproc", "fsize_mb", "nofile", "output_bytes"):
            if not getattr(self, name) > 0:
                raise ValueError(f"Limits.{name} must be positive, got {getattr(self, name)!r}")


@dataclass
class RunResult:
    """What happened. `status`: ok (exit 0), error (non-zero exit or killed by a signal), timeout (wall or CPU
    limit), memory (MemoryError / allocation refused), output_limit, setup_error (the sandbox could not start:
    a harness problem, also scored as a failure). `reason` is a one-line human explanation."""
    status: str
    returncode: int | None
    stdout: str
    stderr: str
    wall_s: float
    reason: str = ""
    isolation: list[str] = field(default_factory=list)


def code_execution_allowed(allow: bool | None = None) -> bool:
    return bool(allow) if allow is not None else os.environ.get(OPT_IN_ENV, "") == "1"


def require_opt_in(allow: bool | None = None) -> None:
    if not code_execution_allowed(allow):
        raise CodeExecutionNotAllowed(
            "running model-generated code is disabled: it is untrusted. Opt in with the environment variable "
            f"{OPT_IN_ENV}=1 (as lm-eval) or allow_code_execution=True, preferably on a disposable machine; "
            "see docs/ood.md for what the sandbox isolates.")


def default_python() -> str:
    return shutil.which("python3", path="/usr/local/bin:/usr/bin:/bin") or sys.executable


_COUNTER = itertools.count()
_COUNTER_LOCK = threading.Lock()


def _next_uid() -> int:
    with _COUNTER_LOCK:
        n = next(_COUNTER)
    return UID_BASE + (os.getpid() % 100_000) * 1000 + n % 1000


def _scrubbed_env(workdir: str) -> dict[str, str]:
    return {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "HOME": workdir,
            "TMPDIR": "/tmp", "PYTHONHASHSEED": "0", "PYTHONDONTWRITEBYTECODE": "1", "PYTHONIOENCODING": "utf-8",
            "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


# ---------------------------------------------------------------- parent side

def run_python(main: str, stdin: str | bytes = b"", files: dict[str, str] | None = None,
               limits: Limits = Limits(), allow_code_execution: bool | None = None) -> RunResult:
    """Run `main` (Python source, saved as main.py) with `stdin`; `files` are extra files in its work dir.

    Returns a RunResult; never raises on the program's behaviour. Raises CodeExecutionNotAllowed without the
    opt-in, ValueError on a bad file name."""
    require_opt_in(allow_code_execution)
    files = dict(files or {})
    for name in files:
        if not name or "/" in name or name.startswith(".") or name == "main.py":
            raise ValueError(f"run_python: bad file name {name!r} (plain names only, not main.py)")
    files["main.py"] = main
    stdin_b = stdin.encode() if isinstance(stdin, str) else bytes(stdin)
    root = os.geteuid() == 0
    uid = _next_uid() if root else None
    host = tempfile.mkdtemp(prefix="harness-sandbox-")
    t0 = time.monotonic()
    try:
        os.mkdir(os.path.join(host, "files"), 0o700)
        for name, text in files.items():
            with open(os.path.join(host, "files", name), "w", encoding="utf-8") as f:
                f.write(text)
        cfg = {"uid": uid, "namespaces": bool(limits.namespaces and root), "host": host,
               "python": limits.python or default_python(), "env": _scrubbed_env("/tmp/work"),
               "cpu_s": limits.cpu_s, "memory_mb": limits.memory_mb, "nproc": limits.nproc,
               "fsize_mb": limits.fsize_mb, "nofile": limits.nofile}
        with open(os.path.join(host, "config.json"), "w") as f:
            json.dump(cfg, f)
        proc = subprocess.Popen([sys.executable, "-I", "-S", os.path.abspath(__file__), "--launch", host],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                start_new_session=True, close_fds=True, env={"PATH": "/usr/bin:/bin"})
        out, err, why = _communicate(proc, stdin_b, limits)
        rc = proc.returncode
        iso = _read_isolation(host)
        if uid is not None and (why or "pidns" not in iso):
            _kill_uid(uid)  # anything left behind: no pid namespace (setsid escapes the group), or a kill race
        wall = time.monotonic() - t0
    finally:
        shutil.rmtree(host, ignore_errors=True)
    stdout, stderr = out.decode("utf-8", "replace"), err.decode("utf-8", "replace")
    status, reason = _classify(rc, stderr, why, limits)
    return RunResult(status, rc, stdout, stderr, wall, reason, iso)


def _communicate(proc: subprocess.Popen, stdin_b: bytes, limits: Limits) -> tuple[bytes, bytes, str]:
    """Feed stdin, read stdout/stderr up to their caps, enforce the wall limit. Returns (out, err, why) where
    why is "" or "timeout" / "output_limit" when the parent killed the tree."""
    caps = {proc.stdout: limits.output_bytes, proc.stderr: max(64 << 10, limits.output_bytes // 16)}
    bufs: dict = {proc.stdout: bytearray(), proc.stderr: bytearray()}
    sel = selectors.DefaultSelector()
    for f in (proc.stdout, proc.stderr):
        os.set_blocking(f.fileno(), False)
        sel.register(f, selectors.EVENT_READ)
    pending = memoryview(stdin_b)
    if stdin_b:
        os.set_blocking(proc.stdin.fileno(), False)
        sel.register(proc.stdin, selectors.EVENT_WRITE)
    else:
        proc.stdin.close()
    deadline = time.monotonic() + limits.wall_s
    why = ""
    try:
        while sel.get_map():
            left = deadline - time.monotonic()
            if left <= 0:
                why = "timeout"
                break
            for key, _ in sel.select(timeout=min(left, 0.5)):
                f = key.fileobj
                if f is proc.stdin:
                    try:
                        n = os.write(f.fileno(), pending[:1 << 16])
                        pending = pending[n:]
                    except BlockingIOError:
                        continue
                    except (BrokenPipeError, OSError):
                        pending = pending[:0]
                    if not pending:
                        sel.unregister(f)
                        f.close()
                    continue
                try:
                    chunk = os.read(f.fileno(), 1 << 16)
                except BlockingIOError:
                    continue
                if not chunk:
                    sel.unregister(f)
                    continue
                bufs[f] += chunk
                if len(bufs[f]) > caps[f]:
                    del bufs[f][caps[f]:]
                    why = "output_limit"
                    break
            if why:
                break
    finally:
        sel.close()
    if why:
        _kill_tree(proc)
    else:
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            why = "timeout"
            _kill_tree(proc)
    for f in (proc.stdin, proc.stdout, proc.stderr):
        try:
            f.close()
        except OSError:
            pass
    return bytes(bufs[proc.stdout]), bytes(bufs[proc.stderr]), why


def _kill_tree(proc: subprocess.Popen) -> None:
    """SIGKILL the launcher's process group; with a pid namespace the kernel then kills everything inside."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass


def _kill_uid(uid: int) -> None:
    """Kill every process of `uid` (as that uid: kill(-1) reaches exactly the processes it owns)."""
    pid = os.fork()
    if pid == 0:  # child: only syscalls until _exit
        code = 0
        try:
            os.setgroups([])
            os.setresgid(uid, uid, uid)
            os.setresuid(uid, uid, uid)
            for _ in range(1000):
                try:
                    os.kill(-1, signal.SIGKILL)
                except ProcessLookupError:
                    break
        except BaseException:  # noqa: BLE001
            code = 1
        os._exit(code)
    os.waitpid(pid, 0)


def _read_isolation(host: str) -> list[str]:
    try:
        with open(os.path.join(host, "isolation.json")) as f:
            return list(json.load(f))
    except (OSError, ValueError):
        return []


def _classify(rc: int | None, stderr: str, why: str, limits: Limits) -> tuple[str, str]:
    tail = stderr.strip().splitlines()[-1][:300] if stderr.strip() else ""
    if why == "timeout":
        return "timeout", f"wall-clock limit of {limits.wall_s:g}s exceeded"
    if why == "output_limit":
        return "output_limit", f"output over {limits.output_bytes} bytes"
    if rc == SETUP_ERROR_RC and "SANDBOX-SETUP-ERROR" in stderr:
        return "setup_error", tail
    if rc == 0:
        return "ok", ""
    sig = -rc if rc is not None and rc < 0 else (rc - 128 if rc is not None and rc > 128 else 0)
    if sig in (signal.SIGXCPU, signal.SIGKILL) and "MemoryError" not in stderr:
        return "timeout", f"killed by {signal.Signals(sig).name} (CPU limit {limits.cpu_s}s)"
    if sig == signal.SIGXFSZ or "File too large" in stderr:  # Python ignores SIGXFSZ: EFBIG instead
        return "output_limit", f"file size limit {limits.fsize_mb} MiB exceeded (SIGXFSZ)"
    if "MemoryError" in stderr or "Cannot allocate memory" in stderr:
        return "memory", f"memory limit {limits.memory_mb} MiB: {tail}"
    if sig:
        return "error", f"killed by signal {sig}"
    return "error", f"exit status {rc}: {tail}"


def run_batch(jobs: list[dict], limits: Limits = Limits(), workers: int | None = None,
              allow_code_execution: bool | None = None) -> list[RunResult]:
    """Run many programs, `workers` at a time (threads that wait on child processes). Each job is a dict of
    run_python keyword arguments (main, stdin, files, and optionally its own limits)."""
    require_opt_in(allow_code_execution)
    workers = workers or max(1, len(os.sched_getaffinity(0)))

    def one(job: dict) -> RunResult:
        job = {"limits": limits, **job}
        return run_python(allow_code_execution=True, **job)

    with ThreadPoolExecutor(max_workers=workers) as ex:
        return list(ex.map(one, jobs))


# ---------------------------------------------------------------- launcher side (run as a script, as root)

CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWIPC = 0x00020000, 0x04000000, 0x08000000
CLONE_NEWPID, CLONE_NEWNET = 0x20000000, 0x40000000
MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REC, MS_PRIVATE = 2, 4, 8, 16384, 1 << 18
PR_SET_PDEATHSIG, PR_SET_NO_NEW_PRIVS = 1, 38


def _libc():
    return ctypes.CDLL(None, use_errno=True)


def _unshare(libc, flags: int) -> bool:
    return libc.unshare(ctypes.c_int(flags)) == 0


def _mount(libc, src: str, target: str, fstype: str | None, flags: int, data: str | None) -> bool:
    return libc.mount(src.encode(), target.encode(), fstype.encode() if fstype else None,
                      ctypes.c_ulong(flags), data.encode() if data else None) == 0


def _setup_error(msg: str) -> None:
    os.write(2, f"SANDBOX-SETUP-ERROR: {msg}\n".encode())
    os._exit(SETUP_ERROR_RC)


def _launch(host: str) -> None:  # pragma: no cover - runs in the launcher process (tested end to end)
    import resource

    with open(os.path.join(host, "config.json")) as f:
        cfg = json.load(f)
    uid, iso = cfg["uid"], []
    libc = _libc()
    private_mounts = pidns = False
    if cfg["namespaces"]:
        flags = CLONE_NEWNET | CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWUTS
        if _unshare(libc, flags):
            iso += ["netns", "pidns", "ipcns", "utsns"]
            pidns = True
            # make every mount private first, so nothing mounted below can propagate to the host
            private_mounts = _mount(libc, "none", "/", None, MS_REC | MS_PRIVATE, None)
        elif _unshare(libc, CLONE_NEWNET):
            iso.append("netns")
    if uid is not None:
        iso.append("uid")
    # the host dir may be under /tmp, which a tmpfs hides below: read and open what we need from it now
    iso_fd = os.open(os.path.join(host, "isolation.json"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    files_dir = os.path.join(host, "files")
    files = {}
    for name in os.listdir(files_dir):
        with open(os.path.join(files_dir, name), "rb") as f:
            files[name] = f.read()
    if pidns:  # the next child is pid 1 of the new namespace; we wait and pass its status on
        child = os.fork()
        if child:
            os.close(iso_fd)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            _, st = os.waitpid(child, 0)
            os._exit(os.waitstatus_to_exitcode(st) if os.WIFEXITED(st) else 128 + os.WTERMSIG(st))
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)  # the launcher killed -> the whole namespace dies
    workdir = os.path.join(host, "work")
    if private_mounts:
        size = f"size={2 * cfg['fsize_mb']}m"  # room for one file of the largest size
        opts = f"{size},mode=1777"
        # /tmp first: if even that fails, the program works in the host dir and "tmpfs" is not reported
        if _mount(libc, "tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, opts):
            iso.append("tmpfs")
            workdir = "/tmp/work"
            for target in ("/var/tmp", "/run/lock", "/dev/shm"):
                if os.path.isdir(target) and not _mount(libc, "tmpfs", target, "tmpfs", MS_NOSUID | MS_NODEV,
                                                        opts):
                    iso.append(f"writable:{target}")
        if pidns and _mount(libc, "proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, None):
            iso.append("proc")
    os.write(iso_fd, json.dumps(iso).encode())
    os.close(iso_fd)
    try:
        os.mkdir(workdir, 0o700)
        for name, data in files.items():
            with open(os.path.join(workdir, name), "wb") as f:
                f.write(data)
            if uid is not None:
                os.chown(os.path.join(workdir, name), uid, uid)
        if uid is not None:
            os.chown(workdir, uid, uid)
        os.chdir(workdir)
        mb = 1 << 20
        for res, val in ((resource.RLIMIT_CPU, (cfg["cpu_s"], cfg["cpu_s"] + 1)),
                         (resource.RLIMIT_AS, (cfg["memory_mb"] * mb,) * 2),
                         (resource.RLIMIT_FSIZE, (cfg["fsize_mb"] * mb,) * 2),
                         (resource.RLIMIT_NOFILE, (cfg["nofile"],) * 2),
                         (resource.RLIMIT_CORE, (0, 0))):
            resource.setrlimit(res, val)
        if uid is not None:
            resource.setrlimit(resource.RLIMIT_NPROC, (cfg["nproc"],) * 2)
            os.setgroups([])
            os.setresgid(uid, uid, uid)
            os.setresuid(uid, uid, uid)
        else:
            resource.setrlimit(resource.RLIMIT_NPROC, (cfg["nproc"] + _user_process_count(),) * 2)
        libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
    except OSError as e:
        _setup_error(f"{type(e).__name__}: {e}")
    env = dict(cfg["env"], HOME=workdir)
    try:
        os.execve(cfg["python"], [cfg["python"], "-s", "main.py"], env)
    except OSError as e:
        _setup_error(f"cannot run {cfg['python']}: {e}")


def _user_process_count() -> int:
    """Processes of the current user (without root, RLIMIT_NPROC counts them all)."""
    me, n = os.getuid(), 0
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                n += os.stat(f"/proc/{d}").st_uid == me
            except OSError:
                pass
    return n


def isolation_report(limits: Limits = Limits(), allow_code_execution: bool | None = None) -> RunResult:
    """Run a tiny program that reports its uid, network and write access: what this machine isolates."""
    return run_python(_PROBE, limits=replace(limits, wall_s=10), allow_code_execution=allow_code_execution)


_PROBE = """\
import os, socket
print("uid", os.getuid())
s = socket.socket(); s.settimeout(1)
print("connect 127.0.0.1:1", s.connect_ex(("127.0.0.1", 1)))
print("pid", os.getpid(), "ppid", os.getppid())
"""


if __name__ == "__main__" and len(sys.argv) == 3 and sys.argv[1] == "--launch":
    _launch(sys.argv[2])
