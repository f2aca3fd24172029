//! Reading one Parquet data file of the lake directly, without a query engine:
//! for the writer's duplicate checks, compaction and erasure, which need a
//! column or two of a known file.

use arrow::array::AsArray;
use deltalake::logstore::object_store::ObjectStoreExt;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::error::LakeError;

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
