//! MessagePack values ⇄ Python objects.
//!
//! Kong → Python: decoded [`rmpv::Value`]s become Python objects. Strings are
//! Lua strings, so their bytes need not be UTF-8 (docs/protocol.md §3.2, §11.1);
//! they become `str` decoded with `surrogateescape`, which loses nothing.
//! `bin` (raw bodies, §6.2) becomes `bytes`.
//!
//! Python → Kong: objects are written straight into msgpack bytes, with the
//! exact types checked first (str, int, float, bool, None, list, dict, bytes)
//! and subclasses after. A `str` carrying escaped surrogates goes back as the
//! original bytes, so a header read from Kong is sent back byte for byte.

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{
    PyBool, PyByteArray, PyBytes, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple,
};
use rmpv::Value;

/// Containers nested deeper than this are refused (a cycle, most likely).
const MAX_DEPTH: usize = 256;

pub fn value_to_py<'py>(py: Python<'py>, v: &Value) -> PyResult<Bound<'py, PyAny>> {
    Ok(match v {
        Value::Nil => py.None().into_bound(py),
        Value::Boolean(b) => PyBool::new(py, *b).to_owned().into_any(),
        Value::Integer(i) => match (i.as_i64(), i.as_u64()) {
            (Some(n), _) => n.into_pyobject(py)?.into_any(),
            (None, Some(n)) => n.into_pyobject(py)?.into_any(),
            // rmpv integers are always one of the two.
            (None, None) => py.None().into_bound(py),
        },
        Value::F32(f) => PyFloat::new(py, f64::from(*f)).into_any(),
        Value::F64(f) => PyFloat::new(py, *f).into_any(),
        Value::String(s) => lua_str_to_py(py, s.as_bytes())?,
        Value::Binary(b) => PyBytes::new(py, b).into_any(),
        Value::Array(items) => {
            let list = PyList::empty(py);
            for item in items {
                list.append(value_to_py(py, item)?)?;
            }
            list.into_any()
        }
        Value::Map(entries) => {
            let dict = PyDict::new(py);
            for (k, v) in entries {
                dict.set_item(key_to_py(py, k)?, value_to_py(py, v)?)?;
            }
            dict.into_any()
        }
        Value::Ext(_, data) => PyBytes::new(py, data).into_any(),
    })
}

/// A Lua string as `str`: UTF-8 decoded with `surrogateescape`, in one pass
/// that both checks and decodes (valid UTF-8, the usual case, comes out as
/// `PyString::new` would make it).
fn lua_str_to_py<'py>(py: Python<'py>, bytes: &[u8]) -> PyResult<Bound<'py, PyAny>> {
    let len = pyo3::ffi::Py_ssize_t::try_from(bytes.len())
        .map_err(|_| PyValueError::new_err("string too long"))?;
    // SAFETY: `bytes` is valid for `len` bytes for the duration of the call
    // and the error handler name is a NUL-terminated literal; the result is
    // a new reference or NULL with an exception set, which
    // `from_owned_ptr_or_err` takes over.
    unsafe {
        Bound::from_owned_ptr_or_err(
            py,
            pyo3::ffi::PyUnicode_DecodeUTF8(
                bytes.as_ptr().cast(),
                len,
                c"surrogateescape".as_ptr(),
            ),
        )
    }
}

/// Map keys must be hashable: arrays become tuples, maps their repr.
fn key_to_py<'py>(py: Python<'py>, k: &Value) -> PyResult<Bound<'py, PyAny>> {
    match k {
        Value::Array(items) => {
            let items = items
                .iter()
                .map(|i| key_to_py(py, i))
                .collect::<PyResult<Vec<_>>>()?;
            Ok(PyTuple::new(py, items)?.into_any())
        }
        Value::Map(_) => Ok(PyString::new(py, &k.to_string()).into_any()),
        other => value_to_py(py, other),
    }
}

/// What to do with an object that has no msgpack form.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Unsendable {
    /// Raise `TypeError` naming the type.
    Refuse,
    /// Send `str(obj)`: `kong.log.*` takes anything (docs/pdk/kong.log.md).
    Stringify,
}

pub fn write_py(out: &mut Vec<u8>, obj: &Bound<'_, PyAny>, unsendable: Unsendable) -> PyResult<()> {
    write_obj(out, obj, unsendable, 0)
}

fn write_obj(
    out: &mut Vec<u8>,
    obj: &Bound<'_, PyAny>,
    unsendable: Unsendable,
    depth: usize,
) -> PyResult<()> {
    if depth > MAX_DEPTH {
        return Err(PyValueError::new_err(
            "value nested too deeply to send to Kong (does it contain itself?)",
        ));
    }
    // Exact types first: the common case costs one pointer compare each.
    if let Ok(s) = obj.cast_exact::<PyString>() {
        return write_pystr(out, s);
    }
    if obj.is_none() {
        let _ = rmp::encode::write_nil(out);
        return Ok(());
    }
    if let Ok(b) = obj.cast_exact::<PyBool>() {
        let _ = rmp::encode::write_bool(out, b.is_true());
        return Ok(());
    }
    if obj.is_exact_instance_of::<PyInt>() {
        return write_int(out, obj);
    }
    if let Ok(d) = obj.cast_exact::<PyDict>() {
        return write_dict(out, d, unsendable, depth);
    }
    if let Ok(l) = obj.cast_exact::<PyList>() {
        let _ = rmp::encode::write_array_len(out, len_u32(l.len())?);
        for item in l.iter() {
            write_obj(out, &item, unsendable, depth + 1)?;
        }
        return Ok(());
    }
    if obj.is_exact_instance_of::<PyFloat>() {
        let _ = rmp::encode::write_f64(out, obj.extract::<f64>()?);
        return Ok(());
    }
    if let Ok(b) = obj.cast_exact::<PyBytes>() {
        return write_bin(out, b.as_bytes());
    }
    if let Ok(t) = obj.cast_exact::<PyTuple>() {
        let _ = rmp::encode::write_array_len(out, len_u32(t.len())?);
        for item in t.iter() {
            write_obj(out, &item, unsendable, depth + 1)?;
        }
        return Ok(());
    }
    // Subclasses (str enums, IntEnum, OrderedDict, ...).
    if let Ok(s) = obj.cast::<PyString>() {
        return write_pystr(out, s);
    }
    if obj.is_instance_of::<PyBool>() {
        let _ = rmp::encode::write_bool(out, obj.is_truthy()?);
        return Ok(());
    }
    if obj.is_instance_of::<PyInt>() {
        return write_int(out, obj);
    }
    if obj.is_instance_of::<PyFloat>() {
        let _ = rmp::encode::write_f64(out, obj.extract::<f64>()?);
        return Ok(());
    }
    if let Ok(d) = obj.cast::<PyDict>() {
        return write_dict(out, d, unsendable, depth);
    }
    if obj.is_instance_of::<PyList>() || obj.is_instance_of::<PyTuple>() {
        let items: Vec<Bound<'_, PyAny>> = obj.try_iter()?.collect::<PyResult<_>>()?;
        let _ = rmp::encode::write_array_len(out, len_u32(items.len())?);
        for item in &items {
            write_obj(out, item, unsendable, depth + 1)?;
        }
        return Ok(());
    }
    if let Ok(b) = obj.cast::<PyBytes>() {
        return write_bin(out, b.as_bytes());
    }
    if let Ok(b) = obj.cast::<PyByteArray>() {
        return write_bin(out, &b.to_vec());
    }
    match unsendable {
        Unsendable::Stringify => write_pystr(out, &obj.str()?),
        Unsendable::Refuse => Err(PyTypeError::new_err(format!(
            "cannot send a value of type {} to Kong (use str, bytes, int, float, bool, None, list or dict)",
            obj.get_type().name()?
        ))),
    }
}

fn write_pystr(out: &mut Vec<u8>, s: &Bound<'_, PyString>) -> PyResult<()> {
    match s.to_str() {
        Ok(text) => {
            let _ = rmp::encode::write_str(out, text);
        }
        // Lone surrogates: a string decoded from non-UTF-8 Kong bytes.
        Err(_) => {
            let py = s.py();
            let raw = s.call_method1(
                intern!(py, "encode"),
                (intern!(py, "utf-8"), intern!(py, "surrogateescape")),
            )?;
            let raw = raw.cast::<PyBytes>()?.as_bytes();
            let _ = rmp::encode::write_str_len(out, len_u32(raw.len())?);
            out.extend_from_slice(raw);
        }
    }
    Ok(())
}

fn write_int(out: &mut Vec<u8>, obj: &Bound<'_, PyAny>) -> PyResult<()> {
    if let Ok(n) = obj.extract::<i64>() {
        let _ = rmp::encode::write_sint(out, n);
    } else if let Ok(n) = obj.extract::<u64>() {
        let _ = rmp::encode::write_uint(out, n);
    } else {
        // Lua numbers are doubles: an integer past 64 bits arrives as one anyway.
        let f: f64 = obj
            .call_method0(intern!(obj.py(), "__float__"))?
            .extract()?;
        let _ = rmp::encode::write_f64(out, f);
    }
    Ok(())
}

fn write_bin(out: &mut Vec<u8>, bytes: &[u8]) -> PyResult<()> {
    let _ = rmp::encode::write_bin_len(out, len_u32(bytes.len())?);
    out.extend_from_slice(bytes);
    Ok(())
}

fn write_dict(
    out: &mut Vec<u8>,
    d: &Bound<'_, PyDict>,
    unsendable: Unsendable,
    depth: usize,
) -> PyResult<()> {
    let _ = rmp::encode::write_map_len(out, len_u32(d.len())?);
    for (k, v) in d.iter() {
        write_obj(out, &k, unsendable, depth + 1)?;
        write_obj(out, &v, unsendable, depth + 1)?;
    }
    Ok(())
}

fn len_u32(n: usize) -> PyResult<u32> {
    u32::try_from(n).map_err(|_| PyValueError::new_err("value too large for MessagePack"))
}

/// Parses JSON text (Kong's `Config`, docs/protocol.md §6.5) into a value.
pub fn json_to_value(j: serde_json::Value) -> Value {
    match j {
        serde_json::Value::Null => Value::Nil,
        serde_json::Value::Bool(b) => Value::Boolean(b),
        serde_json::Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                Value::from(i)
            } else if let Some(u) = n.as_u64() {
                Value::from(u)
            } else {
                Value::F64(n.as_f64().unwrap_or(f64::NAN))
            }
        }
        serde_json::Value::String(s) => Value::from(s),
        serde_json::Value::Array(items) => {
            Value::Array(items.into_iter().map(json_to_value).collect())
        }
        serde_json::Value::Object(map) => Value::Map(
            map.into_iter()
                .map(|(k, v)| (Value::from(k), json_to_value(v)))
                .collect(),
        ),
    }
}
