//! `docs/configuration.md`, generated from the doc comments of the
//! configuration types (the `///` above each field of this folder's
//! structs) and from the defaults the program itself uses
//! ([`RawConfig::default`], written with `Serialize`).
//!
//! The test below fails when the checked-in file differs from a fresh one;
//! `scripts/update-config-docs` rewrites it and `scripts/check-config-docs`
//! runs the check.

use std::collections::BTreeMap;
use std::fmt::Write;

use super::raw::RawConfig;

/// The files the configuration's structs are in, in the order sections read.
const SOURCES: [&str; 9] = [
    include_str!("raw.rs"),
    include_str!("storage.rs"),
    include_str!("kafka.rs"),
    include_str!("ingest.rs"),
    include_str!("metrics.rs"),
    include_str!("pricing.rs"),
    include_str!("reports.rs"),
    include_str!("api.rs"),
    include_str!("alerts.rs"),
];

/// What the document says before the sections.
const PREAMBLE: &str = "\
# Configuration keys

<!-- Generated from the doc comments of schemas/src/config/*.rs by
scripts/update-config-docs; edit those, not this file. -->

Every key of `allot.toml`, section by section, with its type, its default and
what it does. How the file is read, overridden by `ALLOT__SECTION__KEY`
environment variables and written is in
[Configuration keys](reference.md#configuration-keys); the catalog, the price
book and the tenants are shown with examples in
[Metric catalog](reference.md#metric-catalog) and
[Price book and tenants](reference.md#price-book-and-tenants).

- A key left out takes its default; a *required* key has none. A key not
  listed here is an error that names it.
- A *decimal* is a string such as `\"0.0400\"` or an integer; a *date* is a
  UTC date `\"YYYY-MM-DD\"`; a *duration* is `500ms`, `30s`, `15m`, `1h` or
  `1d`; a *size* is `64MiB`, `512KiB`, `1GiB` or an integer number of bytes; a
  *secret* is a string that is never printed.
- `<name>`, `<id>`, `<metric>`, `<property>` and `<dimension>` stand for a key you choose;
  `rates[]` is any entry of the array of tables `[[rates]]`.
";

/// One field of a configuration struct, as its source declares it.
#[derive(Debug, Clone)]
struct Field {
    name: String,
    ty: String,
    doc: String,
}

/// One configuration struct: its doc and its fields.
#[derive(Debug, Clone, Default)]
struct Struct {
    doc: String,
    fields: Vec<Field>,
}

/// The `pub struct`s of the sources, by name, with the `///` lines above
/// them and above each of their fields.
fn parse_structs() -> BTreeMap<String, Struct> {
    let mut structs = BTreeMap::new();
    for source in SOURCES {
        let mut doc: Vec<String> = Vec::new();
        let mut current: Option<(String, Struct)> = None;
        for line in source.lines().map(str::trim) {
            if let Some(text) = line.strip_prefix("///") {
                doc.push(text.trim().to_string());
            } else if line.starts_with("#[") {
                // Attributes sit between a doc comment and its item.
            } else if let Some(rest) = line.strip_prefix("pub struct ") {
                let name = rest.trim_end_matches(" {").trim().to_string();
                let parsed = Struct {
                    doc: doc.join(" "),
                    fields: Vec::new(),
                };
                current = rest.ends_with('{').then_some((name, parsed));
                doc.clear();
            } else if line == "}" {
                if let Some((name, parsed)) = current.take() {
                    structs.insert(name, parsed);
                }
                doc.clear();
            } else if let Some((_, parsed)) = current.as_mut()
                && let Some(rest) = line.strip_prefix("pub ")
                && let Some((name, ty)) = rest.split_once(": ")
            {
                parsed.fields.push(Field {
                    // A key spelled as a Rust keyword is a raw identifier.
                    name: name.trim_start_matches("r#").to_string(),
                    ty: ty.trim_end_matches(',').to_string(),
                    doc: doc.join(" "),
                });
                doc.clear();
            } else {
                doc.clear();
            }
        }
    }
    structs
}

/// The inside of `Wrapper<…>` when `ty` is one.
fn inner<'a>(ty: &'a str, wrapper: &str) -> Option<&'a str> {
    ty.strip_prefix(wrapper)?
        .strip_prefix('<')?
        .strip_suffix('>')
}

/// What a field of scalar type `ty` is written as.
fn type_name(ty: &str) -> String {
    let ty = inner(ty, "Option").unwrap_or(ty);
    match ty {
        "String" => "string".to_string(),
        "bool" => "boolean".to_string(),
        "usize" | "u32" | "u64" | "i64" => "integer".to_string(),
        "HumanDuration" => "duration".to_string(),
        "ByteSize" => "size".to_string(),
        "ConfigDecimal" => "decimal".to_string(),
        "ConfigDate" => "date".to_string(),
        "Secret" => "secret".to_string(),
        "MetricKind" => {
            "`\"counter\"`, `\"gauge\"`, `\"max\"`, `\"unique_count\"` or `\"latest\"`".to_string()
        }
        other => panic!("the configuration reference has no name for type {other}"),
    }
}

/// The name a map's keys stand for in a key path.
fn placeholder(field: &str) -> &'static str {
    match field {
        "metrics" => "<name>",
        "tenants" => "<id>",
        "quotas" => "<metric>",
        "properties" => "<property>",
        "match" => "<dimension>",
        "labels" | "tenant_labels" => "<label>",
        other => panic!("the configuration reference has no placeholder for map `{other}`"),
    }
}

/// A doc comment as a table cell: intra-doc links as code, citations of the
/// reference as links, no bare `|`.
fn cell(doc: &str) -> String {
    let doc = doc
        .replace("[`", "`")
        .replace("`]", "`")
        .replace('|', "\\|");
    let mut out = String::new();
    let mut rest = doc.as_str();
    while let Some(at) = rest.find("docs/reference.md#") {
        out.push_str(&rest[..at]);
        let after = &rest[at + "docs/reference.md#".len()..];
        let end = after
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_'))
            .unwrap_or(after.len());
        let anchor = &after[..end];
        let _ = write!(out, "[reference](reference.md#{anchor})");
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

/// A Markdown heading's anchor, as GitHub makes it.
fn slug(heading: &str) -> String {
    heading
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | ' '))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// Writes the documentation of structs, section by section.
struct Writer {
    structs: BTreeMap<String, Struct>,
    defaults: toml::Value,
    /// Each struct's section heading, once written.
    written: BTreeMap<String, String>,
    sections: Vec<String>,
}

/// Where a struct's table sits in the file.
struct Place {
    /// The key path prefix of its fields, e.g. `tenants.<id>.`.
    prefix: String,
    /// The section heading, e.g. `[[tenants.<id>.rates]]`.
    heading: String,
    /// The defaults at this place, when there is one table of them.
    defaults: Option<toml::Value>,
}

impl Writer {
    fn section(&mut self, name: &str, place: Place) {
        self.written
            .insert(name.to_string(), format!("`{}`", place.heading));
        let parsed = self.structs[name].clone();
        let root = !place.heading.starts_with('[');
        let mut text = if root {
            format!("\n## {}\n\n", place.heading)
        } else {
            format!("\n## `{}`\n\n", place.heading)
        };
        // The root's doc speaks of the code; its fields speak for it.
        if !root && !parsed.doc.is_empty() {
            let _ = writeln!(text, "{}\n", cell(&parsed.doc));
        }
        text.push_str("| key | type | default | meaning |\n|---|---|---|---|\n");
        let mut nested = Vec::new();
        for field in &parsed.fields {
            let key = format!("{}{}", place.prefix, field.name);
            let default = place.defaults.as_ref().and_then(|d| d.get(&field.name));
            let optional = field.ty.starts_with("Option<");
            let ty = inner(&field.ty, "Option").unwrap_or(&field.ty);
            let (ty_text, default_text) = if let Some(element) = inner(ty, "Vec") {
                if self.structs.contains_key(element) {
                    let at = format!("{}{}[]", place.prefix, field.name);
                    nested.push((element.to_string(), at.clone(), None));
                    let heading = format!("[[{}]]", at.replace("[]", ""));
                    (format!("array of tables (`{heading}`)"), "`[]`".to_string())
                } else {
                    (
                        format!("array of {}s", type_name(element)),
                        "`[]`".to_string(),
                    )
                }
            } else if let Some(value) = inner(ty, "BTreeMap")
                .and_then(|map| map.strip_prefix("String, "))
                .filter(|value| self.structs.contains_key(*value))
            {
                let at = format!(
                    "{}{}.{}",
                    place.prefix,
                    field.name,
                    placeholder(&field.name)
                );
                nested.push((value.to_string(), at.clone(), None));
                (format!("tables (`[{at}]`)"), "`{}`".to_string())
            } else if self.structs.contains_key(ty) {
                let at = format!("{}{}", place.prefix, field.name);
                nested.push((ty.to_string(), at.clone(), default.cloned()));
                (format!("table (`[{at}]`)"), "see below".to_string())
            } else {
                let default_text = match default {
                    Some(toml::Value::Table(table)) if table.is_empty() => "`{}`".to_string(),
                    Some(value) => format!("`{value}`"),
                    None if optional => "unset".to_string(),
                    None if ty.starts_with("BTreeMap<") => "`{}`".to_string(),
                    None => "*required*".to_string(),
                };
                let (key, ty) = match inner(ty, "BTreeMap") {
                    Some(map) => (
                        format!("{key}.{}", placeholder(&field.name)),
                        map.trim_start_matches("String, "),
                    ),
                    None => (key.clone(), ty),
                };
                let _ = writeln!(
                    text,
                    "| `{key}` | {} | {default_text} | {} |",
                    type_name(ty),
                    cell(&field.doc)
                );
                continue;
            };
            let _ = writeln!(
                text,
                "| `{key}` | {ty_text} | {default_text} | {} |",
                cell(&field.doc)
            );
        }
        self.sections.push(text);
        for (name, at, defaults) in nested {
            let heading = if at.ends_with("[]") {
                format!("[[{}]]", at.replace("[]", ""))
            } else {
                format!("[{at}]")
            };
            let prefix = format!("{at}.");
            if let Some(first) = self.written.get(&name) {
                let anchor = slug(first);
                self.sections.push(format!(
                    "\n## `{heading}`\n\nThe keys of [{first}](#{anchor}).\n"
                ));
                continue;
            }
            self.section(
                &name,
                Place {
                    prefix,
                    heading,
                    defaults,
                },
            );
        }
    }
}

/// The whole of `docs/configuration.md`.
pub(super) fn reference_markdown() -> String {
    let defaults =
        toml::Value::try_from(RawConfig::default()).expect("the defaults have a TOML form");
    let mut writer = Writer {
        structs: parse_structs(),
        defaults: defaults.clone(),
        written: BTreeMap::new(),
        sections: Vec::new(),
    };
    writer.section(
        "RawConfig",
        Place {
            prefix: String::new(),
            heading: "Top level".to_string(),
            defaults: Some(writer.defaults.clone()),
        },
    );
    let mut out = PREAMBLE.to_string();
    for section in &writer.sections {
        out.push_str(section);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_field_has_a_doc_comment() {
        for (name, parsed) in parse_structs() {
            for field in &parsed.fields {
                assert!(
                    !field.doc.is_empty(),
                    "{name}.{} has no doc comment",
                    field.name
                );
            }
        }
    }

    #[test]
    fn the_configuration_reference_is_current() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/configuration.md");
        let fresh = reference_markdown();
        if std::env::var_os("ALLOT_UPDATE_CONFIG_DOCS").is_some() {
            std::fs::write(&path, &fresh).expect("docs/configuration.md is writable");
            return;
        }
        let current = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            current == fresh,
            "docs/configuration.md differs from the doc comments of schemas/src/config: \
             run scripts/update-config-docs"
        );
    }
}
