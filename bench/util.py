"""Small helpers the benchmark sections share: timing, worker processes, the machine."""
from __future__ import annotations

import cProfile
import io
import json
import os
import platform
import pstats
import resource
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MEMORY_CAP = 8 << 30  # a worker past this fails cleanly instead of pushing the machine into swap or OOM


def now() -> float:
    return time.perf_counter()


def median(values):
    return statistics.median(values) if values else float("nan")


def rss() -> int:
    """Resident memory of this process, bytes."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def sh(cmd: str, check: bool = True, timeout: float = 600, **kw) -> str:
    r = subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=timeout, **kw)
    if check and r.returncode != 0:
        raise RuntimeError(f"`{cmd}` failed ({r.returncode}): {(r.stdout + r.stderr).strip()[-2000:]}")
    return r.stdout


def one_core():
    """Pin a worker to one CPU (the target is stated for one core) and cap its memory."""
    os.sched_setaffinity(0, {max(os.sched_getaffinity(0))})
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_CAP, MEMORY_CAP))


def run_worker(module: str, job: str, timeout: float, **args) -> dict:
    """Run `python -m MODULE JOB ARGS` in a fresh process (clean memory figures); its last
    stdout line is the JSON result. A failure is returned as {"error": ...}, never raised."""
    cmd = [sys.executable, "-m", module, job, json.dumps(args)]
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    except subprocess.TimeoutExpired:
        return {"error": f"{job} did not finish within {timeout:.0f} s"}
    lines = r.stdout.strip().splitlines()
    if r.returncode != 0 or not lines:
        tail = (r.stderr.strip().splitlines() or ["no output"])[-1]
        # (the report says its last line; the whole of what it said goes to the run's stderr)
        print(f"bench: {job} failed ({r.returncode}):\n{r.stderr[-6000:]}", file=sys.stderr, flush=True)
        return {"error": f"{job} failed ({r.returncode}): {tail}"}
    return json.loads(lines[-1])


def worker_main(jobs: dict):
    """Entry point of a worker module: JOB JSON-ARGS -> one JSON line."""
    job, args = sys.argv[1], json.loads(sys.argv[2])
    one_core()
    print(json.dumps(jobs[job](**args)))


def profile(fn, top: int = 14, sort: str = "tottime") -> str:
    """cProfile of one call, as text: the top functions by `sort`."""
    prof = cProfile.Profile()
    prof.enable()
    fn()
    prof.disable()
    buf = io.StringIO()
    pstats.Stats(prof, stream=buf).sort_stats(sort).print_stats(top)
    lines = [ln.replace(os.getcwd() + "/", "").rstrip() for ln in buf.getvalue().splitlines() if ln.strip()]
    return "\n".join(ln for ln in lines if not ln.strip().startswith(("Ordered by", "List reduced")))


def machine() -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               platform.processor())
    mem = next(int(line.split()[1]) for line in open("/proc/meminfo") if line.startswith("MemTotal"))
    ovs = sh("ovs-vswitchd --version", check=False).splitlines()
    # BENCH_COMMIT names the commit of a tree exported without its .git (git archive).
    commit = os.environ.get("BENCH_COMMIT") or sh(f"git -C {ROOT} rev-parse --short HEAD", check=False).strip()
    dirty = not os.environ.get("BENCH_COMMIT") and sh(f"git -C {ROOT} status --porcelain --untracked-files=no",
                                                      check=False).strip()
    return {
        "cpu": cpu, "cores": os.cpu_count(), "memory_gib": round(mem / (1 << 20), 1),
        "ovs": ovs[0] if ovs else "not installed",
        "debian": open("/etc/debian_version").read().strip() if os.path.exists("/etc/debian_version") else "?",
        "kernel": platform.release(), "python": platform.python_version(),
        "commit": (commit or "unknown") + (" (with uncommitted changes)" if dirty else ""),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "load": os.getloadavg(),
    }
