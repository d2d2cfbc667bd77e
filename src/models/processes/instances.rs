//! Kong's instances and their copies in the workers.
//!
//! Each instance Kong starts is one `Entry` here (its key is what the core's
//! registry holds) and one plugin object in every worker, created from the
//! same config with the worker's own `plugin.StartInstance`. Configs are
//! never pickled per event: a worker keeps its copy until the registry lets
//! go of the instance. A respawned worker has none, so its supervisor
//! re-creates them all before events go to it; a copy a worker expired on its
//! own is re-created on its next event (relay.rs).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use rmpv::Value;

use super::client::Failure;
use super::workers::{Worker, WorkerState};
use super::{lock, Inner};
use crate::rpc::{as_map, as_u64, field, map};
use crate::rpc_error::RpcError;

/// One of Kong's instances: its plugin, its config and its id in each worker.
pub(super) struct Entry {
    /// The plugin's name: a worker serves the same plugins as the core.
    plugin: String,
    config: Value,
    /// Per worker: `(generation, instance id there)`. A respawned worker has
    /// a new generation, so its slot is stale until recreated.
    ids: Vec<tokio::sync::Mutex<Option<(u64, u64)>>>,
}

impl Entry {
    /// Forgets the copy `id` in worker `w` (process `st`) that the worker no
    /// longer has, so that the next `ensure` creates it again. A slot that
    /// changed meanwhile is left alone.
    pub(super) async fn forget(&self, w: &Worker, st: WorkerState, id: u64) {
        let mut slot = self.ids[w.index].lock().await;
        if *slot == Some((st.generation, id)) {
            *slot = None;
        }
    }
}

impl Inner {
    /// Registers a new instance with no copies yet; returns its key.
    pub(super) fn add_entry(&self, plugin: &str, config: &Value) -> (u64, Arc<Entry>) {
        let key = self.next_key.fetch_add(1, Ordering::Relaxed);
        let entry = Arc::new(Entry {
            plugin: plugin.to_string(),
            config: config.clone(),
            ids: self
                .workers
                .all()
                .iter()
                .map(|_| tokio::sync::Mutex::new(None))
                .collect(),
        });
        lock(&self.table).insert(key, Arc::clone(&entry));
        (key, entry)
    }

    pub(super) fn entry(&self, key: u64) -> Option<Arc<Entry>> {
        lock(&self.table).get(&key).cloned()
    }

    /// The instance's id in worker `w` (process `st`), created there first
    /// if this process does not have it yet.
    pub(super) async fn ensure(
        &self,
        entry: &Entry,
        w: &Worker,
        st: WorkerState,
    ) -> Result<u64, Failure> {
        let mut slot = entry.ids[w.index].lock().await;
        if let Some((generation, id)) = *slot {
            if generation == st.generation {
                return Ok(id);
            }
        }
        let params = [map(vec![
            ("Name", Value::from(entry.plugin.as_str())),
            // The config as the core decoded it (a map, which the worker
            // accepts as well as JSON text): no second JSON round trip.
            ("Config", entry.config.clone()),
        ])];
        let result = w
            .call(st, "plugin.StartInstance", &params, self.max_frame)
            .await
            .map_err(|e| match e {
                // The worker's refusal already reads as one; the core's
                // service words it again.
                Failure::Remote(msg) => Failure::Remote(RpcError::refusal_reason(&msg).to_string()),
                other => other,
            })?;
        let id = as_map(&result)
            .and_then(|m| field(m, "Id"))
            .and_then(as_u64)
            .ok_or_else(|| Failure::Lost("StartInstance reply has no Id".into()))?;
        *slot = Some((st.generation, id));
        Ok(id)
    }

    /// StartInstance on every up worker, at once.
    pub(super) async fn start_everywhere(self: Arc<Self>, entry: Arc<Entry>) -> Result<(), String> {
        if self.workers.pick(&[], &self.stop).await.is_none() {
            return Err("no worker process is running".into());
        }
        let mut tasks = tokio::task::JoinSet::new();
        for w in self.workers.all() {
            let st = w.state();
            if !st.up {
                // Created when it comes up, or on its first event.
                continue;
            }
            let (inner, entry, w) = (Arc::clone(&self), Arc::clone(&entry), Arc::clone(w));
            tasks.spawn(async move { inner.ensure(&entry, &w, st).await.map(drop) });
        }
        let mut created = 0;
        let mut refused = None;
        let mut other = None;
        while let Some(joined) = tasks.join_next().await {
            match joined {
                Ok(Ok(())) => created += 1,
                // A worker being stopped (SIGTERM from outside) is replaced
                // and gets the instance then.
                Ok(Err(Failure::Remote(e))) if RpcError::ShuttingDown.names(&e) => other = Some(e),
                Ok(Err(Failure::Remote(e))) => refused = Some(e),
                Ok(Err(e)) => other = Some(e.to_string()),
                Err(e) => other = Some(e.to_string()),
            }
        }
        match (refused, created) {
            (Some(e), _) => Err(e),
            (None, 0) => Err(format!(
                "no worker process could start the instance: {}",
                other.unwrap_or_default()
            )),
            // A worker that failed here gets the instance when it is back.
            (None, _) => Ok(()),
        }
    }

    /// Re-creates every known instance on a fresh worker process.
    pub(super) async fn recreate(&self, w: &Worker, st: WorkerState) {
        let entries: Vec<Arc<Entry>> = lock(&self.table).values().cloned().collect();
        for entry in entries {
            if let Err(e) = self.ensure(&entry, w, st).await {
                log::warn!("worker {}: re-creating an instance: {e}", w.index);
            }
        }
    }

    /// The registry let go of an instance: forget it and close it in the
    /// workers (best effort: a worker that misses it expires it itself).
    pub(super) fn release(self: &Arc<Self>, key: u64) {
        let Some(entry) = lock(&self.table).remove(&key) else {
            return;
        };
        if self.stop.is_set() {
            return;
        }
        let inner = Arc::clone(self);
        self.runtime.spawn(async move {
            for w in inner.workers.all() {
                let slot = entry.ids[w.index].lock().await.take();
                let Some((generation, id)) = slot else {
                    continue;
                };
                let st = w.state();
                if st.up && st.generation == generation {
                    let params = [Value::from(id)];
                    if let Err(e) = w
                        .call(st, "plugin.CloseInstance", &params, inner.max_frame)
                        .await
                    {
                        log::debug!("closing instance #{id} in worker {}: {e}", w.index);
                    }
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    //! Instances against a fake worker process (fake_worker.rs).

    use std::sync::atomic::AtomicU64;

    use super::*;
    use crate::models::processes::fake_worker::{self, inner, runtime, Fake};

    /// StartInstance answers `{Id: 40 + n}` for the n-th one, checking the
    /// plugin name and config it is sent.
    fn start_ok(method: &str, param: &Value) -> Option<(Value, Value)> {
        static N: AtomicU64 = AtomicU64::new(0);
        assert_eq!(method, "plugin.StartInstance");
        assert_eq!(param["Name"].as_str(), Some("p"));
        assert_eq!(param["Config"]["k"].as_str(), Some("v"));
        let id = 40 + N.fetch_add(1, Ordering::Relaxed);
        Some((Value::Nil, map(vec![("Id", Value::from(id))])))
    }

    fn config() -> Value {
        map(vec![("k", Value::from("v"))])
    }

    #[test]
    fn an_instance_is_created_once_per_worker_process() {
        let fake = Fake::start(start_ok);
        let rt = runtime();
        let inner = inner(fake.socket.clone(), &rt);
        let (key, entry) = inner.add_entry("p", &config());
        assert!(Arc::ptr_eq(&inner.entry(key).expect("registered"), &entry));
        let w = Arc::clone(&inner.workers.all()[0]);
        let st = w.state();
        let id = rt.block_on(inner.ensure(&entry, &w, st)).expect("created");
        let again = rt.block_on(inner.ensure(&entry, &w, st)).expect("known");
        assert_eq!(id, again);
        assert_eq!(fake.methods().len(), 1, "the second ensure sent nothing");
        // A respawned process has none of the instances: created again.
        w.mark_spawned(inner.workers.new_generation(), 0);
        w.mark_up();
        let fresh = rt
            .block_on(inner.ensure(&entry, &w, w.state()))
            .expect("re-created");
        assert_ne!(fresh, id);
        assert_eq!(fake.methods().len(), 2);
    }

    #[test]
    fn a_forgotten_copy_is_created_again_but_only_the_one_named() {
        let fake = Fake::start(start_ok);
        let rt = runtime();
        let inner = inner(fake.socket.clone(), &rt);
        let (_, entry) = inner.add_entry("p", &config());
        let w = Arc::clone(&inner.workers.all()[0]);
        let st = w.state();
        let id = rt.block_on(inner.ensure(&entry, &w, st)).expect("created");
        // Another id (a copy replaced meanwhile): left alone.
        rt.block_on(entry.forget(&w, st, id + 1000));
        rt.block_on(inner.ensure(&entry, &w, st)).expect("known");
        assert_eq!(fake.methods().len(), 1);
        rt.block_on(entry.forget(&w, st, id));
        let again = rt.block_on(inner.ensure(&entry, &w, st)).expect("again");
        assert_ne!(again, id);
        assert_eq!(fake.methods().len(), 2);
    }

    #[test]
    fn a_workers_refusal_is_not_worded_twice_and_a_reply_without_id_is_lost() {
        fn refuse(_: &str, _: &Value) -> Option<(Value, Value)> {
            let refusal = RpcError::InstanceRefused("bad config".into()).to_string();
            Some((Value::from(refusal), Value::Nil))
        }
        fn no_id(_: &str, _: &Value) -> Option<(Value, Value)> {
            Some((Value::Nil, map(vec![("Name", Value::from("p"))])))
        }
        let rt = runtime();
        let fake = Fake::start(refuse);
        let inner = inner(fake.socket.clone(), &rt);
        let (_, entry) = inner.add_entry("p", &config());
        let w = Arc::clone(&inner.workers.all()[0]);
        match rt.block_on(inner.ensure(&entry, &w, w.state())) {
            Err(Failure::Remote(why)) => assert_eq!(why, "bad config"),
            other => panic!("{other:?}"),
        }
        // start_everywhere reports the refusal as such.
        let refused = rt.block_on(Arc::clone(&inner).start_everywhere(Arc::clone(&entry)));
        assert_eq!(refused, Err("bad config".to_string()));
        let fake = Fake::start(no_id);
        let inner = fake_worker::inner(fake.socket.clone(), &rt);
        let (_, entry) = inner.add_entry("p", &config());
        let w = Arc::clone(&inner.workers.all()[0]);
        assert!(matches!(
            rt.block_on(inner.ensure(&entry, &w, w.state())),
            Err(Failure::Lost(_))
        ));
    }

    #[test]
    fn starting_everywhere_skips_down_workers_and_needs_one_up() {
        let fake = Fake::start(start_ok);
        let rt = runtime();
        let inner = inner(fake.socket.clone(), &rt);
        let (_, entry) = inner.add_entry("p", &config());
        rt.block_on(Arc::clone(&inner).start_everywhere(Arc::clone(&entry)))
            .expect("created on the one worker");
        assert_eq!(fake.methods().len(), 1);
        // None up, and stopping: no wait for one.
        inner.workers.all()[0].mark_down();
        inner.stop.set();
        let none = rt.block_on(Arc::clone(&inner).start_everywhere(entry));
        assert_eq!(none, Err("no worker process is running".to_string()));
        assert_eq!(fake.methods().len(), 1);
    }

    #[test]
    fn a_released_instance_leaves_the_table() {
        let rt = runtime();
        let inner = inner("/nonexistent/w.sock".into(), &rt);
        let (key, _) = inner.add_entry("p", &config());
        let (other, _) = inner.add_entry("p", &config());
        assert_ne!(key, other);
        // Stopping: nothing is sent to the workers.
        inner.stop.set();
        inner.release(key);
        assert!(inner.entry(key).is_none());
        assert!(inner.entry(other).is_some());
        // Twice is harmless.
        inner.release(key);
    }
}
