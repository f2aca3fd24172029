//! Lake layout: where each table lives, partition paths, Delta app ids, provenance.
//!
//! One typed builder for every path and id the lake uses, so that a local
//! directory and an object-store URL (`s3://bucket/lake`) are handled alike: the
//! rest of allot only ever asks [`LakeLocation`] for a table URL.

use std::fmt;
use std::path::Path;

use url::Url;

use crate::tenant::is_valid_tenant_id;

/// The Delta tables of a lake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LakeTable {
    /// Accepted events, partitioned by `tenant_id` and `day`.
    UsageEvents,
    /// Rejected events with their reason codes, partitioned by `day`.
    RejectedEvents,
    /// Hourly rollups of `usage_events`, partitioned by `day`, maintained by
    /// compaction (see `usage_hourly_schema`).
    UsageHourly,
    /// Final invoices of closed months, one row per CSV row (docs/reference.md#closing-a-month).
    Invoices,
    /// Frozen shared-cost allocations of closed months.
    Allocations,
    /// One row per closing of a month: the commit point of a close.
    Closings,
    /// One row per administrative erasure (`allot tenant delete`).
    Audit,
    /// Alert notices, delivery claims and attempts: the alerts' state and
    /// outbox (docs/reference.md#alerts).
    Alerts,
}

impl LakeTable {
    /// The table's directory name under the lake root.
    pub fn dir_name(self) -> &'static str {
        match self {
            LakeTable::UsageEvents => "usage_events",
            LakeTable::RejectedEvents => "rejected_events",
            LakeTable::UsageHourly => "usage_hourly",
            LakeTable::Invoices => "invoices",
            LakeTable::Allocations => "allocations",
            LakeTable::Closings => "closings",
            LakeTable::Audit => "audit",
            LakeTable::Alerts => "alerts",
        }
    }
}

/// Why a lake location could not be used.
#[derive(Debug, thiserror::Error)]
pub enum LakeLocationError {
    /// The URL does not parse.
    #[error("lake {0:?} is not a path or URL")]
    Invalid(String),
    /// The local directory cannot be created.
    #[error("cannot create lake directory {path}: {source}")]
    CreateDir {
        /// The directory.
        path: String,
        /// The underlying error.
        source: std::io::Error,
    },
}

/// Settings for the lake's object store, as delta-rs storage options
/// (`aws_endpoint`, `aws_region`, `retry_timeout`, …), built from
/// `[lake.storage]`; unset keys fall back to the standard `AWS_*` variables.
/// Its `Debug` prints the keys only, so that no secret reaches a log.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct StorageOptions(std::collections::BTreeMap<String, String>);

impl StorageOptions {
    /// Options from `(key, value)` pairs.
    pub fn new(options: std::collections::BTreeMap<String, String>) -> Self {
        StorageOptions(options)
    }

    /// The options as delta-rs takes them.
    pub fn to_map(&self) -> std::collections::HashMap<String, String> {
        self.0.clone().into_iter().collect()
    }
}

impl fmt::Debug for StorageOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

/// The root of a lake: a local directory or an object-store URL.
///
/// ```
/// use allot_schemas::layout::{LakeLocation, LakeTable};
/// let lake = LakeLocation::parse("s3://bucket/lake").unwrap();
/// assert_eq!(lake.table_url(LakeTable::UsageEvents).as_str(), "s3://bucket/lake/usage_events/");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LakeLocation {
    root: Url,
    storage: StorageOptions,
}

impl LakeLocation {
    /// Parses a `--lake` argument: a URL with a scheme, else a local path.
    /// Local directories are not created here; see [`LakeLocation::ensure_local_dirs`].
    pub fn parse(lake: &str) -> Result<Self, LakeLocationError> {
        let has_scheme = lake.split_once("://").is_some_and(|(scheme, _)| {
            scheme.len() > 1 && scheme.bytes().all(|b| b.is_ascii_alphanumeric())
        });
        let mut root = if has_scheme {
            Url::parse(lake).map_err(|_| LakeLocationError::Invalid(lake.to_string()))?
        } else {
            let path = Path::new(lake);
            let absolute = if path.is_absolute() {
                path.to_path_buf()
            } else {
                std::env::current_dir()
                    .map_err(|_| LakeLocationError::Invalid(lake.to_string()))?
                    .join(path)
            };
            Url::from_directory_path(&absolute)
                .map_err(|_| LakeLocationError::Invalid(lake.to_string()))?
        };
        if !root.path().ends_with('/') {
            let path = format!("{}/", root.path());
            root.set_path(&path);
        }
        Ok(LakeLocation {
            root,
            storage: StorageOptions::default(),
        })
    }

    /// The same lake, reached with `storage`'s settings.
    pub fn with_storage(self, storage: StorageOptions) -> Self {
        LakeLocation { storage, ..self }
    }

    /// The lake root.
    pub fn root(&self) -> &Url {
        &self.root
    }

    /// The object-store settings every table of the lake is opened with.
    pub fn storage(&self) -> &StorageOptions {
        &self.storage
    }

    /// The local directory of the lake, when it is on the local file system.
    pub fn local_path(&self) -> Option<std::path::PathBuf> {
        (self.root.scheme() == "file")
            .then(|| self.root.to_file_path().ok())
            .flatten()
    }

    /// Creates the local directories of the lake and its tables (no-op for object stores).
    pub fn ensure_local_dirs(&self) -> Result<(), LakeLocationError> {
        let Some(root) = self.local_path() else {
            return Ok(());
        };
        for table in [
            LakeTable::UsageEvents,
            LakeTable::RejectedEvents,
            LakeTable::UsageHourly,
            LakeTable::Invoices,
            LakeTable::Allocations,
            LakeTable::Closings,
        ] {
            let dir = root.join(table.dir_name());
            std::fs::create_dir_all(&dir).map_err(|source| LakeLocationError::CreateDir {
                path: dir.display().to_string(),
                source,
            })?;
        }
        Ok(())
    }

    /// The URL of one table, ending in `/`.
    pub fn table_url(&self, table: LakeTable) -> Url {
        self.root
            .join(&format!("{}/", table.dir_name()))
            .expect("table directory names are valid URL segments")
    }
}

/// A tenant-day: the partition of `usage_events` (and the unit of rollups,
/// compaction and duplicate checks). Ordered by tenant, then day.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TenantDay {
    /// The tenant.
    pub tenant_id: String,
    /// The UTC day.
    pub day: chrono::NaiveDate,
}

impl TenantDay {
    /// The tenant-day of `tenant_id` on `day`.
    pub fn new(tenant_id: impl Into<String>, day: chrono::NaiveDate) -> TenantDay {
        TenantDay {
            tenant_id: tenant_id.into(),
            day,
        }
    }
}

/// The relative directory of one tenant-day of `usage_events`.
///
/// ```
/// use allot_schemas::layout::usage_partition_dir;
/// assert_eq!(usage_partition_dir("acme", "2026-03-01").as_deref(), Some("tenant_id=acme/day=2026-03-01"));
/// assert_eq!(usage_partition_dir("../x", "2026-03-01"), None);
/// ```
pub fn usage_partition_dir(tenant_id: &str, day: &str) -> Option<String> {
    let day_ok = chrono::NaiveDate::parse_from_str(day, "%Y-%m-%d").is_ok();
    (is_valid_tenant_id(tenant_id) && day_ok).then(|| format!("tenant_id={tenant_id}/day={day}"))
}

/// Tag of a `usage_events` file (Delta `add.tags`): the table version of the
/// commit that added it (`allot.version`), stamped by allot's own appends. A file
/// without it may have been committed at any version.
pub const VERSION_TAG: &str = "allot.version";

/// Tag of a `usage_events` file written by a writer that checked every row
/// against the tenant's copies within the dedup window: the table version it
/// checked against (`allot.checked_at`). No row of such a file is beaten by a row
/// of a file committed at or before that version; files without it were not
/// checked against the table.
pub const CHECKED_AT_TAG: &str = "allot.checked_at";

/// Tag of a `usage_events` file: the earliest and latest `ingested_at` of its
/// rows (or bounds around them), in microseconds, as `"<min>,<max>"`
/// (`allot.ingested_at`), so that readers need not parse the Delta statistics.
pub const INGESTED_AT_TAG: &str = "allot.ingested_at";

/// The dedup tags of one `usage_events` file ([`VERSION_TAG`], [`CHECKED_AT_TAG`],
/// [`INGESTED_AT_TAG`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DedupTags {
    /// The version of the commit that added the file's rows, when known.
    pub version: Option<u64>,
    /// The version its rows were checked against, when they were.
    pub checked_at: Option<u64>,
    /// Bounds of its rows' `ingested_at` in microseconds, when tagged.
    pub ingested: Option<(i64, i64)>,
}

impl DedupTags {
    /// Reads the tags of a Delta `add` action (absent or unreadable ones: `None`).
    ///
    /// ```
    /// use allot_schemas::layout::DedupTags;
    /// let tags = [
    ///     ("allot.version".to_string(), Some("7".to_string())),
    ///     ("allot.ingested_at".to_string(), Some("10,20".to_string())),
    /// ]
    /// .into();
    /// let read = DedupTags::read(Some(&tags));
    /// assert_eq!(read, DedupTags { version: Some(7), checked_at: None, ingested: Some((10, 20)) });
    /// ```
    pub fn read(tags: Option<&std::collections::HashMap<String, Option<String>>>) -> DedupTags {
        let text = |name: &str| tags?.get(name)?.as_deref();
        let tag = |name: &str| text(name)?.parse::<u64>().ok();
        let ingested = text(INGESTED_AT_TAG).and_then(|bounds| {
            let (min, max) = bounds.split_once(',')?;
            Some((min.parse().ok()?, max.parse().ok()?))
        });
        DedupTags {
            version: tag(VERSION_TAG),
            checked_at: tag(CHECKED_AT_TAG),
            ingested,
        }
    }

    /// Adds the known tags to a Delta `add` action's tags.
    pub fn write_into(self, tags: &mut std::collections::HashMap<String, Option<String>>) {
        for (name, value) in [
            (VERSION_TAG, self.version),
            (CHECKED_AT_TAG, self.checked_at),
        ] {
            if let Some(value) = value {
                tags.insert(name.to_string(), Some(value.to_string()));
            }
        }
        if let Some((min, max)) = self.ingested {
            tags.insert(INGESTED_AT_TAG.to_string(), Some(format!("{min},{max}")));
        }
    }
}

/// Tag of a `usage_hourly` file (Delta `add.tags`): which of the table's rows
/// it holds (`allot.rows`), so that a report reads only the files of the rows
/// it needs. Files without it may hold any.
pub const ROLLUP_ROWS_TAG: &str = "allot.rows";

/// Which rows of `usage_hourly` a file holds ([`ROLLUP_ROWS_TAG`]).
///
/// ```
/// use allot_schemas::layout::RollupRows;
/// let tags = [("allot.rows".to_string(), Some("classes".to_string()))].into();
/// assert_eq!(RollupRows::read(Some(&tags)), RollupRows::Classes);
/// assert_eq!(RollupRows::read(None), RollupRows::Any);
/// assert!(RollupRows::Any.may_hold(RollupRows::Hourly));
/// assert!(!RollupRows::Classes.may_hold(RollupRows::Hourly));
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum RollupRows {
    /// Untagged (every file of another table, and rollups written before
    /// the tag): any rows.
    #[default]
    Any,
    /// Every row but the class rows (`hourly`).
    Hourly,
    /// The class rows of counters whose rates match on dimensions (`classes`).
    Classes,
}

impl RollupRows {
    /// Reads the tag of a Delta `add` action (absent or unknown: [`RollupRows::Any`]).
    pub fn read(tags: Option<&std::collections::HashMap<String, Option<String>>>) -> RollupRows {
        match tags
            .and_then(|tags| tags.get(ROLLUP_ROWS_TAG))
            .and_then(Option::as_deref)
        {
            Some("hourly") => RollupRows::Hourly,
            Some("classes") => RollupRows::Classes,
            _ => RollupRows::Any,
        }
    }

    /// Adds the tag to a Delta `add` action's tags ([`RollupRows::Any`] adds none).
    pub fn write_into(self, tags: &mut std::collections::HashMap<String, Option<String>>) {
        let value = match self {
            RollupRows::Any => return,
            RollupRows::Hourly => "hourly",
            RollupRows::Classes => "classes",
        };
        tags.insert(ROLLUP_ROWS_TAG.to_string(), Some(value.to_string()));
    }

    /// Whether a file of these rows may hold rows of `wanted`.
    pub fn may_hold(self, wanted: RollupRows) -> bool {
        self == RollupRows::Any || wanted == RollupRows::Any || self == wanted
    }
}

/// The Delta application id under which a collector group records its offset
/// for one Kafka partition (`txn` action).
///
/// ```
/// use allot_schemas::layout::kafka_app_id;
/// assert_eq!(kafka_app_id("allot", "usage", 3), "allot-usage-3");
/// ```
pub fn kafka_app_id(group: &str, topic: &str, partition: i32) -> String {
    format!("{group}-{topic}-{partition}")
}

/// The Delta application id under which the closings of one month record their
/// newest revision (`txn` action), so two concurrent closes cannot both commit
/// the same revision.
///
/// ```
/// use allot_schemas::layout::closing_app_id;
/// assert_eq!(closing_app_id("2026-10"), "allot-close-2026-10");
/// ```
pub fn closing_app_id(month: &str) -> String {
    format!("allot-close-{month}")
}

/// Where an event came from, stored in the `source` column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provenance<'a> {
    /// A Kafka message.
    Kafka {
        /// Topic.
        topic: &'a str,
        /// Partition.
        partition: i32,
        /// Offset.
        offset: i64,
    },
    /// A line of a JSON Lines file (1-based).
    File {
        /// The file name as given (`-` for stdin).
        name: &'a str,
        /// Line number, from 1.
        line: u64,
    },
}

impl fmt::Display for Provenance<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Provenance::Kafka {
                topic,
                partition,
                offset,
            } => write!(f, "kafka:{topic}/{partition}@{offset}"),
            Provenance::File { name, line } => write!(f, "file:{name}:{line}"),
        }
    }
}

/// A `source` value that is not what [`Provenance`]'s `Display` writes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a provenance (kafka:<topic>/<partition>@<offset> or file:<name>:<line>): {0:?}")]
pub struct ProvenanceParseError(pub String);

impl<'a> Provenance<'a> {
    /// Parses what `Display` writes, borrowing the topic or file name from
    /// `text`. Kafka topics hold neither `/` nor `@`, and the line number is
    /// the last `:`-field, so a file name may itself contain `:`.
    ///
    /// ```
    /// use allot_schemas::layout::Provenance;
    /// let kafka = Provenance::parse("kafka:usage/2@41").unwrap();
    /// assert_eq!(kafka, Provenance::Kafka { topic: "usage", partition: 2, offset: 41 });
    /// assert!(Provenance::parse("file:a.jsonl").is_err());
    /// ```
    pub fn parse(text: &'a str) -> Result<Self, ProvenanceParseError> {
        let invalid = || ProvenanceParseError(text.to_string());
        if let Some(rest) = text.strip_prefix("kafka:") {
            let (topic_partition, offset) = rest.rsplit_once('@').ok_or_else(invalid)?;
            let (topic, partition) = topic_partition.rsplit_once('/').ok_or_else(invalid)?;
            Ok(Provenance::Kafka {
                topic,
                partition: partition.parse().map_err(|_| invalid())?,
                offset: offset.parse().map_err(|_| invalid())?,
            })
        } else if let Some(rest) = text.strip_prefix("file:") {
            let (name, line) = rest.rsplit_once(':').ok_or_else(invalid)?;
            Ok(Provenance::File {
                name,
                line: line.parse().map_err(|_| invalid())?,
            })
        } else {
            Err(invalid())
        }
    }
}

impl<'a> TryFrom<&'a str> for Provenance<'a> {
    type Error = ProvenanceParseError;

    fn try_from(text: &'a str) -> Result<Self, Self::Error> {
        Provenance::parse(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_paths_become_file_urls() {
        let lake = LakeLocation::parse("/tmp/lake").unwrap();
        assert_eq!(
            lake.table_url(LakeTable::RejectedEvents).as_str(),
            "file:///tmp/lake/rejected_events/"
        );
        assert_eq!(lake.local_path().unwrap(), Path::new("/tmp/lake"));
        let relative = LakeLocation::parse("lake").unwrap();
        assert!(relative.root().path().ends_with("/lake/"));
        assert_eq!(LakeLocation::parse("s3://b/l").unwrap().local_path(), None);
    }

    #[test]
    fn storage_options_never_print_their_values() {
        let options = [("aws_secret_access_key".to_string(), "hunter2".to_string())];
        let lake = LakeLocation::parse("s3://b/l")
            .unwrap()
            .with_storage(StorageOptions::new(options.into()));
        let printed = format!("{lake:?}");
        assert!(printed.contains("aws_secret_access_key"), "{printed}");
        assert!(!printed.contains("hunter2"), "{printed}");
    }

    #[test]
    fn provenance_formats() {
        let kafka = Provenance::Kafka {
            topic: "usage",
            partition: 2,
            offset: 41,
        };
        assert_eq!(kafka.to_string(), "kafka:usage/2@41");
        assert_eq!(
            Provenance::File {
                name: "a.jsonl",
                line: 7
            }
            .to_string(),
            "file:a.jsonl:7"
        );
    }

    #[test]
    fn provenance_round_trips() {
        let cases = [
            Provenance::Kafka {
                topic: "usage.v1",
                partition: 0,
                offset: 0,
            },
            Provenance::Kafka {
                topic: "usage",
                partition: i32::MAX,
                offset: i64::MAX,
            },
            Provenance::File { name: "-", line: 1 },
            Provenance::File {
                name: "C:/backfill/a:b.jsonl",
                line: u64::MAX,
            },
        ];
        for case in cases {
            let text = case.to_string();
            assert_eq!(Provenance::parse(&text), Ok(case), "{text}");
        }
    }

    #[test]
    fn provenance_rejects_what_display_never_writes() {
        for text in [
            "",
            "usage/2@41",
            "kafka:usage@41",
            "kafka:usage/2",
            "kafka:usage/x@41",
            "kafka:usage/2@",
            "file:a.jsonl",
            "file:a.jsonl:seven",
            "file:a.jsonl:-1",
        ] {
            assert!(Provenance::parse(text).is_err(), "{text}");
        }
    }
}
