"""Run untrusted Python programs (model-generated code) in a contained child process.

`run_python(main, stdin, files, limits)` runs one program and returns a `RunResult`; it never raises on
anything the program does (the program's failure is a status with a reason). Running code needs an explicit
opt-in, as in lm-eval: `allow_code_execution=True` or the environment variable `HF_ALLOW_CODE_EVAL=1`;
without it `CodeExecutionNotAllowed` is raised before anything runs.

Three modes (`isolation_mode`), chosen per run; `check_sandbox()` logs one line saying which one applies:
- `root` (the harness runs as root, as in containers): the launcher (this file, run as a script) does, before
  exec:
  * `unshare(CLONE_NEWNET | CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWUTS)`: no network at all
    (the new network namespace has only a loopback device that is down, so even 127.0.0.1 is unreachable),
    a private mount table, its own process-id space (the program cannot see or signal any outside process,
    and when the sandbox's first process dies the kernel kills every process left in it);
  * private tmpfs mounts (size-limited) over /tmp, /var/tmp, /run/lock and /dev/shm, and a fresh /proc: the
    program's work dir is on that tmpfs, so everything it writes disappears with the namespace;
  * a memory cgroup of its own (v1 or v2, where the machine has one that root can create) limited to
    `memory_mb`: everything the sandbox's processes hold, tmpfs files included, counts;
  * switches to a fresh unprivileged uid/gid (never used by anything else on the machine) with no
    supplementary groups and no_new_privs: the program cannot write anything owned by other users, read
    root-only files, or signal other users' processes, and RLIMIT_NPROC counts exactly its own tasks.
  If a namespace or a mount cannot be created (a container without CAP_SYS_ADMIN), the run goes on with what
  is available and `RunResult.isolation` says what was applied (`writable:/dev/shm` and the like for a tmpfs
  that could not be mounted); a failed uid switch is a `setup_error` (a fork bomb would not be contained).
- `bwrap` (not root, bubblewrap installed and usable: Debian's `bubblewrap`): the launcher runs inside
  `bwrap` with new user, pid, network, ipc, uts and cgroup namespaces, nested user namespaces disabled, the
  system (/usr, /etc, the interpreter's prefix) read-only, nothing else of the host's file system (not your
  home, not this repository), size-limited tmpfs on /tmp and /dev/shm, its own /proc, and `--die-with-parent`.
  RLIMIT_NPROC counts the tasks of the sandbox's user namespace on Linux >= 5.14 (checked once by a probe;
  on older kernels it is your own task count plus `nproc`, as in the next mode).
- `rlimits` (not root and no usable bubblewrap, or `Limits(namespaces=False)`): limits, a scrubbed environment,
  a temporary work dir and the process group only. The program runs as you: it can read and write your files,
  reach the network, signal your processes and escape the process-group kill with setsid. `check_sandbox()`
  warns about this in one line.

In every mode: setrlimit in the launcher before exec (CPU seconds, address space, file size, number of tasks,
open files, no core dumps); the parent enforces wall time and caps stdout/stderr, which it reads incrementally
(a program printing gigabytes is killed once it passes the cap); the interpreter runs with -s (no user
site-packages) in a scrubbed environment (PATH, LANG, HOME=the work dir, thread counts = 1, PYTHONHASHSEED=0
so a program that prints a set prints it the same way every run); the work dir holds main.py and the caller's
`files`, importable by name; after the run the whole process tree is killed (the pid namespace, the cgroup's
processes, everything the sandbox uid still runs) and the host-side temporary directory is removed.

Memory is bounded for the whole sandbox, not per process: each process gets RLIMIT_AS = memory_mb // nproc and
at most `nproc` tasks run, so all of them together stay within `memory_mb` in every mode (the same limit per
process everywhere, so a program's verdict does not depend on the machine); the cgroup (root) also counts what
RLIMIT_AS does not see (tmpfs files, kernel memory) and reports the peak. `run_batch` runs at most
`max_workers(limits)` sandboxes at once, so the whole batch stays within workers x memory_mb, at most half the
memory available when it starts.

The launcher needs only the standard library: it is copied next to the program's files in the run's temporary
directory and run from there, so the repository does not have to be readable by the sandbox (or exist in it).

What is NOT isolated even as root: the program can read world-readable files (the Python installation, the
repository source unless bubblewrap hides it), and use the CPU for up to its CPU limit. This is a containment
layer for model-generated code, not a defence against a determined attacker with kernel exploits; run real
evaluations on a disposable machine or container.
"""
from __future__ import annotations

import ctypes
import functools
import itertools
import json
import logging
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
MIN_PROCESS_MB = 32  # a Python interpreter needs about 15 MiB of address space to start
SYSTEM_PATH = "/usr/local/bin:/usr/bin:/bin"
BWRAP_HOST = "/run/sandbox"  # where the run's temporary directory appears inside bubblewrap (read-only)
WORKDIR = "/tmp/work"  # the program's work dir when /tmp is a private tmpfs


class CodeExecutionNotAllowed(RuntimeError):
    """Raised before any code runs when the caller did not opt in to running untrusted code."""


@dataclass(frozen=True)
class Limits:
    """Resource limits for one program run (one sandbox: all the processes the program starts)."""
    wall_s: float = 10.0  # wall-clock seconds, enforced by the parent (kill of the whole tree)
    cpu_s: int = 10  # RLIMIT_CPU seconds per process (SIGKILL at the hard limit, cpu_s + 1)
    memory_mb: int = 1024  # MiB for the whole sandbox: RLIMIT_AS = memory_mb // nproc per process; cgroup as root
    nproc: int = 8  # RLIMIT_NPROC: tasks (processes + threads) of the sandbox, the program's own included
    fsize_mb: int = 64  # RLIMIT_FSIZE: largest file the program may write, MiB; also each tmpfs size / 2
    nofile: int = 64  # RLIMIT_NOFILE
    output_bytes: int = 16 << 20  # stdout cap (and stderr cap / 16); more -> killed, status "output_limit"
    namespaces: bool = True  # isolate (root: namespaces + uid switch; otherwise bubblewrap); False: rlimits only
    python: str | None = None  # interpreter for the program; default: python3 on /usr/local/bin:/usr/bin:/bin

    def __post_init__(self):
        for name in ("wall_s", "cpu_s", "memory_mb", "nproc", "fsize_mb", "nofile", "output_bytes"):
            if not getattr(self, name) > 0:
                raise ValueError(f"Limits.{name} must be positive, got {getattr(self, name)!r}")
        if self.process_memory_mb < MIN_PROCESS_MB:
            raise ValueError(f"Limits: memory_mb={self.memory_mb} over nproc={self.nproc} leaves "
                             f"{self.process_memory_mb} MiB per process; a Python process needs >= {MIN_PROCESS_MB}")

    @property
    def process_memory_mb(self) -> int:
        """RLIMIT_AS of each process: nproc of them together stay within memory_mb."""
        return self.memory_mb // self.nproc


@dataclass
class RunResult:
    """What happened. `status`: ok (exit 0), error (non-zero exit or killed by a signal), timeout (wall or CPU
    limit), memory (MemoryError / allocation refused / the cgroup killed a process), output_limit, setup_error
    (the sandbox could not start: a harness problem, also scored as a failure). `reason` is a one-line human
    explanation; `isolation` what was applied; `peak_memory_mb` the cgroup's peak (None without a cgroup)."""
    status: str
    returncode: int | None
    stdout: str
    stderr: str
    wall_s: float
    reason: str = ""
    isolation: list[str] = field(default_factory=list)
    peak_memory_mb: float | None = None


def code_execution_allowed(allow: bool | None = None) -> bool:
    return bool(allow) if allow is not None else os.environ.get(OPT_IN_ENV, "") == "1"


def require_opt_in(allow: bool | None = None) -> None:
    if not code_execution_allowed(allow):
        raise CodeExecutionNotAllowed(
            "running model-generated code is disabled: it is untrusted. Opt in with the environment variable "
            f"{OPT_IN_ENV}=1 (as lm-eval) or allow_code_execution=True, preferably on a disposable machine; "
            "see docs/ood.md for what the sandbox isolates.")


def default_python() -> str:
    return shutil.which("python3", path=SYSTEM_PATH) or sys.executable


_COUNTER = itertools.count()
_COUNTER_LOCK = threading.Lock()


def _next_id() -> int:
    with _COUNTER_LOCK:
        return next(_COUNTER)


def _scrubbed_env(workdir: str) -> dict[str, str]:
    return {"PATH": SYSTEM_PATH, "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "HOME": workdir,
            "TMPDIR": "/tmp", "PYTHONHASHSEED": "0", "PYTHONDONTWRITEBYTECODE": "1", "PYTHONIOENCODING": "utf-8",
            "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


# ---------------------------------------------------------------- which isolation this machine gives

@dataclass(frozen=True)
class Bwrap:
    """A usable bubblewrap: its path, the options this version knows, and how RLIMIT_NPROC counts under it."""
    path: str
    size: bool  # --size (bwrap >= 0.7): size-limited tmpfs
    disable_userns: bool  # --disable-userns (bwrap >= 0.8)
    nproc_per_userns: bool  # Linux >= 5.14 counts RLIMIT_NPROC per user namespace


def isolation_mode(limits: Limits = Limits()) -> tuple[str, str]:
    """("root" | "bwrap" | "rlimits", why a weaker mode applies ("" for root and bwrap))."""
    if not limits.namespaces:
        return "rlimits", "Limits(namespaces=False)"
    if os.geteuid() == 0:
        return "root", ""
    bw, why = find_bwrap(limits.python or default_python())
    return ("bwrap", "") if bw else ("rlimits", why)


@functools.lru_cache(maxsize=None)
def find_bwrap(python: str) -> tuple[Bwrap | None, str]:
    """The installed bubblewrap if it can run `python` here (probed once per interpreter), else (None, why)."""
    path = shutil.which("bwrap", path=SYSTEM_PATH)
    if not path:
        return None, "bubblewrap is not installed (Debian/Ubuntu: apt-get install bubblewrap)"
    try:
        helptext = subprocess.run([path, "--help"], capture_output=True, text=True, timeout=10).stdout
        bw = Bwrap(path, "--size" in helptext, "--disable-userns" in helptext, False)
        # one probe: can it start the interpreter at all, and does RLIMIT_NPROC count per user namespace?
        # Set the limit to the tasks visible in the new pid namespace + 1 and fork once: that works only if
        # the kernel counts this namespace's tasks, not all of this user's.
        probe = ("import os, resource\nn = sum(len(os.listdir(f'/proc/{d}/task')) for d in os.listdir('/proc') "
                 "if d.isdigit())\nresource.setrlimit(resource.RLIMIT_NPROC, (n + 1, n + 1))\n"
                 "try:\n    pid = os.fork()\nexcept OSError:\n    print('user')\nelse:\n"
                 "    if pid == 0:\n        os._exit(0)\n    os.waitpid(pid, 0)\n    print('userns')\n")
        with tempfile.TemporaryDirectory(prefix="harness-bwrap-probe-") as d:
            p = subprocess.run(_bwrap_argv(bw, d, Limits(), python) + [python, "-I", "-S", "-c", probe],
                               capture_output=True, text=True, timeout=30, env={"PATH": SYSTEM_PATH})
    except (OSError, subprocess.SubprocessError) as e:
        return None, f"bubblewrap at {path} could not run: {type(e).__name__}: {e}"
    if p.returncode != 0 or p.stdout.strip() not in ("user", "userns"):
        err = (p.stderr.strip().splitlines() or [f"exit status {p.returncode}"])[-1][:200]
        return None, f"bubblewrap at {path} does not work here ({err}; unprivileged user namespaces disabled?)"
    return replace(bw, nproc_per_userns=p.stdout.strip() == "userns"), ""


def _bwrap_argv(bw: Bwrap, host: str, limits: Limits, python: str) -> list[str]:
    """bwrap options: every namespace, the system read-only, private size-limited /tmp and /dev/shm, the run's
    temporary directory read-only at BWRAP_HOST, nothing else of the host's file system."""
    argv = [bw.path, "--unshare-all", "--unshare-user", "--die-with-parent", "--new-session"]
    if bw.disable_userns:
        argv.append("--disable-userns")
    argv += ["--ro-bind", "/usr", "/usr", "--ro-bind", "/etc", "/etc"]
    for d in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
        if os.path.islink(d):
            argv += ["--symlink", os.readlink(d), d]
        elif os.path.isdir(d):
            argv += ["--ro-bind", d, d]
    prefix = os.path.dirname(os.path.dirname(os.path.realpath(python)))  # an interpreter outside /usr
    if prefix not in ("/", "/usr") and not prefix.startswith("/usr/"):
        argv += ["--ro-bind", prefix, prefix]
    size = ["--size", str(2 * limits.fsize_mb << 20)] if bw.size else []
    argv += ["--proc", "/proc", "--dev", "/dev", *size, "--tmpfs", "/tmp", *size, "--tmpfs", "/dev/shm",
             "--ro-bind", host, BWRAP_HOST, "--chdir", "/", "--"]
    return argv


def _bwrap_isolation(bw: Bwrap) -> list[str]:
    iso = ["bwrap", "userns", "netns", "pidns", "ipcns", "utsns", "ro-system", "proc"]
    iso.append("tmpfs" if bw.size else "tmpfs-unbounded")
    iso.append("nproc-userns" if bw.nproc_per_userns else "nproc-user")
    return iso


def isolation_line(mode: str, isolation: list[str], why: str = "") -> tuple[int, str]:
    """(logging level, one line): what this machine's sandbox contains, said once at start-up."""
    if mode == "root":
        return logging.INFO, f"code sandbox: root mode ({', '.join(isolation)})"
    if mode == "bwrap":
        return logging.INFO, f"code sandbox: bubblewrap as an ordinary user ({', '.join(isolation)})"
    return logging.WARNING, (
        f"code sandbox: RLIMITS ONLY ({why}): generated programs run as you and can read and write your files, "
        "reach the network and signal your processes; install bubblewrap or run as root (docs/ood.md)")


_CHECKED: dict[str, tuple[str, ...]] = {}


def check_sandbox(limits: Limits = Limits(wall_s=30, memory_mb=256)) -> tuple[str, ...]:
    """Run one trivial program (once per process and mode); raise if the sandbox cannot run code at all (a
    broken sandbox would otherwise score every response wrong); log one line saying what is isolated (a
    warning when only rlimits apply). Returns the isolation applied."""
    mode, why = isolation_mode(limits)
    if mode not in _CHECKED:
        r = run_python("print('ok')", limits=limits, allow_code_execution=True)
        if r.status != "ok" or r.stdout.strip() != "ok":
            raise RuntimeError(f"the code sandbox ({mode} mode) does not work on this machine ({r.status}: "
                               f"{r.reason or r.stderr[-300:]}); see docs/ood.md")
        level, line = isolation_line(mode, r.isolation, why)
        logging.getLogger(__name__).log(level, "%s", line)
        _CHECKED[mode] = tuple(r.isolation)
    return _CHECKED[mode]


def max_workers(limits: Limits, requested: int | None = None) -> int:
    """At most `requested` sandboxes at once (default: the CPUs this process may use), and few enough that
    workers x limits.memory_mb stays within half of the memory available now (at least 1)."""
    want = requested or max(1, len(os.sched_getaffinity(0)))
    try:
        with open("/proc/meminfo") as f:
            avail_mb = next(int(line.split()[1]) for line in f if line.startswith("MemAvailable:")) // 1024
    except (OSError, StopIteration, ValueError):
        return want
    return max(1, min(want, avail_mb // 2 // limits.memory_mb))


# ---------------------------------------------------------------- memory cgroup (root)

@functools.lru_cache(maxsize=1)
def _cgroup_bases() -> tuple[tuple[str, str], ...]:
    """(version, directory of this process's cgroup) for the memory controller: v1 first, then v2."""
    try:
        with open("/proc/self/cgroup") as f:
            own = [line.rstrip("\n").split(":", 2) for line in f]
        with open("/proc/self/mountinfo") as f:
            mounts = [line.split() for line in f]
    except OSError:
        return ()
    wanted = [("v1", path) for _, ctrl, path in own if "memory" in ctrl.split(",")]
    wanted += [("v2", path) for _, ctrl, path in own if ctrl == ""]
    out = []
    for version, path in wanted:
        for m in mounts:
            sep = m.index("-")
            fstype, opts, root, point = m[sep + 1], m[sep + 3].split(","), m[3], m[4]
            if fstype != ("cgroup" if version == "v1" else "cgroup2") or (version == "v1" and "memory" not in opts):
                continue
            if path == root or path.startswith(root.rstrip("/") + "/"):  # the mount shows this part of the tree
                out.append((version, point + path[len(root.rstrip("/")):]))
    return tuple(out)


def _write(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


def create_memory_cgroup(memory_mb: int) -> tuple[str, str] | None:
    """A new memory cgroup limited to memory_mb (swap included where the kernel accounts it), or None."""
    if os.geteuid() != 0:
        return None
    name = f"harness-sandbox-{os.getpid()}-{_next_id()}"
    for version, base in _cgroup_bases():
        d = os.path.join(base, name)
        try:
            os.mkdir(d)
        except OSError:
            continue
        try:
            if version == "v1":
                _write(os.path.join(d, "memory.limit_in_bytes"), str(memory_mb << 20))
                try:
                    _write(os.path.join(d, "memory.memsw.limit_in_bytes"), str(memory_mb << 20))
                except OSError:
                    pass  # no swap accounting
            else:
                if not os.path.exists(os.path.join(d, "memory.max")):
                    _write(os.path.join(base, "cgroup.subtree_control"), "+memory")
                _write(os.path.join(d, "memory.max"), str(memory_mb << 20))
                try:
                    _write(os.path.join(d, "memory.swap.max"), "0")
                except OSError:
                    pass
            return version, d
        except OSError:
            _rmdir_quiet(d)
    return None


def close_memory_cgroup(cg: tuple[str, str]) -> tuple[int, float | None]:
    """Kill what is left in the cgroup, read (oom kills, peak MiB), remove it."""
    version, d = cg

    def read(name: str) -> str:
        try:
            with open(os.path.join(d, name)) as f:
                return f.read()
        except OSError:
            return ""

    deadline = time.monotonic() + 5
    while True:
        pids = [int(p) for p in read("cgroup.procs").split()]
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if not pids or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    stats = dict(line.split()[:2] for line in read("memory.oom_control" if version == "v1" else "memory.events")
                 .splitlines() if len(line.split()) >= 2)
    peak = read("memory.max_usage_in_bytes" if version == "v1" else "memory.peak").strip()
    result = int(stats.get("oom_kill", 0)), (int(peak) / (1 << 20) if peak.isdigit() else None)
    while not _rmdir_quiet(d) and time.monotonic() < deadline:
        time.sleep(0.02)
    return result


def _rmdir_quiet(d: str) -> bool:
    try:
        os.rmdir(d)
        return True
    except FileNotFoundError:
        return True
    except OSError:
        return False


# ---------------------------------------------------------------- parent side

@functools.lru_cache(maxsize=1)
def _launcher_source() -> str:
    with open(os.path.abspath(__file__), encoding="utf-8") as f:
        return f.read()


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
    python = limits.python or default_python()
    mode, _ = isolation_mode(limits)
    bw = find_bwrap(python)[0] if mode == "bwrap" else None
    uid = UID_BASE + (os.getpid() % 100_000) * 1000 + _next_id() % 1000 if mode == "root" else None
    host = tempfile.mkdtemp(prefix="harness-sandbox-")
    cg = create_memory_cgroup(limits.memory_mb) if mode == "root" else None
    t0 = time.monotonic()
    oom, peak = 0, None
    try:
        os.mkdir(os.path.join(host, "files"), 0o700)
        for name, text in files.items():
            with open(os.path.join(host, "files", name), "w", encoding="utf-8") as f:
                f.write(text)
        with open(os.path.join(host, "launch.py"), "w", encoding="utf-8") as f:
            f.write(_launcher_source())
        # RLIMIT_NPROC counts all of this user's tasks (rlimits mode, old kernels under bwrap): the launcher adds
        # the count it sees; under bwrap it sees only its namespace, so it gets the count from here
        # (+ 3: bwrap outside, its init, the launcher)
        user_tasks = _user_task_count() + 3 if bw is not None and not bw.nproc_per_userns else None
        cfg = {"mode": mode, "uid": uid, "namespaces": mode == "root", "python": python,
               "env": _scrubbed_env(WORKDIR), "cpu_s": limits.cpu_s, "memory_mb": limits.process_memory_mb,
               "nproc": limits.nproc, "fsize_mb": limits.fsize_mb, "nofile": limits.nofile,
               "cgroup": os.path.join(cg[1], "cgroup.procs") if cg else None, "user_tasks": user_tasks}
        with open(os.path.join(host, "config.json"), "w") as f:
            json.dump(cfg, f)
        if bw is not None:
            argv = _bwrap_argv(bw, host, limits, python) + [
                python, "-I", "-S", f"{BWRAP_HOST}/launch.py", "--launch", BWRAP_HOST]
        else:
            argv = [python, "-I", "-S", os.path.join(host, "launch.py"), "--launch", host]
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                start_new_session=True, close_fds=True, env={"PATH": SYSTEM_PATH})
        out, err, why = _communicate(proc, stdin_b, limits)
        rc = proc.returncode
        iso = _bwrap_isolation(bw) if bw is not None else _read_isolation(host)
        if uid is not None and (why or "pidns" not in iso):
            _kill_uid(uid)  # anything left behind: no pid namespace (setsid escapes the group), or a kill race
        wall = time.monotonic() - t0
    finally:
        if cg is not None:
            oom, peak = close_memory_cgroup(cg)
        shutil.rmtree(host, ignore_errors=True)
    stdout, stderr = out.decode("utf-8", "replace"), err.decode("utf-8", "replace")
    if bw is not None and rc == 1 and stderr.startswith("bwrap:"):  # bubblewrap itself failed to set up
        rc, stderr = SETUP_ERROR_RC, f"SANDBOX-SETUP-ERROR: {stderr.strip()}"
    status, reason = _classify(rc, stderr, why, limits, oom)
    return RunResult(status, rc, stdout, stderr, wall, reason, iso, peak)


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
    if not why:
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            why = "timeout"
    _kill_tree(proc)  # also after a normal exit: whatever the program left running in its process group
    for f in (proc.stdin, proc.stdout, proc.stderr):
        try:
            f.close()
        except OSError:
            pass
    return bytes(bufs[proc.stdout]), bytes(bufs[proc.stderr]), why


def _kill_tree(proc: subprocess.Popen) -> None:
    """SIGKILL the launcher's process group; with a pid namespace the kernel then kills everything inside
    (without one, a process that called setsid escapes: the rlimits-only mode's known hole)."""
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


def _classify(rc: int | None, stderr: str, why: str, limits: Limits, oom_kills: int = 0) -> tuple[str, str]:
    tail = stderr.strip().splitlines()[-1][:300] if stderr.strip() else ""
    if why == "timeout":
        return "timeout", f"wall-clock limit of {limits.wall_s:g}s exceeded"
    if why == "output_limit":
        return "output_limit", f"output over {limits.output_bytes} bytes"
    if rc == SETUP_ERROR_RC and "SANDBOX-SETUP-ERROR" in stderr:
        return "setup_error", tail
    if rc == 0:
        return "ok", ""
    if oom_kills:
        return "memory", f"memory limit {limits.memory_mb} MiB for the whole sandbox: {oom_kills} process(es) killed"
    sig = -rc if rc is not None and rc < 0 else (rc - 128 if rc is not None and rc > 128 else 0)
    if sig in (signal.SIGXCPU, signal.SIGKILL) and "MemoryError" not in stderr:
        return "timeout", f"killed by {signal.Signals(sig).name} (CPU limit {limits.cpu_s}s)"
    if sig == signal.SIGXFSZ or "File too large" in stderr:  # Python ignores SIGXFSZ: EFBIG instead
        return "output_limit", f"file size limit {limits.fsize_mb} MiB exceeded (SIGXFSZ)"
    if "MemoryError" in stderr or "Cannot allocate memory" in stderr:
        return "memory", (f"memory limit {limits.memory_mb} MiB for the sandbox ({limits.process_memory_mb} MiB "
                          f"per process): {tail}")
    if sig:
        return "error", f"killed by signal {sig}"
    return "error", f"exit status {rc}: {tail}"


def run_batch(jobs: list[dict], limits: Limits = Limits(), workers: int | None = None,
              allow_code_execution: bool | None = None) -> list[RunResult]:
    """Run many programs, at most max_workers(limits, workers) at a time (threads that wait on child
    processes). Each job is a dict of run_python keyword arguments (main, stdin, files, optionally limits)."""
    require_opt_in(allow_code_execution)

    def one(job: dict) -> RunResult:
        job = {"limits": limits, **job}
        return run_python(allow_code_execution=True, **job)

    with ThreadPoolExecutor(max_workers=max_workers(limits, workers)) as ex:
        return list(ex.map(one, jobs))


def _user_task_count() -> int:
    """Tasks (threads) of the current user that this process can see: RLIMIT_NPROC counts these."""
    me, n = os.getuid(), 0
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                if os.stat(f"/proc/{d}").st_uid == me:
                    n += len(os.listdir(f"/proc/{d}/task"))
            except OSError:
                pass
    return n


# ---------------------------------------------------------------- launcher side (run as a script)

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
    if cfg["cgroup"]:  # root: join the run's memory cgroup before anything else; every child inherits it
        try:
            _write(cfg["cgroup"], str(os.getpid()))
            iso.append("cgroup")
        except OSError:
            pass
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
    iso_fd = None if cfg["mode"] == "bwrap" else os.open(os.path.join(host, "isolation.json"),
                                                          os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
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
    if cfg["mode"] == "bwrap":  # bubblewrap made /tmp a private tmpfs; the host dir is read-only
        workdir = WORKDIR
    if private_mounts:
        size = f"size={2 * cfg['fsize_mb']}m"  # room for one file of the largest size
        opts = f"{size},mode=1777"
        # /tmp first: if even that fails, the program works in the host dir and "tmpfs" is not reported
        if _mount(libc, "tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, opts):
            iso.append("tmpfs")
            workdir = WORKDIR
            for target in ("/var/tmp", "/run/lock", "/dev/shm"):
                if os.path.isdir(target) and not _mount(libc, "tmpfs", target, "tmpfs", MS_NOSUID | MS_NODEV,
                                                        opts):
                    iso.append(f"writable:{target}")
        if pidns and _mount(libc, "proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, None):
            iso.append("proc")
    if iso_fd is not None:
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
        if uid is not None:  # a fresh uid: its task count is exactly the sandbox's
            resource.setrlimit(resource.RLIMIT_NPROC, (cfg["nproc"],) * 2)
            os.setgroups([])
            os.setresgid(uid, uid, uid)
            os.setresuid(uid, uid, uid)
        else:  # the kernel counts every task of this user (in this user namespace): ours = nproc more
            others = cfg["user_tasks"] if cfg["user_tasks"] is not None else _user_task_count()
            resource.setrlimit(resource.RLIMIT_NPROC, (cfg["nproc"] + others - 1,) * 2)
        libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
    except OSError as e:
        _setup_error(f"{type(e).__name__}: {e}")
    env = dict(cfg["env"], HOME=workdir)
    try:
        os.execve(cfg["python"], [cfg["python"], "-s", "main.py"], env)
    except OSError as e:
        _setup_error(f"cannot run {cfg['python']}: {e}")


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
