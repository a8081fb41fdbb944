"""What the code sandbox contains, measured: every hostile program run for real in each mode.

    sudo .venv/bin/python benchmarks/sandbox_containment.py            # prints the markdown table of docs/ood.md

Modes (columns): `root` (the harness runs as root: namespaces, fresh uid, cgroup), `bwrap` (the harness runs as
the ordinary user nobody, bubblewrap installed), `rlimits` (nobody, `Limits(namespaces=False)`: what a machine
without root or an isolation tool gets). Needs root (to become nobody with setpriv, and to create the memory
cgroup that measures each run from outside), bubblewrap and /usr/bin/python3.

Each program runs in its own harness process (the victim: a `python3` that imports a world-readable copy of
the harness's sandbox files and calls `run_python` or LiveCodeBench's `run_tests`), with a secret in its
environment and a private directory of its user's files (mode 0700, a 0600 secret file inside). After the run
this script checks from outside what the program did: files written outside, connections accepted, the
harness process still alive, processes left behind, memory peak of everything started (a memory cgroup
around the harness process), and what the program printed.
"""
from __future__ import annotations

import argparse
import errno
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import date
from pathlib import Path

from harness.sandbox import close_memory_cgroup, create_memory_cgroup

ROOT = Path(__file__).resolve().parents[1]
NOBODY = 65534
LIMITS = dict(wall_s=3, cpu_s=2, memory_mb=256, nproc=8, fsize_mb=8, output_bytes=1 << 20)
MODES = ("root", "bwrap", "rlimits")
# the harness files the victim process imports (stdlib only)
COPY = ["harness/__init__.py", "harness/sandbox.py", "harness/core/__init__.py", "harness/core/scoring.py",
        "harness/tasks/__init__.py", "harness/tasks/code/__init__.py", "harness/tasks/code/utils.py"]

# Placeholders filled per run: NAME (a 15-character process name), PID (the harness process), PORT (a listener
# on the host's 127.0.0.1), SECRETDIR (the harness user's private directory).
PROGRAMS = {
    "infinite loop": "while True:\n    pass\n",
    "fork bomb": (
        "import ctypes, os, time\nctypes.CDLL(None).prctl(15, b'NAME')\nn = 0\n"
        "for _ in range(200):\n    try:\n        pid = os.fork()\n    except OSError:\n        break\n"
        "    if pid == 0:\n        time.sleep(2)\n        os._exit(0)\n    n += 1\n"
        "print('tasks', n + 1, flush=True)\n"),
    "memory bomb, one process": "x = []\nwhile True:\n    x.append(b'x' * (50 << 20))\n",
    "memory bomb, every process it can start": (
        "import os, time\nr, w = os.pipe()\nkids = 0\n"
        "def grab():\n    held = []\n    try:\n        while len(held) < 1024:\n"
        "            held.append(b'x' * (1 << 20))\n    except MemoryError:\n        pass\n    return len(held)\n"
        "for _ in range(16):\n    try:\n        pid = os.fork()\n    except OSError:\n        break\n"
        "    if pid == 0:\n        os.write(w, b'%d\\n' % grab())\n        time.sleep(1)\n        os._exit(0)\n"
        "    kids += 1\n"
        "os.close(w)\nmine = grab()\ntotal = mine + sum(int(x) for x in os.fdopen(r).read().split())\n"
        "print('processes', kids + 1, 'MiB', total)\n"),
    "write outside its directory": (
        "ok = []\nfor p in ['/tmp/NAME', '/dev/shm/NAME', '/var/tmp/NAME', 'SECRETDIR/NAME', '/NAME']:\n"
        "    try:\n        open(p, 'w').write('x')\n        ok.append(p)\n    except OSError:\n        pass\n"
        "print('wrote', ok)\n"),
    "fill /tmp (files of the largest size)": (
        "import os\nb = b'x' * (1 << 20)\nn = 0\n"
        "for i in range(24):\n    try:\n        with open(f'/tmp/NAME-{i}', 'wb') as f:\n"
        "            for _ in range(7):\n                f.write(b)\n                n += 1\n"
        "    except OSError:\n        break\nprint('MiB', n)\n"),
    "read its user's private file": (
        "try:\n    print('read', open('SECRETDIR/secret.txt').read())\nexcept OSError as e:\n    print('denied', e)\n"),
    "secrets in the environment and /proc": (
        "import os\nprint('env', 'HARNESS_SECRET' in os.environ)\n"
        "try:\n    print('proc', b'HARNESS_SECRET' in open('/proc/PID/environ', 'rb').read())\n"
        "except OSError as e:\n    print('proc denied', e)\n"),
    "see other processes": (
        "import os\npids = [d for d in os.listdir('/proc') if d.isdigit()]\n"
        "print('visible', len(pids), 'harness', 'PID' in pids)\n"),
    "network": (
        "import socket\nfor addr in [('127.0.0.1', PORT), ('1.1.1.1', 53)]:\n"
        "    s = socket.socket(); s.settimeout(1)\n"
        "    try:\n        s.connect(addr); print('CONNECTED', addr)\n"
        "    except OSError as e:\n        print('refused', addr, e.errno)\n"),
    "kill the harness": (
        "import os, signal\ntry:\n    os.kill(PID, signal.SIGKILL)\n    print('sent')\n"
        "except OSError as e:\n    print('denied', e.errno)\n"),
    "take the harness's descriptors (pidfd_getfd)": (
        "import ctypes, os\nlibc = ctypes.CDLL(None, use_errno=True)\npidfd = libc.syscall(434, PID, 0)\n"
        "got = [fd for fd in range(64) if libc.syscall(438, pidfd, fd, 0) >= 0] if pidfd >= 0 else []\n"
        "print('pidfd', pidfd, 'took', len(got), 'errno', ctypes.get_errno())\n"),
    "leave a daemon behind": (
        "import os, sys, time\nif os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n"
        "        os.execv(sys.executable, [sys.executable, '-c', \"import ctypes, time; "
        "ctypes.CDLL(None).prctl(15, b'NAME'); time.sleep(30)\"])\n    os._exit(0)\n"
        "time.sleep(0.5)\nprint('daemon started')\n"),
    "print gigabytes": "import sys\nb = 'x' * (1 << 20)\nwhile True:\n    sys.stdout.write(b)\n",
    "write a huge file": "b = 'x' * (1 << 20)\nwith open('big', 'w') as f:\n    while True:\n        f.write(b)\n",
    "forge its verdict (LiveCodeBench, pidfd_getfd on the driver)": None,  # run through run_tests, see HARNESS
}

FORGE = """
import ctypes, json, os
libc = ctypes.CDLL(None, use_errno=True)
ppid, got, errs = os.getppid(), [], set()
pidfd = libc.syscall(434, ppid, 0)
for fd in range(3, 16):
    new = libc.syscall(438, pidfd, fd, 0)
    got.append(new) if new >= 0 else errs.add(ctypes.get_errno())
rec = json.dumps({"i": 0, "status": "ok", "output": "3\\n7\\n"}) + "\\n"
for fd in got:
    os.write(fd, (rec * 3 + '{"glue": "').encode())
raise RuntimeError(f"FORGE fds={len(got)} errnos={sorted(errs)}")
"""

# the victim: runs one program in the sandbox and prints the result as JSON
HARNESS = r"""
import dataclasses, json, os, sys
from harness import sandbox
from harness.tasks.code import utils
req = json.load(sys.stdin)
limits = sandbox.Limits(**req["limits"])
if req.get("startup_runs"):  # start-up cost: trivial programs, one after the other
    import time
    t = time.perf_counter()
    for _ in range(req["startup_runs"]):
        assert sandbox.run_python("print(1)", limits=limits, allow_code_execution=True).status == "ok"
    print(json.dumps({"ms": (time.perf_counter() - t) / req["startup_runs"] * 1000}))
elif req["program"] is None:
    tests = [{"input": "2\n1 2\n3 4\n", "output": "3\n7\n", "testtype": "stdin"},
             {"input": "1\n5 5\n", "output": "10\n", "testtype": "stdin"},
             {"input": "1\n0 0\n", "output": "0\n", "testtype": "stdin"}]
    if not req["limits"]["namespaces"]:
        utils._limits = lambda *a, _l=utils._limits: dataclasses.replace(_l(*a), namespaces=False)
    ok, status, reason = utils.run_tests(req["forge"], tests, None, timeout_s=3, allow_code_execution=True)
    print(json.dumps({"status": status, "stdout": reason, "passed": ok, "isolation": [], "reason": reason}))
else:
    r = sandbox.run_python(req["program"].replace("PID", str(os.getpid())), limits=limits,
                           allow_code_execution=True)
    print(json.dumps(dataclasses.asdict(r)))
"""


def _procs_named(name: str) -> list[int]:
    """Live (not zombie) processes called `name`."""
    out = []
    for d in os.listdir("/proc"):
        try:
            if d.isdigit() and Path(f"/proc/{d}/comm").read_text().strip() == name and \
                    Path(f"/proc/{d}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
                out.append(int(d))
        except OSError:
            pass
    return out


def _victim(mode: str, req: dict, tree: str, env: dict, cg: tuple[str, str] | None = None):
    """Run the harness process (as root, or as nobody) on `req`; it joins the measuring cgroup first."""
    become = [] if mode == "root" else ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
    join = f"echo $$ > {cg[1]}/cgroup.procs && " if cg else ""
    cmd = ["sh", "-c", join + 'exec "$@"', "sh", *become, "/usr/bin/python3", "-c", HARNESS]
    return subprocess.run(cmd, input=json.dumps(req), capture_output=True, text=True, timeout=120, cwd="/",
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": tree, **env})


def startup_ms(mode: str, tree: str, runs: int = 20) -> float:
    p = _victim(mode, {"startup_runs": runs, "limits": dict(LIMITS, namespaces=mode != "rlimits")}, tree,
                {"HOME": "/"})
    return json.loads(p.stdout.strip().splitlines()[-1])["ms"]


def run_one(mode: str, name: str, src: str | None, tree: str) -> dict:
    nonce = uuid.uuid4().hex[:15]
    user = 0 if mode == "root" else NOBODY
    secretdir = tempfile.mkdtemp(prefix="containment-home-")
    Path(secretdir, "secret.txt").write_text("the harness user's secret " + nonce)
    for p in (secretdir, f"{secretdir}/secret.txt"):
        os.chown(p, user, user)
    os.chmod(f"{secretdir}/secret.txt", 0o600)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(5)
    listener.setblocking(False)
    fill = {"NAME": nonce, "PORT": str(listener.getsockname()[1]), "SECRETDIR": secretdir}
    prog = src
    for k, v in fill.items():
        prog = prog.replace(k, v) if prog is not None else None
    req = {"program": prog, "forge": FORGE, "limits": dict(LIMITS, namespaces=mode != "rlimits")}
    cg = create_memory_cgroup(1 << 20)  # a limit far above anything here: it measures the peak of everything started
    before = set(Path("/tmp").glob("harness-sandbox-*"))
    t0 = time.monotonic()
    p = _victim(mode, req, tree, {"HOME": secretdir, "HARNESS_SECRET": "s3cr3t-" + nonce}, cg)
    wall = time.monotonic() - t0
    time.sleep(1.0)
    left = _procs_named(nonce)
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    try:
        listener.accept()
        accepted = True
    except BlockingIOError:
        accepted = False
    listener.close()
    peak = close_memory_cgroup(cg)[1] if cg else None
    outside = [q for q in (f"/tmp/{nonce}", f"/dev/shm/{nonce}", f"/var/tmp/{nonce}", f"{secretdir}/{nonce}",
                           f"/{nonce}") if os.path.exists(q)]
    filled = sum(os.path.getsize(f) for f in Path("/tmp").glob(f"{nonce}-*"))
    for q in outside + [str(f) for f in Path("/tmp").glob(f"{nonce}-*")]:
        os.remove(q)
    shutil.rmtree(secretdir, ignore_errors=True)
    for d in set(Path("/tmp").glob("harness-sandbox-*")) - before:  # a killed harness leaves its run dir behind
        if d.stat().st_uid == user:
            shutil.rmtree(d, ignore_errors=True)
    try:
        res = json.loads(p.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        res = None
    outside = [q.replace(secretdir, "~harness-user").replace(nonce, "X") for q in outside]
    return {"harness_rc": p.returncode, "result": res, "wall": wall, "left": len(left), "accepted": accepted,
            "peak_mb": peak, "outside": outside, "filled_mb": filled / (1 << 20), "stderr": p.stderr[-300:]}


def verdict(name: str, o: dict) -> str:
    """(contained?, evidence) as a table cell."""
    r = o["result"]
    if r is None:
        return f"**no**: harness process died (rc {o['harness_rc']})"
    out = r.get("stdout", "")
    st = r["status"]
    mem = LIMITS["memory_mb"]
    if name == "infinite loop":
        return f"yes: {st} after {o['wall']:.1f} s" if st == "timeout" else f"**no**: {st}"
    if name == "fork bomb":
        n = int(out.split()[1]) if out.startswith("tasks") else None
        good = n is not None and n <= LIMITS["nproc"] and not o["left"]
        return (f"{'yes' if good else '**no**'}: {n} tasks, {o['left']} left after the run")
    if name == "memory bomb, one process":
        return f"yes: {st}" if st == "memory" else f"**no**: {st}"
    if name.startswith("memory bomb, every"):
        words = out.split()
        total = int(words[3]) if len(words) > 3 else None
        good = total is not None and total <= mem and (o["peak_mb"] or 0) <= mem + 64
        return (f"{'yes' if good else '**no**'}: {words[1] if len(words) > 1 else '?'} processes held {total} MiB; "
                f"peak of everything {o['peak_mb'] or float('nan'):.0f} MiB (bound {mem} + the harness)")
    if name == "write outside its directory":
        return "yes: nothing outside" if not o["outside"] else f"**no**: wrote {', '.join(o['outside'])}"
    if name.startswith("fill /tmp"):
        n = int(out.split()[1]) if out.startswith("MiB") else 0
        return (f"yes: {n} MiB, in its private tmpfs" if not o["filled_mb"] else
                f"**no**: {o['filled_mb']:.0f} MiB written to the host's /tmp")
    if name.startswith("read its user's"):
        return "**no**: read it" if "read the harness" in out else "yes: denied or absent"
    if name.startswith("secrets"):
        env = "env True" in out
        proc = "proc True" in out
        return ("yes: not in its environment, /proc/<harness>/environ unreadable" if not env and not proc
                else ("**no**: " + ", ".join(w for w, bad in (("in its environment", env),
                                                                ("/proc/<harness>/environ readable", proc)) if bad)
                      + ("" if env else " (its own environment is scrubbed)")))
    if name == "see other processes":
        words = out.split()
        return (f"{'**no**' if 'True' in out else 'yes'}: sees {words[1] if len(words) > 1 else '?'} pids"
                f"{', the harness among them' if 'True' in out else ''}")
    if name == "network":
        return ("**no**: reached " + ("the host's 127.0.0.1" if o["accepted"] else "the network")
                if "CONNECTED" in out or o["accepted"] else "yes: no connection")
    if name == "kill the harness":
        words = out.split()
        why = errno.errorcode.get(int(words[1]), words[1]) if words[:1] == ["denied"] else out.strip() or st
        return f"yes: refused ({why}), harness alive"
    if name.startswith("take the harness"):
        words = out.split()  # pidfd N took M errno E
        took, err = (int(words[3]), int(words[5])) if words[:1] == ["pidfd"] else (0, 0)
        return f"**no**: took {took} descriptors" if took else f"yes: refused ({errno.errorcode.get(err, err)})"
    if name == "leave a daemon behind":
        return f"**no**: {o['left']} still running after the run" if o["left"] else "yes: killed with the sandbox"
    if name == "print gigabytes":
        return f"yes: {st}, {len(out)} bytes kept" if st == "output_limit" else f"**no**: {st}"
    if name == "write a huge file":
        return f"yes: {st}" if st == "output_limit" else f"**no**: {st}"
    if name.startswith("forge"):
        return ("**no**: passed" if r.get("passed") else
                "yes: " + ("pipe refused (EPERM)" if "fds=0 errnos=[1]" in out else out[:60]))
    return st


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--json", help="also write the raw observations here")
    args = ap.parse_args()
    if os.geteuid() != 0 or not shutil.which("setpriv") or not shutil.which("bwrap"):
        sys.exit("needs root, setpriv and bubblewrap (apt-get install bubblewrap)")
    tree = tempfile.mkdtemp(prefix="containment-harness-")
    for f in COPY:
        Path(tree, f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / f, Path(tree, f))
    for d, _, files in os.walk(tree):
        os.chmod(d, 0o755)
        for f in files:
            os.chmod(os.path.join(d, f), 0o644)
    raw, rows = {}, []
    try:
        for name, src in PROGRAMS.items():
            cells = []
            for mode in MODES:
                o = run_one(mode, name, src, tree)
                raw[f"{name} / {mode}"] = o
                cells.append(verdict(name, o))
            rows.append(f"| {name} | " + " | ".join(cells) + " |")
            print(rows[-1], file=sys.stderr, flush=True)
        rows.append("| (cost) one trivial program, sequential | "
                    + " | ".join(f"{startup_ms(mode, tree):.0f} ms per run" for mode in MODES) + " |")
    finally:
        shutil.rmtree(tree, ignore_errors=True)
    load = os.getloadavg()[0]
    print(f"Measured {date.today()} with `sudo .venv/bin/python benchmarks/sandbox_containment.py` (kernel {os.uname().release}, "
          f"bubblewrap {subprocess.run(['bwrap', '--version'], capture_output=True, text=True).stdout.split()[-1]}, "
          f"load {load:.1f}); limits {LIMITS}.\n")
    print("| hostile program | root | bubblewrap as a normal user | rlimits only |")
    print("| --- | --- | --- | --- |")
    print("\n".join(rows))
    if args.json:
        Path(args.json).write_text(json.dumps(raw, indent=1))


if __name__ == "__main__":
    main()
