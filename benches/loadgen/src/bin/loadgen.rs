//! `loadgen`: plays Kong against a plugin server over its Unix socket.
//!
//! One StartInstance (config as a JSON string, like Kong), then `--conns`
//! concurrent "request coroutines", each running HandleEvent and the Step
//! loop for one event after another. Every PDK call the server asks for is
//! answered with the Step method Kong would use, and every event's sequence
//! of PDK calls is checked against the scenario. A terminal call
//! (`kong.response.exit`) ends the event without a Step, as in Kong.
//!
//! Runs on one thread (a current-thread runtime); pin it to its own core.
//! Prints one JSON line on stdout.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::{Parser, ValueEnum};
use hdrhistogram::Histogram;
use loadgen::proc;
use loadgen::scenario::{self, Arg, Call, Scenario};
use loadgen::wire::{self, Conn};
use rmpv::ValueRef;
use serde_json::json;

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
enum PoolMode {
    /// Each coroutine keeps one connection for all its RPCs.
    Own,
    /// One keep-alive pool shared by all coroutines, checked out per RPC
    /// (LIFO, at most `--pool-size` idle connections), as a Kong worker does.
    Shared,
}

#[derive(Parser, Debug)]
#[command(about = "Kong-side load generator for external plugin servers")]
struct Args {
    /// Unix socket of the plugin server.
    #[arg(long)]
    socket: PathBuf,
    /// Scenario: hello, heavy, exit or cpu.
    #[arg(long, default_value = "hello")]
    scenario: String,
    /// Plugin name for StartInstance (default: the scenario's plugin).
    #[arg(long)]
    plugin_name: Option<String>,
    /// Concurrent request coroutines.
    #[arg(long, default_value_t = 1)]
    conns: usize,
    #[arg(long, value_enum, default_value_t = PoolMode::Own)]
    pool: PoolMode,
    /// Idle connections kept by the shared pool (Kong: lua_socket_pool_size).
    #[arg(long, default_value_t = 256)]
    pool_size: usize,
    /// Warm-up seconds (not measured).
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Start the measured window at this wall-clock time (seconds since the
    /// Unix epoch) instead of after `--warmup`: several load generators (one
    /// per simulated nginx worker) then measure the same window.
    #[arg(long)]
    measure_at: Option<f64>,
    /// Measured window in seconds.
    #[arg(long, default_value_t = 3.0)]
    duration: f64,
    /// Leak mode: run exactly this many events (no warm-up, no window) and
    /// sample the server's RSS and fds every `--sample-every` events.
    #[arg(long)]
    events: Option<u64>,
    #[arg(long, default_value_t = 100_000)]
    sample_every: u64,
    /// Leak mode: stop early once the server's RSS exceeds this many MiB
    /// (checked every 10k events), so a leaking server cannot eat the box.
    #[arg(long)]
    max_server_rss_mb: Option<u64>,
    /// Pid of the server, for CPU time, RSS and fd counts.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Seconds before an RPC counts as timed out (its connection is dropped).
    #[arg(long, default_value_t = 10.0)]
    rpc_timeout: f64,
    /// Seconds to wait for the socket to accept connections.
    #[arg(long, default_value_t = 10.0)]
    connect_timeout: f64,
    /// Plugin config fields as a JSON object (Kong adds its own `__*` keys).
    #[arg(long, default_value = r#"{"message":"hello","cpu_us":1000}"#)]
    config: String,
    /// Phase (EventName) to run.
    #[arg(long, default_value = "access")]
    phase: String,
}

#[derive(Default)]
struct Counters {
    events: Cell<u64>,
    pdk_calls: Cell<u64>,
    rpcs: Cell<u64>,
    connects: Cell<u64>,
    rpc_errors: Cell<u64>,
    io_errors: Cell<u64>,
    protocol_errors: Cell<u64>,
    timeouts: Cell<u64>,
    mismatches: Cell<u64>,
}

#[derive(Clone, Copy, Default)]
struct Snap {
    events: u64,
    pdk_calls: u64,
    rpcs: u64,
    connects: u64,
    rpc_errors: u64,
    io_errors: u64,
    protocol_errors: u64,
    timeouts: u64,
    mismatches: u64,
}

impl Counters {
    fn snap(&self) -> Snap {
        Snap {
            events: self.events.get(),
            pdk_calls: self.pdk_calls.get(),
            rpcs: self.rpcs.get(),
            connects: self.connects.get(),
            rpc_errors: self.rpc_errors.get(),
            io_errors: self.io_errors.get(),
            protocol_errors: self.protocol_errors.get(),
            timeouts: self.timeouts.get(),
            mismatches: self.mismatches.get(),
        }
    }
}

fn inc(c: &Cell<u64>) {
    c.set(c.get() + 1);
}

struct Shared {
    socket: PathBuf,
    scenario: &'static Scenario,
    instance_id: i64,
    phase: String,
    pool_mode: PoolMode,
    pool: RefCell<Vec<Conn>>,
    pool_size: usize,
    msgid: Cell<u32>,
    rpc_timeout: Duration,
    c: Counters,
    measuring: Cell<bool>,
    stop: Cell<bool>,
    hist: RefCell<Histogram<u64>>,
    error_samples: RefCell<Vec<String>>,
    /// Events still to start (leak mode); `u64::MAX` when unlimited.
    budget: Cell<u64>,
    sample_every: u64,
    samples: RefCell<Vec<serde_json::Value>>,
    server_pid: Option<String>,
    started: Instant,
    max_rss_kb: Option<u64>,
    stopped_early: RefCell<Option<String>>,
}

impl Shared {
    fn next_msgid(&self) -> u32 {
        let id = self.msgid.get().wrapping_add(1);
        self.msgid.set(id);
        id
    }

    fn note_error(&self, e: &Fail) {
        match e {
            Fail::Io(_) => inc(&self.c.io_errors),
            Fail::Timeout => inc(&self.c.timeouts),
            Fail::Rpc(_) => inc(&self.c.rpc_errors),
            Fail::Protocol(_) => inc(&self.c.protocol_errors),
        }
        let mut s = self.error_samples.borrow_mut();
        if s.len() < 8 {
            s.push(e.to_string());
        }
    }

    fn note_mismatch(&self, what: String) {
        inc(&self.c.mismatches);
        let mut s = self.error_samples.borrow_mut();
        if s.len() < 8 {
            s.push(format!("mismatch: {what}"));
        }
    }

    fn check_rss_limit(&self, events: u64) {
        let (Some(limit), Some(pid)) = (self.max_rss_kb, self.server_pid.as_deref()) else {
            return;
        };
        if let Some(rss) = proc::rss_kb(pid) {
            if rss > limit {
                self.budget.set(0);
                *self.stopped_early.borrow_mut() = Some(format!(
                    "server RSS {} MiB exceeded the limit of {} MiB after {events} events",
                    rss / 1024,
                    limit / 1024
                ));
            }
        }
    }

    fn sample(&self, events: u64) {
        let pid = self.server_pid.as_deref().unwrap_or("self");
        self.samples.borrow_mut().push(json!({
            "events": events,
            "t_s": self.started.elapsed().as_secs_f64(),
            "rss_kb": proc::rss_kb(pid),
            "fds": proc::fd_count(pid),
            "threads": proc::threads(pid),
        }));
    }
}

#[derive(Debug)]
enum Fail {
    Io(String),
    Timeout,
    Rpc(String),
    Protocol(String),
}

impl std::fmt::Display for Fail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Fail::Io(e) => write!(f, "io: {e}"),
            Fail::Timeout => write!(f, "rpc timed out"),
            Fail::Rpc(e) => write!(f, "rpc error: {e}"),
            Fail::Protocol(e) => write!(f, "protocol: {e}"),
        }
    }
}

/// What one HandleEvent/Step reply asks Kong to do next, already checked
/// against the expected call.
enum Reply {
    Ret {
        event_id: i64,
    },
    Call {
        event_id: i64,
        /// `None` when the call matched the expectation; else what differed.
        mismatch: Option<String>,
        terminal: bool,
        step_method: &'static str,
        answer: scenario::Answer,
    },
}

fn arg_matches(expected: &Arg, got: &ValueRef<'_>) -> bool {
    match expected {
        Arg::Str(s) => wire::as_str(got) == Some(*s),
        Arg::Int(i) => wire::as_i64(got) == Some(*i),
        Arg::Map(_) => matches!(got, ValueRef::Map(_)),
    }
}

/// Parse a response `[1, msgid, error, {Data, EventId}]`.
fn parse_reply(v: &ValueRef<'_>, msgid: u32, expected: Option<&Call>) -> Result<Reply, Fail> {
    let ValueRef::Array(a) = v else {
        return Err(Fail::Protocol("response is not an array".into()));
    };
    if a.len() != 4 {
        return Err(Fail::Protocol(format!("response has {} elements", a.len())));
    }
    if wire::as_i64(&a[0]) != Some(1) {
        return Err(Fail::Protocol("response type is not 1".into()));
    }
    if wire::as_i64(&a[1]) != Some(i64::from(msgid)) {
        return Err(Fail::Protocol(format!(
            "msgid {} does not match request {msgid}",
            a[1]
        )));
    }
    match &a[2] {
        ValueRef::Nil => {}
        ValueRef::String(s) => {
            return Err(Fail::Rpc(
                String::from_utf8_lossy(s.as_bytes()).into_owned(),
            ));
        }
        other => return Err(Fail::Protocol(format!("non-string error value {other}"))),
    }
    let res = &a[3];
    let event_id = wire::get(res, "EventId")
        .and_then(wire::as_i64)
        .ok_or_else(|| Fail::Protocol(format!("no integer EventId in result {res}")))?;
    let data =
        wire::get(res, "Data").ok_or_else(|| Fail::Protocol(format!("no Data in result {res}")))?;
    if wire::as_str(data) == Some("ret") {
        return Ok(Reply::Ret { event_id });
    }
    let method = wire::get(data, "Method")
        .and_then(wire::as_str)
        .ok_or_else(|| Fail::Protocol(format!("Data is neither \"ret\" nor a call: {data}")))?;
    let args: &[ValueRef<'_>] = match wire::get(data, "Args") {
        Some(ValueRef::Array(v)) => v,
        _ => &[],
    };
    let mismatch = match expected {
        None => Some(format!("unexpected extra call {method}")),
        Some(exp) if exp.method != method => {
            Some(format!("expected {} but got {method}", exp.method))
        }
        Some(exp) if exp.check_first => match (exp.args.first(), args.first()) {
            (Some(e), Some(g)) if arg_matches(e, g) => None,
            (e, g) => Some(format!(
                "{method}: first argument {} , expected {e:?}",
                g.map(|g| g.to_string()).unwrap_or_else(|| "missing".into())
            )),
        },
        Some(_) => None,
    };
    let first = args.first().and_then(wire::as_str);
    Ok(Reply::Call {
        event_id,
        mismatch,
        terminal: scenario::is_terminal(method),
        step_method: scenario::step_method(method),
        answer: scenario::answer(method, first),
    })
}

async fn checkout(sh: &Shared, own: &mut Option<Conn>) -> Result<Conn, Fail> {
    let existing = match sh.pool_mode {
        PoolMode::Own => own.take(),
        PoolMode::Shared => sh.pool.borrow_mut().pop(),
    };
    match existing {
        Some(c) => Ok(c),
        None => {
            inc(&sh.c.connects);
            Conn::connect(&sh.socket)
                .await
                .map_err(|e| Fail::Io(format!("connect: {e}")))
        }
    }
}

fn checkin(sh: &Shared, own: &mut Option<Conn>, conn: Conn) {
    match sh.pool_mode {
        PoolMode::Own => *own = Some(conn),
        PoolMode::Shared => {
            let mut p = sh.pool.borrow_mut();
            if p.len() < sh.pool_size {
                p.push(conn);
            }
        }
    }
}

/// One RPC on a pooled connection: send `req`, read the one response (after
/// any notifications), check it, put the connection back.
async fn rpc(
    sh: &Shared,
    own: &mut Option<Conn>,
    req: &[u8],
    msgid: u32,
    expected: Option<&Call>,
) -> Result<Reply, Fail> {
    let mut conn = checkout(sh, own).await?;
    inc(&sh.c.rpcs);
    let exchange = async {
        conn.send(req)
            .await
            .map_err(|e| Fail::Io(format!("write: {e}")))?;
        loop {
            let n = match conn.read_object().await {
                Ok(Some(n)) => n,
                Ok(None) => return Err(Fail::Io("server closed the connection".into())),
                Err(e) => return Err(Fail::Io(format!("read: {e}"))),
            };
            let v = wire::decode(&conn.buf[..n]).map_err(Fail::Protocol)?;
            // A notification [2, label, args] may precede the response.
            if let ValueRef::Array(a) = &v {
                if a.len() == 3 && wire::as_i64(&a[0]) == Some(2) {
                    conn.consume(n);
                    continue;
                }
            }
            let reply = parse_reply(&v, msgid, expected);
            if conn.buf.len() > n {
                // Kong throws away whatever follows the response.
                return Err(Fail::Protocol(format!(
                    "{} unsolicited bytes after a response",
                    conn.buf.len() - n
                )));
            }
            conn.buf.clear();
            return reply;
        }
    };
    match tokio::time::timeout(sh.rpc_timeout, exchange).await {
        Ok(Ok(reply)) => {
            checkin(sh, own, conn);
            Ok(reply)
        }
        // An RPC error reply leaves the connection usable.
        Ok(Err(Fail::Rpc(e))) => {
            checkin(sh, own, conn);
            Err(Fail::Rpc(e))
        }
        Ok(Err(e)) => Err(e),
        Err(_) => Err(Fail::Timeout),
    }
}

/// Run one event; returns whether its PDK call sequence matched.
async fn run_event(sh: &Shared, own: &mut Option<Conn>, out: &mut Vec<u8>) -> Result<(), Fail> {
    let calls = sh.scenario.calls;
    let msgid = sh.next_msgid();
    out.clear();
    wire::begin_request(out, msgid, "plugin.HandleEvent");
    wire::put_map(out, 2);
    wire::put_str(out, "InstanceId");
    wire::put_int(out, sh.instance_id);
    wire::put_str(out, "EventName");
    wire::put_str(out, &sh.phase);
    let mut reply = rpc(sh, own, out, msgid, calls.first()).await?;
    let mut idx = 0usize;
    let mut event: Option<i64> = None;
    let mut mismatch: Option<String> = None;
    loop {
        let (eid, next) = match reply {
            Reply::Ret { event_id } => (event_id, None),
            Reply::Call {
                event_id,
                mismatch: m,
                terminal,
                step_method,
                answer,
            } => {
                if mismatch.is_none() {
                    mismatch = m;
                }
                (event_id, Some((terminal, step_method, answer)))
            }
        };
        match event {
            None => event = Some(eid),
            Some(e) if e != eid => {
                return Err(Fail::Protocol(format!(
                    "EventId changed from {e} to {eid} within one event"
                )))
            }
            Some(_) => {}
        }
        let Some((terminal, step_method, answer)) = next else {
            break;
        };
        idx += 1;
        inc(&sh.c.pdk_calls);
        if terminal {
            // Kong never resumes the event after exit/error.
            break;
        }
        let msgid = sh.next_msgid();
        out.clear();
        wire::begin_request(out, msgid, step_method);
        let has_data = !matches!(answer, scenario::Answer::Nil);
        wire::put_map(out, if has_data { 2 } else { 1 });
        wire::put_str(out, "EventId");
        wire::put_int(out, eid);
        if has_data {
            wire::put_str(out, "Data");
            wire::put_answer(out, &answer);
        }
        reply = rpc(sh, own, out, msgid, calls.get(idx)).await?;
    }
    if mismatch.is_none() && idx != calls.len() {
        mismatch = Some(format!(
            "event made {idx} PDK calls, expected {}",
            calls.len()
        ));
    }
    if let Some(m) = mismatch {
        sh.note_mismatch(m);
    }
    Ok(())
}

async fn coroutine(sh: Rc<Shared>) {
    let mut own: Option<Conn> = None;
    let mut out = Vec::with_capacity(512);
    while !sh.stop.get() {
        let left = sh.budget.get();
        if left == 0 {
            break;
        }
        if left != u64::MAX {
            sh.budget.set(left - 1);
        }
        let t0 = Instant::now();
        match run_event(&sh, &mut own, &mut out).await {
            Ok(()) => {
                inc(&sh.c.events);
                if sh.measuring.get() {
                    let ns = t0.elapsed().as_nanos().min(u128::from(u64::MAX)) as u64;
                    sh.hist.borrow_mut().saturating_record(ns.max(1));
                }
                let n = sh.c.events.get();
                if left != u64::MAX {
                    if sh.sample_every > 0 && n % sh.sample_every == 0 {
                        sh.sample(n);
                    }
                    if n % 10_000 == 0 {
                        sh.check_rss_limit(n);
                    }
                }
            }
            Err(e) => {
                let backoff = matches!(e, Fail::Io(_));
                sh.note_error(&e);
                if backoff {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            }
        }
    }
}

/// Kong-like config JSON: the plugin's fields plus Kong's bookkeeping keys.
fn kong_config(fields: &str, plugin: &str) -> Result<String, String> {
    let mut v: serde_json::Value =
        serde_json::from_str(fields).map_err(|e| format!("--config is not JSON: {e}"))?;
    let obj = v
        .as_object_mut()
        .ok_or_else(|| "--config must be a JSON object".to_string())?;
    let plugin_id = "6a1d8ad0-3c5e-4b1a-9a53-8f1c2b7e4d10";
    obj.insert(
        "__key__".into(),
        json!(format!("plugins:{plugin}::::{plugin_id}")),
    );
    obj.insert("__seq__".into(), json!(1));
    obj.insert("__plugin_id".into(), json!(plugin_id));
    Ok(v.to_string())
}

async fn start_instance(
    socket: &std::path::Path,
    plugin: &str,
    config: &str,
    connect_timeout: Duration,
) -> Result<i64, String> {
    let deadline = Instant::now() + connect_timeout;
    let mut conn = loop {
        match Conn::connect(socket).await {
            Ok(c) => break c,
            Err(e) if Instant::now() >= deadline => {
                return Err(format!("connect {}: {e}", socket.display()))
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    };
    let mut out = Vec::new();
    wire::begin_request(&mut out, 1, "plugin.StartInstance");
    wire::put_map(&mut out, 2);
    wire::put_str(&mut out, "Name");
    wire::put_str(&mut out, plugin);
    wire::put_str(&mut out, "Config");
    wire::put_str(&mut out, config);
    conn.send(&out).await.map_err(|e| format!("write: {e}"))?;
    loop {
        let n = tokio::time::timeout(Duration::from_secs(30), conn.read_object())
            .await
            .map_err(|_| "StartInstance timed out".to_string())?
            .map_err(|e| format!("read: {e}"))?
            .ok_or_else(|| "server closed the connection during StartInstance".to_string())?;
        let v = wire::decode(&conn.buf[..n])?;
        let ValueRef::Array(a) = &v else {
            return Err(format!("StartInstance: bad response {v}"));
        };
        if a.len() == 3 && wire::as_i64(&a[0]) == Some(2) {
            conn.consume(n);
            continue;
        }
        if a.len() != 4 || wire::as_i64(&a[0]) != Some(1) || wire::as_i64(&a[1]) != Some(1) {
            return Err(format!("StartInstance: bad response {v}"));
        }
        if !matches!(a[2], ValueRef::Nil) {
            return Err(format!("StartInstance failed: {}", a[2]));
        }
        return wire::get(&a[3], "Id")
            .and_then(wire::as_i64)
            .ok_or_else(|| format!("StartInstance: no integer Id in {}", a[3]));
    }
}

struct ProcSnap {
    cpu_ticks: Option<u64>,
    rss_kb: Option<u64>,
    fds: Option<u64>,
    threads: Option<u64>,
    /// Context switches of the server's threads and child processes.
    ctx: HashMap<u64, (u64, u64)>,
    self_ticks: Option<u64>,
    at: Instant,
}

fn proc_snap(pid: Option<&str>) -> ProcSnap {
    ProcSnap {
        cpu_ticks: pid.and_then(proc::tree_cpu_ticks),
        rss_kb: pid.and_then(proc::rss_kb),
        fds: pid.and_then(proc::fd_count),
        threads: pid.and_then(proc::threads),
        ctx: pid.map(proc::tree_ctx_switches).unwrap_or_default(),
        self_ticks: proc::cpu_ticks("self"),
        at: Instant::now(),
    }
}

fn per_event_us(t0: Option<u64>, t1: Option<u64>, events: u64) -> Option<f64> {
    let (a, b) = (t0?, t1?);
    if events == 0 {
        return None;
    }
    let secs = b.saturating_sub(a) as f64 / proc::clock_ticks() as f64;
    Some(secs * 1e6 / events as f64)
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

async fn run(args: Args) -> Result<serde_json::Value, String> {
    let scenario = scenario::by_name(&args.scenario)
        .ok_or_else(|| format!("unknown scenario {:?}", args.scenario))?;
    let plugin = args
        .plugin_name
        .clone()
        .unwrap_or_else(|| scenario.plugin.to_string());
    let config = kong_config(&args.config, &plugin)?;
    let instance_id = start_instance(
        &args.socket,
        &plugin,
        &config,
        Duration::from_secs_f64(args.connect_timeout),
    )
    .await?;

    let hist = Histogram::<u64>::new_with_bounds(1, 600_000_000_000, 3)
        .map_err(|e| format!("histogram: {e}"))?;
    let pid = args.server_pid.map(|p| p.to_string());
    let sh = Rc::new(Shared {
        socket: args.socket.clone(),
        scenario,
        instance_id,
        phase: args.phase.clone(),
        pool_mode: args.pool,
        pool: RefCell::new(Vec::new()),
        pool_size: args.pool_size,
        msgid: Cell::new(1),
        rpc_timeout: Duration::from_secs_f64(args.rpc_timeout),
        c: Counters::default(),
        measuring: Cell::new(false),
        stop: Cell::new(false),
        hist: RefCell::new(hist),
        error_samples: RefCell::new(Vec::new()),
        budget: Cell::new(args.events.unwrap_or(u64::MAX)),
        sample_every: args.sample_every,
        samples: RefCell::new(Vec::new()),
        server_pid: pid.clone(),
        started: Instant::now(),
        max_rss_kb: args.max_server_rss_mb.map(|m| m * 1024),
        stopped_early: RefCell::new(None),
    });

    let base = json!({
        "scenario": scenario.name,
        "plugin": plugin,
        "conns": args.conns,
        "pool": format!("{:?}", args.pool).to_lowercase(),
        "instance_id": instance_id,
        "calls_per_event": scenario.calls.len(),
    });

    if let Some(n) = args.events {
        // Leak mode: a fixed number of events, sampled as they go.
        sh.sample(0);
        let p0 = proc_snap(pid.as_deref());
        sh.measuring.set(true);
        let mut handles = Vec::new();
        for _ in 0..args.conns {
            handles.push(tokio::task::spawn_local(coroutine(sh.clone())));
        }
        for h in handles {
            let _ = h.await;
        }
        let p1 = proc_snap(pid.as_deref());
        let s = sh.c.snap();
        if s.events % sh.sample_every.max(1) != 0 || s.events == 0 {
            sh.sample(s.events);
        }
        let elapsed = p1.at.duration_since(p0.at).as_secs_f64();
        let mut out = base;
        out["mode"] = json!("leak");
        out["requested_events"] = json!(n);
        out["events"] = json!(s.events);
        out["elapsed_s"] = json!(round3(elapsed));
        out["events_per_s"] = json!(round3(s.events as f64 / elapsed.max(1e-9)));
        out["errors"] = errors_json(&s, &Snap::default(), &sh);
        out["samples"] = json!(*sh.samples.borrow());
        out["stopped_early"] = json!(*sh.stopped_early.borrow());
        out["server"] = json!({
            "cpu_us_per_event": per_event_us(p0.cpu_ticks, p1.cpu_ticks, s.events).map(round3),
        });
        return Ok(out);
    }

    for _ in 0..args.conns {
        tokio::task::spawn_local(coroutine(sh.clone()));
    }
    let warmup = match args.measure_at {
        Some(at) => {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or(0.0);
            (at - now).max(0.0)
        }
        None => args.warmup,
    };
    tokio::time::sleep(Duration::from_secs_f64(warmup)).await;
    let s0 = sh.c.snap();
    let p0 = proc_snap(pid.as_deref());
    sh.measuring.set(true);
    tokio::time::sleep(Duration::from_secs_f64(args.duration)).await;
    sh.measuring.set(false);
    let s1 = sh.c.snap();
    let p1 = proc_snap(pid.as_deref());
    sh.stop.set(true);

    let window = p1.at.duration_since(p0.at).as_secs_f64();
    let events = s1.events - s0.events;
    let calls = s1.pdk_calls - s0.pdk_calls;
    let h = sh.hist.borrow();
    let ms = |q: f64| {
        if h.is_empty() {
            None
        } else {
            Some(round3(h.value_at_quantile(q) as f64 / 1e6))
        }
    };
    let server_cpu_s = match (p0.cpu_ticks, p1.cpu_ticks) {
        (Some(a), Some(b)) => Some(b.saturating_sub(a) as f64 / proc::clock_ticks() as f64),
        _ => None,
    };
    let (ctx_vol, ctx_invol) = proc::ctx_switch_delta(&p0.ctx, &p1.ctx);
    // Every recorded latency bucket as [ns, count], so that the runner can
    // merge the histograms of several load generators into exact percentiles.
    let hist_buckets: Vec<[u64; 2]> = h
        .iter_recorded()
        .map(|v| [v.value_iterated_to(), v.count_at_value()])
        .collect();
    let self_cpu_s = match (p0.self_ticks, p1.self_ticks) {
        (Some(a), Some(b)) => Some(b.saturating_sub(a) as f64 / proc::clock_ticks() as f64),
        _ => None,
    };
    let mut out = base;
    out["mode"] = json!("window");
    out["warmup_s"] = json!(round3(warmup));
    out["window_s"] = json!(round3(window));
    out["events"] = json!(events);
    out["events_per_s"] = json!(round3(events as f64 / window));
    out["pdk_calls"] = json!(calls);
    out["calls_per_s"] = json!(round3(calls as f64 / window));
    out["rpcs"] = json!(s1.rpcs - s0.rpcs);
    out["connects"] = json!(s1.connects - s0.connects);
    out["latency_ms"] = json!({
        "p50": ms(0.50),
        "p90": ms(0.90),
        "p99": ms(0.99),
        "max": if h.is_empty() { None } else { Some(round3(h.max() as f64 / 1e6)) },
        "mean": if h.is_empty() { None } else { Some(round3(h.mean() / 1e6)) },
    });
    out["latency_hist_ns"] = json!(hist_buckets);
    out["errors"] = errors_json(&s1, &s0, &sh);
    out["server"] = json!({
        "pid": args.server_pid,
        "cpu_us_per_event": per_event_us(p0.cpu_ticks, p1.cpu_ticks, events).map(round3),
        "cpu_util": server_cpu_s.map(|s| round3(s / window)),
        "cpu_s": server_cpu_s,
        "ctx_voluntary": pid.as_ref().map(|_| ctx_vol),
        "ctx_involuntary": pid.as_ref().map(|_| ctx_invol),
        "rss_kb_start": p0.rss_kb,
        "rss_kb_end": p1.rss_kb,
        "fds_start": p0.fds,
        "fds_end": p1.fds,
        "threads_start": p0.threads,
        "threads_end": p1.threads,
    });
    out["loadgen"] = json!({
        "cpu_us_per_event": per_event_us(p0.self_ticks, p1.self_ticks, events).map(round3),
        "cpu_s": self_cpu_s,
    });
    Ok(out)
}

fn errors_json(s1: &Snap, s0: &Snap, sh: &Shared) -> serde_json::Value {
    let rpc = s1.rpc_errors - s0.rpc_errors;
    let io = s1.io_errors - s0.io_errors;
    let protocol = s1.protocol_errors - s0.protocol_errors;
    let timeout = s1.timeouts - s0.timeouts;
    let mismatch = s1.mismatches - s0.mismatches;
    json!({
        "total": rpc + io + protocol + timeout + mismatch,
        "rpc": rpc,
        "io": io,
        "protocol": protocol,
        "timeout": timeout,
        "mismatch": mismatch,
        // Over the whole run, warm-up included.
        "all_run": s1.rpc_errors + s1.io_errors + s1.protocol_errors + s1.timeouts + s1.mismatches,
        "samples": *sh.error_samples.borrow(),
    })
}

fn main() -> ExitCode {
    let args = Args::parse();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("loadgen: runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let local = tokio::task::LocalSet::new();
    let result = local.block_on(&rt, run(args));
    match result {
        Ok(v) => {
            println!("{v}");
            // Do not wait for in-flight RPCs of the abandoned coroutines.
            std::process::exit(0);
        }
        Err(e) => {
            eprintln!("loadgen: {e}");
            println!("{}", json!({ "fatal": e }));
            ExitCode::FAILURE
        }
    }
}
