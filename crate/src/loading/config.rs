//! Reading `config.json` files: shared checks for every component's config struct.

use std::collections::BTreeMap;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::{Error, Result};

/// A config struct: serde reads it, and writing it back out tells which keys it read (a key
/// of the file that the struct does not write back was not read), so no list of known keys is
/// kept beside the fields.
pub trait ConfigFile: DeserializeOwned + Serialize {
    /// The file's name in messages (`vae/config.json`).
    const FILE: &'static str;
    /// Keys present in real checkpoints that do not change the computation.
    const IGNORED: &'static [&'static str];
    /// `_class_name` (diffusers) or `model_type` (transformers) it must carry.
    fn check_class(json: &BTreeMap<String, Value>) -> Result<()>;
    /// Every value in range: a zero, an empty list or a huge count in a downloaded file is
    /// refused here with a sentence, not met later as a panic or a terabyte allocation.
    fn validate(&self) -> Result<()>;
}

/// A parsed config and the keys it did not recognise (reported, not fatal).
pub struct Parsed<T> {
    pub config: T,
    pub unknown_keys: Vec<String>,
}

pub fn parse<T: ConfigFile>(text: &str) -> Result<Parsed<T>> {
    let error = |message: String| Error::Config { file: T::FILE.to_string(), message };
    let map: BTreeMap<String, Value> =
        serde_json::from_str(&python_floats_as_null(text)).map_err(|e| error(format!("not a JSON object: {e}")))?;
    T::check_class(&map)?;
    let config: T =
        serde_json::from_value(Value::Object(map.clone().into_iter().collect())).map_err(|e| error(e.to_string()))?;
    config.validate()?;
    let read = match serde_json::to_value(&config) {
        Ok(Value::Object(read)) => read,
        _ => return Err(error("the config does not write back as an object".into())),
    };
    let unknown_keys = map
        .into_keys()
        .filter(|k| !k.starts_with('_') && !read.contains_key(k) && !T::IGNORED.contains(&k.as_str()))
        .collect();
    Ok(Parsed { config, unknown_keys })
}

/// Python's `json` writes non-finite floats as the bare words `NaN`, `Infinity` and
/// `-Infinity` (diffusers saves `lambda_min_clipped: -Infinity`), which JSON has no spelling for:
/// outside strings they become `null` (the fields that take them are `Option`s).
fn python_floats_as_null(text: &str) -> std::borrow::Cow<'_, str> {
    if !["NaN", "Infinity"].iter().any(|w| text.contains(w)) {
        return text.into();
    }
    let mut out = String::with_capacity(text.len());
    let (mut in_string, mut escaped) = (false, false);
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        if in_string {
            in_string = escaped || c != '"';
            escaped = !escaped && c == '\\';
        } else if c == '"' {
            in_string = true;
        } else if let Some(word) = ["-Infinity", "Infinity", "NaN"].into_iter().find(|w| rest.starts_with(w)) {
            out.push_str("null");
            rest = &rest[word.len()..];
            continue;
        }
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    out.into()
}

/// Check diffusers' `_class_name`.
pub fn expect_class_name(file: &str, json: &BTreeMap<String, Value>, expected: &[&str]) -> Result<()> {
    match json.get("_class_name").and_then(Value::as_str) {
        Some(name) if expected.contains(&name) => Ok(()),
        found => Err(Error::Config {
            file: file.to_string(),
            message: format!("_class_name is {found:?}, expected {}", expected.join(" or ")),
        }),
    }
}

/// Check transformers' `model_type`.
pub fn expect_model_type(file: &str, json: &BTreeMap<String, Value>, expected: &str) -> Result<()> {
    match json.get("model_type").and_then(Value::as_str) {
        Some(name) if name == expected => Ok(()),
        found => Err(Error::Config {
            file: file.to_string(),
            message: format!("model_type is {found:?}, expected \"{expected}\""),
        }),
    }
}

/// The widest layer a config may ask for. Real checkpoints stay under 6k (CLIP's 5120-wide MLP);
/// 16k keeps every weight of a hostile config countable, and `Weights` refuses any single
/// tensor above one GPU buffer.
pub const MAX_WIDTH: usize = 1 << 14;

/// The most repeated layers (per block, or per encoder) a config may ask for; real ones use 2–48.
pub const MAX_LAYERS: usize = 256;

/// A config value out of range, as a sentence that names the file and key and says what to do.
pub fn invalid(file: &str, key: &str, found: impl std::fmt::Display, rule: impl std::fmt::Display) -> Error {
    Error::Config {
        file: file.to_string(),
        message: format!(
            "`{key}` is {found}; {rule}. The model folder is damaged or holds a model this app does not read."
        ),
    }
}

/// `value` in `range`.
pub fn check_range(file: &str, key: &str, value: usize, range: std::ops::RangeInclusive<usize>) -> Result<()> {
    if range.contains(&value) {
        return Ok(());
    }
    Err(invalid(file, key, value, format!("it must be between {} and {}", range.start(), range.end())))
}

/// Every entry of the list `key` in `range`.
pub fn check_each(file: &str, key: &str, values: &[usize], range: std::ops::RangeInclusive<usize>) -> Result<()> {
    match values.iter().find(|v| !range.contains(v)) {
        None => Ok(()),
        Some(v) => Err(invalid(
            file,
            key,
            format!("{values:?}"),
            format!("each entry must be between {} and {}, not {v}", range.start(), range.end()),
        )),
    }
}

/// `divisor` (the value of `key`) divides every width in `widths` (the list `of`).
pub fn check_divides(file: &str, key: &str, divisor: usize, of: &str, widths: &[usize]) -> Result<()> {
    if divisor > 0 && widths.iter().all(|w| w % divisor == 0) {
        return Ok(());
    }
    Err(invalid(file, key, divisor, format!("it must divide every entry of `{of}` {widths:?}")))
}

/// A finite number above 0 (a scale, an epsilon).
pub fn check_positive(file: &str, key: &str, value: f64) -> Result<()> {
    if value.is_finite() && value > 0.0 {
        return Ok(());
    }
    Err(invalid(file, key, value, "it must be a number above 0"))
}
