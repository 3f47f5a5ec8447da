//! The plugin's settings: the `[config]` table of its `plugin.toml`, with the run's overrides.

use crate::bindings::reward::research::plugins::config as host;

/// Set by the host, not in plugin.toml: the text the model's chat template opens an assistant
/// turn with (e.g. `<|im_start|>assistant\n`), when the run's model has a chat template.
pub const ASSISTANT_MARKER: &str = "host.assistant-marker";

/// The value of `key` as text, if set.
pub fn get(key: &str) -> Option<String> {
    host::get(key)
}

/// Every key that is set, sorted.
pub fn keys() -> Vec<String> {
    host::keys()
}

/// The value of `key`, or `default` when it is not set.
pub fn get_or(key: &str, default: &str) -> String {
    get(key).unwrap_or_else(|| default.to_string())
}

/// A boolean setting (`true` / `false`); `default` when unset, an error naming the key when
/// the value is something else.
pub fn get_bool(key: &str, default: bool) -> Result<bool, String> {
    match get(key).as_deref() {
        None => Ok(default),
        Some("true") => Ok(true),
        Some("false") => Ok(false),
        Some(other) => Err(format!(
            "config `{key}` must be true or false, not `{other}`"
        )),
    }
}

/// A numeric setting; `default` when unset, an error naming the key when it does not parse.
pub fn get_parsed<T: std::str::FromStr>(key: &str, default: T) -> Result<T, String> {
    match get(key) {
        None => Ok(default),
        Some(text) => text
            .parse()
            .map_err(|_| format!("config `{key}` has an invalid value `{text}`")),
    }
}

/// A setting that must be one of `choices`; `default` when unset.
pub fn get_choice(key: &str, choices: &[&str], default: &str) -> Result<String, String> {
    let value = get_or(key, default);
    if choices.contains(&value.as_str()) {
        Ok(value)
    } else {
        Err(format!(
            "config `{key}` must be one of {}, not `{value}`",
            choices.join(", ")
        ))
    }
}
