//! A PDK call's token in the looped models, and how Kong's reply resumes
//! the handler waiting on it: an asyncio future the handler awaits, a
//! gevent waiter its greenlet blocks on, or (`GreenletRunner`) the
//! handler's greenlet itself, switched back to (`kong_pdk/runners.py`).
//!
//! Both wires' looped servers use it: MessagePack:1's (`models/looped/`)
//! and ProtoBuf:1's (`protobuf/looped/`). The runner's `new_token` and
//! `wait` are looked up once here, since they run for every PDK call; the
//! handler is resumed from Rust on the loop's own thread, with no Python
//! frame of the runner's in between.

use pyo3::intern;
use pyo3::prelude::*;

/// What a runner's PDK call tokens are, and how to resume their handlers.
pub struct Tokens {
    /// The runner's `new_token()`.
    new_token: Py<PyAny>,
    /// The runner's `wait`: `wait(token)` for waiters, `wait()` (the hub's
    /// `switch`) for greenlets; unused for futures.
    wait: Py<PyAny>,
    kind: Kind,
}

enum Kind {
    /// asyncio futures (`AsyncioRunner.awaitable_tokens`): a PDK call returns
    /// its token as is, and resolving one sets its result here.
    Futures(AsyncioLoop),
    /// Greenlet waiters (`GeventRunner.waiter_tokens`): the handler's
    /// greenlet blocks in the runner's `wait`, and resolving one switches
    /// to it here.
    Waiters(GreenletHub),
    /// The handler's greenlet itself (`GreenletRunner.greenlet_tokens`): the
    /// runner's `wait` is the hub's `switch`, and resolving a token switches
    /// (or throws) into the greenlet. No Python frame per PDK call.
    Greenlets(GreenletHub),
}

impl Tokens {
    /// The tokens of `runner`, by the flag it sets (`awaitable_tokens`,
    /// `waiter_tokens` or `greenlet_tokens`).
    pub fn of_runner(py: Python<'_>, runner: &Bound<'_, PyAny>) -> PyResult<Tokens> {
        let flag = |name: &str| -> PyResult<bool> {
            match runner.getattr_opt(name)? {
                Some(flag) => flag.is_truthy(),
                None => Ok(false),
            }
        };
        let kind = if flag("awaitable_tokens")? {
            Kind::Futures(AsyncioLoop {
                event_loop: runner.getattr("loop")?.unbind(),
                current_task: py.import("asyncio")?.getattr("current_task")?.unbind(),
            })
        } else if flag("waiter_tokens")? || flag("greenlet_tokens")? {
            let hub = GreenletHub {
                hub: runner.getattr("hub")?.unbind(),
                getcurrent: runner.getattr("getcurrent")?.unbind(),
                run_callback: runner.getattr("run_callback")?.unbind(),
            };
            if flag("greenlet_tokens")? {
                Kind::Greenlets(hub)
            } else {
                Kind::Waiters(hub)
            }
        } else {
            return Err(pyo3::exceptions::PyTypeError::new_err(
                "a looped runner's tokens are asyncio futures (awaitable_tokens), gevent waiters (waiter_tokens) \
                 or greenlets (greenlet_tokens)",
            ));
        };
        Ok(Tokens {
            new_token: runner.getattr("new_token")?.unbind(),
            wait: runner.getattr("wait")?.unbind(),
            kind,
        })
    }

    /// A new token for one PDK call.
    pub fn new_token<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.new_token.bind(py).call0()
    }

    /// What a PDK call returns to the handler for its token: the token
    /// itself (an awaitable) or, once the greenlet is resumed, Kong's answer.
    pub fn wait<'py>(&self, token: Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        let py = token.py();
        match self.kind {
            Kind::Futures(_) => Ok(token),
            Kind::Waiters(_) => self.wait.bind(py).call1((token,)),
            // The token is the calling greenlet: it waits by switching to
            // the hub, which switches back to it with the answer.
            Kind::Greenlets(_) => self.wait.bind(py).call0(),
        }
    }

    /// Resumes the handler waiting on `token` with Kong's answer (or error).
    pub fn resolve(
        &self,
        token: &Bound<'_, PyAny>,
        answer: PyResult<Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        match &self.kind {
            Kind::Futures(asyncio) => asyncio.resolve(token, answer),
            Kind::Waiters(hub) | Kind::Greenlets(hub) => hub.resolve(token, answer),
        }
    }
}

/// The asyncio loop a runner with future tokens runs (`awaitable_tokens`).
struct AsyncioLoop {
    event_loop: Py<PyAny>,
    /// `asyncio.current_task`.
    current_task: Py<PyAny>,
}

impl AsyncioLoop {
    /// Completes a PDK call's future, unless its task was cancelled meanwhile.
    ///
    /// Resolved from a loop callback (no task running: Kong's reply was just
    /// read), the future's done callbacks -- the waiting task's wake-up --
    /// run here and now, in their own contexts, rather than being scheduled
    /// with `call_soon` for the loop's next round: the handler resumes
    /// without a Handle, a loop iteration and an `epoll_wait` of its own.
    /// From inside a task (a second concurrent call fails at once) asyncio's
    /// own scheduling is kept, as a task cannot be entered from another.
    fn resolve(
        &self,
        future: &Bound<'_, PyAny>,
        answer: PyResult<Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let py = future.py();
        if future.call_method0(intern!(py, "done"))?.is_truthy()? {
            return Ok(());
        }
        let event_loop = self.event_loop.bind(py);
        let inline = self.current_task.bind(py).call1((event_loop,))?.is_none();
        let callbacks = if inline {
            take_callbacks(future)?
        } else {
            Vec::new()
        };
        match answer {
            Ok(v) => future.call_method1(intern!(py, "set_result"), (v,)),
            Err(e) => future.call_method1(intern!(py, "set_exception"), (e.into_value(py),)),
        }?;
        for (callback, context) in callbacks {
            let ran = context.call_method1(intern!(py, "run"), (callback, future));
            if let Err(e) = ran {
                // As the loop does for a callback that raised.
                log::error!(
                    "resuming a handler: its callback raised: {}",
                    crate::executor::describe(py, &e)
                );
            }
        }
        Ok(())
    }
}

/// The hub greenlet of a runner with greenlet tokens (`waiter_tokens`,
/// `greenlet_tokens`): the one that serves the socket (gevent's hub, or
/// `GreenletRunner`'s loop).
struct GreenletHub {
    hub: Py<PyAny>,
    /// The runner's `getcurrent` (greenlet's).
    getcurrent: Py<PyAny>,
    /// The runner's `run_callback(fn, arg)`: runs `fn(arg)` on the hub's next
    /// round.
    run_callback: Py<PyAny>,
}

impl GreenletHub {
    /// Resumes the greenlet waiting on a PDK call's token (a waiter, or the
    /// greenlet itself) with Kong's answer. From the hub (Kong's reply was
    /// just read) the switch is direct, as gevent's own watchers do it; from
    /// any other greenlet (shutdown, on the main one) it waits for the hub's
    /// next round.
    fn resolve(
        &self,
        waiter: &Bound<'_, PyAny>,
        answer: PyResult<Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let py = waiter.py();
        let (resume, arg) = match answer {
            Ok(v) => (waiter.getattr(intern!(py, "switch"))?, v),
            Err(e) => (
                waiter.getattr(intern!(py, "throw"))?,
                e.into_value(py).into_bound(py).into_any(),
            ),
        };
        let hub = self.hub.bind(py);
        if self.getcurrent.bind(py).call0()?.is(hub) {
            resume.call1((arg,))?;
        } else {
            self.run_callback.bind(py).call1((resume, arg))?;
        }
        Ok(())
    }
}

/// Removes a pending future's done callbacks and returns them with their
/// contexts (`Future._callbacks`, a pair per callback, as both asyncio's C
/// and Python futures give it), to be run once the result is set. A future
/// that lists them otherwise keeps them (scheduled by the loop as usual).
fn take_callbacks<'py>(future: &Bound<'py, PyAny>) -> PyResult<Callbacks<'py>> {
    let callbacks = list_callbacks(future).unwrap_or_default();
    let py = future.py();
    for (callback, _) in &callbacks {
        future.call_method1(intern!(py, "remove_done_callback"), (callback,))?;
    }
    Ok(callbacks)
}

type Callbacks<'py> = Vec<(Bound<'py, PyAny>, Bound<'py, PyAny>)>;

fn list_callbacks<'py>(future: &Bound<'py, PyAny>) -> PyResult<Callbacks<'py>> {
    let listed = future.getattr(intern!(future.py(), "_callbacks"))?;
    if listed.is_none() {
        return Ok(Vec::new());
    }
    let mut callbacks = Vec::new();
    for pair in listed.try_iter()? {
        callbacks.push(pair?.extract()?);
    }
    Ok(callbacks)
}
