//! A DataFusion table over an explicit list of lake files.
//!
//! [`LakeFilesTable`] holds the files it may read and nothing else: it never lists
//! a directory, so a table built from one tenant's files cannot reach another
//! tenant's data whatever the query says (docs/reference.md#security-model), and files removed by
//! compaction are never read. Filters on the partition columns (`tenant_id`,
//! `day`) prune files before the scan and are answered exactly; other filters are
//! passed on to the Parquet reader.

use std::fmt;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use arrow_schema::{FieldRef, Schema, SchemaRef};
use async_trait::async_trait;
use datafusion::catalog::Session;
use datafusion::common::{DFSchema, Result as DfResult, ScalarValue};
use datafusion::config::TableParquetOptions;
use datafusion::datasource::TableType;
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfigBuilder, ParquetSource};
use datafusion::datasource::source::DataSourceExec;
use datafusion::datasource::table_schema::TableSchema;
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::logical_expr::utils::conjunction;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::empty::EmptyExec;

use crate::snapshot::LakeFile;

/// A read-only table over a fixed set of Parquet files of one lake table.
pub struct LakeFilesTable {
    schema: SchemaRef,
    file_schema: SchemaRef,
    partition_fields: Vec<FieldRef>,
    store_url: ObjectStoreUrl,
    files: Arc<Vec<LakeFile>>,
}

impl fmt::Debug for LakeFilesTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LakeFilesTable")
            .field("files", &self.files.len())
            .finish()
    }
}

impl LakeFilesTable {
    /// A table with `schema` (file columns first, then `partition_columns`) over
    /// `files`, read through the object store registered at `store_url`.
    pub fn new(
        schema: SchemaRef,
        partition_columns: &[&str],
        store_url: ObjectStoreUrl,
        files: Vec<LakeFile>,
    ) -> LakeFilesTable {
        let is_partition = |name: &str| partition_columns.contains(&name);
        let file_fields: Vec<FieldRef> = schema
            .fields()
            .iter()
            .filter(|f| !is_partition(f.name()))
            .cloned()
            .collect();
        let partition_fields: Vec<FieldRef> = partition_columns
            .iter()
            .filter_map(|name| schema.field_with_name(name).ok())
            .map(|f| Arc::new(f.clone()))
            .collect();
        LakeFilesTable {
            file_schema: Arc::new(Schema::new(file_fields)),
            partition_fields,
            schema,
            store_url,
            files: Arc::new(files),
        }
    }

    fn partition_names(&self) -> Vec<&str> {
        self.partition_fields
            .iter()
            .map(|f| f.name().as_str())
            .collect()
    }

    /// Whether `expr` only reads partition columns, so it can prune whole files.
    fn is_partition_filter(&self, expr: &Expr) -> bool {
        let names = self.partition_names();
        let columns = expr.column_refs();
        !columns.is_empty()
            && columns.iter().all(|c| names.contains(&c.name.as_str()))
            && !expr.is_volatile()
    }

    /// The files whose partition values satisfy every partition filter.
    fn prune(&self, state: &dyn Session, filters: &[Expr]) -> DfResult<Vec<LakeFile>> {
        let partition_filters: Vec<Expr> = filters
            .iter()
            .filter(|f| self.is_partition_filter(f))
            .cloned()
            .collect();
        let Some(predicate) = conjunction(partition_filters) else {
            return Ok(self.files.as_ref().clone());
        };
        if self.files.is_empty() {
            return Ok(Vec::new());
        }
        let partition_schema = Arc::new(Schema::new(self.partition_fields.clone()));
        let columns: Vec<ArrayRef> = (0..self.partition_fields.len())
            .map(|i| {
                ScalarValue::iter_to_array(
                    self.files
                        .iter()
                        .map(|f| f.partition_values().swap_remove(i)),
                )
            })
            .collect::<DfResult<_>>()?;
        let batch = RecordBatch::try_new(partition_schema.clone(), columns)?;
        let df_schema = DFSchema::try_from(partition_schema)?;
        let physical = state.create_physical_expr(predicate, &df_schema)?;
        let mask = physical.evaluate(&batch)?.into_array(batch.num_rows())?;
        let mask = mask.as_boolean();
        Ok(self
            .files
            .iter()
            .enumerate()
            .filter(|(i, _)| mask.is_valid(*i) && mask.value(*i))
            .map(|(_, f)| f.clone())
            .collect())
    }
}

/// Spreads files over `groups` groups of similar total size (largest first).
fn balance(files: Vec<LakeFile>, groups: usize) -> Vec<FileGroup> {
    let groups = groups.max(1).min(files.len().max(1));
    let mut sorted = files;
    sorted.sort_by(|a, b| b.size.cmp(&a.size).then_with(|| a.path.cmp(&b.path)));
    let mut buckets: Vec<(u64, Vec<PartitionedFile>)> = vec![(0, Vec::new()); groups];
    for file in sorted {
        let (total, members) = buckets
            .iter_mut()
            .min_by_key(|(total, _)| *total)
            .expect("at least one group");
        *total += file.size;
        let mut partitioned = PartitionedFile::new(file.path.clone(), file.size);
        partitioned.partition_values = file.partition_values();
        members.push(partitioned);
    }
    buckets
        .into_iter()
        .filter(|(_, members)| !members.is_empty())
        .map(|(_, members)| FileGroup::new(members))
        .collect()
}

#[async_trait]
impl datafusion::catalog::TableProvider for LakeFilesTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let files = self.prune(state, filters)?;
        if files.is_empty() {
            let projected = match projection {
                Some(indices) => Arc::new(self.schema.project(indices)?),
                None => self.schema.clone(),
            };
            return Ok(Arc::new(EmptyExec::new(projected)));
        }
        // A limit may only stop the scan early when no filter remains to apply.
        let exact = filters.iter().all(|f| self.is_partition_filter(f));
        let parquet = TableParquetOptions {
            global: state.config_options().execution.parquet.clone(),
            ..TableParquetOptions::default()
        };
        let table_schema = TableSchema::builder(self.file_schema.clone())
            .with_table_partition_cols(self.partition_fields.clone())
            .build();
        let source = ParquetSource::new(table_schema).with_table_parquet_options(parquet);
        let groups = balance(files, state.config_options().execution.target_partitions);
        let config = FileScanConfigBuilder::new(self.store_url.clone(), Arc::new(source))
            .with_file_groups(groups)
            .with_projection_indices(projection.cloned())?
            .with_limit(if exact { limit } else { None })
            .build();
        Ok(DataSourceExec::from_data_source(config))
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> DfResult<Vec<TableProviderFilterPushDown>> {
        Ok(filters
            .iter()
            .map(|f| {
                if self.is_partition_filter(f) {
                    TableProviderFilterPushDown::Exact
                } else {
                    TableProviderFilterPushDown::Inexact
                }
            })
            .collect())
    }
}
