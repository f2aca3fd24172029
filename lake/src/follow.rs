//! The lake kept in memory by a long-lived reader (`allot serve`,
//! docs/reference.md#serving).
//!
//! [`LakeFollower::open`] loads each table once, from its last checkpoint;
//! [`LakeFollower::refresh`] then reads only the commits written since (Delta's
//! incremental update) and rebuilds a table's file list only when its version
//! moved. Each [`LakeSnapshot`] it hands out is one consistent set of table
//! versions ([`LakeVersions`]), shared behind an `Arc` by every request that
//! reads it, so no request replays a log.

use std::sync::Arc;

use allot_schemas::layout::{LakeLocation, LakeTable};
use deltalake::DeltaTable;

use crate::error::LakeError;
use crate::snapshot::{
    ClosedBooks, LakeSnapshot, OpenedTable, TableFiles, open_table, table_files, unreadable,
};

/// The table versions one snapshot was read at (`None`: no such table yet).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct LakeVersions {
    /// `usage_events`.
    pub usage: Option<u64>,
    /// `rejected_events`.
    pub rejected: Option<u64>,
    /// `usage_hourly`.
    pub hourly: Option<u64>,
    /// `closings`, the commit point of a period close (docs/reference.md#closing-a-month): a close
    /// writes its `invoices` and `allocations` rows first, so this version
    /// moves whenever a closed month's figures can.
    pub closings: Option<u64>,
}

/// The lake's tables, loaded once and brought forward commit by commit.
pub struct LakeFollower {
    location: LakeLocation,
    usage: FollowedTable,
    rejected: FollowedTable,
    hourly: FollowedTable,
    closings: FollowedTable,
    /// The closed months' rows, read again when `closings` moves.
    closed: Arc<ClosedBooks>,
    snapshot: Arc<LakeSnapshot>,
    /// The versions `snapshot` holds (with that of `closings`).
    snapshot_versions: LakeVersions,
}

impl LakeFollower {
    /// Loads every table at its latest version. A lake without `usage_events`
    /// is [`LakeError::NoLake`], as for [`LakeSnapshot::load`].
    pub async fn open(location: &LakeLocation) -> Result<LakeFollower, LakeError> {
        let usage = FollowedTable::open(location, LakeTable::UsageEvents, true).await?;
        if usage.delta.is_none() {
            return Err(LakeError::NoLake);
        }
        let rejected = FollowedTable::open(location, LakeTable::RejectedEvents, true).await?;
        let hourly = FollowedTable::open(location, LakeTable::UsageHourly, true).await?;
        let closings = FollowedTable::open(location, LakeTable::Closings, false).await?;
        let closed = Arc::new(ClosedBooks::load(location).await?);
        let snapshot = Arc::new(LakeSnapshot {
            usage: usage.files.clone(),
            rejected: rejected.files.clone(),
            hourly: hourly.files.clone(),
            closed: Arc::clone(&closed),
        });
        let mut follower = LakeFollower {
            location: location.clone(),
            usage,
            rejected,
            hourly,
            closings,
            closed,
            snapshot,
            snapshot_versions: LakeVersions::default(),
        };
        follower.snapshot_versions = follower.versions();
        Ok(follower)
    }

    /// Reads the commits made since the last load or refresh, and whether the
    /// snapshot moved. On an error the snapshot stays the one it was; the next
    /// refresh catches up.
    pub async fn refresh(&mut self) -> Result<bool, LakeError> {
        for followed in [
            &mut self.usage,
            &mut self.rejected,
            &mut self.hourly,
            &mut self.closings,
        ] {
            followed.refresh(&self.location).await?;
        }
        let versions = self.versions();
        if versions == self.snapshot_versions {
            return Ok(false);
        }
        if versions.closings != self.snapshot_versions.closings {
            self.closed = Arc::new(ClosedBooks::load(&self.location).await?);
        }
        self.snapshot = Arc::new(LakeSnapshot {
            usage: self.usage.files.clone(),
            rejected: self.rejected.files.clone(),
            hourly: self.hourly.files.clone(),
            closed: Arc::clone(&self.closed),
        });
        self.snapshot_versions = versions;
        Ok(true)
    }

    /// The current snapshot.
    pub fn snapshot(&self) -> Arc<LakeSnapshot> {
        Arc::clone(&self.snapshot)
    }

    /// The versions of [`LakeFollower::snapshot`] and of `closings`.
    pub fn versions(&self) -> LakeVersions {
        LakeVersions {
            usage: self.usage.files.version,
            rejected: self.rejected.files.version,
            hourly: self.hourly.files.version,
            closings: self.closings.files.version,
        }
    }
}

/// One table and its file list at the loaded version.
struct FollowedTable {
    table: LakeTable,
    /// Whether its active files are listed (`closings` is only versioned).
    lists_files: bool,
    /// `None` while the table does not exist.
    delta: Option<DeltaTable>,
    files: TableFiles,
}

impl FollowedTable {
    async fn open(
        location: &LakeLocation,
        table: LakeTable,
        lists_files: bool,
    ) -> Result<FollowedTable, LakeError> {
        let (delta, files) = match open_table(location, table, None).await? {
            OpenedTable::Found(delta) => {
                let files = FollowedTable::files_of(table, lists_files, &delta)?;
                (Some(delta), files)
            }
            OpenedTable::Missing(store) => (None, TableFiles::missing(table, store)),
        };
        Ok(FollowedTable {
            table,
            lists_files,
            delta,
            files,
        })
    }

    fn files_of(
        table: LakeTable,
        lists_files: bool,
        delta: &DeltaTable,
    ) -> Result<TableFiles, LakeError> {
        if lists_files {
            return table_files(table, delta);
        }
        Ok(TableFiles {
            version: delta.version(),
            ..TableFiles::missing(table, delta.log_store().object_store(None))
        })
    }

    /// Reads the commits since the loaded version (or looks for a table that
    /// did not exist yet).
    async fn refresh(&mut self, location: &LakeLocation) -> Result<(), LakeError> {
        let Some(delta) = self.delta.as_mut() else {
            *self = FollowedTable::open(location, self.table, self.lists_files).await?;
            return Ok(());
        };
        let before = delta.version();
        delta
            .update_incremental(None)
            .await
            .map_err(|e| unreadable(self.table, e))?;
        if delta.version() != before {
            self.files = FollowedTable::files_of(self.table, self.lists_files, delta)?;
        }
        Ok(())
    }
}
