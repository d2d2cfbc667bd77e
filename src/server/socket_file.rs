//! The socket file: bound under a staged name and renamed into place, so the
//! path never points at nothing; and whether the path is still ours when we
//! stop (a newer server may have taken it).
//!
//! A path a live server still serves is taken over only when asked
//! (`take_over`: `--take-over`, a Kong restart, the `--reload` supervisor's
//! next server); otherwise the bind fails and says who holds it, so that a
//! second server started by mistake does not silently unplug the first.

use std::fmt;
use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rmpv::Value;

use crate::handover::predecessor_link;

/// How long the probe of a socket path waits for its holder to answer.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// The most the probe reads from a holder: its `serverPid` notification
/// comes first and is a few bytes.
const PROBE_READ_LIMIT: u64 = 1 << 20;

/// Why the socket could not be bound.
#[derive(Debug)]
pub enum BindError {
    /// A live server answers on the path and `take_over` was not given;
    /// its pid when it said it.
    InUse(Option<u32>),
    NotASocket,
    Io(std::io::Error),
}

impl From<std::io::Error> for BindError {
    fn from(e: std::io::Error) -> Self {
        BindError::Io(e)
    }
}

impl fmt::Display for BindError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BindError::InUse(holder) => {
                match holder {
                    Some(pid) => write!(f, "another plugin server (pid {pid}) is serving it")?,
                    None => f.write_str("another process is listening on it")?,
                }
                f.write_str("; stop that one first, or pass --take-over to replace it")
            }
            BindError::NotASocket => f.write_str("a file that is not a socket is in the way"),
            BindError::Io(e) => e.fmt(f),
        }
    }
}

/// Who answers on a socket path.
#[derive(Debug, PartialEq, Eq)]
pub enum Holder {
    /// Nobody: a stale file (connection refused), or no file.
    Nobody,
    /// A listening process; its pid when it told (our servers and Kong's
    /// other plugin servers send `serverPid` first, GetStatus has `Pid`).
    Live(Option<u32>),
}

/// Connects to `path` and, when something answers, asks who it is.
pub fn probe(path: &Path) -> Holder {
    use socket2::{Domain, SockAddr, Socket, Type};
    let Ok(addr) = SockAddr::unix(path) else {
        return Holder::Nobody;
    };
    let Ok(socket) = Socket::new(Domain::UNIX, Type::STREAM, None) else {
        return Holder::Nobody;
    };
    match socket.connect_timeout(&addr, PROBE_TIMEOUT) {
        Ok(()) => {}
        // A full backlog: someone listens there, too busy to accept.
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Holder::Live(None),
        // Refused (a stale file), gone, or not ours to reach: not a server
        // we would unplug.
        Err(_) => return Holder::Nobody,
    }
    let stream = std::os::unix::net::UnixStream::from(socket);
    Holder::Live(ask_pid(stream).ok().flatten())
}

/// The pid a live holder gives: its `serverPid` notification, or the `Pid`
/// of its GetStatus reply.
fn ask_pid(mut stream: std::os::unix::net::UnixStream) -> std::io::Result<Option<u32>> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(PROBE_TIMEOUT))?;
    stream.set_write_timeout(Some(PROBE_TIMEOUT))?;
    let request = Value::Array(vec![
        Value::from(0),
        Value::from(1),
        Value::from("plugin.GetStatus"),
        Value::Array(Vec::new()),
    ]);
    let mut bytes = Vec::new();
    rmpv::encode::write_value(&mut bytes, &request).map_err(std::io::Error::other)?;
    let request = bytes;
    stream.write_all(&request)?;
    let mut reader = BufReader::new(stream.take(PROBE_READ_LIMIT));
    for _ in 0..2 {
        let Ok(Value::Array(items)) = rmpv::decode::read_value(&mut reader) else {
            return Ok(None);
        };
        let pid = match items.as_slice() {
            [kind, label, pid]
                if kind.as_u64() == Some(2) && label.as_str() == Some("serverPid") =>
            {
                pid.as_u64()
            }
            [kind, _, _, Value::Map(status)] if kind.as_u64() == Some(1) => status
                .iter()
                .find(|(k, _)| k.as_str() == Some("Pid"))
                .and_then(|(_, v)| v.as_u64()),
            _ => None,
        };
        if let Some(pid) = pid {
            return Ok(u32::try_from(pid).ok());
        }
    }
    Ok(None)
}

/// Device and inode of a file.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct FileId(u64, pub u64);

impl FileId {
    pub fn of(path: &Path) -> Option<FileId> {
        use std::os::unix::fs::MetadataExt;
        std::fs::symlink_metadata(path)
            .ok()
            .map(|m| FileId(m.dev(), m.ino()))
    }
}

/// Whether `bind` may take `path`: no file, a stale socket, or (with
/// `take_over`) a live server's socket; and who holds it.
pub fn check_free(path: &Path, take_over: bool) -> Result<Holder, BindError> {
    match std::fs::symlink_metadata(path) {
        // A stale socket, or a server still serving there (`--reload` starts
        // the next one first): the rename in `bind` replaces it in one step,
        // so Kong never finds the path missing.
        Ok(meta) if std::os::unix::fs::FileTypeExt::is_socket(&meta.file_type()) => {
            match (take_over, probe(path)) {
                (false, Holder::Live(pid)) => Err(BindError::InUse(pid)),
                (_, holder) => Ok(holder),
            }
        }
        Ok(_) => Err(BindError::NotASocket),
        Err(_) => Ok(Holder::Nobody),
    }
}

/// Removes the links to older servers (`<path>.<inode>.old`) that nobody
/// answers on any more: a server that was killed could not remove its own.
fn remove_dead_links(path: &Path, keep: Option<&Path>) {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return;
    };
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut prefix = name.to_owned();
    prefix.push(".");
    let prefix = prefix.to_string_lossy().into_owned();
    for entry in entries.flatten() {
        let file = entry.file_name();
        let file = file.to_string_lossy();
        let Some(middle) = file
            .strip_prefix(&prefix)
            .and_then(|r| r.strip_suffix(".old"))
        else {
            continue;
        };
        let link = entry.path();
        let is_socket = entry
            .file_type()
            .is_ok_and(|t| std::os::unix::fs::FileTypeExt::is_socket(&t));
        if middle.bytes().all(|b| b.is_ascii_digit())
            && is_socket
            && Some(link.as_path()) != keep
            && probe(&link) == Holder::Nobody
        {
            let _ = std::fs::remove_file(&link);
        }
    }
}

/// A bound socket, and the link to the live server it replaced, if any.
pub struct BoundSocket {
    pub listener: std::os::unix::net::UnixListener,
    pub predecessor: Option<PathBuf>,
}

/// Binds the Unix socket with the requested backlog, replacing a stale file,
/// and a live server's only with `take_over`.
pub fn bind(path: &Path, backlog: i32, take_over: bool) -> Result<BoundSocket, BindError> {
    use socket2::{Domain, SockAddr, Socket, Type};
    let predecessor = match check_free(path, take_over)? {
        // Keeps the old server reachable once the path is ours: Kong may
        // still send a Step of one of its events on a new connection.
        Holder::Live(_) => FileId::of(path).and_then(|id| {
            let link = predecessor_link(path, id.1);
            let _ = std::fs::remove_file(&link);
            match std::fs::hard_link(path, &link) {
                Ok(()) => Some(link),
                Err(e) => {
                    log::warn!("cannot link {} to {}: {e}", path.display(), link.display());
                    None
                }
            }
        }),
        Holder::Nobody => None,
    };
    // Bind and listen under a temporary name, then rename: the socket file
    // appears only once connections are accepted, so a client that waits for
    // the file never sees "connection refused".
    let mut staging = path.as_os_str().to_owned();
    staging.push(format!(".{}.tmp", std::process::id()));
    let staging = PathBuf::from(staging);
    let _ = std::fs::remove_file(&staging);
    let socket = Socket::new(Domain::UNIX, Type::STREAM, None)?;
    socket.bind(&SockAddr::unix(&staging)?)?;
    socket.listen(backlog)?;
    socket.set_nonblocking(true)?;
    if let Err(e) = std::fs::rename(&staging, path) {
        let _ = std::fs::remove_file(&staging);
        if let Some(link) = &predecessor {
            let _ = std::fs::remove_file(link);
        }
        return Err(e.into());
    }
    remove_dead_links(path, predecessor.as_deref());
    Ok(BoundSocket {
        listener: std::os::unix::net::UnixListener::from(socket),
        predecessor,
    })
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::os::unix::fs::FileTypeExt;
    use std::os::unix::net::{UnixListener, UnixStream};
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// A fresh folder under the system's temp dir, removed when dropped.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new() -> TempDir {
            static N: AtomicUsize = AtomicUsize::new(0);
            let dir = std::env::temp_dir().join(format!(
                "kong-pdk-sock-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            std::fs::create_dir_all(&dir).expect("temp dir");
            TempDir(dir)
        }

        fn path(&self, name: &str) -> PathBuf {
            self.0.join(name)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// Leaves a socket file nobody listens on (a killed server's).
    fn stale_socket(path: &Path) {
        drop(UnixListener::bind(path).expect("bind"));
        assert!(is_socket(path));
    }

    fn is_socket(path: &Path) -> bool {
        std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket())
    }

    /// A live server on `path` that says `serverPid` `pid` to each of the
    /// next `connections` connections.
    fn live_server(path: &Path, pid: u32, connections: usize) -> std::thread::JoinHandle<()> {
        let listener = UnixListener::bind(path).expect("bind");
        std::thread::spawn(move || {
            for _ in 0..connections {
                let Ok((mut stream, _)) = listener.accept() else {
                    return;
                };
                let mut hello = Vec::new();
                crate::rpc::write_server_pid(&mut hello, pid);
                let _ = stream.write_all(&hello);
                // Read until the prober hangs up: closing first could
                // fail its GetStatus write.
                let _ = std::io::copy(&mut stream, &mut std::io::sink());
            }
        })
    }

    #[test]
    fn a_missing_path_is_free() {
        let dir = TempDir::new();
        let free = check_free(&dir.path("kong.sock"), false).expect("free");
        assert_eq!(free, Holder::Nobody);
    }

    #[test]
    fn a_file_that_is_not_a_socket_is_refused_and_left_alone() {
        let dir = TempDir::new();
        let path = dir.path("kong.sock");
        std::fs::write(&path, b"data").expect("file");
        assert!(matches!(
            check_free(&path, true),
            Err(BindError::NotASocket)
        ));
        assert!(matches!(bind(&path, 16, true), Err(BindError::NotASocket)));
        assert_eq!(std::fs::read(&path).expect("still there"), b"data");
    }

    #[test]
    fn a_stale_socket_is_replaced() {
        let dir = TempDir::new();
        let path = dir.path("kong.sock");
        stale_socket(&path);
        assert_eq!(probe(&path), Holder::Nobody);
        let stale = FileId::of(&path).expect("stale file");
        let bound = bind(&path, 16, false).expect("bound over a stale socket");
        assert!(bound.predecessor.is_none(), "nobody to keep reachable");
        assert_ne!(FileId::of(&path), Some(stale), "a new socket file");
        // The new socket accepts at once, and no staging file is left.
        let _client = UnixStream::connect(&path).expect("connect");
        assert!(bound.listener.accept().is_ok());
        let names: Vec<_> = std::fs::read_dir(&dir.0)
            .expect("read dir")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("kong.sock")]);
    }

    #[test]
    fn a_live_server_is_not_unplugged_without_take_over() {
        let dir = TempDir::new();
        let path = dir.path("kong.sock");
        let server = live_server(&path, 4242, 2);
        assert_eq!(probe(&path), Holder::Live(Some(4242)));
        let refused = bind(&path, 16, false).err().expect("refused");
        assert!(matches!(refused, BindError::InUse(Some(4242))));
        let text = refused.to_string();
        assert!(
            text.contains("pid 4242") && text.contains("--take-over"),
            "{text}"
        );
        // Still its socket.
        assert!(is_socket(&path));
        server.join().expect("server");
    }

    #[test]
    fn taking_over_keeps_the_old_server_reachable_through_a_link() {
        let dir = TempDir::new();
        let path = dir.path("kong.sock");
        // Probed by check_free, then reached through the link below.
        let old = live_server(&path, 77, 2);
        let old_id = FileId::of(&path).expect("old socket");
        let bound = bind(&path, 16, true).expect("taken over");
        let link = bound.predecessor.expect("a link to the old server");
        assert_eq!(link, predecessor_link(&path, old_id.1));
        assert_eq!(FileId::of(&link), Some(old_id));
        assert_ne!(FileId::of(&path), Some(old_id));
        assert_eq!(probe(&link), Holder::Live(Some(77)));
        old.join().expect("old server");
    }

    #[test]
    fn dead_links_to_older_servers_are_removed_on_bind() {
        let dir = TempDir::new();
        let path = dir.path("kong.sock");
        let dead = dir.path("kong.sock.123.old");
        let not_a_link = dir.path("kong.sock.abc.old");
        let not_a_socket = dir.path("kong.sock.456.old");
        stale_socket(&dead);
        stale_socket(&not_a_link);
        std::fs::write(&not_a_socket, b"").expect("file");
        // A live older server's link stays.
        let alive = dir.path("kong.sock.789.old");
        let server = live_server(&alive, 9, 1);
        let _bound = bind(&path, 16, false).expect("bound");
        assert!(!dead.exists(), "nobody answers there: removed");
        assert!(is_socket(&not_a_link), "not an inode: not ours");
        assert!(not_a_socket.exists(), "not a socket: not ours");
        assert!(is_socket(&alive), "still served");
        server.join().expect("server");
    }

    #[test]
    fn bind_errors_say_what_is_in_the_way() {
        assert_eq!(
            BindError::InUse(None).to_string(),
            "another process is listening on it; stop that one first, or pass --take-over to replace it"
        );
        assert!(BindError::NotASocket.to_string().contains("not a socket"));
    }
}
