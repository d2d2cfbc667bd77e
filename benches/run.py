#!/usr/bin/env python3
"""Benchmark runner: our plugin server (sync handlers on threads, `async def`
handlers, and -g) against the official kong-pdk server (thread and -g modes)
and a no-Python Rust "floor" server.

    python benches/run.py                       # full table, written to docs/benchmarks.md
    python benches/run.py --quick               # hello,heavy at 8 and 64 conns, short windows; prints only
    python benches/run.py [--scenarios hello,exit] [--conns 1,8,64] [--servers ours,floor]
    python benches/run.py --leak 1000000        # exit-scenario leak check
    python benches/run.py --workers             # cpu scenario: 1 vs 2 worker processes (-m)

Load is Kong's pattern: two load-generator processes (two nginx workers,
--kong-workers), each with one shared LIFO keep-alive pool checked out per
RPC (--pool shared; --pool own gives each coroutine its own connection),
the connections split between them and one measured window for both.

Builds the load generator (benches/loadgen, release), creates
benches/.venv-official with kong-pdk from PyPI, runs OUR server from the
interpreter running this script (or --ours-python) if `import kong_pdk._core`
works there, pins servers and load generator to different cores, prints one
table and writes it to docs/benchmarks.md.

Not part of the test suite: it takes minutes and its numbers depend on the
machine.
"""

import argparse
import atexit
import datetime
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCHES = ROOT / "benches"
LOADGEN_DIR = BENCHES / "loadgen"
BIN_DIR = LOADGEN_DIR / "target" / "release"
PLUGINS = BENCHES / "plugins"
VENV_OFFICIAL = BENCHES / ".venv-official"
DOC = ROOT / "docs" / "benchmarks.md"

ALL_SCENARIOS = ["hello", "heavy", "exit", "cpu"]
ALL_SERVERS = ["ours", "ours-async", "ours-g", "official", "official-g", "floor"]
# Names earlier versions of this script used.
SERVER_ALIASES = {"official-thread": "official", "official-gevent": "official-g"}
# Also accepted by --servers: ours-m<N> (ours with -m N: N worker processes)
# and official-m (the official package's -m: a multiprocessing pool of one
# process per CPU). Their workers need every core, so they are never pinned.
WORKER_SERVERS = ["ours-m1", "ours-m2", "official-m"]
PLUGIN_NAME = {s: "bench-" + s for s in ALL_SCENARIOS}

_running = []  # Popen objects of servers still alive


def log(msg):
    print(msg, file=sys.stderr, flush=True)


# ---- process handling ---------------------------------------------------------


def _kill_group(proc, grace=3.0):
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=grace)


def _cleanup():
    while _running:
        _kill_group(_running.pop())


atexit.register(_cleanup)


def _on_signal(signum, _frame):
    _cleanup()
    sys.exit(128 + signum)


def tail(path, lines=25):
    try:
        with open(path, "rb") as f:
            data = f.read()[-8192:]
    except OSError:
        return "(no log)"
    text = data.decode("utf-8", "replace").splitlines()
    return "\n".join("    | " + line for line in text[-lines:])


class Server:
    """One server process (its own process group), logging to a file."""

    def __init__(self, kind, scenario, argv, socket_path, workdir, env, pin):
        self.kind = kind
        self.scenario = scenario
        self.socket_path = socket_path
        self.log_path = workdir / ("%s-%s.log" % (kind, scenario))
        self.logf = open(self.log_path, "wb")
        prefix = ["taskset", "-c", str(pin)] if pin is not None else []
        self.proc = subprocess.Popen(
            prefix + argv,
            stdout=self.logf,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=str(workdir),
            env=env,
            start_new_session=True,
        )
        _running.append(self.proc)

    @property
    def pid(self):
        return self.proc.pid

    def alive(self):
        return self.proc.poll() is None

    def wait_ready(self, timeout=20.0):
        """Wait until the socket exists and accepts a connection."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                return "exited with status %s before its socket appeared" % self.proc.returncode
            if os.path.exists(self.socket_path):
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                try:
                    s.connect(str(self.socket_path))
                    return None
                except OSError:
                    pass
                finally:
                    s.close()
            time.sleep(0.05)
        return "socket %s did not accept connections within %.0fs" % (self.socket_path, timeout)

    def stop(self):
        _kill_group(self.proc)
        if self.proc in _running:
            _running.remove(self.proc)
        self.logf.close()

    def report_death(self, what):
        log("  !! %s server (%s) %s; last output:" % (self.kind, self.scenario, what))
        log(tail(self.log_path))


# ---- setup ----------------------------------------------------------------------


def build_loadgen():
    log("building loadgen/floor (release) ...")
    subprocess.run(
        ["cargo", "build", "--release", "--quiet", "--manifest-path", str(LOADGEN_DIR / "Cargo.toml")],
        check=True,
    )
    for b in ("loadgen", "floor", "floor-pb"):
        if not (BIN_DIR / b).exists():
            raise SystemExit("build did not produce %s" % (BIN_DIR / b))


def _venv_python(venv):
    return venv / "bin" / "python"


def official_python(spec):
    """Python of benches/.venv-official with the official kong-pdk, or None."""
    py = _venv_python(VENV_OFFICIAL)
    probe = [str(py), "-c", "import kong_pdk.cli, gevent, msgpack"]
    if py.exists() and subprocess.run(probe, capture_output=True, cwd=tempfile.gettempdir()).returncode == 0:
        return py
    log("creating %s with %s from PyPI ..." % (VENV_OFFICIAL, spec))
    base = getattr(sys, "_base_executable", None) or sys.executable
    try:
        subprocess.run([base, "-m", "venv", "--clear", str(VENV_OFFICIAL)], check=True)
        subprocess.run([str(py), "-m", "pip", "install", "--quiet", spec], check=True)
    except (subprocess.CalledProcessError, OSError) as e:
        log("  official kong-pdk unavailable: %s" % e)
        return None
    if subprocess.run(probe, capture_output=True, cwd=tempfile.gettempdir()).returncode != 0:
        log("  official kong-pdk installed but does not import")
        return None
    return py


def package_version(py, dist):
    r = subprocess.run(
        [str(py), "-c", "import importlib.metadata as m; print(m.version(%r))" % dist],
        capture_output=True,
        text=True,
        cwd=tempfile.gettempdir(),
    )
    return r.stdout.strip() if r.returncode == 0 else "?"


def ours_available(py):
    r = subprocess.run(
        [str(py), "-c", "import kong_pdk._core, kong_pdk.cli; print(kong_pdk._core.__file__)"],
        capture_output=True,
        text=True,
        cwd=tempfile.gettempdir(),
    )
    if r.returncode != 0:
        return False, (r.stderr.strip().splitlines() or [""])[-1]
    return True, r.stdout.strip()


def python_imports(py, module):
    r = subprocess.run([str(py), "-c", "import " + module], capture_output=True, cwd=tempfile.gettempdir())
    return r.returncode == 0


def elf_section_names(path):
    """Section names of a 64-bit little-endian ELF file (empty on failure)."""
    import struct

    try:
        with open(path, "rb") as f:
            data = f.read()
        if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
            return set()
        shoff, = struct.unpack_from("<Q", data, 0x28)
        shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)
        str_off, = struct.unpack_from("<Q", data, shoff + shstrndx * shentsize + 0x18)
        names = set()
        for i in range(shnum):
            name_off, = struct.unpack_from("<I", data, shoff + i * shentsize)
            start = str_off + name_off
            names.add(data[start:data.index(b"\0", start)].decode("ascii", "replace"))
        return names
    except (OSError, struct.error, ValueError, IndexError):
        return set()


def looks_like_debug_build(so_path):
    """The release profile strips the extension; `maturin develop` without
    --release keeps DWARF sections. A heuristic, good enough to warn."""
    return ".debug_info" in elf_section_names(so_path)


VENV_OURS = BENCHES / ".venv-ours"
TARGET_OURS = BENCHES / ".target-ours"


def build_ours_release():
    """Build a release wheel of this repository (own target dir) and install
    it into benches/.venv-ours. Returns that venv's python, or None."""
    py = _venv_python(VENV_OURS)
    wheels = TARGET_OURS / "wheels"
    maturin = shutil.which("maturin")
    if maturin is None:
        log("  --ours-release needs maturin on PATH")
        return None
    log("building a release wheel of ours (maturin, target %s); this takes minutes ..." % TARGET_OURS)
    shutil.rmtree(wheels, ignore_errors=True)
    env = dict(os.environ, CARGO_TARGET_DIR=str(TARGET_OURS))
    try:
        subprocess.run(
            [maturin, "build", "--release", "--quiet", "-o", str(wheels), "-m", str(ROOT / "Cargo.toml")],
            check=True,
            env=env,
        )
        if not py.exists():
            base = getattr(sys, "_base_executable", None) or sys.executable
            subprocess.run([base, "-m", "venv", str(VENV_OURS)], check=True)
        whl = sorted(wheels.glob("*.whl"))
        if not whl:
            log("  maturin produced no wheel")
            return None
        subprocess.run(
            [str(py), "-m", "pip", "install", "--quiet", "--force-reinstall", "--no-deps", str(whl[-1])],
            check=True,
        )
    except (subprocess.CalledProcessError, OSError) as e:
        log("  release build of ours failed: %s" % e)
        return None
    return py


def clean_env(extra=None):
    env = dict(os.environ)
    for k in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP"):
        env.pop(k, None)
    env["PYTHONUNBUFFERED"] = "1"
    env.pop("OPENBLAS_CORETYPE", None)
    if extra:
        env.update(extra)
    return env


def pick_cores(no_pin):
    """(loadgen core, server core) or (None, None)."""
    if no_pin or shutil.which("taskset") is None:
        return None, None
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        return None, None
    return cores[0], cores[-1]


def is_ours(kind):
    return kind in ("ours", "ours-threads", "ours-greenlets", "ours-async", "ours-g", "ours-pb", "ours-pb-async",
                    "ours-pb-g") or re.fullmatch(r"ours-m\d+", kind) is not None


def official_reference(kind):
    """The official server a row is compared with: the one with the same
    execution model (-g for -g), else the official default (threads)."""
    return "official-g" if kind in ("ours-g", "official-g") else "official"


def known_server(kind):
    return kind in ALL_SERVERS or is_ours(kind) or kind == "official-m"


def multiprocess(kind):
    """Servers whose handlers run in several processes (-m)."""
    return kind == "official-m" or kind.startswith("ours-m")


def server_argv(kind, scenario, prefix, pythons, cpu_us):
    sock_name = PLUGIN_NAME[scenario] + ".socket"
    if kind in ("floor", "floor-pb"):
        return [str(BIN_DIR / kind), "--socket", str(prefix / sock_name), "--cpu-us", str(cpu_us)]
    py = pythons["ours"] if is_ours(kind) else pythons["official"]
    # ours-async: the same scenario with `async def` handlers (same plugin name).
    plugin_file = PLUGINS / ((scenario + "_async.py") if kind.endswith("-async") else (scenario + ".py"))
    argv = [str(py), str(plugin_file), "--kong-prefix", str(prefix), "--socket-name", sock_name]
    if kind.startswith("ours-pb"):
        # ProtoBuf:1 (docs/protobuf.md): the nginx bench drives it with pb_bridge.lua.
        argv += ["--protocol", "protobuf"]
    if kind in ("ours-g", "official-g", "ours-pb-g"):
        argv.append("-g")
    elif kind in ("ours-threads", "ours-greenlets"):
        argv += ["--model", kind[len("ours-"):]]
    elif kind == "official-m":
        argv.append("-m")
    elif kind.startswith("ours-m"):
        argv += ["-m", kind[len("ours-m"):]]
    return argv


def start_server(kind, scenario, workdir, pythons, pin, cpu_us):
    prefix = Path(tempfile.mkdtemp(prefix="%s-%s-" % (kind, scenario), dir=str(workdir)))
    argv = server_argv(kind, scenario, prefix, pythons, cpu_us)
    sock = prefix / (PLUGIN_NAME[scenario] + ".socket")
    if multiprocess(kind):
        # Taskset is inherited: pinned, N workers would share one core.
        pin = None
    srv = Server(kind, scenario, argv, sock, workdir, clean_env(), pin)
    err = srv.wait_ready()
    if err:
        srv.report_death(err)
        srv.stop()
        return None, err
    return srv, None


def calibrate_cpu(py, pin, cpu_us):
    """Loop iterations of benches/plugins/cpu.py that take `cpu_us` on the
    server's core (fastest of 3 calibrations), or None."""
    code = "import sys; sys.path.insert(0, %r); import cpu; print(cpu._iterations_per_ms())" % str(PLUGINS)
    argv = [str(py), "-c", code]
    if pin is not None:
        argv = ["taskset", "-c", str(pin)] + argv
    best = None
    for _ in range(3):
        r = subprocess.run(argv, capture_output=True, text=True, cwd=tempfile.gettempdir(), env=clean_env())
        try:
            v = float(r.stdout.strip())
        except ValueError:
            continue
        best = v if best is None else max(best, v)
    return None if best is None else max(1, int(best * cpu_us / 1000.0))


def split_conns(conns, procs):
    """Connections of each load-generator process: `conns` split as evenly
    as possible over at most `procs` processes (one process per connection
    at most)."""
    n = max(1, min(procs, conns))
    return [conns // n + (1 if i < conns % n else 0) for i in range(n)]


def run_loadgen(srv, scenario, conns, pin, extra, timeout, procs=1):
    """Run the load: `procs` loadgen processes (simulated nginx workers)
    sharing `conns` request coroutines. In window mode they measure one
    common window (--measure-at) and their results are merged; in leak mode
    (`events` in extra) a single process runs."""
    extra = dict(extra)
    config = {"message": "hello", "cpu_us": extra.pop("cpu_us", 1000)}
    iterations = extra.pop("iterations", None)
    if iterations:
        config["iterations"] = iterations
    leak = "events" in extra
    shares = [conns] if leak else split_conns(conns, procs)
    if not leak:
        # Time for every process to start and send StartInstance, then the
        # warm-up; all measure from the same instant.
        extra["measure_at"] = "%.3f" % (time.time() + 0.3 + float(extra.pop("warmup", 1.0)))
    running = []
    for share in shares:
        argv = [
            str(BIN_DIR / "loadgen"),
            "--socket", str(srv.socket_path),
            "--scenario", scenario,
            "--conns", str(share),
            "--server-pid", str(srv.pid),
            "--config", json.dumps(config),
        ]
        for k, v in extra.items():
            argv += ["--" + k.replace("_", "-"), str(v)]
        if pin is not None:
            argv = ["taskset", "-c", str(pin)] + argv
        running.append(subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    deadline = time.monotonic() + timeout
    results, err = [], None
    for proc in running:
        try:
            out, stderr = proc.communicate(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            err = err or "loadgen timed out after %.0fs" % timeout
            continue
        line = (out.strip().splitlines() or [""])[-1]
        try:
            res = json.loads(line)
        except ValueError:
            err = err or "loadgen exit %s: %s" % (proc.returncode, stderr.strip()[-500:])
            continue
        if "fatal" in res:
            err = err or res["fatal"]
            continue
        results.append(res)
    if err:
        return None, err
    if leak:
        return results[0], None
    return merge_loadgens(results), None


def _hist_quantile(buckets, total, q):
    """Smallest recorded latency (ms) with at least q of the events at or
    below it, from sorted [ns, count] buckets."""
    target = max(1, int(round(q * total)))
    seen = 0
    for ns, count in buckets:
        seen += count
        if seen >= target:
            return round(ns / 1e6, 3)
    return None


def _mean(xs):
    xs = [x for x in xs if x is not None]
    return sum(xs) / len(xs) if xs else None


def merge_loadgens(parts):
    """One result for the load-generator processes of one row: events,
    PDK calls and loadgen CPU summed; latency percentiles from the merged
    histograms; server CPU and context switches (measured by every process
    over the same window) averaged, then divided by all events."""
    first = parts[0]
    events = sum(p["events"] for p in parts)
    buckets = sorted((ns, c) for p in parts for ns, c in p.get("latency_hist_ns", []))
    total = sum(c for _, c in buckets)
    lat = {"p50": None, "p90": None, "p99": None, "max": None}
    if total:
        lat = {q: _hist_quantile(buckets, total, f) for q, f in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99))}
        lat["max"] = round(buckets[-1][0] / 1e6, 3)

    def per_event(seconds):
        return None if seconds is None or events == 0 else round(seconds * 1e6 / events, 3)

    srv_cpu_s = _mean([p["server"].get("cpu_s") for p in parts])
    vol = _mean([p["server"].get("ctx_voluntary") for p in parts])
    invol = _mean([p["server"].get("ctx_involuntary") for p in parts])
    lg_cpu = [p["loadgen"].get("cpu_s") for p in parts]
    errors = {k: sum(p["errors"][k] for p in parts) for k in ("total", "rpc", "io", "protocol", "timeout", "mismatch")}
    errors["samples"] = [x for p in parts for x in p["errors"]["samples"]][:8]
    merged = {k: first[k] for k in ("scenario", "plugin", "pool", "calls_per_event", "mode", "warmup_s")}
    merged.update(
        conns=sum(p["conns"] for p in parts),
        loadgen_procs=len(parts),
        conns_per_proc=[p["conns"] for p in parts],
        window_s=round(_mean([p["window_s"] for p in parts]), 3),
        events=events,
        events_per_s=round(sum(p["events_per_s"] for p in parts), 3),
        pdk_calls=sum(p["pdk_calls"] for p in parts),
        calls_per_s=round(sum(p["calls_per_s"] for p in parts), 3),
        rpcs=sum(p["rpcs"] for p in parts),
        connects=sum(p["connects"] for p in parts),
        latency_ms=lat,
        errors=errors,
        server={
            "pid": first["server"]["pid"],
            "cpu_s": srv_cpu_s,
            "cpu_us_per_event": per_event(srv_cpu_s),
            "ctx_voluntary": vol,
            "ctx_involuntary": invol,
            "ctx_per_event": None if vol is None or invol is None or events == 0 else (vol + invol) / events,
            "rss_kb_start": first["server"]["rss_kb_start"],
            "rss_kb_end": parts[-1]["server"]["rss_kb_end"],
            "fds_start": first["server"]["fds_start"],
            "fds_end": parts[-1]["server"]["fds_end"],
            "threads_start": first["server"]["threads_start"],
            "threads_end": parts[-1]["server"]["threads_end"],
        },
        loadgen={"cpu_us_per_event": None if None in lg_cpu else per_event(sum(lg_cpu))},
    )
    return merged


# ---- formatting -----------------------------------------------------------------


def fmt_num(x, digits=0):
    if x is None:
        return "-"
    if digits == 0:
        return f"{x:,.0f}"
    return "{:,.{d}f}".format(x, d=digits)


def fmt_mb(kb):
    return "-" if kb is None else "%.1f" % (kb / 1024.0)


def fmt_pair(a, b, f):
    if a is None and b is None:
        return "-"
    if b is None or f(a) == f(b):
        return f(a)
    return "%s→%s" % (f(a), f(b))


HEADER = [
    "scenario", "conns", "server", "events/s", "p50 ms", "p99 ms", "CPU µs/event", "ctx sw/event",
    "ev/s ÷ floor", "ev/s ÷ official", "CPU ÷ floor", "CPU ÷ official", "loadgen µs/event", "RSS MB", "errors",
]


def ratio(a, b):
    if a is None or b is None or b == 0:
        return "n/a"
    return "%.2f×" % (a / b)


def add_ratios(results):
    """Give each row its events/s and CPU/event ratios to the floor and to
    its official reference (official_reference) of the same scenario and
    conns; "-" on the reference row itself, "n/a" when it is missing."""
    by = {(r["scenario"], r["conns"], r["kind"]): r for r in results if not r.get("failed")}
    for r in results:
        if r.get("failed"):
            continue
        cells = {}
        for label, ref_kind in (("floor", "floor"), ("official", official_reference(r["kind"]))):
            ref = by.get((r["scenario"], r["conns"], ref_kind))
            if ref_kind == r["kind"]:
                cells[label] = ("-", "-")
            else:
                cells[label] = (
                    ratio(r["events_per_s"], ref and ref["events_per_s"]),
                    ratio(r["server"]["cpu_us_per_event"], ref and ref["server"]["cpu_us_per_event"]),
                )
        r["ratios"] = cells


def row_cells(r):
    if r.get("failed"):
        return [r["scenario"], str(r["conns"]), r["kind"], "FAILED: " + r["failed"][:60]] + [""] * (len(HEADER) - 4)
    lat = r["latency_ms"]
    srv = r["server"]
    rat = r.get("ratios") or {"floor": ("n/a", "n/a"), "official": ("n/a", "n/a")}
    return [
        r["scenario"],
        str(r["conns"]),
        r["kind"],
        fmt_num(r["events_per_s"]),
        fmt_num(lat["p50"], 3),
        fmt_num(lat["p99"], 3),
        fmt_num(srv["cpu_us_per_event"], 1),
        fmt_num(srv.get("ctx_per_event"), 2),
        rat["floor"][0],
        rat["official"][0],
        rat["floor"][1],
        rat["official"][1],
        fmt_num(r["loadgen"]["cpu_us_per_event"], 1),
        fmt_pair(srv["rss_kb_start"], srv["rss_kb_end"], fmt_mb),
        str(r["errors"]["total"]),
    ]


def md_table(header, rows):
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for cells in rows:
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def text_table(header, rows):
    widths = [max(len(h), *(len(c[i]) for c in rows)) if rows else len(h) for i, h in enumerate(header)]

    def line(cells):
        return "  ".join(c.rjust(w) if i >= 3 else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True)))

    return "\n".join([line(header), line(["-" * w for w in widths])] + [line(c) for c in rows])


# ---- docs -----------------------------------------------------------------------


def machine_info():
    model = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {"nproc": os.cpu_count(), "cpu": model, "kernel": os.uname().release}


def git_commit():
    def git(*a):
        r = subprocess.run(["git", "-C", str(ROOT)] + list(a), capture_output=True, text=True)
        return r.stdout.strip() if r.returncode == 0 else ""

    commit = git("rev-parse", "--short=12", "HEAD") or "unknown"
    if git("status", "--porcelain", "--untracked-files=no"):
        commit += " (with uncommitted changes)"
    return commit


def replace_section(text, name, body):
    begin, end = "<!-- %s:begin -->" % name, "<!-- %s:end -->" % name
    block = "%s\n%s\n%s" % (begin, body.rstrip(), end)
    if begin in text and end in text:
        pre = text.split(begin, 1)[0]
        post = text.split(end, 1)[1]
        return pre + block + post
    return text.rstrip() + "\n\n" + block + "\n"


DOC_INTRO = """# Benchmarks

Numbers from `benches/run.py`: a Rust load generator (`benches/loadgen`) plays
Kong's side of the external plugin protocol against a plugin server over its
Unix socket, the way Kong does it. Regenerate with the command shown in each
section. How the harness works and what it checks is described in "Method"
at the end.

## Running it

After `make release` (our package, optimised, in `.venv`), from the
repository root:

```sh
make bench                                # the full table (builds first): .venv/bin/python benches/run.py
.venv/bin/python benches/run.py           # the same without make: 4 scenarios × 1, 8, 64 connections × 6 servers, about 8 minutes; rewrites the table below
.venv/bin/python benches/run.py --quick   # a check that everything works, about 2 minutes: hello and heavy at 8 and 64 connections, short windows; printed, this file untouched
```

The first run builds the load generator (`cargo`) and creates
`benches/.venv-official` with the official `kong-pdk` from PyPI. Narrow a run
with `--scenarios hello,exit`, `--conns 8`, `--servers ours,ours-async,floor`;
`--pool own` gives each request its own connection instead of Kong's shared
pool, `--kong-workers 1` uses one load-generator process instead of two,
`--json-out FILE` keeps the raw numbers. `--leak N` and `--workers` run the
exit-leak check and the worker-process table further down. Run on a quiet
machine: anything else running moves rows by more than the differences
between servers.

The cost of one PDK call on its own, per kind of call, comes from a second
script (printed only, no table here; "Method" says what it counts):

```sh
.venv/bin/python benches/pdk_call.py           # def handler on a thread; --async: an async def handler
.venv/bin/python benches/pdk_call.py --events 3 --reps 50 --under "valgrind --tool=callgrind \\
    --callgrind-out-file=/tmp/pdk.out --toggle-collect='pyo3::impl_::trampoline::*'"
```

## Reading the table

Each row is one server, scenario and connection count, measured on a freshly
started server.

* **scenario**: `hello` (3 PDK calls per event), `heavy` (20 calls of many
  kinds), `exit` (one call, `kong.response.exit`), `cpu` (about 1 ms of
  Python work, then one call). An event is one run of the plugin's `access`
  handler: a HandleEvent, then one Step per PDK call.
* **conns**: requests Kong has in flight at once, over both simulated nginx
  workers.
* **server**: `ours` (plain `def` handlers, on our thread pool), `ours-async`
  (the same PDK calls in `async def` handlers, awaited), `ours-g` (the plain
  handlers with `-g`), `official` (the official `kong-pdk`, its default
  threads), `official-g` (the official with `-g`), `floor` (a Rust server with
  no Python that answers each scenario's calls: the protocol's own cost, and
  the most this load generator can drive).
* **events/s**: events completed in the measured window, all load-generator
  processes together. **p50 / p99 ms**: an event's latency as Kong sees it,
  from HandleEvent sent to the last answer.
* **CPU µs/event**: the server's CPU time (user + system, every thread and
  child process) over the window, divided by its events. This is what the
  plugin server takes away from nginx on the same machine; it matters even
  where events/s is capped by something else.
* **ctx sw/event**: the server's context switches (voluntary and involuntary,
  every thread and child process) per event. A thread that hands an event to
  another thread, or sleeps waiting for Kong's next message, switches; a busy
  single-threaded event loop (gevent, the floor) hardly ever does. Each switch
  costs CPU and a wake-up that competes with nginx's workers for a core.
* **ev/s ÷ floor, CPU ÷ floor**: the row against the floor of the same
  scenario and conns: 0.5× events/s means half the floor's rate, 4× CPU means
  four times the CPU of answering with no Python at all.
* **ev/s ÷ official, CPU ÷ official**: the row against the official server
  with the same execution model: `ours-g` against `official-g`, every other
  row against `official` (threads, its default); `-` on that reference row
  itself. events/s above 1× and CPU below 1× favour the row.
* **loadgen µs/event**: the load generators' CPU per event. The two share one
  core, so when this times events/s comes near 1,000,000 the row is limited by
  the load generator, not the server (usually the floor at 8 and 64).
* **RSS MB** (`a→b` when it grew over the window) and **errors** (must be 0:
  every event's calls are checked against the scenario).

Compare rows of one run (the ratios), not runs of different days.
"""

DOC_METHOD = """## Method

* **Servers.** `ours`: this package (`python benches/plugins/<scenario>.py
  --kong-prefix DIR --socket-name bench-<scenario>.socket`); `ours-async`:
  `benches/plugins/hello_async.py` (one per scenario), the same PDK calls awaited in an
  `async def` handler under the same plugin name; `ours-g`: the plain plugin
  with `-g`. `official` / `official-g`: the plain plugin files under the
  official `kong-pdk` from PyPI, installed in `benches/.venv-official`, in its
  default thread mode and with `-g`. `floor`: `benches/loadgen` `floor`, a
  single-threaded Rust server with no Python that knows each scenario's PDK
  calls and emits them (for `cpu` it busy-waits 1 ms per event), i.e. the cost
  of the protocol alone. In `cpu`, every Python server runs the same loop
  count per event, calibrated once by the runner to about 1 ms (on a busy
  machine the calibration can be off by 10 % or so, so `cpu` ratios against
  the floor near 1 just mean "no visible overhead").
* **Load: Kong's pattern.** Each row runs two `loadgen` processes, as two
  nginx workers (`--kong-workers`, default 2); the row's connections are
  split between them (4 + 4 for 8; one process for 1). Each process sends its
  own `plugin.StartInstance` (config as a JSON string, with Kong's
  `__key__`/`__seq__`/`__plugin_id`), as each Kong worker does, then runs its
  share of concurrent request coroutines, each doing HandleEvent followed by
  the Step loop, one event after another, on one thread. Like a Kong worker,
  each process has one keep-alive pool (`--pool shared`, the default): every
  RPC checks a connection out of it (the most recently returned one, LIFO;
  a new connection when it is empty) and puts it back after the answer, so
  the Steps of one event may go over different connections. The pool keeps at
  most `--pool-size` idle connections (default 256, Kong's
  `lua_socket_pool_size`); beyond that, connections are closed after use.
  `--pool own` gives each coroutine its own connection instead. Strings are
  encoded as Kong's encoder does (fixstr/str16), a nil PDK result is a Step
  without `Data`, multimap results use the §6.1 encoding, and the Step method
  is chosen as Kong does (e.g. `StepMultiMap` for `get_headers`/`get_query`).
  After a terminal `kong.response.exit` no Step is sent.
* **Checks.** Every reply must be `[1, msgid, nil, {Data, EventId}]` with the
  request's msgid (notifications `[2, ...]` before it are skipped), the same
  EventId for all RPCs of one event, and no bytes after it. Every event's
  sequence of PDK method names (and the first argument where the scenario
  fixes it, e.g. the header name or the exit status) must equal the scenario's
  (`benches/loadgen/src/scenario.rs`), including the number of calls.
  `errors` counts mismatched events plus RPC error replies, I/O errors,
  malformed replies and RPCs slower than 10 s during the window.
* **Measurement.** Warm-up, then a fixed window that all load-generator
  processes of a row start at the same instant (`loadgen --measure-at`).
  events/s is the events completed in the window, summed over the processes.
  Latency is per event (HandleEvent sent to `"ret"` or exit received); the
  processes' histograms are merged before the percentiles are taken. CPU
  µs/event is the utime+stime of the server and its child processes
  (`/proc/<pid>/stat`) over the window, divided by all events; ctx sw/event
  is the growth of `voluntary_ctxt_switches` + `nonvoluntary_ctxt_switches` in
  `/proc/<pid>/task/<tid>/status` of every thread of the server and its child
  processes, per thread, divided by all events (a thread that ends inside the
  window takes its switches with it: the kernel keeps no readable total, so
  servers that start and end threads per connection are undercounted). Every
  process measures the server over the same window; the runner averages
  their readings. RSS (`VmRSS`) and open fds (`/proc/<pid>/fd`) are sampled
  at the window's start and end (`a→b` when they differ). Each row uses a
  freshly started server. The server and the load generators are pinned to
  different cores with `taskset` when there are at least two (both load
  generators share theirs), except the `-m` servers (`ours-m<N>`,
  `official-m`): their worker processes need every core, so they run
  unpinned, and their RSS and fds are those of the main process, which holds
  Kong's connections. The exit-leak check runs one load-generator process.
* **loadgen µs/event** is the load generators' own CPU per event, together.
  When it is near 1e6 ÷ events/s their core is saturated and the row is
  bounded by it (the floor rows at 8 and 64 coroutines usually are), so
  "÷ floor" understates how close a server comes to the floor there; the two
  processes then also take turns on that core, which adds scheduler slices
  of a few ms to the floor's p99.
* **Per-call cost (`benches/pdk_call.py`).** Our server runs
  `benches/plugins/pdk_call.py`, driven over its socket by the Python Kong
  emulator, one event at a time. Each event makes `--reps` calls of each
  kind (attribute lookup alone, `get_path()`, `get_header("host")`,
  `set_header`, `ctx.shared.set`, `log.debug`, `get_headers()` answered with
  10 headers), and the handler times each kind with `time.thread_time_ns`:
  the handler thread's CPU for resolving the attributes, checking and
  encoding the call, writing it, reading Kong's Step (on the thread model
  the handler's thread reads it itself) and converting the answer; blocked
  time counts nothing. The script prints the median per kind and the whole
  server's CPU per call. Times move with other load on the machine; for
  comparing two builds, `--under` runs the server under callgrind, whose
  instruction counts inside the proxy's entry points do not (build with
  `maturin develop --profile profiling` to see function names).
* **Caveats.** The machine is small and shared: when other work runs on it,
  rows can move by much more than ±10 % between runs, so compare rows of one
  run (the ratios), not runs. With one core per side, 64 coroutines measure
  throughput under saturation, not latency. On a virtual machine a wake-up
  across cores can cost tens of µs, so the 1-coroutine rows (one RPC in
  flight, both sides sleeping between messages) mostly measure that, and
  their CPU per event includes the cost of sleeping and waking. The official
  server never forgets an event whose first PDK call is `kong.response.exit`,
  so its RSS grows during `exit` rows (see the exit-leak check).
"""


def write_doc(section, body):
    DOC.parent.mkdir(parents=True, exist_ok=True)
    text = DOC.read_text() if DOC.exists() else DOC_INTRO
    text = replace_section(text, section, body)
    text = replace_section(text, "method", DOC_METHOD)
    DOC.write_text(text)
    log("wrote %s" % DOC)


def _display_python():
    exe = Path(sys.executable)
    try:
        return str(exe.relative_to(ROOT))
    except ValueError:
        return "python"


def context_lines(args, pythons, official_ver, cores, extra_lines=()):
    m = machine_info()
    lines = [
        "* Command: `%s`" % " ".join([_display_python(), "benches/run.py"] + sys.argv[1:]),
        "* Date: %s" % datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        "* Commit: `%s`" % git_commit(),
        "* Machine: %s cores, %s, Linux %s" % (m["nproc"], m["cpu"], m["kernel"]),
        "* Python: %s; official kong-pdk %s" % (sys.version.split()[0], official_ver or "unavailable"),
        "* Pinning: %s"
        % (
            "server on CPU %s, loadgen on CPU %s (taskset)" % (cores[1], cores[0])
            if cores[0] is not None
            else "none"
        ),
    ]
    return lines + list(extra_lines)


# ---- modes ----------------------------------------------------------------------


def window_extra(args):
    return {
        "warmup": args.warmup,
        "duration": args.duration,
        "pool": args.pool,
        "pool_size": args.pool_size,
        "cpu_us": args.cpu_us,
        "iterations": args.cpu_iterations,
    }


def load_description(args):
    pool = (
        "one shared LIFO keep-alive pool per process, checked out per RPC, at most %d idle" % args.pool_size
        if args.pool == "shared"
        else "one connection per coroutine"
    )
    if args.kong_workers == 1:
        return "1 load-generator process (one nginx worker); %s" % pool
    return "%d load-generator processes (nginx workers) sharing each row's connections; %s" % (args.kong_workers, pool)


def main_matrix(args, servers, pythons, cores, workdir, official_ver, ours_note):
    args.cpu_iterations = None
    if "cpu" in args.scenarios:
        py = pythons["official"] or (pythons["ours"] if "ours" in servers else None)
        if py is not None:
            args.cpu_iterations = calibrate_cpu(py, cores[1], args.cpu_us)
            log("cpu scenario: %s loop iterations per event (≈%d µs on the server core)" % (args.cpu_iterations, args.cpu_us))
    results = []
    t_start = time.monotonic()
    for sc in args.scenarios:
        for conns in args.conns:
            for kind in servers:
                label = "%-5s conns=%-3d %-16s" % (sc, conns, kind)
                srv, err = start_server(kind, sc, workdir, pythons, cores[1], args.cpu_us)
                if srv is None:
                    results.append({"scenario": sc, "conns": conns, "kind": kind, "failed": err})
                    log("%s FAILED: %s" % (label, err))
                    continue
                res, err = run_loadgen(
                    srv, sc, conns, cores[0], window_extra(args), args.warmup + args.duration + 40, args.kong_workers
                )
                died = not srv.alive()
                if died:
                    srv.report_death("died during the run (status %s)" % srv.proc.returncode)
                srv.stop()
                if res is None or died:
                    err = err or "server died"
                    results.append({"scenario": sc, "conns": conns, "kind": kind, "failed": err})
                    log("%s FAILED: %s" % (label, err))
                    continue
                res["kind"] = kind
                results.append(res)
                e = res["errors"]
                log(
                    "%s %9s ev/s  p99 %7s ms  cpu %7s µs/ev  ctx %6s /ev  errors %s%s"
                    % (
                        label,
                        fmt_num(res["events_per_s"]),
                        fmt_num(res["latency_ms"]["p99"], 3),
                        fmt_num(res["server"]["cpu_us_per_event"], 1),
                        fmt_num(res["server"]["ctx_per_event"], 2),
                        e["total"],
                        ("  e.g. " + e["samples"][0]) if e["samples"] else "",
                    )
                )
    elapsed = time.monotonic() - t_start

    add_ratios(results)
    table_rows = [row_cells(r) for r in results]
    print()
    print(text_table(HEADER, table_rows))
    print("\n(%d runs in %.0fs; %s)" % (len(results), elapsed, load_description(args)))

    if args.json_out:
        Path(args.json_out).write_text(json.dumps(results, indent=1))
    if args.no_doc:
        return results
    lines = ["## Throughput and latency", ""]
    lines += context_lines(
        args,
        pythons,
        official_ver,
        cores,
        [
            "* Window: %.1f s warm-up + %.1f s measured per row; servers: %s"
            % (args.warmup, args.duration, ", ".join(servers)),
            "* Load: %s" % load_description(args),
            "* ours: %s" % ours_note,
            "* cpu scenario: %s loop iterations per event for every Python server (calibrated once to ≈%d µs)"
            % (args.cpu_iterations, args.cpu_us),
        ],
    )
    lines += ["", md_table(HEADER, table_rows)]
    write_doc("main", "\n".join(lines))
    return results


def leak_mode(args, servers, pythons, cores, workdir, official_ver, ours_note):
    n = args.leak
    conns = args.conns[0] if len(args.conns) == 1 else 8
    rows = []
    for kind in servers:
        srv, err = start_server(kind, "exit", workdir, pythons, cores[1], args.cpu_us)
        if srv is None:
            rows.append([kind, "FAILED: " + err] + [""] * 9)
            continue
        log("leak: %s, %d exit events over %d conns ..." % (kind, n, conns))
        res, err = run_loadgen(
            srv, "exit", conns, cores[0],
            {"events": n, "sample_every": 100000, "pool": args.pool, "pool_size": args.pool_size, "max_server_rss_mb": args.leak_rss_limit_mb},
            timeout=max(300.0, n / 300.0),
        )
        died = not srv.alive()
        if died:
            srv.report_death("died during the leak run (status %s)" % srv.proc.returncode)
        srv.stop()
        if res is None or died:
            rows.append([kind, "FAILED: " + (err or "server died")] + [""] * 9)
            continue
        samples = res["samples"]
        first = samples[0]
        at100k = next((s for s in samples if s["events"] == 100000), None)
        last = samples[-1]

        def rss(s):
            return fmt_mb(s["rss_kb"]) if s else "-"

        def fds(s):
            return str(s["fds"]) if s else "-"

        growth = "-"
        if at100k and last["events"] > at100k["events"] and last["rss_kb"] is not None:
            per = (last["rss_kb"] - at100k["rss_kb"]) * 1024.0 / (last["events"] - at100k["events"])
            growth = "%.1f" % per
        rows.append(
            [
                kind,
                fmt_num(res["events"]),
                fmt_num(res["events_per_s"]),
                "%s / %s / %s" % (rss(first), rss(at100k), rss(last)),
                growth,
                "%s / %s / %s" % (fds(first), fds(at100k), fds(last)),
                "%s / %s" % (first.get("threads"), last.get("threads")),
                str(res["errors"]["total"]),
                fmt_num(res["server"]["cpu_us_per_event"], 1),
                res.get("stopped_early") or "",
            ]
        )
        log("  %s" % " | ".join(rows[-1]))
    header = [
        "server", "events", "events/s", "RSS MB start / 100k / end", "RSS bytes/event after 100k",
        "fds start / 100k / end", "threads start / end", "errors", "CPU µs/event", "note",
    ]
    print()
    print(text_table(header, rows))
    if args.no_doc:
        return
    lines = ["## Exit-leak check", ""]
    lines += context_lines(
        args, pythons, official_ver, cores,
        ["* %d `exit` events per server over %d coroutines; RSS and fds sampled every 100k events" % (n, conns),
         "* ours: %s" % ours_note],
    )
    lines += ["", md_table(header, rows)]
    write_doc("leak", "\n".join(lines))


def workers_mode(args, servers, pythons, cores, workdir, official_ver, ours_note):
    """The cpu scenario with 1 and 2 worker processes (and the official -m),
    each row run `--repeat` times on a fresh server; the median row is kept."""
    py = pythons["official"] or pythons["ours"]
    args.cpu_iterations = calibrate_cpu(py, None, args.cpu_us)
    log("cpu scenario: %s loop iterations per event (≈%d µs)" % (args.cpu_iterations, args.cpu_us))
    # Rounds interleave the servers (one run of each per round), so that a
    # slow spell of a shared machine hits every row alike.
    runs = {(c, k): [] for c in args.conns for k in servers}
    errors = {}
    for attempt in range(max(1, args.repeat)):
        for conns in args.conns:
            for kind in servers:
                label = "cpu   conns=%-3d %-16s run %d" % (conns, kind, attempt + 1)
                srv, err = start_server(kind, "cpu", workdir, pythons, None, args.cpu_us)
                if srv is None:
                    log("%s FAILED: %s" % (label, err))
                    errors[(conns, kind)] = err
                    continue
                res, err = run_loadgen(
                    srv, "cpu", conns, None, window_extra(args), args.warmup + args.duration + 40, args.kong_workers
                )
                died = not srv.alive()
                if died:
                    srv.report_death("died during the run (status %s)" % srv.proc.returncode)
                srv.stop()
                if res is None or died:
                    log("%s FAILED: %s" % (label, err or "server died"))
                    errors[(conns, kind)] = err or "server died"
                    continue
                res["kind"] = kind
                runs[(conns, kind)].append(res)
                log("%s %9s ev/s  cpu %7s µs/ev  errors %s" % (
                    label, fmt_num(res["events_per_s"]), fmt_num(res["server"]["cpu_us_per_event"], 1),
                    res["errors"]["total"]))
    results = []
    for conns in args.conns:
        for kind in servers:
            done = sorted(runs[(conns, kind)], key=lambda r: r["events_per_s"])
            if not done:
                results.append({"scenario": "cpu", "conns": conns, "kind": kind,
                                "failed": errors.get((conns, kind), "no run")})
                continue
            median = done[len(done) // 2]
            median["all_events_per_s"] = [r["events_per_s"] for r in runs[(conns, kind)]]
            results.append(median)
    by = {(r["conns"], r["kind"]): r for r in results if not r.get("failed")}

    def eps(conns, kind):
        r = by.get((conns, kind))
        return r and r["events_per_s"]

    add_ratios(results)
    header = HEADER + ["runs (events/s)"]
    rows = [row_cells(r) + [", ".join(fmt_num(x) for x in r.get("all_events_per_s", []))] for r in results]
    def per_round(conns, a, b):
        # A server may have fewer runs (one that failed): pair what both have.
        pairs = zip(runs.get((conns, a), []), runs.get((conns, b), []), strict=False)
        return ", ".join(ratio(x["events_per_s"], y["events_per_s"]) for x, y in pairs) or "-"

    ratio_header = ["conns", "ours -m 2 ÷ -m 1", "per round", "ours -m 2 ÷ ours thread", "ours -m 2 ÷ official -m",
                    "official -m ÷ official thread"]
    ratios = [[str(c), ratio(eps(c, "ours-m2"), eps(c, "ours-m1")), per_round(c, "ours-m2", "ours-m1"),
               ratio(eps(c, "ours-m2"), eps(c, "ours")), ratio(eps(c, "ours-m2"), eps(c, "official-m")),
               ratio(eps(c, "official-m"), eps(c, "official"))]
              for c in args.conns]
    print()
    print(text_table(header, rows))
    print()
    print(text_table(ratio_header, ratios))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(results, indent=1))
    if args.no_doc:
        return results
    lines = ["## Worker processes (-m): cpu scenario", ""]
    lines += context_lines(
        args, pythons, official_ver, (None, None),
        ["* Window: %.1f s warm-up + %.1f s measured per run; %d runs per row, each on a fresh server, in "
         "rounds that interleave the servers; the median run is shown, all runs in the last column (in "
         "order)" % (args.warmup, args.duration, max(1, args.repeat)),
         "* cpu scenario: %s loop iterations per event (calibrated once to ≈%d µs)" % (args.cpu_iterations, args.cpu_us),
         "* Load: %s" % load_description(args),
         "* Nothing is pinned: the workers need both cores, and so do the core process, the load "
         "generator and the official pool's parent, which all share them",
         "* CPU µs/event: the server's whole process tree; RSS and fds: its main process",
         "* Why -m 2 can pass 2× -m 1: with 8 connections one worker runs 8 handler threads that contend for "
         "its GIL, two workers run 4 each, so each event costs less CPU (the thread model, `ours`, pays the "
         "same contention as -m 1, without the relay)",
         "* What caps -m 2 here: the two workers share the two cores with the core process and the load "
         "generator (their CPU per event is in the table), and with 4 events per worker a worker sometimes "
         "waits for Kong's answers with nothing to run; the machine is shared, so rounds differ by 10-20 %",
         "* ours: %s" % ours_note],
    )
    lines += ["", md_table(header, rows), "", md_table(ratio_header, ratios)]
    write_doc("workers", "\n".join(lines))
    return results


def csv(s):
    return [x.strip() for x in s.split(",") if x.strip()]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="a check that everything works, in about 2 minutes: scenarios hello,heavy at 8 and 64 "
                        "conns (unless given), 0.5 s warm-up + 1.5 s windows; prints only (implies --no-doc)")
    p.add_argument("--scenarios", type=csv, help="comma list of %s (default all; quick hello,heavy)" % ",".join(ALL_SCENARIOS))
    p.add_argument("--conns", type=lambda s: [int(x) for x in csv(s)],
                   help="request coroutines per row, over all load-generator processes (default 1,8,64; quick 8,64)")
    p.add_argument("--servers", type=csv, default=ALL_SERVERS, help="comma list of %s" % ",".join(ALL_SERVERS))
    p.add_argument("--warmup", type=float, help="warm-up seconds (default 1, quick 0.5)")
    p.add_argument("--duration", type=float, help="measured seconds (default 3, quick 1.5)")
    p.add_argument("--kong-workers", type=int, default=2,
                   help="load-generator processes per row, like nginx workers, each with its own pool; a row's "
                        "conns are split between them (default 2)")
    p.add_argument("--pool", choices=["own", "shared"], default="shared",
                   help="shared (default, Kong's pattern): one LIFO keep-alive pool per process, one checkout per "
                        "RPC; own: each coroutine keeps one connection")
    p.add_argument("--pool-size", type=int, default=256,
                   help="idle connections a shared pool keeps, like lua_socket_pool_size (default 256, Kong's)")
    p.add_argument("--cpu-us", type=int, default=1000, help="work per event of the cpu scenario")
    p.add_argument("--leak", type=int, metavar="N", help="only run the exit-leak check: N exit events per server (over --conns if it is one value, else 8)")
    p.add_argument("--leak-rss-limit-mb", type=int, default=4096,
                   help="leak mode: stop a server's run once its RSS passes this (default 4096)")
    p.add_argument("--ours-python", default=sys.executable, help="interpreter with our kong_pdk (default: this one)")
    p.add_argument("--ours-release", action="store_true",
                   help="build a release wheel of this repo into benches/.venv-ours and benchmark that")
    p.add_argument("--official-spec", default="kong-pdk", help="pip requirement for the official package")
    p.add_argument("--no-pin", action="store_true", help="do not pin with taskset")
    p.add_argument("--no-build", action="store_true")
    p.add_argument("--no-doc", action="store_true", help="do not write docs/benchmarks.md")
    p.add_argument("--json-out", help="also write raw results here")
    p.add_argument("--workers", action="store_true",
                   help="worker-process scaling: cpu scenario at 8 conns, ours thread / -m 1 / -m 2 and the "
                        "official thread / -m, nothing pinned, each row --repeat times (median)")
    p.add_argument("--repeat", type=int, default=3, help="--workers: runs per row (default 3)")
    args = p.parse_args()
    if args.scenarios is None:
        args.scenarios = ["hello", "heavy"] if args.quick else list(ALL_SCENARIOS)
    if args.conns is None:
        args.conns = [8, 64] if args.quick else [1, 8, 64]
    if args.quick:
        args.no_doc = True
    if args.kong_workers < 1:
        p.error("--kong-workers must be at least 1")
    args.servers = [SERVER_ALIASES.get(s, s) for s in args.servers]
    if args.warmup is None:
        args.warmup = 0.5 if args.quick else 1.0
    if args.duration is None:
        args.duration = 1.5 if args.quick else 3.0
    for s in args.scenarios:
        if s not in ALL_SCENARIOS:
            p.error("unknown scenario %s" % s)
    if args.workers:
        args.scenarios = ["cpu"]
        if args.conns == [1, 8, 64]:
            args.conns = [8]
        if args.servers == ALL_SERVERS:
            args.servers = ["ours", "ours-m1", "ours-m2", "official", "official-m"]
    for s in args.servers:
        if not known_server(s):
            p.error("unknown server %s (known: %s)" % (s, ", ".join(ALL_SERVERS + WORKER_SERVERS)))

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)

    if not args.no_build:
        build_loadgen()
    pythons = {"ours": args.ours_python, "official": None}
    servers = list(args.servers)

    ours_note = ""
    if any(is_ours(s) for s in servers):
        if args.ours_release:
            py = build_ours_release()
            if py is not None:
                args.ours_python = str(py)
                pythons["ours"] = args.ours_python
        ok, info = ours_available(args.ours_python)
        if not ok:
            ours_note = "unavailable (`import kong_pdk._core` fails in %s: %s)" % (args.ours_python, info)
            log("ours: %s; continuing without it" % ours_note)
            servers = [s for s in servers if not is_ours(s)]
        else:
            ours_note = ("%s (%s)" % (args.ours_python, info)).replace(str(ROOT) + os.sep, "")
            if looks_like_debug_build(info):
                ours_note += " — DEBUG BUILD (unoptimised; rerun with --ours-release for real numbers)"
                log("WARNING: ours is a debug build: %s" % info)
            log("ours: %s" % ours_note)
            if "ours-g" in servers and not python_imports(args.ours_python, "gevent"):
                log("ours-g: gevent does not import in %s (pip install 'kong_pdk[gevent]'); skipped" % args.ours_python)
                servers.remove("ours-g")
    official_ver = None
    if any(s.startswith("official") for s in servers):
        py = official_python(args.official_spec)
        if py is None:
            servers = [s for s in servers if not s.startswith("official")]
        else:
            pythons["official"] = py
            official_ver = package_version(py, "kong-pdk")
            log("official kong-pdk %s in %s" % (official_ver, VENV_OFFICIAL))

    # Worker scaling uses both cores for the servers: nothing is pinned.
    cores = pick_cores(args.no_pin or args.workers)
    log(
        "pinning: %s"
        % ("server CPU %s, loadgen CPU %s" % (cores[1], cores[0]) if cores[0] is not None else "off")
    )
    workdir = Path(tempfile.mkdtemp(prefix="kong-bench-"))
    try:
        if args.leak:
            leak_mode(args, servers, pythons, cores, workdir, official_ver, ours_note)
        elif args.workers:
            workers_mode(args, servers, pythons, cores, workdir, official_ver, ours_note)
        else:
            main_matrix(args, servers, pythons, cores, workdir, official_ver, ours_note)
    finally:
        _cleanup()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
