//! How a PDK call's handler waits on the runner's loop, and how Kong's
//! reply resumes it: an asyncio future the handler awaits, a gevent waiter
//! its greenlet blocks on, or (`GreenletRunner`) the handler's greenlet
//! itself, switched back to (`kong_pdk/runners.py`; the same three kinds as
//! MessagePack:1's looped model, src/models/looped/mod.rs).

use pyo3::intern;
use pyo3::prelude::*;

pub enum Tokens {
    /// `AsyncioRunner`: the call returns the future; its result is set here.
    Futures {
        new_token: Py<PyAny>,
        /// The runner's loop, and `asyncio.current_task`.
        event_loop: Py<PyAny>,
        current_task: Py<PyAny>,
    },
    /// `GeventRunner` (`waiter_tokens`): the call blocks in `Waiter.get`;
    /// a switch from the hub resumes it.
    Waiters {
        new_token: Py<PyAny>,
        wait: Py<PyAny>,
        hub: Hub,
    },
    /// `GreenletRunner` (`greenlet_tokens`): the token is the calling
    /// greenlet (`getcurrent`), which waits by switching to the hub (the
    /// runner's `wait`, called without arguments); resolving switches (or
    /// throws) into it.
    Greenlets {
        new_token: Py<PyAny>,
        wait: Py<PyAny>,
        hub: Hub,
    },
}

/// The greenlet that serves the socket (gevent's hub, or
/// `GreenletRunner`'s loop), as the runner gives it.
pub struct Hub {
    hub: Py<PyAny>,
    /// The runner's `getcurrent` (greenlet's).
    getcurrent: Py<PyAny>,
    /// The runner's `run_callback(fn, arg)`: `fn(arg)` on the hub's next round.
    run_callback: Py<PyAny>,
}

impl Hub {
    fn of_runner(runner: &Bound<'_, PyAny>) -> PyResult<Hub> {
        Ok(Hub {
            hub: runner.getattr("hub")?.unbind(),
            getcurrent: runner.getattr("getcurrent")?.unbind(),
            run_callback: runner.getattr("run_callback")?.unbind(),
        })
    }

    /// Resumes the greenlet waiting on `token` (a waiter, or the greenlet
    /// itself): directly from the hub (Kong's reply was just read), on the
    /// hub's next round from any other greenlet (shutdown).
    fn resolve(
        &self,
        token: &Bound<'_, PyAny>,
        answer: PyResult<Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let py = token.py();
        let (resume, arg) = match answer {
            Ok(v) => (token.getattr(intern!(py, "switch"))?, v),
            Err(e) => (
                token.getattr(intern!(py, "throw"))?,
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

type Callbacks<'py> = Vec<(Bound<'py, PyAny>, Bound<'py, PyAny>)>;

/// A pending future's done callbacks with their contexts (`_callbacks`,
/// pairs in both asyncio's C and Python futures), removed from it.
fn take_callbacks<'py>(future: &Bound<'py, PyAny>) -> PyResult<Callbacks<'py>> {
    let py = future.py();
    let listed = match future.getattr(intern!(py, "_callbacks")) {
        Ok(l) if !l.is_none() => l,
        _ => return Ok(Vec::new()),
    };
    let mut callbacks: Callbacks<'py> = Vec::new();
    for pair in listed.try_iter()? {
        callbacks.push(pair?.extract()?);
    }
    for (callback, _) in &callbacks {
        future.call_method1(intern!(py, "remove_done_callback"), (callback,))?;
    }
    Ok(callbacks)
}

impl Tokens {
    pub fn of_runner(py: Python<'_>, runner: &Bound<'_, PyAny>) -> PyResult<Tokens> {
        let new_token = runner.getattr("new_token")?.unbind();
        let flag = |name: &str| -> PyResult<bool> {
            match runner.getattr_opt(name)? {
                Some(flag) => flag.is_truthy(),
                None => Ok(false),
            }
        };
        if flag("greenlet_tokens")? {
            Ok(Tokens::Greenlets {
                new_token,
                wait: runner.getattr("wait")?.unbind(),
                hub: Hub::of_runner(runner)?,
            })
        } else if flag("waiter_tokens")? {
            Ok(Tokens::Waiters {
                new_token,
                wait: runner.getattr("wait")?.unbind(),
                hub: Hub::of_runner(runner)?,
            })
        } else {
            Ok(Tokens::Futures {
                new_token,
                event_loop: runner.getattr("loop")?.unbind(),
                current_task: py.import("asyncio")?.getattr("current_task")?.unbind(),
            })
        }
    }

    pub fn new_token<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        match self {
            Tokens::Futures { new_token, .. }
            | Tokens::Waiters { new_token, .. }
            | Tokens::Greenlets { new_token, .. } => new_token.bind(py).call0(),
        }
    }

    /// What the PDK call returns: the future, or (greenlets) the reply
    /// itself once the greenlet is resumed.
    pub fn wait<'py>(&self, token: Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        match self {
            Tokens::Futures { .. } => Ok(token),
            Tokens::Waiters { wait, .. } => wait.bind(token.py()).call1((token,)),
            Tokens::Greenlets { wait, .. } => wait.bind(token.py()).call0(),
        }
    }

    /// Resumes the handler waiting on `token` with its value or error.
    pub fn resolve(
        &self,
        token: &Bound<'_, PyAny>,
        answer: PyResult<Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let py = token.py();
        match self {
            Tokens::Futures {
                event_loop,
                current_task,
                ..
            } => {
                if token.call_method0(intern!(py, "done"))?.is_truthy()? {
                    return Ok(()); // the awaiting task was cancelled
                }
                // From a loop callback (Kong's reply was just read, no task
                // runs), the waiting task's wake-up runs here and now rather
                // than on the loop's next round: its done callbacks are taken
                // off and called once the result is set, each in its context.
                let inline = current_task
                    .bind(py)
                    .call1((event_loop.bind(py),))?
                    .is_none();
                let callbacks = if inline {
                    take_callbacks(token)?
                } else {
                    Vec::new()
                };
                match answer {
                    Ok(v) => token.call_method1(intern!(py, "set_result"), (v,))?,
                    Err(e) => {
                        token.call_method1(intern!(py, "set_exception"), (e.into_value(py),))?
                    }
                };
                for (callback, context) in callbacks {
                    if let Err(e) = context.call_method1(intern!(py, "run"), (callback, token)) {
                        log::error!("resuming a handler: its callback raised: {e}");
                    }
                }
                Ok(())
            }
            Tokens::Waiters { hub, .. } | Tokens::Greenlets { hub, .. } => {
                hub.resolve(token, answer)
            }
        }
    }
}
