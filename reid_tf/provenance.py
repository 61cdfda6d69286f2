"""Where a result file came from: the one record every result writer adds (`provenance` key).

A figure in results/ or networks/ is only checkable if its file says what made it: the code (commit,
and whether the tree had uncommitted changes, which the commit then does not describe), the run
(run_id of its run.json), the full command line, the machine (CPU model, cores, a quick float32
matmul rate, so that a time can be read against the machine it was taken on), when it started and
ended, and the seed of the random test galleries (single-shot draw and [31]'s 10 gallery draws both
derive from the run's seed: reid_tf.protocols.evaluate_network).

    record = provenance.start(run_id=..., gallery_seed=...)   # at the start of the work
    body["provenance"] = provenance.finish(record)            # just before the file is written

A field that cannot be known is the string "unknown", never left out or guessed.
"""
from __future__ import annotations

import datetime
import os
import platform
import shlex
import subprocess
import sys
import time

UNKNOWN = "unknown"
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MATMUL_SIZE = 1024  # small enough to take < 0.2 s on 2 slow cores; `make bench` uses 2048² for its figure


def now() -> str:
    """The local time with its UTC offset, to the second (ISO 8601)."""
    return datetime.datetime.now().astimezone().isoformat(timespec="seconds")


def _git(*args: str, cwd: str) -> str | None:
    try:
        proc = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return None
    return proc.stdout.strip() if proc.returncode == 0 else None


def code_version(path: str = REPO) -> dict:
    """{"commit": the checkout's HEAD, "dirty": True when tracked files differ from it} for the git
    checkout holding `path`; both "unknown" outside one (an installed copy)."""
    commit = _git("rev-parse", "HEAD", cwd=path)
    if commit is None:
        return {"commit": UNKNOWN, "dirty": UNKNOWN}
    status = _git("status", "--porcelain", "--untracked-files=no", cwd=path)
    return {"commit": commit, "dirty": UNKNOWN if status is None else bool(status)}


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo on Linux), else what the platform module says."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or UNKNOWN


def matmul_gflops(n: int = MATMUL_SIZE, repeats: int = 3) -> float:
    """float32 NumPy matmul GFLOP/s (n × n, best of `repeats`): a quick gauge of the machine, not a
    benchmark (it shares the cores with whatever else runs; `make bench` measures at 2048², idle)."""
    import numpy as np

    a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
    a @ a  # warm-up: BLAS threads start
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        a @ a
        best = min(best, time.perf_counter() - t)
    return round(2 * n ** 3 / best / 1e9, 1)


def machine(measure: bool = True) -> dict:
    """CPU model, logical cores, load average (a busy machine's times are not idle ones), and the
    matmul GFLOP/s of matmul_gflops (None when measure=False)."""
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load = UNKNOWN
    return {"cpu": cpu_model(), "cores": os.cpu_count() or UNKNOWN, "hostname": platform.node() or UNKNOWN,
            "load_average": load, "matmul_gflops": matmul_gflops() if measure else None,
            "matmul_size": MATMUL_SIZE}


def command_line(argv: list[str] | None = None) -> str:
    """The full command as typed to run it again: python -m <module> args (sys.argv by default)."""
    argv = list(sys.argv if argv is None else argv)
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    if spec is not None and spec.name and argv and argv[0].endswith(".py"):
        argv = ["python", "-m", spec.name.removesuffix(".__main__"), *argv[1:]]
    return shlex.join(argv)


def start(run_id: str | None = None, gallery_seed: int | None = None, measure: bool = True, **extra) -> dict:
    """The provenance record of work starting now (finish() adds its end). `extra` (e.g. the network
    or the steps evaluated) is kept as given."""
    return {**code_version(), "run_id": run_id or UNKNOWN, "command": command_line(),
            "cwd": os.getcwd(), "machine": machine(measure), "started": now(), "finished": None,
            "gallery_seed": UNKNOWN if gallery_seed is None else gallery_seed, **extra}


def finish(record: dict) -> dict:
    """`record` with its end time set to now (returned for use in a body)."""
    record["finished"] = now()
    return record


def add_point(body: dict, record: dict, point: dict) -> None:
    """A curve file (experiments.curve) grows over several invocations: each invocation's `record`
    (start(..., steps=[])) is listed once in body["provenance"] with the steps it evaluated, and the
    point names its entry by index ("provenance": i)."""
    records = body.setdefault("provenance", [])
    if not records or records[-1] is not record:
        records.append(record)
    record.setdefault("steps", []).append(point["step"])
    finish(record)
    point["provenance"] = len(records) - 1
