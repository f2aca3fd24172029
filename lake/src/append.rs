//! Appending to a Delta table without holding its file list.
//!
//! Delta-rs commits through a snapshot of every active file of the table, and
//! keeps it up to date after each commit. A collector that runs for months on a
//! table of millions of files would hold all of them in memory only to append
//! new ones. A [`LogAppender`] instead keeps what an append needs: the table's
//! metadata, the newest version it has read, and the `txn` offsets of the app ids
//! it writes. Its memory does not grow with the table.
//!
//! A commit is the next JSON file of the Delta log, written with the log store's
//! put-if-absent, so two writers can never both write one version. When another
//! writer got there first, the appender reads the commits it missed:
//! - a `txn` for one of its app ids is what fencing is about: the commit goes
//!   ahead only if each app id still records the offset the batch started from;
//! - new metadata or protocol reloads the table's metadata;
//! - files added or removed by others do not concern a blind append.
//!
//! That is the rule Delta's conflict checker applies to an append that read
//! nothing, done in one place the collector can reason about.
//!
//! Each attempt stamps the version it is written at on every file it adds
//! ([`allot_schemas::layout::VERSION_TAG`]): the duplicate check of the dedup window uses it to tell
//! which files a writer's own check had seen.

use std::collections::HashMap;

use crate::error::LakeError;
use crate::file_writer::{FileWriter, NewFile};
use crate::tables::{ensure_table, metadata_with_new_columns};
use crate::txns::{AppOffset, LogLine};
use allot_schemas::layout::{DedupTags, LakeLocation, LakeTable};
use allot_schemas::table_schema::table_schema;
use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use deltalake::kernel::transaction::{CommitData, TransactionError};
use deltalake::kernel::{Action, Remove, Transaction};
use deltalake::logstore::CommitOrBytes;
use deltalake::logstore::object_store::ObjectStoreExt;
use deltalake::protocol::{DeltaOperation, SaveMode};
use deltalake::writer::RecordBatchWriter;
use deltalake::{BlindDeltaTable, DeltaTableError};

/// Appends to one Delta table of the lake; see the module docs.
pub struct LogAppender {
    name: &'static str,
    table: BlindDeltaTable,
    /// Every commit up to this version has been read (or precedes the baseline).
    read_through: u64,
    /// App id → the offset the table records as of `read_through` (`None`: none),
    /// for the app ids asked about or written.
    offsets: HashMap<String, Option<i64>>,
}

impl LogAppender {
    /// Opens `table` of the lake, creating it when it does not exist yet. Only the
    /// table's metadata is read, never its file list.
    pub async fn open(location: &LakeLocation, table_kind: LakeTable) -> Result<Self, LakeError> {
        let name = table_kind.dir_name();
        let log_store = ensure_table(location, table_kind).await?;
        let table = BlindDeltaTable::try_new_with_log_store(log_store)
            .await
            .map_err(LakeError::table(name))?;
        let mut appender = LogAppender {
            name,
            read_through: table.version(),
            table,
            offsets: HashMap::new(),
        };
        appender.add_new_columns(table_schema(table_kind).0).await?;
        Ok(appender)
    }

    /// Adds to the table's schema the nullable columns of `wanted` it lacks (a
    /// table created before they were added, such as an `invoices` table without
    /// `dimensions`), in one commit of the new metadata; rows of the files
    /// already there read those columns as null. A column the table lacks that
    /// is not nullable is an error: old rows would have no value for it.
    async fn add_new_columns(&mut self, wanted: SchemaRef) -> Result<(), LakeError> {
        loop {
            let Some((metadata, missing)) = metadata_with_new_columns(
                self.name,
                self.table.metadata(),
                &self.table.schema(),
                &wanted,
            )?
            else {
                return Ok(());
            };
            let operation = DeltaOperation::SetTableProperties {
                properties: HashMap::new(),
            };
            let commit = CommitData::new(
                vec![Action::Metadata(metadata)],
                operation,
                HashMap::new(),
                Vec::new(),
            );
            let version = self.read_through + 1;
            // Not written: another writer committed first (perhaps the same
            // columns); the table is read again either way.
            if self
                .write_version(version, &commit, uuid::Uuid::new_v4())
                .await?
            {
                tracing::info!(table = self.name, ?missing, "added columns");
            }
            self.table = BlindDeltaTable::try_new_with_log_store(self.table.log_store())
                .await
                .map_err(LakeError::table(self.name))?;
            self.read_through = self.table.version();
        }
    }

    /// The table's directory name, for errors.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// A Parquet writer for this table's files (the files are not committed).
    pub fn file_writer(&self) -> Result<FileWriter, LakeError> {
        let writer = RecordBatchWriter::for_blind_appends(&self.table)
            .map_err(LakeError::table(self.name))?
            .with_writer_properties(crate::data_file::writer_properties());
        Ok(FileWriter::new(self.name, writer))
    }

    /// The offsets the table records now for `app_ids` (`None`: none yet).
    pub async fn recorded_offsets(
        &mut self,
        app_ids: &[String],
    ) -> Result<Vec<Option<i64>>, LakeError> {
        self.read_offsets(app_ids).await?;
        self.catch_up().await?;
        Ok(app_ids.iter().map(|id| self.offsets[id]).collect())
    }

    /// Fails with [`LakeError::Fenced`] unless the table, as of its newest
    /// commit, records exactly the `expected` offset for each app id.
    pub async fn check_offsets(
        &mut self,
        expected: &[(String, Option<i64>)],
    ) -> Result<(), LakeError> {
        let ids: Vec<String> = expected.iter().map(|(id, _)| id.clone()).collect();
        let recorded = self.recorded_offsets(&ids).await?;
        for ((app_id, offset), recorded) in expected.iter().zip(recorded) {
            if recorded != *offset {
                return Err(LakeError::Fenced(format!(
                    "{app_id}: the lake records offset {recorded:?}, this batch started after {offset:?}"
                )));
            }
        }
        Ok(())
    }

    /// Commits `files` and `offsets` as one append, provided the table still
    /// records the `expected` offset for each app id; otherwise fails with
    /// [`LakeError::Fenced`] and the files, never referenced, are deleted (they
    /// may hold rows of a tenant erased meanwhile).
    pub async fn append(
        &mut self,
        files: Vec<NewFile>,
        offsets: Vec<AppOffset>,
        expected: &[(String, Option<i64>)],
    ) -> Result<u64, LakeError> {
        let partition_by = self.table.metadata().partition_columns().to_vec();
        let operation = DeltaOperation::Write {
            mode: SaveMode::Append,
            partition_by: (!partition_by.is_empty()).then_some(partition_by),
            predicate: None,
        };
        self.commit_files(Vec::new(), files, offsets, expected, operation)
            .await
    }

    /// Commits the removal of `removes` and the addition of `files`, which
    /// hold the same rows (a compaction), with `offsets`, fenced on `expected`
    /// as [`LogAppender::append`] is. The caller must have read the files it
    /// removes as of a version that records `expected`: a writer that adds
    /// files moves an offset, so no file added since can be lost.
    pub async fn replace(
        &mut self,
        removes: Vec<Remove>,
        files: Vec<NewFile>,
        offsets: Vec<AppOffset>,
        expected: &[(String, Option<i64>)],
    ) -> Result<u64, LakeError> {
        let operation = DeltaOperation::Optimize {
            predicate: None,
            target_size: 0,
        };
        self.commit_files(removes, files, offsets, expected, operation)
            .await
    }

    /// One commit of `removes` and `files` with `offsets` as `operation`,
    /// fenced on `expected`: the body of [`LogAppender::append`] and
    /// [`LogAppender::replace`].
    async fn commit_files(
        &mut self,
        removes: Vec<Remove>,
        files: Vec<NewFile>,
        offsets: Vec<AppOffset>,
        expected: &[(String, Option<i64>)],
        operation: DeltaOperation,
    ) -> Result<u64, LakeError> {
        let txns: Vec<Transaction> = offsets
            .into_iter()
            .map(|o| Transaction::new(o.app_id, o.offset))
            .collect();
        let operation_id = uuid::Uuid::new_v4();
        loop {
            if let Err(failure) = self.check_offsets(expected).await {
                if matches!(failure, LakeError::Fenced(_)) {
                    self.discard(&files).await;
                }
                return Err(failure);
            }
            let version = self.read_through + 1;
            // Every file carries the version that adds it, so a reader can tell
            // which files a writer's duplicate check saw.
            let adds = files.iter().map(|file| {
                let mut add = file.0.clone();
                let stamp = DedupTags {
                    version: Some(version),
                    ..DedupTags::default()
                };
                stamp.write_into(add.tags.get_or_insert_with(HashMap::new));
                Action::Add(add)
            });
            let actions = removes
                .iter()
                .cloned()
                .map(Action::Remove)
                .chain(adds)
                .collect();
            let commit = CommitData::new(actions, operation.clone(), HashMap::new(), txns.clone());
            if self.write_version(version, &commit, operation_id).await? {
                self.read_through = version;
                for txn in txns {
                    self.offsets.insert(txn.app_id, Some(txn.version));
                }
                return Ok(version);
            }
            // Another writer took this version: read it and try the next one.
            tracing::debug!(
                table = self.name,
                version,
                "another writer committed this version first; retrying"
            );
        }
    }

    /// Writes `commit` as `version` of the log: `true` once written, `false`
    /// when another writer took that version first. An entry not written is
    /// aborted, so no staged file of it is left behind.
    async fn write_version(
        &self,
        version: u64,
        commit: &CommitData,
        operation_id: uuid::Uuid,
    ) -> Result<bool, LakeError> {
        let entry = self.commit_entry(commit).await?;
        let log_store = self.table.log_store();
        match log_store
            .write_commit_entry(version, entry.clone(), operation_id)
            .await
        {
            Ok(()) => Ok(true),
            Err(error) => {
                let _ = log_store
                    .abort_commit_entry(version, entry, operation_id)
                    .await;
                match error {
                    TransactionError::VersionAlreadyExists(_) => Ok(false),
                    other => Err(LakeError::table(self.name)(other.into())),
                }
            }
        }
    }

    /// Deletes files that will never be committed. A file that cannot be
    /// deleted is left for the vacuum, which removes unreferenced files.
    async fn discard(&self, files: &[NewFile]) {
        let store = self.table.log_store().object_store(None);
        for file in files {
            let path = deltalake::Path::from(file.path());
            if let Err(err) = store.delete(&path).await {
                tracing::warn!(table = self.name, path = file.path(), %err, "cannot delete a fenced commit's file");
            }
        }
    }

    /// The log entry of one commit attempt: its bytes, or on stores without
    /// put-if-absent a temporary file that the commit renames.
    async fn commit_entry(&self, commit: &CommitData) -> Result<CommitOrBytes, LakeError> {
        let bytes = commit
            .get_bytes()
            .map_err(|e| LakeError::table(self.name)(e.into()))?;
        let log_store = self.table.log_store();
        if ["DefaultLogStore", "LakeFSLogStore"].contains(&log_store.name().as_str()) {
            return Ok(CommitOrBytes::LogBytes(bytes));
        }
        let path = deltalake::Path::from_iter([
            "_delta_log",
            &format!("_commit_{}.json.tmp", uuid::Uuid::new_v4()),
        ]);
        log_store
            .object_store(None)
            .put(&path, bytes.into())
            .await
            .map_err(|e| LakeError::table(self.name)(e.into()))?;
        Ok(CommitOrBytes::TmpCommit(path))
    }

    /// Reads the offsets of app ids not known yet, as of `read_through`, from the
    /// log (checkpoint and commits) without materializing the file list.
    async fn read_offsets(&mut self, app_ids: &[String]) -> Result<(), LakeError> {
        let missing: Vec<String> = app_ids
            .iter()
            .filter(|id| !self.offsets.contains_key(*id))
            .cloned()
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        let log_store = self.table.log_store();
        let engine = log_store.engine(None);
        // The kernel joins paths onto the root, which must end with a slash.
        let mut root = self.table.table_url().clone();
        if !root.path().ends_with('/') {
            root.set_path(&format!("{}/", root.path()));
        }
        let version = self.read_through;
        let read = tokio::task::spawn_blocking(move || {
            let snapshot = delta_kernel::Snapshot::builder_for(root.as_str())
                .at_version(version)
                .build(engine.as_ref())?;
            missing
                .into_iter()
                .map(|id| {
                    let offset = snapshot.get_app_id_version(&id, engine.as_ref())?;
                    Ok((id, offset))
                })
                .collect::<Result<Vec<_>, delta_kernel::Error>>()
        })
        .await
        .map_err(LakeError::from)?
        .map_err(|e| LakeError::table(self.name)(DeltaTableError::from(e)))?;
        self.offsets.extend(read);
        Ok(())
    }

    /// Reads the commits other writers made since `read_through`.
    async fn catch_up(&mut self) -> Result<(), LakeError> {
        let log_store = self.table.log_store();
        let latest = log_store
            .get_latest_version(self.read_through)
            .await
            .map_err(LakeError::table(self.name))?;
        let mut metadata_changed = false;
        for version in self.read_through + 1..=latest {
            let commit = log_store
                .read_commit_entry(version)
                .await
                .map_err(LakeError::table(self.name))?
                .ok_or_else(|| {
                    LakeError::table(self.name)(DeltaTableError::Generic(format!(
                        "commit {version} is listed but cannot be read"
                    )))
                })?;
            for line in commit.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
                let action: LogLine = serde_json::from_slice(line).map_err(|e| {
                    LakeError::table(self.name)(DeltaTableError::Generic(format!(
                        "commit {version}: {e}"
                    )))
                })?;
                if let Some(txn) = action.txn
                    && let Some(offset) = self.offsets.get_mut(&txn.app_id)
                {
                    *offset = Some(txn.version);
                }
                metadata_changed |= action.meta_data.is_some() || action.protocol.is_some();
            }
            self.read_through = version;
        }
        if metadata_changed {
            self.table = BlindDeltaTable::try_new_with_log_store(log_store)
                .await
                .map_err(LakeError::table(self.name))?;
        }
        Ok(())
    }
}

/// Writes `batch` as files of `table` and commits them with `offsets`,
/// fenced on `expected`.
pub async fn append_batch(
    location: &LakeLocation,
    table: LakeTable,
    batch: RecordBatch,
    offsets: Vec<AppOffset>,
    expected: &[(String, Option<i64>)],
) -> Result<u64, LakeError> {
    let mut appender = LogAppender::open(location, table).await?;
    let mut writer = appender.file_writer()?;
    let files = if batch.num_rows() > 0 {
        writer.write(batch).await?;
        writer.flush().await?
    } else {
        Vec::new()
    };
    appender.append(files, offsets, expected).await
}
