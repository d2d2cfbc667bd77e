//! `floor-pb`: the Python-free floor server speaking ProtoBuf:1 (the core's
//! docs/protobuf.md), for the nginx benchmark's ProtoBuf:1 rows. For each
//! instance it makes the PDK calls of the scenario whose plugin name it was
//! started with, each as a method-name frame and an argument frame written
//! together, then reads Kong's reply; an empty name frame and the
//! `RpcReturn` end the event. One connection carries a whole event, so
//! nothing is shared between connections but the instance table.
//! Single-threaded.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::process::ExitCode;
use std::rc::Rc;
use std::time::{Duration, Instant};

use clap::Parser;
use loadgen::scenario::{self, Arg, Call as PdkCall, Scenario};
use prost::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

#[allow(clippy::all, dead_code)]
mod pb {
    include!(concat!(env!("OUT_DIR"), "/kong_plugin_protocol.rs"));
}

use pb::rpc_call::Call;
use pb::rpc_return::Return;

#[derive(Parser, Debug)]
#[command(
    about = "Minimal no-Python plugin server answering the benchmark scenarios over ProtoBuf:1"
)]
struct Args {
    /// Socket path to listen on (a stale file is removed first).
    #[arg(long)]
    socket: PathBuf,
    /// Busy-loop this many microseconds per event of the `cpu` scenario.
    #[arg(long, default_value_t = 1000)]
    cpu_us: u64,
}

#[derive(Default)]
struct State {
    instances: HashMap<i32, (String, &'static Scenario)>,
    next_instance: i32,
}

fn spin(d: Duration) {
    let end = Instant::now() + d;
    while Instant::now() < end {
        std::hint::spin_loop();
    }
}

fn string_value(s: &str) -> prost_types::Value {
    prost_types::Value {
        kind: Some(prost_types::value::Kind::StringValue(s.to_string())),
    }
}

fn text(a: &Arg) -> &'static str {
    match a {
        Arg::Str(s) => s,
        _ => "",
    }
}

/// A scenario call's argument message, by the method's input type.
fn args_message(call: &PdkCall) -> Vec<u8> {
    match (call.method, call.args) {
        ("kong.response.exit", [Arg::Int(status), body, Arg::Map(headers)]) => pb::ExitArgs {
            status: *status as i32,
            body: text(body).as_bytes().to_vec(),
            headers: Some(prost_types::Struct {
                fields: headers
                    .iter()
                    .map(|(k, v)| (k.to_string(), string_value(v)))
                    .collect::<BTreeMap<_, _>>(),
            }),
        }
        .encode_to_vec(),
        (m, _) if m.starts_with("kong.log.") => prost_types::ListValue {
            values: call.args.iter().map(|a| string_value(text(a))).collect(),
        }
        .encode_to_vec(),
        ("kong.request.get_headers" | "kong.request.get_query", []) => {
            pb::Int { v: 100 }.encode_to_vec()
        }
        (_, []) => Vec::new(),
        (_, [one]) => pb::String {
            v: text(one).to_string(),
        }
        .encode_to_vec(),
        (_, [k, v, ..]) => pb::Kv {
            k: text(k).to_string(),
            v: Some(string_value(text(v))),
        }
        .encode_to_vec(),
    }
}

fn push_frame(out: &mut Vec<u8>, payload: &[u8]) {
    out.extend_from_slice(&(payload.len() as u32).to_ne_bytes());
    out.extend_from_slice(payload);
}

async fn read_frame(
    r: &mut BufReader<tokio::net::unix::OwnedReadHalf>,
) -> std::io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len).await?;
    let mut buf = vec![0u8; u32::from_ne_bytes(len) as usize];
    r.read_exact(&mut buf).await?;
    Ok(buf)
}

async fn serve_conn(
    stream: UnixStream,
    st: Rc<RefCell<State>>,
    cpu: Duration,
) -> std::io::Result<()> {
    let (r, mut w) = stream.into_split();
    let mut r = BufReader::new(r);
    let mut out = Vec::with_capacity(512);
    loop {
        let frame = read_frame(&mut r).await?;
        let call = pb::RpcCall::decode(frame.as_slice())
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
        let mut ret = pb::RpcReturn {
            sequence: call.sequence,
            r#return: None,
        };
        out.clear();
        match call.call {
            Some(Call::CmdStartInstance(c)) => {
                let Some(sc) = scenario::by_plugin(&c.name) else {
                    eprintln!("floor-pb: unknown plugin {}", c.name);
                    return Ok(());
                };
                let mut st = st.borrow_mut();
                st.next_instance += 1;
                let id = st.next_instance;
                st.instances.insert(id, (c.name.clone(), sc));
                ret.r#return = Some(Return::InstanceStatus(pb::InstanceStatus {
                    name: c.name,
                    instance_id: id,
                    config: None,
                    started_at: 0,
                }));
            }
            Some(Call::CmdHandleEvent(e)) => {
                let sc = st.borrow().instances.get(&e.instance_id).map(|(_, sc)| *sc);
                // Unknown: close, so that Kong starts the instance again.
                let Some(sc) = sc else { return Ok(()) };
                if sc.burns_cpu {
                    spin(cpu);
                }
                for c in sc.calls {
                    let mut frames = Vec::with_capacity(64);
                    push_frame(&mut frames, c.method.as_bytes());
                    push_frame(&mut frames, &args_message(c));
                    w.write_all(&frames).await?;
                    read_frame(&mut r).await?;
                    if scenario::is_terminal(c.method) {
                        break;
                    }
                }
                push_frame(&mut out, b"");
            }
            Some(Call::CmdCloseInstance(c)) => {
                st.borrow_mut().instances.remove(&c.instance_id);
            }
            _ => {}
        }
        push_frame(&mut out, &ret.encode_to_vec());
        w.write_all(&out).await?;
    }
}

async fn run(args: Args) -> Result<(), String> {
    let _ = std::fs::remove_file(&args.socket);
    let listener = UnixListener::bind(&args.socket)
        .map_err(|e| format!("bind {}: {e}", args.socket.display()))?;
    eprintln!("floor-pb: listening on {}", args.socket.display());
    let st = Rc::new(RefCell::new(State::default()));
    let cpu = Duration::from_micros(args.cpu_us);
    loop {
        match listener.accept().await {
            Ok((s, _)) => {
                let st = st.clone();
                tokio::task::spawn_local(async move {
                    let _ = serve_conn(s, st, cpu).await;
                });
            }
            Err(e) => {
                eprintln!("floor-pb: accept: {e}");
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
            eprintln!("floor-pb: runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let local = tokio::task::LocalSet::new();
    match local.block_on(&rt, run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("floor-pb: {e}");
            ExitCode::FAILURE
        }
    }
}
