//! The Python side of the plugins one server serves: each plugin's class and
//! error style, by the plugin's name.
//!
//! A dedicated server has one plugin; `kong-python-pluginserver -d DIR` has
//! one per file of the folder. Every instance knows the name of its plugin
//! (Kong's `StartInstance` carries it, docs/protocol.md §4.1), so the
//! executors look the class up here when they create an instance, and the
//! error style when they run one of its events.

use std::collections::HashMap;

use pyo3::prelude::*;
use rmpv::Value;

use super::{new_instance, PluginHandle};

/// One plugin's class and error style.
pub struct PluginCode {
    pub class: Py<PyAny>,
    /// `(value, err)` returns (true) or exceptions (false).
    pub lua_style: bool,
}

/// Every plugin of the server, by name.
#[derive(Default)]
pub struct PluginClasses(HashMap<String, PluginCode>);

impl PluginClasses {
    pub fn new(plugins: impl IntoIterator<Item = (String, PluginCode)>) -> Self {
        PluginClasses(plugins.into_iter().collect())
    }

    /// `Plugin(config)` for the plugin `name`.
    pub fn new_instance(
        &self,
        py: Python<'_>,
        name: &str,
        config: &Value,
    ) -> Result<PluginHandle, String> {
        let code = self
            .0
            .get(name)
            .ok_or_else(|| format!("no plugin named '{name}'"))?;
        new_instance(py, &code.class, config)
    }

    /// [`Self::new_instance`] from any thread: attaches to Python first.
    pub fn attach_and_create(&self, name: &str, config: &Value) -> Result<PluginHandle, String> {
        Python::try_attach(|py| self.new_instance(py, name, config))
            .unwrap_or_else(|| Err("the Python interpreter is shutting down".into()))
    }

    /// The error style of the plugin `name` (lua style when unknown, which
    /// cannot happen for an instance the service created).
    pub fn lua_style(&self, name: &str) -> bool {
        self.0.get(name).is_none_or(|c| c.lua_style)
    }
}
