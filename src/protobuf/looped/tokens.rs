//! How a PDK call's handler waits on the runner's loop, and how Kong's
//! reply resumes it: an asyncio future the handler awaits, or a gevent
//! waiter its greenlet blocks on (`kong_pdk/runners.py`).

use pyo3::intern;
use pyo3::prelude::*;

pub enum Tokens {
    /// `AsyncioRunner`: the call returns the future; its result is set here.
    Futures { new_token: Py<PyAny> },
    /// `GeventRunner`: the call blocks in `Waiter.get`; a switch from the
    /// hub resumes it.
    Waiters {
        new_token: Py<PyAny>,
        wait: Py<PyAny>,
        hub: Py<PyAny>,
        getcurrent: Py<PyAny>,
    },
}

impl Tokens {
    pub fn of_runner(py: Python<'_>, runner: &Bound<'_, PyAny>) -> PyResult<Tokens> {
        let new_token = runner.getattr("new_token")?.unbind();
        if runner.hasattr("waiter_tokens")? {
            Ok(Tokens::Waiters {
                new_token,
                wait: runner.getattr("wait")?.unbind(),
                hub: runner.getattr("hub")?.unbind(),
                getcurrent: py.import("gevent")?.getattr("getcurrent")?.unbind(),
            })
        } else {
            Ok(Tokens::Futures { new_token })
        }
    }

    pub fn new_token<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        match self {
            Tokens::Futures { new_token } | Tokens::Waiters { new_token, .. } => {
                new_token.bind(py).call0()
            }
        }
    }

    /// What the PDK call returns: the future, or (gevent) the reply itself
    /// once the greenlet is resumed.
    pub fn wait<'py>(&self, token: Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        match self {
            Tokens::Futures { .. } => Ok(token),
            Tokens::Waiters { wait, .. } => wait.bind(token.py()).call1((token,)),
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
            Tokens::Futures { .. } => {
                if token.call_method0(intern!(py, "done"))?.is_truthy()? {
                    return Ok(()); // the awaiting task was cancelled
                }
                match answer {
                    Ok(v) => token.call_method1(intern!(py, "set_result"), (v,))?,
                    Err(e) => {
                        token.call_method1(intern!(py, "set_exception"), (e.into_value(py),))?
                    }
                };
                Ok(())
            }
            Tokens::Waiters {
                hub, getcurrent, ..
            } => {
                let (resume, arg) = match answer {
                    Ok(v) => (token.getattr(intern!(py, "switch"))?, v),
                    Err(e) => (
                        token.getattr(intern!(py, "throw"))?,
                        e.into_value(py).into_bound(py).into_any(),
                    ),
                };
                let hub = hub.bind(py);
                if getcurrent.bind(py).call0()?.is(hub) {
                    resume.call1((arg,))?;
                } else {
                    hub.getattr(intern!(py, "loop"))?
                        .call_method1(intern!(py, "run_callback"), (resume, arg))?;
                }
                Ok(())
            }
        }
    }
}
