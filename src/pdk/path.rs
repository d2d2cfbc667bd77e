//! The attribute tree of the `kong` object: each dotted path (`kong.request`,
//! `kong.request.get_header`) is resolved against the PDK function list once
//! and shared by every event afterwards.

use std::collections::hash_map::Entry;
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
    /// `None` for a pure namespace (`kong.request`) and for a name the PDK
    /// does not have.
    pub function: Option<&'static FunctionInfo>,
    /// Not a name of the PDK (`kong.log.error`): a call is still sent, as the
    /// official package does; Kong logs "could not find pdk method" and
    /// answers nil, and the request goes on (docs/protocol.md §5.1).
    pub unknown: bool,
    children: RwLock<HashMap<Box<str>, Arc<PdkPath>>>,
}

impl PdkPath {
    fn new(name: &str, function: Option<&'static FunctionInfo>, unknown: bool) -> Self {
        let kind = match name {
            _ if function.is_some_and(|f| f.terminal) => CallKind::Terminal,
            n if n == "kong.log" || n.starts_with("kong.log.") => CallKind::Log,
            _ => CallKind::Regular,
        };
        PdkPath {
            name: Arc::from(name),
            kind,
            function,
            unknown,
            children: RwLock::new(HashMap::new()),
        }
    }

    pub fn root() -> &'static Arc<PdkPath> {
        static ROOT: OnceLock<Arc<PdkPath>> = OnceLock::new();
        ROOT.get_or_init(|| Arc::new(PdkPath::new("kong", None, false)))
    }

    /// The child path, resolved against the PDK function list on first use
    /// and shared afterwards. A name the PDK does not have is still a path
    /// (the official package sends such calls to Kong, which logs them and
    /// goes on); its first use logs a warning naming the closest real one.
    pub fn child(&self, attr: &str) -> Arc<PdkPath> {
        if let Some(c) = self
            .children
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(attr)
        {
            return Arc::clone(c);
        }
        let full = format!("{}.{attr}", self.name);
        let table = PdkTable::get();
        let function = table.function(&full);
        let unknown = self.unknown || (function.is_none() && !table.is_namespace(&full));
        let mut children = self.children.write().unwrap_or_else(|p| p.into_inner());
        match children.entry(Box::from(attr)) {
            Entry::Occupied(e) => Arc::clone(e.get()),
            Entry::Vacant(e) => {
                // Once per path and process: below an unknown name, only
                // that name was warned about.
                if unknown && !self.unknown {
                    let hint = table
                        .closest(&full)
                        .map(|near| format!("; did you mean {near}?"))
                        .unwrap_or_default();
                    log::warn!(
                        "{full} is not a Kong PDK function or namespace{hint} \
                         (a call is sent to Kong as it is: Kong logs \"could not find pdk method\" \
                         and answers nil)"
                    );
                }
                Arc::clone(e.insert(Arc::new(PdkPath::new(&full, function, unknown))))
            }
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn path(dotted: &str) -> Arc<PdkPath> {
        let mut names = dotted.split('.');
        assert_eq!(names.next(), Some("kong"));
        names.fold(Arc::clone(PdkPath::root()), |p, name| p.child(name))
    }

    #[test]
    fn a_path_is_resolved_once_and_shared() {
        let a = path("kong.request.get_header");
        let b = path("kong.request.get_header");
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(&*a.name, "kong.request.get_header");
        assert!(Arc::ptr_eq(PdkPath::root(), PdkPath::root()));
        assert_eq!(&*PdkPath::root().name, "kong");
    }

    #[test]
    fn functions_and_namespaces_are_known() {
        let get_header = path("kong.request.get_header");
        assert!(get_header.function.is_some() && !get_header.unknown);
        assert_eq!(get_header.kind, CallKind::Regular);
        let request = path("kong.request");
        assert!(
            request.function.is_none() && !request.unknown,
            "a namespace"
        );
    }

    #[test]
    fn exit_and_error_are_terminal_and_kong_log_is_log() {
        assert_eq!(path("kong.response.exit").kind, CallKind::Terminal);
        assert_eq!(path("kong.response.error").kind, CallKind::Terminal);
        assert_eq!(path("kong.response.set_header").kind, CallKind::Regular);
        assert_eq!(path("kong.log").kind, CallKind::Log);
        assert_eq!(path("kong.log.err").kind, CallKind::Log);
        // Below kong.log, even a name the PDK does not have.
        assert_eq!(path("kong.log.error").kind, CallKind::Log);
        // A prefix is not the namespace.
        assert_eq!(path("kong.logger").kind, CallKind::Regular);
    }

    #[test]
    fn an_unknown_name_is_still_a_path_and_so_is_what_is_below_it() {
        let typo = path("kong.request.get_heder");
        assert!(typo.unknown && typo.function.is_none());
        assert_eq!(typo.kind, CallKind::Regular);
        let below = typo.child("x");
        assert!(below.unknown);
        assert_eq!(&*below.name, "kong.request.get_heder.x");
        assert!(path("kong.nope").unknown);
    }
}
