//! The attribute tree of the `kong` object: each dotted path (`kong.request`,
//! `kong.request.get_header`) is resolved against the PDK function list once
//! and shared by every event afterwards.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use crate::pdk_table::{FunctionInfo, PdkTable};
use crate::phase::Phase;

/// How a dotted PDK path behaves when called.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum CallKind {
    Regular,
    /// Kong never answers and never resumes the event.
    Terminal,
    /// `kong.log*`: any argument is accepted and sent as `str()` if needed.
    Log,
}

/// One node of the attribute tree (`kong`, `kong.request`, ...).
pub struct PdkPath {
    pub name: Arc<str>,
    pub kind: CallKind,
    /// `None` for a pure namespace (`kong.request`).
    pub function: Option<&'static FunctionInfo>,
    children: RwLock<HashMap<Box<str>, Arc<PdkPath>>>,
}

impl PdkPath {
    fn new(name: &str, function: Option<&'static FunctionInfo>) -> Self {
        let kind = match name {
            _ if function.is_some_and(|f| f.terminal) => CallKind::Terminal,
            n if n == "kong.log" || n.starts_with("kong.log.") => CallKind::Log,
            _ => CallKind::Regular,
        };
        PdkPath {
            name: Arc::from(name),
            kind,
            function,
            children: RwLock::new(HashMap::new()),
        }
    }

    pub fn root() -> &'static Arc<PdkPath> {
        static ROOT: OnceLock<Arc<PdkPath>> = OnceLock::new();
        ROOT.get_or_init(|| Arc::new(PdkPath::new("kong", None)))
    }

    /// The child path, resolved against the PDK function list on first use
    /// and shared afterwards. An unknown name is an error naming the closest
    /// real one.
    pub fn child(&self, attr: &str) -> Result<Arc<PdkPath>, String> {
        if let Some(c) = self
            .children
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(attr)
        {
            return Ok(Arc::clone(c));
        }
        let full = format!("{}.{attr}", self.name);
        let table = PdkTable::get();
        let function = table.function(&full);
        if function.is_none() && !table.is_namespace(&full) {
            return Err(match table.closest(&full) {
                Some(near) => {
                    format!("{full} is not a Kong PDK function or namespace; did you mean {near}?")
                }
                None => format!("{full} is not a Kong PDK function or namespace"),
            });
        }
        let mut children = self.children.write().unwrap_or_else(|p| p.into_inner());
        Ok(Arc::clone(children.entry(Box::from(attr)).or_insert_with(
            || Arc::new(PdkPath::new(&full, function)),
        )))
    }
}

/// Logs a call made in a phase where Kong does not allow it, once per pair.
pub(super) fn warn_wrong_phase(path: &PdkPath, phase: Phase) {
    let Some(allowed) = path.function.and_then(|f| f.phases.as_ref()) else {
        return;
    };
    if allowed.contains(&phase) {
        return;
    }
    type Seen = HashSet<(Arc<str>, &'static str)>;
    static WARNED: OnceLock<Mutex<Seen>> = OnceLock::new();
    let first = WARNED
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert((Arc::clone(&path.name), phase.name()));
    if first {
        let names: Vec<&str> = allowed.iter().map(|p| p.name()).collect();
        log::warn!(
            "{} called in the {} phase; Kong allows it only in: {} (Kong will raise and abandon the event)",
            path.name,
            phase.name(),
            if names.is_empty() { "no phase of an external plugin".to_string() } else { names.join(", ") }
        );
    }
}
