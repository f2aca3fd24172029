//! `ALLOT__SECTION__KEY` environment overrides, applied to the TOML before
//! it is read.

use super::{ConfigError, ENV_PREFIX};

/// Applies `ALLOT__A__B=value` variables to the table; returns which dotted key
/// prefix each variable set, for error messages.
pub(super) fn apply_env_overrides(
    table: &mut toml::Table,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Vec<(String, String)>, ConfigError> {
    let mut applied = Vec::new();
    for (var, raw) in env {
        let Some(rest) = var.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        let path: Vec<String> = rest.split("__").map(str::to_ascii_lowercase).collect();
        if path.iter().any(String::is_empty) {
            return Err(ConfigError {
                key: path.join("."),
                message: "malformed override variable".to_string(),
                origin: Some(var),
            });
        }
        let (last, parents) = path.split_last().expect("split yields one part at least");
        let mut node = &mut *table;
        for part in parents {
            let entry = node
                .entry(part.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            node = match entry {
                toml::Value::Table(inner) => inner,
                _ => {
                    return Err(ConfigError {
                        key: path.join("."),
                        message: format!("`{part}` is not a section"),
                        origin: Some(var),
                    });
                }
            };
        }
        let value = if is_secret_key(last) {
            toml::Value::String(raw)
        } else {
            env_value(&raw)
        };
        node.insert(last.clone(), value);
        applied.push((path.join("."), var));
    }
    Ok(applied)
}

/// Whether an override of key `name` is a secret, taken verbatim as text: a
/// secret of digits stays the string it was (`007` is not `7`).
pub(super) fn is_secret_key(name: &str) -> bool {
    name.contains("secret") || name.ends_with("_token")
}

/// Reads an override as a TOML value (`5000`, `true`, `"x"`), else as a plain string.
pub(super) fn env_value(raw: &str) -> toml::Value {
    format!("v = {raw}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_string()))
}
