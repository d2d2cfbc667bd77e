//! The PDK function list, from `python/kong_pdk/pdk/pdk-api.json`.
//!
//! The same data file generates the typed stubs; here it tells the proxy which
//! dotted names exist (an unknown one fails at once, naming the closest real
//! function), which are terminal, which phases allow each call, and the
//! parameter names for keyword arguments. It is parsed once, on first use.

use std::collections::{HashMap, HashSet};
use std::sync::OnceLock;

use serde_json::Value as Json;

use crate::phase::Phase;

const DATA: &str = include_str!("../python/kong_pdk/pdk/pdk-api.json");

pub struct FunctionInfo {
    /// Phases of an external plugin where Kong allows the call; `None`: no limit.
    pub phases: Option<Vec<Phase>>,
    pub terminal: bool,
    /// Positional parameter names, in order.
    pub params: Vec<String>,
    pub variadic: bool,
    /// Why the function cannot be called over RPC, if it cannot.
    pub not_callable: Option<String>,
}

pub struct PdkTable {
    functions: HashMap<String, FunctionInfo>,
    namespaces: HashSet<String>,
}

impl PdkTable {
    pub fn get() -> &'static PdkTable {
        static TABLE: OnceLock<PdkTable> = OnceLock::new();
        TABLE.get_or_init(|| {
            let parsed = serde_json::from_str::<Json>(DATA).unwrap_or(Json::Null);
            PdkTable::from_json(&parsed)
        })
    }

    fn from_json(data: &Json) -> PdkTable {
        let mut functions = HashMap::new();
        let mut namespaces = HashSet::from(["kong".to_string()]);
        let list = data
            .get("functions")
            .and_then(Json::as_array)
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        for f in list {
            let Some(name) = f.get("name").and_then(Json::as_str) else {
                continue;
            };
            let mut prefix = name;
            while let Some((parent, _)) = prefix.rsplit_once('.') {
                namespaces.insert(parent.to_string());
                prefix = parent;
            }
            let phases = f.get("external_phases").and_then(Json::as_array).map(|ps| {
                ps.iter()
                    .filter_map(|p| p.as_str().and_then(Phase::parse))
                    .collect()
            });
            // `phases: null` in the data means Kong does no phase check.
            let phases = if f.get("phases").is_some_and(Json::is_null) {
                None
            } else {
                phases
            };
            let params: Vec<&Json> = f
                .get("params")
                .and_then(Json::as_array)
                .map(|p| p.iter().collect())
                .unwrap_or_default();
            let variadic = params
                .iter()
                .any(|p| p.get("variadic").and_then(Json::as_bool) == Some(true));
            let callable = f.get("rpc_callable").and_then(Json::as_bool) != Some(false);
            functions.insert(
                name.to_string(),
                FunctionInfo {
                    phases,
                    terminal: f.get("terminal").and_then(Json::as_bool) == Some(true),
                    params: params
                        .iter()
                        .filter(|p| p.get("variadic").and_then(Json::as_bool) != Some(true))
                        .filter_map(|p| p.get("name").and_then(Json::as_str).map(String::from))
                        .collect(),
                    variadic,
                    not_callable: (!callable).then(|| {
                        f.get("rpc_note")
                            .and_then(Json::as_str)
                            .unwrap_or("its arguments or results cannot cross the plugin socket")
                            .to_string()
                    }),
                },
            );
        }
        PdkTable {
            functions,
            namespaces,
        }
    }

    pub fn function(&self, name: &str) -> Option<&FunctionInfo> {
        self.functions.get(name)
    }

    pub fn is_namespace(&self, name: &str) -> bool {
        self.namespaces.contains(name)
    }

    /// The known name closest to `name` (by edit distance), for error messages.
    pub fn closest(&self, name: &str) -> Option<&str> {
        self.functions
            .keys()
            .chain(self.namespaces.iter())
            .map(|k| (edit_distance(k, name), k))
            .min()
            .filter(|(d, _)| *d <= name.len().max(4) / 2)
            .map(|(_, k)| k.as_str())
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.functions.len()
    }
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_data_file_is_embedded_and_parsed() {
        let t = PdkTable::get();
        assert_eq!(t.len(), 138);
        let exit = t.function("kong.response.exit").expect("exit");
        assert!(exit.terminal);
        assert_eq!(exit.params, vec!["status", "body", "headers"]);
        assert!(t.function("kong.log.err").expect("err").variadic);
        assert!(t.is_namespace("kong.service.request"));
        assert!(t.function("kong.log").is_some() && t.is_namespace("kong.log"));
        assert!(t
            .function("kong.tracing.start_span")
            .expect("span")
            .not_callable
            .is_some());
        assert_eq!(
            t.function("kong.request.get_header").expect("gh").phases,
            Some(vec![
                Phase::Rewrite,
                Phase::Access,
                Phase::Response,
                Phase::Log
            ])
        );
    }

    #[test]
    fn typos_find_the_real_name() {
        let t = PdkTable::get();
        assert_eq!(t.closest("kong.reqest"), Some("kong.request"));
        assert_eq!(
            t.closest("kong.request.get_heder"),
            Some("kong.request.get_header")
        );
        assert_eq!(t.closest("kong.zzzzzzzzzzzzzzzzzzzzzzzz"), None);
    }
}
