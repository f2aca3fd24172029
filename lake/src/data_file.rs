//! The lake's Parquet data files: how every writer encodes them
//! ([`writer_properties`]), and reading one directly, without a query engine,
//! for the writer's duplicate checks, compaction and erasure, which need a
//! column or two of a known file.

use arrow::array::AsArray;
use deltalake::logstore::object_store::ObjectStoreExt;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use parquet::schema::types::ColumnPath;

use crate::error::LakeError;

/// The codec of every Parquet file allot writes;
/// `docs/decisions/0016-parquet-codec-lz4.md` has the measurements it was
/// chosen by.
pub const CODEC: Compression = Compression::LZ4_RAW;

/// Columns whose values are (nearly) all distinct: the event id and the
/// source (file line or Kafka offset) of every event or rejection. A dictionary
/// would cost a hash lookup per value and hold every value twice, to save nothing.
const DISTINCT_COLUMNS: [&str; 2] = ["event_id", "source"];

/// How every Parquet file of the lake is written, by appends, compaction,
/// rollups and erasure alike: [`CODEC`], and plain encoding for the columns of
/// distinct values; everything else is the Parquet writer's default.
pub fn writer_properties() -> WriterProperties {
    DISTINCT_COLUMNS
        .iter()
        .fold(
            WriterProperties::builder().set_compression(CODEC),
            |builder, column| {
                builder.set_column_dictionary_enabled(ColumnPath::from(*column), false)
            },
        )
        .build()
}

/// Fetches a Parquet file of the lake and opens it for reading.
pub async fn open_lake_parquet(
    store: &deltalake::logstore::ObjectStoreRef,
    path: &deltalake::Path,
) -> Result<
    ParquetRecordBatchReaderBuilder<impl parquet::file::reader::ChunkReader + use<>>,
    LakeError,
> {
    let file_error = |source| LakeError::File {
        path: path.to_string(),
        source,
    };
    let object_error = |e: deltalake::ObjectStoreError| {
        file_error(parquet::errors::ParquetError::External(Box::new(e)))
    };
    let bytes = store
        .get(path)
        .await
        .map_err(object_error)?
        .bytes()
        .await
        .map_err(object_error)?;
    ParquetRecordBatchReaderBuilder::try_new(bytes).map_err(file_error)
}

/// Reads one string column of a Parquet file of the lake into `sink`.
pub async fn read_string_column(
    store: deltalake::logstore::ObjectStoreRef,
    path: &deltalake::Path,
    column: &str,
    mut sink: impl FnMut(&str),
) -> Result<(), LakeError> {
    let file_error = |source| LakeError::File {
        path: path.to_string(),
        source,
    };
    let builder = open_lake_parquet(&store, path).await?;
    let mask = ProjectionMask::columns(builder.parquet_schema(), [column]);
    for batch in builder.with_projection(mask).build().map_err(file_error)? {
        let batch = batch?;
        let values = batch.column(0);
        if let Some(strings) = values.as_string_opt::<i32>() {
            strings.iter().flatten().for_each(&mut sink);
        } else if let Some(views) = values.as_string_view_opt() {
            views.iter().flatten().for_each(&mut sink);
        }
    }
    Ok(())
}
