//! A PostgreSQL wire connection's session: who is connected, in which
//! sandbox scope, and the settings clients send (`SET`, `SHOW`, `BEGIN`).
//!
//! Only settings that change how answers are presented, or that narrow the
//! limits, may be set: `application_name`, `extra_float_digits`, `DateStyle`
//! and the like are kept and shown back; `statement_timeout` is honoured up
//! to the server's `api.sql_timeout`. Anything else (`search_path` to another
//! schema, `work_mem`, the engine's own options, `ROLE`, `SESSION
//! AUTHORIZATION`) is refused with the rule it broke. Transactions are
//! accepted and change nothing: every statement only reads.
//!
//! `COPY (query) TO STDOUT` and `COPY table TO STDOUT`, in text, CSV or
//! binary format, are the query's answer in another encoding (the ADBC
//! PostgreSQL driver fetches every answer this way); the query runs in the
//! sandbox like any other. A `COPY` to or from anywhere else is refused.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use allot_lake::session::Scope;
use allot_query::sandbox::pg_catalog::SERVER_VERSION;
use datafusion::sql::sqlparser::ast::{
    CopyLegacyCsvOption, CopyLegacyOption, CopyOption, CopySource, CopyTarget, Expr, Set,
    Statement, Value,
};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;
use tokio::sync::watch;

use crate::auth::Principal;

/// The settings a session may change, with their values at login.
const SETTABLE: [(&str, &str); 14] = [
    ("application_name", ""),
    ("extra_float_digits", "1"),
    ("datestyle", "ISO, MDY"),
    ("intervalstyle", "postgres"),
    ("client_encoding", "UTF8"),
    ("timezone", "UTC"),
    ("search_path", "public"),
    ("statement_timeout", "0"),
    ("lock_timeout", "0"),
    ("idle_in_transaction_session_timeout", "0"),
    ("default_transaction_isolation", "read committed"),
    ("transaction_isolation", "read committed"),
    ("bytea_output", "hex"),
    ("lc_messages", "C"),
];

/// Settings a session can show but not change.
const FIXED: [(&str, &str); 10] = [
    ("server_version", SERVER_VERSION),
    ("server_encoding", "UTF8"),
    ("standard_conforming_strings", "on"),
    ("integer_datetimes", "on"),
    ("max_identifier_length", "63"),
    ("transaction_read_only", "on"),
    ("default_transaction_read_only", "on"),
    ("lc_collate", "C"),
    ("lc_ctype", "C"),
    ("is_superuser", "off"),
];

/// A statement that is about the session rather than the data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `SET name = value` (or `SET TIME ZONE`, `SET NAMES`).
    Set {
        /// The setting, lower-cased.
        name: String,
        /// Its new value, as text.
        value: String,
    },
    /// `SHOW name`.
    Show(String),
    /// `BEGIN`, `START TRANSACTION`.
    Begin,
    /// `COMMIT`, `END`.
    Commit,
    /// `ROLLBACK`, `ABORT`.
    Rollback,
    /// `DISCARD`, `DEALLOCATE`, `RESET`, `SET SESSION CHARACTERISTICS`,
    /// `SET TRANSACTION`: accepted, nothing to do.
    Nothing(&'static str),
    /// `COPY … TO STDOUT`: `query`'s answer, encoded as `format` says.
    CopyOut {
        /// The query whose rows are copied.
        query: String,
        /// How the rows are encoded.
        format: CopyFormat,
    },
    /// A `COPY` allot refuses: to or from anywhere but the client, or with
    /// an option it does not encode. The rule it broke.
    Unsupported(String),
    /// A statement for the sandbox.
    Query,
}

/// The encodings of `COPY … TO STDOUT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyFormat {
    /// PostgreSQL's text format: tab-separated, `\N` for null.
    Text,
    /// CSV, with a first line of column names when `header`.
    Csv {
        /// Whether the first line names the columns.
        header: bool,
    },
    /// PostgreSQL's binary format (`PGCOPY`), each value as the binary
    /// protocol sends it.
    Binary,
}

/// What `sql` is. Only texts starting with a session keyword are parsed
/// here; every other text goes to the sandbox, which checks it.
pub fn command(sql: &str) -> Command {
    let keyword = first_keyword(sql);
    if !matches!(
        keyword.as_str(),
        "set"
            | "show"
            | "begin"
            | "start"
            | "commit"
            | "end"
            | "rollback"
            | "abort"
            | "discard"
            | "deallocate"
            | "reset"
            | "copy"
    ) {
        return Command::Query;
    }
    let statements = Parser::new(&PostgreSqlDialect {})
        .with_recursion_limit(20)
        .try_with_sql(sql)
        .and_then(|mut parser| parser.parse_statements());
    let Ok(statements) = statements else {
        return match keyword.as_str() {
            "begin" | "start" => Command::Begin,
            "commit" | "end" => Command::Commit,
            "rollback" | "abort" => Command::Rollback,
            _ => Command::Query,
        };
    };
    let [statement] = statements.as_slice() else {
        return Command::Query;
    };
    match statement {
        Statement::Set(set) => match set {
            Set::SingleAssignment {
                variable, values, ..
            } => Command::Set {
                name: variable.to_string().to_lowercase(),
                value: values.iter().map(value_text).collect::<Vec<_>>().join(", "),
            },
            Set::SetTimeZone { value, .. } => Command::Set {
                name: "timezone".into(),
                value: value_text(value),
            },
            Set::SetNames { charset_name, .. } => Command::Set {
                name: "client_encoding".into(),
                value: charset_name.value.clone(),
            },
            Set::SetTransaction { .. } => Command::Nothing("SET"),
            Set::SetSessionAuthorization(_) => Command::Set {
                name: "session_authorization".into(),
                value: String::new(),
            },
            Set::SetRole { .. } => Command::Set {
                name: "role".into(),
                value: String::new(),
            },
            _ => Command::Set {
                name: set.to_string().to_lowercase(),
                value: String::new(),
            },
        },
        Statement::ShowVariable { variable } => Command::Show(
            variable
                .iter()
                .map(|v| v.value.to_lowercase())
                .collect::<Vec<_>>()
                .join(" "),
        ),
        Statement::StartTransaction { .. } => Command::Begin,
        Statement::Commit { .. } => Command::Commit,
        Statement::Rollback { .. } => Command::Rollback,
        Statement::Discard { .. } => Command::Nothing("DISCARD ALL"),
        Statement::Deallocate { .. } => Command::Nothing("DEALLOCATE"),
        Statement::Copy {
            source,
            to: true,
            target: CopyTarget::Stdout,
            options,
            legacy_options,
            values,
        } if values.is_empty() => copy_out(source, options, legacy_options),
        Statement::Copy { .. } => Command::Unsupported(
            "COPY may only send a query's rows TO STDOUT: COPY FROM, and COPY to a file or a program, are refused"
                .to_string(),
        ),
        _ => Command::Query,
    }
}

/// `COPY source TO STDOUT` with `options`: the query it copies and how.
fn copy_out(
    source: &CopySource,
    options: &[CopyOption],
    legacy_options: &[CopyLegacyOption],
) -> Command {
    let query = match source {
        CopySource::Query(query) => query.to_string(),
        CopySource::Table {
            table_name,
            columns,
        } if columns.is_empty() => format!("SELECT * FROM {table_name}"),
        CopySource::Table {
            table_name,
            columns,
        } => {
            let columns = columns.iter().map(ToString::to_string).collect::<Vec<_>>();
            format!("SELECT {} FROM {table_name}", columns.join(", "))
        }
    };
    let mut format = CopyFormat::Text;
    let mut header = false;
    for option in options {
        match option {
            CopyOption::Format(name) => {
                format = match name.value.to_lowercase().as_str() {
                    "text" => CopyFormat::Text,
                    "csv" => CopyFormat::Csv { header: false },
                    "binary" => CopyFormat::Binary,
                    other => {
                        return Command::Unsupported(format!("COPY format {other} does not exist"));
                    }
                }
            }
            CopyOption::Header(on) => header = *on,
            other => {
                return Command::Unsupported(format!(
                    "COPY option {other} is not supported: FORMAT and HEADER are"
                ));
            }
        }
    }
    for option in legacy_options {
        match option {
            CopyLegacyOption::Binary => format = CopyFormat::Binary,
            CopyLegacyOption::Csv(csv) => {
                format = CopyFormat::Csv { header: false };
                for option in csv {
                    match option {
                        CopyLegacyCsvOption::Header => header = true,
                        other => {
                            return Command::Unsupported(format!(
                                "COPY option {other} is not supported: FORMAT and HEADER are"
                            ));
                        }
                    }
                }
            }
            other => {
                return Command::Unsupported(format!(
                    "COPY option {other} is not supported: FORMAT and HEADER are"
                ));
            }
        }
    }
    match (format, header) {
        (CopyFormat::Csv { .. }, header) => Command::CopyOut {
            query,
            format: CopyFormat::Csv { header },
        },
        (_, true) => Command::Unsupported("COPY HEADER is available only in CSV mode".to_string()),
        (format, false) => Command::CopyOut { query, format },
    }
}

/// The first word of `sql`, lower-cased, after any comments.
fn first_keyword(sql: &str) -> String {
    let mut rest = sql.trim_start();
    loop {
        if let Some(line) = rest.strip_prefix("--") {
            rest = line.split_once('\n').map_or("", |(_, r)| r).trim_start();
        } else if let Some(block) = rest.strip_prefix("/*") {
            rest = block.split_once("*/").map_or("", |(_, r)| r).trim_start();
        } else {
            break;
        }
    }
    rest.chars()
        .take_while(|c| c.is_ascii_alphabetic())
        .collect::<String>()
        .to_lowercase()
}

/// A `SET` value as text: a string's contents, a number's digits, a word.
fn value_text(expr: &Expr) -> String {
    match expr {
        Expr::Value(value) => match &value.value {
            Value::SingleQuotedString(s) | Value::DoubleQuotedString(s) => s.clone(),
            other => other.to_string(),
        },
        Expr::Identifier(ident) => ident.value.clone(),
        other => other.to_string(),
    }
}

/// One connection's session.
#[derive(Debug)]
pub struct Session {
    /// The token's holder.
    pub principal: Principal,
    /// The scope every statement of the session runs in.
    pub scope: Scope,
    /// The settings changed with `SET`, by lower-cased name.
    settings: Mutex<BTreeMap<String, String>>,
    /// The `statement_timeout` set, if any.
    statement_timeout: Mutex<Option<Duration>>,
    /// Changes when a cancel request names the connection.
    cancel: Option<watch::Receiver<u64>>,
}

impl Session {
    /// A session for `principal` in `scope`.
    pub fn new(principal: Principal, scope: Scope) -> Session {
        Session {
            principal,
            scope,
            settings: Mutex::new(BTreeMap::new()),
            statement_timeout: Mutex::new(None),
            cancel: None,
        }
    }

    /// The session, its statements stopped when `cancel` changes.
    pub fn with_cancel(self, cancel: watch::Receiver<u64>) -> Session {
        Session {
            cancel: Some(cancel),
            ..self
        }
    }

    /// What a statement starting now watches for a cancel request: changes
    /// from now on only.
    pub fn cancel_signal(&self) -> Option<watch::Receiver<u64>> {
        self.cancel.clone().map(|mut signal| {
            signal.borrow_and_update();
            signal
        })
    }

    /// Applies `SET name = value`, or says which rule it breaks; `limit` is
    /// the server's time limit, which `statement_timeout` may not exceed.
    pub fn set(&self, name: &str, value: &str, limit: Duration) -> Result<(), String> {
        let Some((key, _)) = SETTABLE.iter().find(|(key, _)| *key == name) else {
            return Err(format!(
                "SET {name} is not allowed: a session may set only {}",
                SETTABLE.map(|(key, _)| key).join(", ")
            ));
        };
        match *key {
            "statement_timeout" => {
                let timeout = parse_timeout(value).ok_or_else(|| {
                    format!("statement_timeout {value:?} is not a duration such as 5000 or '5s'")
                })?;
                if timeout.is_zero() || timeout > limit {
                    return Err(format!(
                        "statement_timeout may be at most {} ms, the server's limit (api.sql_timeout)",
                        limit.as_millis()
                    ));
                }
                *self
                    .statement_timeout
                    .lock()
                    .unwrap_or_else(|e| e.into_inner()) = Some(timeout);
            }
            "search_path" => {
                let allowed = value.split(',').map(str::trim).all(|schema| {
                    matches!(
                        schema.trim_matches('"').to_lowercase().as_str(),
                        "public" | "pg_catalog" | "$user" | ""
                    )
                });
                if !allowed {
                    return Err(
                        "search_path may name only public and pg_catalog: the session has no other schema"
                            .into(),
                    );
                }
            }
            "client_encoding"
                if !matches!(
                    value.to_uppercase().replace('-', "").as_str(),
                    "UTF8" | "UNICODE"
                ) =>
            {
                return Err("client_encoding must be UTF8".into());
            }
            _ => {}
        }
        self.settings
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert((*key).to_string(), value.to_string());
        Ok(())
    }

    /// The value `SHOW name` answers, if the setting exists.
    pub fn show(&self, name: &str) -> Option<String> {
        let set = self
            .settings
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned();
        set.or_else(|| {
            SETTABLE
                .iter()
                .chain(FIXED.iter())
                .find(|(key, _)| *key == name)
                .map(|(_, value)| (*value).to_string())
        })
    }

    /// The time limit of the session's next statement: the server's, or
    /// the session's `statement_timeout` when it is shorter.
    pub fn time_limit(&self, server: Duration) -> Duration {
        self.statement_timeout
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .map_or(server, |own| own.min(server))
    }
}

/// A `statement_timeout` value: milliseconds, or a number with a unit (`ms`,
/// `s`, `min`, `h`).
fn parse_timeout(value: &str) -> Option<Duration> {
    let value = value.trim();
    let split = value
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(value.len());
    let (number, unit) = value.split_at(split);
    let number: f64 = number.parse().ok()?;
    let millis = match unit.trim() {
        "" | "ms" => number,
        "s" => number * 1e3,
        "min" => number * 60e3,
        "h" => number * 3_600e3,
        _ => return None,
    };
    (millis.is_finite() && millis >= 0.0).then(|| Duration::from_secs_f64(millis / 1e3))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session() -> Session {
        let principal = Principal {
            sub: "analyst".into(),
            role: crate::auth::Role::Admin,
            tenant: None,
        };
        Session::new(principal, Scope::AllTenants)
    }

    #[test]
    fn session_statements_are_told_from_queries() {
        assert_eq!(
            command("SET extra_float_digits = 3"),
            Command::Set {
                name: "extra_float_digits".into(),
                value: "3".into()
            }
        );
        assert_eq!(
            command("set application_name to 'psql'"),
            Command::Set {
                name: "application_name".into(),
                value: "psql".into()
            }
        );
        assert_eq!(command("SHOW DateStyle"), Command::Show("datestyle".into()));
        assert_eq!(command("BEGIN"), Command::Begin);
        assert_eq!(command("begin read only"), Command::Begin);
        assert_eq!(command("COMMIT"), Command::Commit);
        assert_eq!(command("-- hi\nSELECT 1"), Command::Query);
        // Two statements go to the sandbox, which refuses them.
        assert_eq!(command("SET a = 1; SELECT 1"), Command::Query);
    }

    #[test]
    fn copy_to_stdout_is_its_query_in_another_encoding() {
        let copy = |query: &str, format| Command::CopyOut {
            query: query.into(),
            format,
        };
        assert_eq!(
            command("COPY (SELECT value FROM usage_events) TO STDOUT (FORMAT binary)"),
            copy("SELECT value FROM usage_events", CopyFormat::Binary)
        );
        assert_eq!(
            command("copy usage_events to stdout"),
            copy("SELECT * FROM usage_events", CopyFormat::Text)
        );
        assert_eq!(
            command("COPY usage_events (tenant_id, value) TO STDOUT WITH CSV HEADER"),
            copy(
                "SELECT tenant_id, value FROM usage_events",
                CopyFormat::Csv { header: true }
            )
        );
        assert!(matches!(
            command("COPY usage_events TO STDOUT (FORMAT csv, DELIMITER ';')"),
            Command::Unsupported(_)
        ));
        assert!(matches!(
            command("COPY usage_events TO STDOUT (HEADER)"),
            Command::Unsupported(_)
        ));
        // Anywhere but STDOUT, and COPY FROM, are refused.
        for elsewhere in [
            "COPY usage_events TO '/tmp/x'",
            "COPY usage_events TO PROGRAM 'sh'",
            "COPY usage_events FROM STDIN",
        ] {
            assert!(
                matches!(command(elsewhere), Command::Unsupported(_)),
                "{elsewhere}"
            );
        }
    }

    #[test]
    fn only_presentation_settings_and_narrower_limits_may_be_set() {
        let session = session();
        let limit = Duration::from_secs(30);
        session.set("extra_float_digits", "3", limit).unwrap();
        assert_eq!(session.show("extra_float_digits").as_deref(), Some("3"));
        session.set("statement_timeout", "5s", limit).unwrap();
        assert_eq!(session.time_limit(limit), Duration::from_secs(5));
        session.set("statement_timeout", "2000", limit).unwrap();
        assert_eq!(session.time_limit(limit), Duration::from_secs(2));
        for (name, value) in [
            ("statement_timeout", "0"),
            ("statement_timeout", "1h"),
            ("work_mem", "1GB"),
            ("datafusion.execution.batch_size", "1"),
            ("role", ""),
            ("search_path", "other"),
        ] {
            let refusal = session.set(name, value, limit).unwrap_err();
            assert!(!refusal.is_empty(), "{name}");
        }
        assert_eq!(session.time_limit(limit), Duration::from_secs(2));
        assert_eq!(
            session.show("server_version").as_deref(),
            Some(SERVER_VERSION)
        );
        assert_eq!(session.show("work_mem"), None);
    }
}
