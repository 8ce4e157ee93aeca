//! Python values to TOML: a config given as a dict, and `set={key: value}` overrides.
//! Errors are one line naming the key, the value and what was expected.

use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};

/// A short rendering of a Python value for messages (its `repr`, cut at 60 characters).
fn shown(v: &Bound<'_, PyAny>) -> String {
    let r = v
        .repr()
        .map(|r| r.to_string())
        .unwrap_or_else(|_| "?".into());
    if r.chars().count() > 60 {
        format!("{}…", r.chars().take(60).collect::<String>())
    } else {
        r
    }
}

/// A Python value (str, int, float, bool, list, tuple, dict with str keys, or a NumPy
/// scalar) as a TOML value; `path` names it in errors.
pub fn to_toml(v: &Bound<'_, PyAny>, path: &str) -> Result<toml::Value, String> {
    let kind = || {
        v.get_type()
            .name()
            .map(|n| n.to_string())
            .unwrap_or_else(|_| "?".into())
    };
    if v.is_none() {
        return Err(format!(
            "{path} = None: TOML has no null; expected a value (or leave the key out)"
        ));
    }
    if v.is_instance_of::<PyBool>() {
        return Ok(toml::Value::Boolean(
            v.extract::<bool>().map_err(|e| e.to_string())?,
        ));
    }
    if v.is_instance_of::<PyInt>() {
        return v.extract::<i64>().map(toml::Value::Integer).map_err(|_| {
            format!(
                "{path} = {}: expected an integer that fits 64 bits",
                shown(v)
            )
        });
    }
    if v.is_instance_of::<PyFloat>() {
        return Ok(toml::Value::Float(
            v.extract::<f64>().map_err(|e| e.to_string())?,
        ));
    }
    if let Ok(s) = v.cast::<PyString>() {
        return Ok(toml::Value::String(s.to_string()));
    }
    if let Ok(d) = v.cast::<PyDict>() {
        return dict_table(d, path).map(toml::Value::Table);
    }
    if v.is_instance_of::<PyList>() || v.is_instance_of::<PyTuple>() {
        let mut items = Vec::new();
        for (i, item) in v.try_iter().map_err(|e| e.to_string())?.enumerate() {
            let item = item.map_err(|e| e.to_string())?;
            items.push(to_toml(&item, &format!("{path}[{i}]"))?);
        }
        return Ok(toml::Value::Array(items));
    }
    // NumPy scalars (numpy.int64, numpy.float32, numpy.bool_): their Python value.
    if v.hasattr("item").unwrap_or(false) && v.hasattr("dtype").unwrap_or(false) {
        if let Ok(inner) = v.call_method0("item") {
            if !inner.is(v) {
                return to_toml(&inner, path);
            }
        }
    }
    Err(format!(
        "{path} = {}: a value of type {}; expected a str, int, float, bool, list or dict",
        shown(v),
        kind()
    ))
}

/// A dict with str keys as a TOML table; `path` is its key ("" at the top).
fn dict_table(d: &Bound<'_, PyDict>, path: &str) -> Result<toml::Table, String> {
    let mut t = toml::Table::new();
    for (k, v) in d.iter() {
        let Ok(key) = k.extract::<String>() else {
            return Err(format!(
                "{}key {}: expected a str",
                if path.is_empty() {
                    String::new()
                } else {
                    format!("{path}: ")
                },
                shown(&k)
            ));
        };
        let full = if path.is_empty() {
            key.clone()
        } else {
            format!("{path}.{key}")
        };
        t.insert(key, to_toml(&v, &full)?);
    }
    Ok(t)
}

/// A config given as a dict (`{"rounds": 5, "strategy": {"name": "fedavg"}}`), as TOML
/// text; errors start with `config (dict): `.
pub fn dict_to_toml(config: &Bound<'_, PyAny>) -> Result<String, String> {
    let d = config
        .cast::<PyDict>()
        .map_err(|_| format!("config (dict): {}: expected a dict", shown(config)))?;
    let t = dict_table(d, "").map_err(|m| format!("config (dict): {m}"))?;
    toml::to_string(&t).map_err(|e| format!("config (dict): {e}"))
}

/// `set={key: value}`'s entry as `fedpace run --set`'s `key=value` (the value in TOML).
pub fn override_line(key: &str, value: &Bound<'_, PyAny>) -> Result<String, String> {
    if key.trim().is_empty() || key.contains('=') {
        return Err(format!(
            "set: key {key:?}: expected a dotted config key such as \"strategy.server_lr\""
        ));
    }
    let v = to_toml(value, key).map_err(|m| format!("set: {m}"))?;
    Ok(format!("{key}={v}"))
}
