//! The socket file: bound under a staged name and renamed into place, so the
//! path never points at nothing; and whether the path is still ours when we
//! stop (a newer server may have taken it).

use std::path::{Path, PathBuf};

/// Device and inode of a file.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct FileId(u64, u64);

impl FileId {
    pub fn of(path: &Path) -> Option<FileId> {
        use std::os::unix::fs::MetadataExt;
        std::fs::symlink_metadata(path)
            .ok()
            .map(|m| FileId(m.dev(), m.ino()))
    }
}

/// Binds the Unix socket with the requested backlog, replacing a stale file.
pub fn bind(path: &Path, backlog: i32) -> std::io::Result<std::os::unix::net::UnixListener> {
    use socket2::{Domain, SockAddr, Socket, Type};
    match std::fs::symlink_metadata(path) {
        // A stale socket, or a server still serving there (`--reload` starts
        // the next one first): the rename below replaces it in one step, so
        // Kong never finds the path missing.
        Ok(meta) if std::os::unix::fs::FileTypeExt::is_socket(&meta.file_type()) => {}
        Ok(_) => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "a file that is not a socket is in the way",
            ))
        }
        Err(_) => {}
    }
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
        return Err(e);
    }
    Ok(std::os::unix::net::UnixListener::from(socket))
}
