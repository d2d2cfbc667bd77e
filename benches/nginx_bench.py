#!/usr/bin/env python3
"""Benchmark through a real nginx: Kong's load pattern end to end.

    python benches/nginx_bench.py                   # hello,heavy at C=8,64, every server; writes docs/benchmarks.md
    python benches/nginx_bench.py --quick --no-doc  # short windows, one round, prints only
    python benches/nginx_bench.py --servers floor,ours --scenarios hello --conns 8

Each row: one plugin server (ours in each execution model, the official
kong-pdk, and the Python-free Rust floor server of benches/loadgen), one nginx
with --nginx-workers workers whose `access` phase drives that server through
benches/nginx/plugin_bridge.lua (a keep-alive cosocket pool per worker, one
checkout per RPC, one RPC per PDK call, lua-MessagePack: what Kong's
plugin-server Lua does), and wrk sending C keep-alive HTTP connections.
The server is pinned to one core, nginx and wrk share the other. A row
reports requests/s, the ratio to the floor server and to the official
package behind the same nginx, and per request: the server's CPU, nginx's CPU
and the server's context switches (all threads). Each row is the best of
--rounds rounds, rounds interleaved so that drift hits every server alike.

ProtoBuf:1 rows (docs/protobuf.md): `floor-pb` (the Rust floor speaking
ProtoBuf:1), `ours-pb`, `ours-pb-async` and `ours-pb-g` (ours with --protocol
protobuf: plain def handlers on the model --model auto picks, as for `ours`;
every phase async def; -g)
are driven by benches/nginx/pb_bridge.lua, which does what Kong's pb_rpc.lua
does (one pooled connection per event, lua-protobuf). Each of their rows is
also divided by its MessagePack:1 twin of the same run (floor, ours,
ours-async): "÷ MsgPack:1" for req/s and for nginx's CPU per request. They
need lua-protobuf (`luarocks install lua-protobuf`, or KONG_PDK_LUA_PROTOBUF
set to a folder holding its pb.so and protoc.lua).

Needs nginx with the Lua module, lua-MessagePack and wrk: on Debian/Ubuntu
this script installs them with apt-get when run as root (`nginx-light
libnginx-mod-http-lua lua-messagepack wrk`); otherwise it prints that command.
Reuses benches/run.py for building the floor server and the official venv.
"""

import argparse
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run as bench  # noqa: E402  (benches/ is a folder of scripts, not a package)

NGINX_DIR = bench.BENCHES / "nginx"
LUA_MODULE = Path("/usr/lib/nginx/modules/ngx_http_lua_module.so")
MESSAGEPACK_LUA = Path("/usr/share/lua/5.1/MessagePack.lua")
APT_PACKAGES = ["nginx-light", "libnginx-mod-http-lua", "lua-messagepack", "wrk"]
SERVERS = ["floor", "ours", "ours-threads", "ours-greenlets", "ours-async", "ours-g", "official", "floor-pb", "ours-pb", "ours-pb-async", "ours-pb-g"]
# A ProtoBuf:1 row and the MessagePack:1 row it is compared with.
MSGPACK_TWIN = {"floor-pb": "floor", "ours-pb": "ours", "ours-pb-async": "ours-async", "ours-pb-g": "ours-g"}
PROTO_DIR = bench.BENCHES.parent / "src" / "protobuf"
SCENARIOS = ["hello", "heavy", "exit"]
CLK_TCK = os.sysconf("SC_CLK_TCK")


def missing_tools():
    missing = []
    if shutil.which("nginx") is None or not LUA_MODULE.exists():
        missing += ["nginx-light", "libnginx-mod-http-lua"]
    if not MESSAGEPACK_LUA.exists():
        missing.append("lua-messagepack")
    if shutil.which("wrk") is None:
        missing.append("wrk")
    return missing


def ensure_tools():
    if not missing_tools():
        return
    cmd = ["apt-get", "install", "-y", "-q"] + APT_PACKAGES
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise SystemExit("nginx bench needs: %s (run: sudo %s)" % (", ".join(missing_tools()), " ".join(cmd)))
    bench.log("installing %s ..." % " ".join(APT_PACKAGES))
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
    # The package starts a system nginx on port 80; the bench runs its own.
    subprocess.run(["service", "nginx", "stop"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if missing_tools():
        raise SystemExit("still missing after apt-get: %s" % ", ".join(missing_tools()))


def lua_protobuf():
    """(lua_package_path part, lua_package_cpath) for lua-protobuf, or None."""
    folder = os.environ.get("KONG_PDK_LUA_PROTOBUF")
    if folder:
        d = Path(folder)
        if (d / "pb.so").exists() and (d / "protoc.lua").exists():
            return "%s/?.lua;" % d, "%s/?.so" % d
        return None
    for so in (Path("/usr/local/lib/lua/5.1/pb.so"), Path("/usr/lib/x86_64-linux-gnu/lua/5.1/pb.so")):
        for lua in (Path("/usr/local/share/lua/5.1/protoc.lua"), Path("/usr/share/lua/5.1/protoc.lua")):
            if so.exists() and lua.exists():
                return "%s/?.lua;" % lua.parent, "%s/?.so" % so.parent
    return None


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Nginx:
    """An nginx master and its workers, configured for one plugin socket."""

    def __init__(self, plugin, socket_path, workers, pin, workdir, pb_paths=None):
        self.dir = Path(tempfile.mkdtemp(prefix="nginx-", dir=str(workdir)))
        self.port = free_port()
        conf = (NGINX_DIR / "nginx.conf.in").read_text()
        config = '{"message":"hello"}'
        if pb_paths is None:
            access = 'require("plugin_bridge").run("%s", "access", "%s", %r)' % (plugin, socket_path, config)
            lua_path, lua_cpath = "", ""
        else:
            lua_path, lua_cpath = pb_paths
            access = 'require("pb_bridge").run("%s", "access", "%s", %r, "%s")' % (
                plugin, socket_path, config, PROTO_DIR)
        fields = {
            "ACCESS": access,
            "LUA_PATH": lua_path,
            "LUA_CPATH": lua_cpath,
            "USER": "user root root;" if os.geteuid() == 0 else "",
            "WORKERS": str(workers),
            "DIR": str(self.dir),
            "BENCH": str(NGINX_DIR),
            "PORT": str(self.port),
            "PLUGIN": plugin,
            "SOCKET": str(socket_path),
        }
        for k, v in fields.items():
            conf = conf.replace("@%s@" % k, v)
        (self.dir / "nginx.conf").write_text(conf)
        prefix = ["taskset", "-c", str(pin)] if pin is not None else []
        self.log = open(self.dir / "stdout.log", "wb")
        self.proc = subprocess.Popen(
            prefix + ["nginx", "-p", str(self.dir), "-c", str(self.dir / "nginx.conf")],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        bench._running.append(self.proc)
        self.expected_workers = workers

    def wait_ready(self, timeout=10.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return "nginx exited: %s" % bench.tail(self.dir / "error.log")
            if len(self.workers()) >= self.expected_workers:
                try:
                    socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                    return None
                except OSError:
                    pass
            time.sleep(0.05)
        return "nginx did not listen on %d within %.0fs" % (self.port, timeout)

    def workers(self):
        try:
            text = Path("/proc/%d/task/%d/children" % (self.proc.pid, self.proc.pid)).read_text()
        except OSError:
            return []
        return [int(p) for p in text.split()]

    def errors(self):
        try:
            return (self.dir / "error.log").read_text(errors="replace")
        except OSError:
            return ""

    def stop(self):
        bench._kill_group(self.proc)
        if self.proc in bench._running:
            bench._running.remove(self.proc)
        self.log.close()


def cpu_seconds(pids):
    """User + system CPU of whole processes (every thread), in seconds."""
    total = 0
    for pid in pids:
        try:
            stat = Path("/proc/%d/stat" % pid).read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / CLK_TCK


def context_switches(pid):
    """Voluntary + involuntary switches of the live threads of `pid`."""
    total = 0
    for task in Path("/proc/%d/task" % pid).glob("*"):
        try:
            text = (task / "status").read_text()
        except OSError:
            continue
        for m in re.finditer(r"^(?:non)?voluntary_ctxt_switches:\s+(\d+)", text, re.M):
            total += int(m.group(1))
    return total


def process_tree(pid):
    """`pid` and its descendants (-m worker processes)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        for task in Path("/proc/%d/task" % p).glob("*"):
            try:
                todo += [int(c) for c in (task / "children").read_text().split()]
            except OSError:
                pass
    return out


def run_wrk(port, conns, seconds, pin, non_2xx_ok=False):
    argv = ["wrk", "-t", "1", "-c", str(conns), "-d", "%ds" % max(1, round(seconds)), "http://127.0.0.1:%d/" % port]
    if pin is not None:
        argv = ["taskset", "-c", str(pin)] + argv
    r = subprocess.run(argv, capture_output=True, text=True)
    m = re.search(r"Requests/sec:\s+([\d.]+)", r.stdout)
    total = re.search(r"(\d+) requests in", r.stdout)
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", r.stdout)
    sock_err = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", r.stdout)
    # The exit scenario answers every request with kong.response.exit's status.
    errors = int(bad.group(1)) if bad and not non_2xx_ok else 0
    if sock_err:
        errors += sum(int(x) for x in sock_err.groups())
    if not m or not total:
        raise RuntimeError("wrk printed no result: %s %s" % (r.stdout, r.stderr))
    return float(m.group(1)), int(total.group(1)), errors


def measure(kind, scenario, conns, args, pythons, cores, workdir):
    """One row: the server behind nginx under wrk. Returns a dict, or None."""
    load_core, server_core = cores
    srv, err = bench.start_server(kind, scenario, workdir, pythons, server_core, args.cpu_us)
    if srv is None:
        bench.log("  %s %s: %s" % (kind, scenario, err))
        return None
    nginx = Nginx(bench.PLUGIN_NAME[scenario], srv.socket_path, args.nginx_workers, load_core, workdir,
                  args.pb_paths if kind in MSGPACK_TWIN else None)
    try:
        err = nginx.wait_ready()
        if err:
            bench.log("  %s" % err)
            return None
        run_wrk(nginx.port, conns, args.warmup, load_core)
        server_pids = process_tree(srv.pid)
        nginx_pids = nginx.workers()
        cpu0, ngx0, cs0 = cpu_seconds(server_pids), cpu_seconds(nginx_pids), context_switches(srv.pid)
        rps, total, errors = run_wrk(nginx.port, conns, args.duration, load_core, non_2xx_ok=scenario == "exit")
        cpu1, ngx1, cs1 = cpu_seconds(server_pids), cpu_seconds(nginx_pids), context_switches(srv.pid)
        if not srv.alive():
            srv.report_death("died under load")
            return None
        if errors:
            bench.log("  %s %s C=%d: %d errors; nginx error.log:\n%s"
                      % (kind, scenario, conns, errors, bench.tail(nginx.dir / "error.log", 5)))
        return {
            "server": kind,
            "scenario": scenario,
            "conns": conns,
            "rps": rps,
            "requests": total,
            "errors": errors,
            "server_us": 1e6 * (cpu1 - cpu0) / max(total, 1),
            "nginx_us": 1e6 * (ngx1 - ngx0) / max(total, 1),
            "switches": (cs1 - cs0) / max(total, 1),
        }
    finally:
        nginx.stop()
        srv.stop()


def table(results, servers, scenarios):
    best = {}
    for r in results:
        key = (r["scenario"], r["conns"], r["server"])
        if key not in best or r["rps"] > best[key]["rps"]:
            best[key] = r
    header = ["scenario", "C", "server", "req/s", "÷ floor", "÷ official",
              "server CPU µs/req", "nginx CPU µs/req", "server switches/req", "errors"]
    with_pb = any(k[2] in MSGPACK_TWIN for k in best)
    if with_pb:
        header[-1:-1] = ["req/s ÷ MsgPack:1", "nginx CPU ÷ MsgPack:1"]
    rows = []
    for (scenario, conns, kind), r in sorted(best.items(), key=lambda kv: (
            scenarios.index(kv[0][0]), kv[0][1], servers.index(kv[0][2]))):
        # A ProtoBuf:1 row is divided by the floor of its own wire.
        floor = best.get((scenario, conns, "floor-pb" if kind in MSGPACK_TWIN else "floor"))
        official = best.get((scenario, conns, "official"))
        row = [
            scenario, str(conns), kind, "%.0f" % r["rps"],
            "%.2f" % (r["rps"] / floor["rps"]) if floor else "–",
            "%.1f" % (r["rps"] / official["rps"]) if official else "–",
            "%.0f" % r["server_us"], "%.0f" % r["nginx_us"], "%.1f" % r["switches"], str(r["errors"]),
        ]
        if with_pb:
            twin = best.get((scenario, conns, MSGPACK_TWIN.get(kind, "")))
            row[-1:-1] = [
                "%.2f" % (r["rps"] / twin["rps"]) if twin else "–",
                "%.2f" % (r["nginx_us"] / twin["nginx_us"]) if twin and twin["nginx_us"] else "–",
            ]
        rows.append(row)
    return header, rows


DOC_METHOD = """How the nginx rows are measured (`benches/nginx_bench.py`): a real nginx
(Debian's, with the Lua module) runs each request's `access` phase through
`benches/nginx/plugin_bridge.lua`, which speaks to the plugin server as Kong's
plugin-server Lua does (a keep-alive cosocket pool per worker with one checkout
per RPC, lua-MessagePack, one RPC per PDK call, the PDK functions done on the
live request); wrk sends C keep-alive HTTP connections. The plugin server is
pinned to one core, nginx's workers and wrk to the other; with `--no-pin` all
share every core, as Kong and its plugin server do in production, so that the
server's CPU per request costs nginx throughput. "÷ floor" divides by
the Python-free Rust server of `benches/loadgen` (same calls, same nginx;
for a ProtoBuf:1 row, its ProtoBuf:1 twin `floor-pb`, driven by
`benches/nginx/pb_bridge.lua` as Kong's pb_rpc.lua drives a server: one pooled
connection per event, lua-protobuf); "÷ MsgPack:1" divides a ProtoBuf:1 row's
req/s and nginx CPU per request by its MessagePack:1 twin's (floor, ours,
ours-async, ours-g);
"÷ official" by the official kong-pdk's default server. CPU and switches are per
HTTP request, read from /proc over the measured window; each row is the best of
the rounds."""


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scenarios", type=bench.csv, default=["hello", "heavy"], help="of %s" % ",".join(SCENARIOS))
    p.add_argument("--conns", type=lambda s: [int(x) for x in bench.csv(s)], default=[8, 64])
    p.add_argument("--servers", type=bench.csv, default=SERVERS, help="of %s" % ",".join(SERVERS))
    p.add_argument("--nginx-workers", type=int, default=2)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--warmup", type=float, default=1.0)
    p.add_argument("--duration", type=float, default=4.0)
    p.add_argument("--quick", action="store_true", help="one round, 1 s warm-up, 2 s windows (wrk counts whole seconds)")
    p.add_argument("--cpu-us", type=int, default=1000)
    p.add_argument("--ours-python", default=sys.executable)
    p.add_argument("--official-spec", default="kong-pdk")
    p.add_argument("--no-pin", action="store_true",
                   help="let nginx, wrk and the server share every core, as Kong and its plugin server do in production "
                        "(then the server's CPU per request is taken from nginx's)")
    p.add_argument("--no-doc", action="store_true")
    args = p.parse_args()
    if args.quick:
        args.rounds, args.warmup, args.duration = 1, 1.0, 2.0
    for s in args.servers:
        if s not in SERVERS:
            p.error("unknown server %s" % s)
    signal.signal(signal.SIGTERM, bench._on_signal)
    signal.signal(signal.SIGINT, bench._on_signal)

    ensure_tools()
    args.pb_paths = None
    if any(s in MSGPACK_TWIN for s in args.servers):
        args.pb_paths = lua_protobuf()
        if args.pb_paths is None:
            bench.log("skipping the ProtoBuf:1 rows: needs lua-protobuf (luarocks install lua-protobuf, "
                      "or KONG_PDK_LUA_PROTOBUF=DIR holding its pb.so and protoc.lua)")
            args.servers = [s for s in args.servers if s not in MSGPACK_TWIN]
    if "floor" in args.servers or "floor-pb" in args.servers:
        bench.build_loadgen()
    pythons = {"ours": args.ours_python, "official": None}
    servers = list(args.servers)
    ok, info = bench.ours_available(args.ours_python)
    if not ok:
        raise SystemExit("ours does not import in %s: %s" % (args.ours_python, info))
    if bench.looks_like_debug_build(info):
        bench.log("WARNING: ours is a debug build (%s): run `make release` first for real numbers" % info)
    if "official" in servers:
        pythons["official"] = bench.official_python(args.official_spec)
        if pythons["official"] is None:
            raise SystemExit("the official kong-pdk could not be installed (%s)" % args.official_spec)
    cores = bench.pick_cores(args.no_pin)
    workdir = Path(tempfile.mkdtemp(prefix="nginx-bench-"))
    results = []
    try:
        for rnd in range(args.rounds):
            for scenario in args.scenarios:
                for conns in args.conns:
                    for kind in servers:
                        r = measure(kind, scenario, conns, args, pythons, cores, workdir)
                        if r is None:
                            continue
                        bench.log("round %d %-6s C=%-3d %-10s %8.0f req/s  server %5.0f µs/req  nginx %5.0f µs/req"
                                  % (rnd + 1, scenario, conns, kind, r["rps"], r["server_us"], r["nginx_us"]))
                        results.append(r)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    header, rows = table(results, servers, args.scenarios)
    print(bench.text_table(header, rows))
    if not args.no_doc:
        body = "\n".join([
            "## Through a real nginx" + (" (nothing pinned)" if cores[0] is None else ""),
            "",
            "%s; commit %s; %d nginx workers; %s; %d round(s) of %g s, best kept; %s." % (
                time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), bench.git_commit(), args.nginx_workers,
                "nothing pinned" if cores[0] is None else "server on CPU %s, nginx and wrk on CPU %s" % (
                    cores[1], cores[0]),
                args.rounds, args.duration, "{nproc} cores ({cpu}), Linux {kernel}".format(**bench.machine_info())),
            "",
            bench.md_table(header, rows),
            "",
            DOC_METHOD,
        ])
        text = bench.DOC.read_text() if bench.DOC.exists() else bench.DOC_INTRO
        section = "nginx-unpinned" if cores[0] is None else "nginx"
        bench.DOC.write_text(bench.replace_section(text, section, body))
        bench.log("wrote %s" % bench.DOC)


if __name__ == "__main__":
    main()
