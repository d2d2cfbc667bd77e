//! The executor a ProtoBuf:1 server gives its `Service`: it creates plugin
//! objects and counts the handlers running, while the events themselves run
//! on their connections' threads (`handler.rs`) or on the runner's loop
//! (`looped/`): it is no `RunsEvents`, as nothing hands it events.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use rmpv::Value;

use crate::executor::plugins::PluginClasses;
use crate::executor::{Executor, PluginHandle, Running};

pub struct PbExecutor {
    pub classes: Arc<PluginClasses>,
    running: Arc<AtomicUsize>,
}

impl PbExecutor {
    pub fn new(classes: Arc<PluginClasses>) -> Self {
        PbExecutor {
            classes,
            running: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Counts a handler as running (and the server as busy) until dropped.
    pub fn running_guard(&self) -> Running {
        Running::new(&self.running)
    }
}

impl Executor for PbExecutor {
    fn start_instance(&self, plugin: &str, config: &Value) -> Result<PluginHandle, String> {
        self.classes.attach_and_create(plugin, config)
    }

    fn running(&self) -> usize {
        self.running.load(Ordering::Acquire)
    }
}
