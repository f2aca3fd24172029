//! How a rejected line is known again: by its content, never its input's name.

use allot_lake::LakeError;
use allot_schemas::layout::{LakeTable, Provenance};
use arrow::array::{AsArray, RecordBatch};

use crate::error::IngestError;

/// What identifies a rejection in a backfill's input: its place (the line of a
/// file, whatever name the file was given; a Kafka source as a whole) and a
/// digest of its bytes (the first 4 KiB `rejected_events` keeps, and the full
/// length). The same input read again gives the same keys, so a rerun records
/// nothing twice; a different input under the same name (every `--from-file -`)
/// differs in its bytes, so its rejections are recorded even at line numbers
/// rejected before. It is computed from the stored columns, so rows recorded
/// before it existed count too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct RejectionKey([u8; 16]);

impl RejectionKey {
    /// The columns of `rejected_events` a key is computed from.
    pub(super) const COLUMNS: [&'static str; 3] = ["source", "raw", "raw_len"];

    pub(super) fn new(source: &str, raw: &[u8], raw_len: i64) -> RejectionKey {
        use sha2::Digest as _;
        // A file's line keys on its line only, never the file's name.
        let place = match Provenance::parse(source) {
            Ok(Provenance::File { line, .. }) => format!("line:{line}"),
            _ => source.to_string(),
        };
        let mut digest = sha2::Sha256::new();
        for part in [place.as_bytes(), &raw_len.to_le_bytes(), raw] {
            digest.update((part.len() as u64).to_le_bytes());
            digest.update(part);
        }
        let mut key = [0; 16];
        key.copy_from_slice(&digest.finalize()[..16]);
        RejectionKey(key)
    }

    /// The key of every row of a `rejected_events` batch (or of a projection
    /// of it onto [`RejectionKey::COLUMNS`]).
    pub(super) fn of_rows(batch: &RecordBatch) -> Result<Vec<RejectionKey>, IngestError> {
        use arrow::datatypes::DataType;
        let column = |name: &str, to: &DataType| -> Result<arrow::array::ArrayRef, IngestError> {
            let found = batch
                .column_by_name(name)
                .ok_or_else(|| LakeError::Unreadable {
                    table: LakeTable::RejectedEvents.dir_name(),
                    message: format!("no {name} column"),
                })?;
            Ok(arrow::compute::cast(found, to).map_err(LakeError::from)?)
        };
        let sources = column("source", &DataType::Utf8)?;
        let raws = column("raw", &DataType::Binary)?;
        let lens = column("raw_len", &DataType::Int64)?;
        let (sources, raws, lens) = (
            sources.as_string::<i32>(),
            raws.as_binary::<i32>(),
            lens.as_primitive::<arrow::datatypes::Int64Type>(),
        );
        Ok((0..batch.num_rows())
            .map(|row| RejectionKey::new(sources.value(row), raws.value(row), lens.value(row)))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    pub(super) fn rejections_are_known_by_their_line_and_bytes_not_their_file_name() {
        let key = RejectionKey::new;
        // The same line of the same bytes, whatever the input was called.
        assert_eq!(key("file:-:3", b"{x", 2), key("file:a:b.jsonl:3", b"{x", 2));
        // Another input with the same name: other bytes, another rejection.
        assert_ne!(key("file:-:3", b"{x", 2), key("file:-:3", b"{y", 2));
        assert_ne!(key("file:-:3", b"{x", 2), key("file:-:4", b"{x", 2));
        // A longer line kept as the same 4 KiB prefix.
        assert_ne!(key("file:-:3", b"{x", 2), key("file:-:3", b"{x", 9_000));
        assert_ne!(key("kafka:t/0@3", b"{x", 2), key("file:-:3", b"{x", 2));
    }
}
