//! Test support: a fake worker process (a socket in a temp dir answered by
//! threads with a stock rmpv encoder) and an `Inner` with one worker slot
//! on it, for the unit tests of instances.rs and relay.rs.

use std::collections::HashMap;
use std::io::BufReader;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use rmpv::Value;

use super::workers::{WorkerSpec, Workers};
use super::{Inner, StopSignal};

/// How the fake answers a request `(method, first param)`: `(error,
/// result)`, or `None` to hang up (the worker died).
pub(super) type Answer = fn(&str, &Value) -> Option<(Value, Value)>;

pub(super) struct Fake {
    dir: PathBuf,
    pub(super) socket: PathBuf,
    calls: Arc<Mutex<Vec<(String, Value)>>>,
}

impl Fake {
    pub(super) fn start(answer: Answer) -> Fake {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "kong-pdk-worker-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("dir");
        let socket = dir.join("w.sock");
        let listener = UnixListener::bind(&socket).expect("bind");
        let calls = Arc::new(Mutex::new(Vec::new()));
        let c = Arc::clone(&calls);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let c = Arc::clone(&c);
                std::thread::spawn(move || serve(stream, &c, answer));
            }
        });
        Fake { dir, socket, calls }
    }

    /// The methods called so far, in order.
    pub(super) fn methods(&self) -> Vec<String> {
        self.calls().into_iter().map(|(m, _)| m).collect()
    }

    /// The calls so far: method and first parameter.
    pub(super) fn calls(&self) -> Vec<(String, Value)> {
        self.calls.lock().expect("lock").clone()
    }
}

impl Drop for Fake {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn serve(stream: UnixStream, calls: &Mutex<Vec<(String, Value)>>, answer: Answer) {
    let mut writer = stream.try_clone().expect("clone");
    let mut reader = BufReader::new(stream);
    while let Ok(request) = rmpv::decode::read_value(&mut reader) {
        let method = request[2].as_str().unwrap_or_default().to_string();
        let param = request[3][0].clone();
        calls
            .lock()
            .expect("lock")
            .push((method.clone(), param.clone()));
        let Some((error, result)) = answer(&method, &param) else {
            return;
        };
        let reply = Value::Array(vec![Value::from(1), request[1].clone(), error, result]);
        if rmpv::encode::write_value(&mut writer, &reply).is_err() {
            return;
        }
    }
}

/// An Inner with one worker slot on `socket`, its process up.
pub(super) fn inner(socket: PathBuf, runtime: &tokio::runtime::Runtime) -> Arc<Inner> {
    let inner = Arc::new(Inner {
        runtime: runtime.handle().clone(),
        max_frame: 1 << 20,
        workers: Workers::new(vec![WorkerSpec {
            argv: Vec::new(),
            socket,
        }]),
        table: Mutex::new(HashMap::new()),
        next_key: AtomicU64::new(1),
        running: Arc::new(AtomicUsize::new(0)),
        lost: AtomicU64::new(0),
        stop: StopSignal::new(),
    });
    let w = &inner.workers.all()[0];
    w.mark_spawned(inner.workers.new_generation(), 0);
    w.mark_up();
    inner
}

pub(super) fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime")
}
