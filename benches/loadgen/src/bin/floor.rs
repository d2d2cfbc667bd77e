//! `floor`: a minimal plugin server with no Python, for the benchmark's
//! "floor" row. It speaks the same protocol (StartInstance, HandleEvent,
//! Step*, CloseInstance) and, for each instance, emits the PDK calls of the
//! scenario whose plugin name it was started with (`bench-<scenario>`).
//! For the `cpu` scenario it spins `--cpu-us` before the first call, like
//! the Python plugin's calibrated loop.
//!
//! Events live in a server-global table keyed by EventId, so Steps may
//! arrive on any connection (protocol §2). Single-threaded.

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::Parser;
use loadgen::scenario::{self, Scenario};
use loadgen::wire::{self, Conn};
use rmpv::ValueRef;
use tokio::net::UnixListener;

#[derive(Parser, Debug)]
#[command(about = "Minimal no-Python plugin server answering the benchmark scenarios")]
struct Args {
    /// Socket path to listen on (a stale file is removed first).
    #[arg(long)]
    socket: PathBuf,
    /// Busy-loop this many microseconds per event of the `cpu` scenario.
    #[arg(long, default_value_t = 1000)]
    cpu_us: u64,
}

struct Event {
    scenario: &'static Scenario,
    /// Index of the next call to emit.
    next: usize,
}

#[derive(Default)]
struct State {
    instances: HashMap<i64, (String, &'static Scenario)>,
    next_instance: i64,
    events: HashMap<i64, Event>,
    next_event: i64,
}

fn spin(d: Duration) {
    let end = Instant::now() + d;
    while Instant::now() < end {
        std::hint::spin_loop();
    }
}

/// Write `{"Data": <call idx or "ret">, "EventId": id}` and update the table.
fn emit(out: &mut Vec<u8>, st: &mut State, event_id: i64, mut ev: Event) {
    wire::put_map(out, 2);
    wire::put_str(out, "Data");
    match ev.scenario.calls.get(ev.next) {
        None => wire::put_str(out, "ret"),
        Some(call) => {
            wire::put_map(out, 2);
            wire::put_str(out, "Method");
            wire::put_str(out, call.method);
            wire::put_str(out, "Args");
            wire::put_array(out, call.args.len());
            for a in call.args {
                wire::put_arg(out, a);
            }
            ev.next += 1;
            if !scenario::is_terminal(call.method) {
                st.events.insert(event_id, ev);
            }
        }
    }
    wire::put_str(out, "EventId");
    wire::put_int(out, event_id);
}

fn param_map<'a, 'b>(params: &'a ValueRef<'b>) -> Option<&'a ValueRef<'b>> {
    match params {
        ValueRef::Array(a) => a.first(),
        _ => None,
    }
}

/// Handle one request; write the whole response into `out`.
fn handle(v: &ValueRef<'_>, st: &RefCell<State>, cpu: Duration, out: &mut Vec<u8>) {
    let (msgid, method, params) = match v {
        ValueRef::Array(a) if a.len() == 4 && wire::as_i64(&a[0]) == Some(0) => {
            (wire::as_i64(&a[1]).unwrap_or(0), wire::as_str(&a[2]), &a[3])
        }
        _ => (0, None, &ValueRef::Nil),
    };
    out.push(0x94);
    out.push(0x01);
    wire::put_int(out, msgid);
    let err = |out: &mut Vec<u8>, msg: String| {
        wire::put_str(out, &msg);
        wire::put_nil(out);
    };
    let Some(method) = method else {
        return err(out, "malformed request".into());
    };
    let p = param_map(params);
    match method {
        "plugin.StartInstance" => {
            let name = p.and_then(|p| wire::get(p, "Name")).and_then(wire::as_str);
            let Some((name, sc)) = name.and_then(|n| scenario::by_plugin(n).map(|s| (n, s))) else {
                return err(out, format!("unknown plugin {name:?}"));
            };
            let mut st = st.borrow_mut();
            let id = st.next_instance;
            st.next_instance += 1;
            st.instances.insert(id, (name.to_string(), sc));
            wire::put_nil(out);
            wire::put_map(out, 4);
            wire::put_str(out, "Name");
            wire::put_str(out, name);
            wire::put_str(out, "Id");
            wire::put_int(out, id);
            wire::put_str(out, "Config");
            wire::put_map(out, 0);
            wire::put_str(out, "StartTime");
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or(0.0);
            wire::put_f64(out, now);
        }
        "plugin.CloseInstance" => {
            let id = match params {
                ValueRef::Array(a) => a.first().and_then(wire::as_i64),
                _ => None,
            };
            let Some(id) = id else {
                return err(out, "CloseInstance needs an id".into());
            };
            match st.borrow_mut().instances.remove(&id) {
                None => err(out, format!("no plugin instance #{id}")),
                Some((name, _)) => {
                    wire::put_nil(out);
                    wire::put_map(out, 2);
                    wire::put_str(out, "Name");
                    wire::put_str(out, &name);
                    wire::put_str(out, "Id");
                    wire::put_int(out, id);
                }
            }
        }
        "plugin.HandleEvent" => {
            let iid = p
                .and_then(|p| wire::get(p, "InstanceId"))
                .and_then(wire::as_i64);
            let mut st = st.borrow_mut();
            let sc = iid.and_then(|i| st.instances.get(&i)).map(|(_, s)| *s);
            let Some(sc) = sc else {
                return err(out, format!("no plugin instance #{}", iid.unwrap_or(-1)));
            };
            let eid = st.next_event;
            st.next_event += 1;
            if sc.burns_cpu {
                spin(cpu);
            }
            wire::put_nil(out);
            emit(
                out,
                &mut st,
                eid,
                Event {
                    scenario: sc,
                    next: 0,
                },
            );
        }
        m if m.starts_with("plugin.Step") => {
            let eid = p
                .and_then(|p| wire::get(p, "EventId"))
                .and_then(wire::as_i64);
            let mut st = st.borrow_mut();
            let ev = eid.and_then(|e| st.events.remove(&e));
            match (eid, ev) {
                (Some(eid), Some(ev)) => {
                    wire::put_nil(out);
                    emit(out, &mut st, eid, ev);
                }
                _ => err(out, format!("no running event {}", eid.unwrap_or(-1))),
            }
        }
        other => err(out, format!("method {other} not supported")),
    }
}

async fn serve_conn(mut conn: Conn, st: Rc<RefCell<State>>, cpu: Duration) {
    let mut out = Vec::with_capacity(512);
    loop {
        let n = match conn.read_object().await {
            Ok(Some(n)) => n,
            Ok(None) => return,
            Err(e) => {
                eprintln!("floor: dropping connection: {e}");
                return;
            }
        };
        out.clear();
        match wire::decode(&conn.buf[..n]) {
            Ok(v) => handle(&v, &st, cpu, &mut out),
            Err(e) => {
                eprintln!("floor: dropping connection: {e}");
                return;
            }
        }
        conn.consume(n);
        if conn.send(&out).await.is_err() {
            return;
        }
    }
}

async fn run(args: Args) -> Result<(), String> {
    let _ = std::fs::remove_file(&args.socket);
    let listener = UnixListener::bind(&args.socket)
        .map_err(|e| format!("bind {}: {e}", args.socket.display()))?;
    eprintln!("floor: listening on {}", args.socket.display());
    let st = Rc::new(RefCell::new(State::default()));
    let cpu = Duration::from_micros(args.cpu_us);
    loop {
        match listener.accept().await {
            Ok((s, _)) => {
                tokio::task::spawn_local(serve_conn(Conn::new(s), st.clone(), cpu));
            }
            Err(e) => {
                eprintln!("floor: accept: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("floor: runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let local = tokio::task::LocalSet::new();
    match local.block_on(&rt, run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("floor: {e}");
            ExitCode::FAILURE
        }
    }
}
