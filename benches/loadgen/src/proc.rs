//! Tiny readers for `/proc/<pid>/...`, used to attribute CPU time, memory and
//! file descriptors to the server under test.

use std::collections::HashMap;
use std::fs;

/// Clock ticks per second for `utime`/`stime` in `/proc/<pid>/stat`.
pub fn clock_ticks() -> u64 {
    // SAFETY: sysconf has no preconditions; it only reads a constant.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as u64
    } else {
        100
    }
}

/// `utime + stime` of a process (all its threads), in clock ticks.
pub fn cpu_ticks(pid: &str) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may contain spaces,
    // so count fields from the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_ascii_whitespace();
    // After ')': field 3 is the state; utime is field 14, stime field 15.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// Context switches (voluntary + involuntary) of all threads of a process,
/// from `/proc/<pid>/task/*/status`: how often the server's threads hand
/// work to each other (each hand-off puts one thread to sleep and wakes
/// another). Threads that exited between two reads are not counted.
pub fn ctx_switches(pid: &str) -> Option<u64> {
    let tasks = fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let mut total = 0;
    for task in tasks.flatten() {
        let Ok(status) = fs::read_to_string(task.path().join("status")) else {
            continue;
        };
        for line in status.lines() {
            if let Some(rest) = line
                .strip_prefix("voluntary_ctxt_switches:")
                .or_else(|| line.strip_prefix("nonvoluntary_ctxt_switches:"))
            {
                total += rest.trim().parse::<u64>().unwrap_or(0);
            }
        }
    }
    Some(total)
}

/// `utime + stime` of a process and all its descendants (the worker
/// processes of a `-m` server), in clock ticks. For a server without child
/// processes this is `cpu_ticks(pid)`.
pub fn tree_cpu_ticks(pid: &str) -> Option<u64> {
    let mut total = cpu_ticks(pid)?;
    let mut todo: Vec<String> = children(pid);
    let mut seen = 0;
    while let Some(child) = todo.pop() {
        seen += 1;
        if seen > 4096 {
            break;
        }
        // A child that exits between the listing and the read is skipped.
        total += cpu_ticks(&child).unwrap_or(0);
        todo.extend(children(&child));
    }
    Some(total)
}

/// Context switches of every thread of a process and of its descendants,
/// keyed by thread id: (voluntary, involuntary), from
/// `/proc/<pid>/task/<tid>/status`. Thread ids are unique system-wide, so
/// two snapshots give a per-thread difference; a thread that ended between
/// them takes its switches with it (the kernel keeps no readable total).
pub fn tree_ctx_switches(pid: &str) -> HashMap<u64, (u64, u64)> {
    let mut out = HashMap::new();
    let mut todo = vec![pid.to_string()];
    let mut seen = 0;
    while let Some(p) = todo.pop() {
        seen += 1;
        if seen > 4096 {
            break;
        }
        if let Ok(tasks) = fs::read_dir(format!("/proc/{p}/task")) {
            for task in tasks.flatten() {
                let Some(tid) = task
                    .file_name()
                    .to_str()
                    .and_then(|t| t.parse::<u64>().ok())
                else {
                    continue;
                };
                if let Ok(status) = fs::read_to_string(task.path().join("status")) {
                    out.insert(
                        tid,
                        (
                            status_field(&status, "voluntary_ctxt_switches:"),
                            status_field(&status, "nonvoluntary_ctxt_switches:"),
                        ),
                    );
                }
            }
        }
        todo.extend(children(&p));
    }
    out
}

/// Switches made between two `tree_ctx_switches` snapshots: for each thread
/// alive at the end, its count minus its count at the start (0 if it started
/// in between). Returns (voluntary, involuntary).
pub fn ctx_switch_delta(
    before: &HashMap<u64, (u64, u64)>,
    after: &HashMap<u64, (u64, u64)>,
) -> (u64, u64) {
    after.iter().fold((0, 0), |(v, i), (tid, &(v1, i1))| {
        let (v0, i0) = before.get(tid).copied().unwrap_or((0, 0));
        (v + v1.saturating_sub(v0), i + i1.saturating_sub(i0))
    })
}

fn status_field(status: &str, name: &str) -> u64 {
    status
        .lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.split_ascii_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// Direct children of a process (of all its threads), from
/// `/proc/<pid>/task/<tid>/children`.
fn children(pid: &str) -> Vec<String> {
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for task in tasks.flatten() {
        let path = task.path().join("children");
        if let Ok(list) = fs::read_to_string(path) {
            out.extend(list.split_ascii_whitespace().map(str::to_string));
        }
    }
    out
}

/// Resident set size in KiB (`VmRSS` of `/proc/<pid>/status`).
pub fn rss_kb(pid: &str) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_ascii_whitespace().nth(1)?.parse().ok()
}

/// Number of open file descriptors (entries of `/proc/<pid>/fd`).
pub fn fd_count(pid: &str) -> Option<u64> {
    Some(fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as u64)
}

/// Number of threads (`Threads` of `/proc/<pid>/status`).
pub fn threads(pid: &str) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("Threads:"))?;
    line.split_ascii_whitespace().nth(1)?.parse().ok()
}
