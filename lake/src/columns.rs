//! Reading the engine's record batches column by column: each column cast to
//! the one Arrow type the code reads it as, since the engine may hand out
//! another encoding of the same values (string views, dictionaries), and the
//! lake's decimal values read as exact decimals.

use allot_schemas::decimal::VALUE_SCALE;
use allot_schemas::table_schema::VALUE_PRECISION;
use arrow::array::{ArrayRef, AsArray, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Decimal128Type, TimeUnit};
use bigdecimal::BigDecimal;
use bigdecimal::num_bigint::BigInt;

use crate::error::LakeError;

/// Column `i` of `batch` as `data_type`.
pub fn typed(batch: &RecordBatch, i: usize, data_type: &DataType) -> Result<ArrayRef, LakeError> {
    arrow::compute::cast(batch.column(i), data_type).map_err(LakeError::from)
}

/// Column `i` of `batch` as text.
pub fn string_column(batch: &RecordBatch, i: usize) -> Result<StringArray, LakeError> {
    Ok(typed(batch, i, &DataType::Utf8)?.as_string::<i32>().clone())
}

/// The lake's timestamps: microseconds, UTC.
pub fn utc_micros() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

/// The lake's quantities: `Decimal128(38, 9)`.
pub fn value_type() -> DataType {
    DataType::Decimal128(VALUE_PRECISION, VALUE_SCALE as i8)
}

/// The quantity at `row` of `array`, a column of [`value_type`].
pub fn decimal_at(array: &ArrayRef, row: usize) -> BigDecimal {
    let raw = array.as_primitive::<Decimal128Type>().value(row);
    BigDecimal::new(BigInt::from(raw), i64::from(VALUE_SCALE))
}
