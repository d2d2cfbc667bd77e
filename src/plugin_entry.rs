//! One plugin as the Python side hands it to the server: `_core.PluginEntry`.
//!
//! A server serves a list of them on one socket (a dedicated server one,
//! `kong-python-pluginserver -d DIR` one per plugin file). Each entry is split
//! in two for the core: what the RPC service knows ([`PluginMeta`], no
//! Python) and what the executors run ([`PluginCode`]: the class and the
//! error style).

use std::collections::HashSet;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use crate::convert::json_to_value;
use crate::executor::plugins::PluginCode;
use crate::phase::Phase;
use crate::service::PluginMeta;

#[pyclass(frozen, module = "kong_pdk._core")]
pub struct PluginEntry {
    pub name: String,
    plugin_class: Py<PyAny>,
    pub phases: Vec<Phase>,
    /// The plugin-info object (docs/protocol.md §1.4).
    info: rmpv::Value,
    lua_style: bool,
    config_exclude: HashSet<String>,
    /// The phases that run on the server's event loop (`async def`, or
    /// every phase under gevent).
    pub loop_phases: Vec<Phase>,
}

fn parse_phases(names: &[String]) -> PyResult<Vec<Phase>> {
    names
        .iter()
        .map(|p| {
            Phase::parse(p).ok_or_else(|| PyValueError::new_err(format!("unknown phase {p:?}")))
        })
        .collect()
}

#[pymethods]
impl PluginEntry {
    #[new]
    #[pyo3(signature = (
        name, plugin_class, phases, info_json, *,
        lua_style = true, config_exclude = Vec::new(), loop_phases = Vec::new()
    ))]
    fn new(
        name: String,
        plugin_class: Py<PyAny>,
        phases: Vec<String>,
        info_json: &str,
        lua_style: bool,
        config_exclude: Vec<String>,
        loop_phases: Vec<String>,
    ) -> PyResult<Self> {
        let info: serde_json::Value = serde_json::from_str(info_json)
            .map_err(|e| PyValueError::new_err(format!("info_json: {e}")))?;
        Ok(PluginEntry {
            name,
            plugin_class,
            phases: parse_phases(&phases)?,
            info: json_to_value(info),
            lua_style,
            config_exclude: config_exclude.into_iter().collect(),
            loop_phases: parse_phases(&loop_phases)?,
        })
    }

    #[getter(name)]
    fn py_name(&self) -> &str {
        &self.name
    }
}

impl PluginEntry {
    /// What the service knows of this plugin.
    pub fn meta(&self, load_time: f64) -> PluginMeta {
        PluginMeta {
            name: self.name.clone(),
            phases: self.phases.clone(),
            info: self.info.clone(),
            config_exclude: self.config_exclude.clone(),
            load_time,
        }
    }

    /// What the executors run for this plugin.
    pub fn code(&self, py: Python<'_>) -> PluginCode {
        PluginCode {
            class: self.plugin_class.clone_ref(py),
            lua_style: self.lua_style,
        }
    }

    /// Whether every phase of this plugin runs on the event loop.
    pub fn all_on_loop(&self) -> bool {
        self.phases.iter().all(|p| self.loop_phases.contains(p))
    }
}
