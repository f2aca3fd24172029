//! Values across the PostgreSQL wire: Arrow answers as PostgreSQL rows, in
//! text or binary format, and the parameters a client binds as engine values.
//!
//! Decimals travel as `numeric`, exactly: as the engine's own decimal text in
//! text format, and in binary format as PostgreSQL's base-10000 digits built
//! from that same text, so no value passes through a fixed-size decimal type
//! on the way (`Decimal128(38, 9)` holds sums far above what such types
//! hold). Instants are microseconds; timestamps with a time zone are sent in
//! UTC. `COPY … TO STDOUT` sends the same values: binary rows as the binary
//! protocol encodes them, text and CSV rows as the text protocol does.

use std::error::Error;
use std::sync::Arc;

use allot_query::sandbox::pg_catalog::{PgType, pg_type_of};

use super::session::CopyFormat;
use arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use arrow::datatypes::{
    DataType, Date32Type, Float32Type, Float64Type, Int16Type, Int32Type, Int64Type, TimeUnit,
    TimestampMicrosecondType,
};
use arrow::util::display::{ArrayFormatter, FormatOptions};
use bytes::{BufMut, Bytes, BytesMut};
use datafusion::common::ScalarValue;
use pgwire::api::Type;
use pgwire::api::results::{
    CopyCsvOptions, CopyEncoder, CopyTextOptions, DataRowEncoder, FieldFormat, FieldInfo,
};
use pgwire::error::{PgWireError, PgWireResult};
use pgwire::messages::copy::CopyData;
use pgwire::messages::data::DataRow;
use pgwire::types::ToSqlText;
use pgwire::types::format::FormatOptions as PgFormatOptions;
use postgres_types::{IsNull, ToSql, to_sql_checked};

/// Microseconds from the Unix epoch to PostgreSQL's (2000-01-01).
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;
/// Days from the Unix epoch to PostgreSQL's.
const PG_EPOCH_DAYS: i32 = 10_957;

/// The wire type of a PostgreSQL type.
pub fn wire_type(pg: PgType) -> Type {
    Type::from_oid(pg.oid).unwrap_or(Type::TEXT)
}

/// The columns of an answer of `schema`, each in the format `format_of`
/// gives its position.
pub fn fields(
    schema: &arrow::datatypes::Schema,
    format_of: impl Fn(usize) -> FieldFormat,
) -> Vec<FieldInfo> {
    schema
        .fields()
        .iter()
        .enumerate()
        .map(|(index, field)| {
            let pg = pg_type_of(field.data_type());
            FieldInfo::new(
                field.name().clone(),
                None,
                None,
                wire_type(pg),
                format_of(index),
            )
            .with_type_size(pg.len)
        })
        .collect()
}

/// One value of an answer, ready to be written in either format.
#[derive(Debug)]
enum Cell {
    Null,
    Bool(bool),
    I16(i16),
    I32(i32),
    I64(i64),
    F32(f32),
    F64(f64),
    Text(String),
    Bytes(Vec<u8>),
    /// A decimal's exact text, e.g. `-12.500000000`.
    Numeric(String),
    /// Days since the Unix epoch.
    Date(i32),
    /// Microseconds since the Unix epoch; `true` with a time zone (UTC).
    Timestamp(i64, bool),
}

/// A column of a batch, read value by value as [`Cell`]s.
struct Column {
    array: ArrayRef,
}

impl Column {
    fn new(array: &ArrayRef) -> Result<Column, arrow::error::ArrowError> {
        let array = match array.data_type() {
            DataType::Timestamp(unit, tz) if *unit != TimeUnit::Microsecond => {
                arrow::compute::cast(
                    array,
                    &DataType::Timestamp(TimeUnit::Microsecond, tz.clone()),
                )?
            }
            DataType::Date64 => arrow::compute::cast(array, &DataType::Date32)?,
            DataType::Int8 | DataType::UInt8 => arrow::compute::cast(array, &DataType::Int16)?,
            DataType::UInt16 => arrow::compute::cast(array, &DataType::Int32)?,
            DataType::UInt32 => arrow::compute::cast(array, &DataType::Int64)?,
            DataType::Float16 => arrow::compute::cast(array, &DataType::Float32)?,
            DataType::LargeUtf8 | DataType::Utf8View => {
                arrow::compute::cast(array, &DataType::Utf8)?
            }
            DataType::LargeBinary | DataType::BinaryView | DataType::FixedSizeBinary(_) => {
                arrow::compute::cast(array, &DataType::Binary)?
            }
            _ => Arc::clone(array),
        };
        Ok(Column { array })
    }

    /// The formatter of the values [`Column::cell`] reads as text, made once
    /// per batch: making one costs more than formatting a value.
    fn formatter(&self) -> Result<ArrayFormatter<'_>, arrow::error::ArrowError> {
        ArrayFormatter::try_new(self.array.as_ref(), &FormatOptions::default())
    }

    /// The value at `row`; `formatter` is the column's own.
    fn cell(&self, row: usize, formatter: &ArrayFormatter<'_>) -> Cell {
        let array = &self.array;
        if array.is_null(row) {
            return Cell::Null;
        }
        match array.data_type() {
            DataType::Boolean => Cell::Bool(array.as_boolean().value(row)),
            DataType::Int16 => Cell::I16(array.as_primitive::<Int16Type>().value(row)),
            DataType::Int32 => Cell::I32(array.as_primitive::<Int32Type>().value(row)),
            DataType::Int64 => Cell::I64(array.as_primitive::<Int64Type>().value(row)),
            DataType::Float32 => Cell::F32(array.as_primitive::<Float32Type>().value(row)),
            DataType::Float64 => Cell::F64(array.as_primitive::<Float64Type>().value(row)),
            DataType::Utf8 => Cell::Text(array.as_string::<i32>().value(row).to_string()),
            DataType::Binary => Cell::Bytes(array.as_binary::<i32>().value(row).to_vec()),
            DataType::Date32 => Cell::Date(array.as_primitive::<Date32Type>().value(row)),
            DataType::Timestamp(_, tz) => Cell::Timestamp(
                array.as_primitive::<TimestampMicrosecondType>().value(row),
                tz.is_some(),
            ),
            data_type if pg_type_of(data_type).oid == Type::NUMERIC.oid() => {
                Cell::Numeric(formatter.value(row).to_string())
            }
            _ => Cell::Text(formatter.value(row).to_string()),
        }
    }
}

/// The rows of `batch` encoded for `fields` (whose formats say text or
/// binary per column), with the bytes they take.
pub fn rows(
    batch: &RecordBatch,
    fields: &Arc<Vec<FieldInfo>>,
) -> PgWireResult<(Vec<DataRow>, usize)> {
    let columns = columns_of(batch)?;
    let formatters = formatters_of(&columns)?;
    let mut encoder = DataRowEncoder::new(Arc::clone(fields));
    let mut rows = Vec::with_capacity(batch.num_rows());
    let mut bytes = 0;
    for row in 0..batch.num_rows() {
        for (column, formatter) in columns.iter().zip(&formatters) {
            encoder.encode_field(&column.cell(row, formatter))?;
        }
        let encoded = encoder.take_row();
        bytes += encoded.data.len();
        rows.push(encoded);
    }
    Ok((rows, bytes))
}

/// The signature, flags and header extension that open PostgreSQL's binary
/// `COPY` format.
const BINARY_COPY_HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";

/// The end of PostgreSQL's binary `COPY` format: a row of -1 fields.
const BINARY_COPY_TRAILER: &[u8] = &[0xff, 0xff];

/// The rows of an answer as the data of `COPY … TO STDOUT`, a batch at a
/// time, framed as PostgreSQL frames them, which clients rely on: a message
/// per row; CSV's header line a message of its own; binary's signature in
/// the first row's message (or, with no row, in the trailer's).
pub struct CopyRows {
    /// Text and CSV rows; binary rows are written here.
    text: Option<CopyEncoder>,
    /// What comes before the rows, until it is sent: binary's signature, or
    /// CSV's line of column names.
    header: Option<Bytes>,
}

impl CopyRows {
    /// The encoder of `schema`'s rows in `format`.
    pub fn new(schema: &arrow::datatypes::Schema, format: CopyFormat) -> CopyRows {
        let text_fields = || Arc::new(fields(schema, |_| FieldFormat::Text));
        let (text, header) = match format {
            CopyFormat::Binary => (None, Some(Bytes::from_static(BINARY_COPY_HEADER))),
            CopyFormat::Text => (
                Some(CopyEncoder::new_text(
                    text_fields(),
                    CopyTextOptions::default(),
                )),
                None,
            ),
            CopyFormat::Csv { header } => {
                let names = header.then(|| {
                    let names: Vec<String> = schema
                        .fields()
                        .iter()
                        .map(|field| csv_quoted(field.name()))
                        .collect();
                    Bytes::from(format!("{}\n", names.join(",")))
                });
                (
                    Some(CopyEncoder::new_csv(
                        text_fields(),
                        CopyCsvOptions::default(),
                    )),
                    names,
                )
            }
        };
        CopyRows { text, header }
    }

    /// The last message: what has not been sent of the header, and
    /// binary's trailer; none when there is neither.
    pub fn finish(mut self) -> Option<CopyData> {
        let mut data = BytesMut::from(self.header.take().unwrap_or_default().as_ref());
        if self.text.is_none() {
            data.extend_from_slice(BINARY_COPY_TRAILER);
        }
        (!data.is_empty()).then(|| CopyData::new(data.freeze()))
    }

    /// `batch`'s rows, a message each, after the header if it is due.
    pub fn encode(&mut self, batch: &RecordBatch) -> PgWireResult<Vec<CopyData>> {
        let columns = columns_of(batch)?;
        let formatters = formatters_of(&columns)?;
        let mut messages = Vec::with_capacity(batch.num_rows() + 1);
        for row in 0..batch.num_rows() {
            let mut data = BytesMut::new();
            if let Some(header) = self.header.take() {
                data.extend_from_slice(&header);
                if self.text.is_some() {
                    messages.push(CopyData::new(data.split().freeze()));
                }
            }
            match &mut self.text {
                Some(encoder) => {
                    for (column, formatter) in columns.iter().zip(&formatters) {
                        encoder.encode_field(&column.cell(row, formatter))?;
                    }
                    data.extend_from_slice(&encoder.take_copy().data);
                }
                None => {
                    data.put_i16(columns.len() as i16);
                    for (column, formatter) in columns.iter().zip(&formatters) {
                        let cell = column.cell(row, formatter);
                        let length_at = data.len();
                        data.put_i32(-1);
                        let written = cell
                            .to_sql(&Type::UNKNOWN, &mut data)
                            .map_err(PgWireError::ApiError)?;
                        if let IsNull::No = written {
                            let length = (data.len() - length_at - 4) as i32;
                            data[length_at..length_at + 4].copy_from_slice(&length.to_be_bytes());
                        }
                    }
                }
            }
            messages.push(CopyData::new(data.freeze()));
        }
        Ok(messages)
    }
}

/// `name` as a CSV field: quoted when it holds a delimiter, a quote or a
/// line break.
fn csv_quoted(name: &str) -> String {
    if name.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", name.replace('"', "\"\""))
    } else {
        name.to_string()
    }
}

/// The columns of `batch`, to be read value by value.
fn columns_of(batch: &RecordBatch) -> PgWireResult<Vec<Column>> {
    batch
        .columns()
        .iter()
        .map(Column::new)
        .collect::<Result<Vec<_>, _>>()
        .map_err(internal)
}

/// The formatters of `columns`, in their order.
fn formatters_of(columns: &[Column]) -> PgWireResult<Vec<ArrayFormatter<'_>>> {
    columns
        .iter()
        .map(Column::formatter)
        .collect::<Result<Vec<_>, _>>()
        .map_err(internal)
}

fn internal(error: arrow::error::ArrowError) -> pgwire::error::PgWireError {
    pgwire::error::PgWireError::ApiError(Box::new(error))
}

type Boxed = Box<dyn Error + Sync + Send>;

impl ToSql for Cell {
    fn to_sql(&self, _ty: &Type, out: &mut BytesMut) -> Result<IsNull, Boxed> {
        match self {
            Cell::Null => return Ok(IsNull::Yes),
            Cell::Bool(v) => out.put_u8(u8::from(*v)),
            Cell::I16(v) => out.put_i16(*v),
            Cell::I32(v) => out.put_i32(*v),
            Cell::I64(v) => out.put_i64(*v),
            Cell::F32(v) => out.put_f32(*v),
            Cell::F64(v) => out.put_f64(*v),
            Cell::Text(v) => out.put_slice(v.as_bytes()),
            Cell::Bytes(v) => out.put_slice(v),
            Cell::Numeric(v) => numeric_binary(v, out)?,
            Cell::Date(days) => out.put_i32(days - PG_EPOCH_DAYS),
            Cell::Timestamp(micros, _) => out.put_i64(micros - PG_EPOCH_MICROS),
        }
        Ok(IsNull::No)
    }

    fn accepts(_ty: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

impl ToSqlText for Cell {
    fn to_sql_text(
        &self,
        _ty: &Type,
        out: &mut BytesMut,
        _format_options: &PgFormatOptions,
    ) -> Result<IsNull, Boxed> {
        let text = match self {
            Cell::Null => return Ok(IsNull::Yes),
            Cell::Bool(v) => (if *v { "t" } else { "f" }).to_string(),
            Cell::I16(v) => v.to_string(),
            Cell::I32(v) => v.to_string(),
            Cell::I64(v) => v.to_string(),
            Cell::F32(v) => float_text(f64::from(*v), v.to_string()),
            Cell::F64(v) => float_text(*v, v.to_string()),
            Cell::Text(v) | Cell::Numeric(v) => v.clone(),
            Cell::Bytes(v) => format!("\\x{}", hex_of(v)),
            Cell::Date(days) => chrono::DateTime::from_timestamp(i64::from(*days) * 86_400, 0)
                .map(|d| d.format("%Y-%m-%d").to_string())
                .ok_or("date out of range")?,
            Cell::Timestamp(micros, zoned) => timestamp_text(*micros, *zoned)?,
        };
        out.put_slice(text.as_bytes());
        Ok(IsNull::No)
    }
}

/// A float as PostgreSQL writes it (`Infinity`, `NaN`).
fn float_text(value: f64, shown: String) -> String {
    if value.is_nan() {
        "NaN".into()
    } else if value.is_infinite() {
        (if value > 0.0 { "Infinity" } else { "-Infinity" }).into()
    } else {
        shown
    }
}

fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A timestamp as PostgreSQL writes it: `2026-01-02 03:04:05.25`, with `+00`
/// when it has a time zone.
fn timestamp_text(micros: i64, zoned: bool) -> Result<String, Boxed> {
    let instant =
        chrono::DateTime::from_timestamp_micros(micros).ok_or("timestamp out of range")?;
    let mut text = instant.format("%Y-%m-%d %H:%M:%S").to_string();
    let fraction = micros.rem_euclid(1_000_000);
    if fraction != 0 {
        let digits = format!("{fraction:06}");
        text.push('.');
        text.push_str(digits.trim_end_matches('0'));
    }
    if zoned {
        text.push_str("+00");
    }
    Ok(text)
}

/// Writes decimal `text` (`-123.4500`) as PostgreSQL's binary `numeric`:
/// digit count, weight, sign and display scale, then base-10000 digits.
fn numeric_binary(text: &str, out: &mut BytesMut) -> Result<(), Boxed> {
    let (negative, unsigned) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (int, frac) = unsigned.split_once('.').unwrap_or((unsigned, ""));
    if !(int.bytes().all(|b| b.is_ascii_digit()) && frac.bytes().all(|b| b.is_ascii_digit())) {
        return Err(format!("{text:?} is not a decimal").into());
    }
    let int = int.trim_start_matches('0');
    let int_padded = format!("{}{int}", "0".repeat((4 - int.len() % 4) % 4));
    let frac_padded = format!("{frac}{}", "0".repeat((4 - frac.len() % 4) % 4));
    let group = |chunk: &[u8]| {
        chunk
            .iter()
            .fold(0_i16, |acc, digit| acc * 10 + i16::from(digit - b'0'))
    };
    let mut digits: Vec<i16> = int_padded
        .as_bytes()
        .chunks(4)
        .chain(frac_padded.as_bytes().chunks(4))
        .map(group)
        .collect();
    let mut weight = i16::try_from(int_padded.len() / 4).map_err(|_| "decimal too long")? - 1;
    let leading = digits.iter().take_while(|d| **d == 0).count();
    digits.drain(..leading);
    weight -= i16::try_from(leading).map_err(|_| "decimal too long")?;
    while digits.last() == Some(&0) {
        digits.pop();
    }
    if digits.is_empty() {
        weight = 0;
    }
    out.put_i16(i16::try_from(digits.len()).map_err(|_| "decimal too long")?);
    out.put_i16(weight);
    out.put_u16(if negative && !digits.is_empty() {
        0x4000
    } else {
        0
    });
    out.put_i16(i16::try_from(frac.len()).map_err(|_| "decimal too long")?);
    for digit in digits {
        out.put_i16(digit);
    }
    Ok(())
}

/// The decimal text of a binary `numeric` (the inverse of
/// [`numeric_binary`]).
fn numeric_from_binary(bytes: &[u8]) -> Option<String> {
    let word = |i: usize| {
        bytes
            .get(i * 2..i * 2 + 2)
            .map(|b| i16::from_be_bytes([b[0], b[1]]))
    };
    let (count, weight, sign, scale) = (word(0)?, word(1)?, word(2)? as u16, word(3)?);
    if sign == 0xC000 {
        return Some("NaN".into());
    }
    let count = usize::try_from(count).ok()?;
    let digits: Vec<i16> = (0..count).map(|i| word(4 + i)).collect::<Option<_>>()?;
    let digit_at = |position: i32| {
        usize::try_from(position)
            .ok()
            .and_then(|p| digits.get(p).copied())
            .unwrap_or(0)
    };
    let weight = i32::from(weight);
    let mut int = String::new();
    for w in (0..=weight).rev() {
        int.push_str(&format!("{:04}", digit_at(weight - w)));
    }
    let int = int.trim_start_matches('0');
    let scale = usize::try_from(scale).ok()?;
    let mut frac = String::new();
    let mut k = 1;
    while frac.len() < scale {
        frac.push_str(&format!("{:04}", digit_at(weight + k)));
        k += 1;
    }
    frac.truncate(scale);
    let mut text = String::new();
    if sign == 0x4000 {
        text.push('-');
    }
    text.push_str(if int.is_empty() { "0" } else { int });
    if !frac.is_empty() {
        text.push('.');
        text.push_str(&frac);
    }
    Some(text)
}

/// A bound parameter's value, decoded by its declared type (`None` when the
/// client left it to the server) and format. Values of undeclared type, and
/// text forms of decimals and instants, arrive as text, which the sandbox
/// casts to the type the statement gives the parameter.
pub fn parameter(
    bytes: Option<&[u8]>,
    declared: Option<&Type>,
    binary: bool,
) -> Result<ScalarValue, String> {
    let Some(bytes) = bytes else {
        return Ok(ScalarValue::Null);
    };
    let declared = declared.filter(|t| **t != Type::UNKNOWN);
    let fixed = |n: usize| -> Result<&[u8], String> {
        (bytes.len() == n).then_some(bytes).ok_or_else(|| {
            format!(
                "a binary value of {} bytes where {n} were expected",
                bytes.len()
            )
        })
    };
    let text = || {
        std::str::from_utf8(bytes)
            .map(str::to_string)
            .map_err(|_| "the value is not UTF-8 text".to_string())
    };
    let parsed = |what: &str| format!("{:?} is not {what}", String::from_utf8_lossy(bytes));
    if binary {
        let Some(declared) = declared else {
            return Err("a binary value needs a declared type".into());
        };
        return Ok(match *declared {
            Type::BOOL => ScalarValue::Boolean(Some(fixed(1)?[0] != 0)),
            Type::INT2 => ScalarValue::Int16(Some(i16::from_be_bytes(
                fixed(2)?.try_into().map_err(|_| "int2")?,
            ))),
            Type::INT4 => ScalarValue::Int32(Some(i32::from_be_bytes(
                fixed(4)?.try_into().map_err(|_| "int4")?,
            ))),
            Type::INT8 => ScalarValue::Int64(Some(i64::from_be_bytes(
                fixed(8)?.try_into().map_err(|_| "int8")?,
            ))),
            Type::FLOAT4 => ScalarValue::Float32(Some(f32::from_be_bytes(
                fixed(4)?.try_into().map_err(|_| "float4")?,
            ))),
            Type::FLOAT8 => ScalarValue::Float64(Some(f64::from_be_bytes(
                fixed(8)?.try_into().map_err(|_| "float8")?,
            ))),
            Type::NUMERIC => ScalarValue::Utf8(Some(
                numeric_from_binary(bytes).ok_or("a binary numeric that does not parse")?,
            )),
            Type::DATE => ScalarValue::Date32(Some(
                i32::from_be_bytes(fixed(4)?.try_into().map_err(|_| "date")?) + PG_EPOCH_DAYS,
            )),
            Type::TIMESTAMP | Type::TIMESTAMPTZ => {
                let micros = i64::from_be_bytes(fixed(8)?.try_into().map_err(|_| "timestamp")?);
                let zone = (*declared == Type::TIMESTAMPTZ).then(|| Arc::from("+00:00"));
                ScalarValue::TimestampMicrosecond(Some(micros + PG_EPOCH_MICROS), zone)
            }
            Type::TEXT | Type::VARCHAR | Type::NAME | Type::BPCHAR => {
                ScalarValue::Utf8(Some(text()?))
            }
            ref other => {
                return Err(format!(
                    "type {} in binary format is not supported",
                    other.name()
                ));
            }
        });
    }
    let value = text()?;
    Ok(match declared {
        Some(&Type::BOOL) => {
            ScalarValue::Boolean(Some(match value.trim().to_lowercase().as_str() {
                "t" | "true" | "1" | "yes" | "on" | "y" => true,
                "f" | "false" | "0" | "no" | "off" | "n" => false,
                _ => return Err(parsed("a boolean")),
            }))
        }
        Some(&Type::INT2) => {
            ScalarValue::Int16(Some(value.trim().parse().map_err(|_| parsed("an int2"))?))
        }
        Some(&Type::INT4) => {
            ScalarValue::Int32(Some(value.trim().parse().map_err(|_| parsed("an int4"))?))
        }
        Some(&Type::INT8) => {
            ScalarValue::Int64(Some(value.trim().parse().map_err(|_| parsed("an int8"))?))
        }
        Some(&Type::FLOAT4) => {
            ScalarValue::Float32(Some(value.trim().parse().map_err(|_| parsed("a float4"))?))
        }
        Some(&Type::FLOAT8) => {
            ScalarValue::Float64(Some(value.trim().parse().map_err(|_| parsed("a float8"))?))
        }
        _ => ScalarValue::Utf8(Some(value)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binary(text: &str) -> Vec<u8> {
        let mut out = BytesMut::new();
        numeric_binary(text, &mut out).unwrap();
        out.to_vec()
    }

    #[test]
    fn numeric_binary_is_base_10000_digits_and_reads_back_exactly() {
        // 12345.678: digits [1, 2345, 6780], weight 1, scale 3.
        assert_eq!(
            binary("12345.678"),
            [0, 3, 0, 1, 0, 0, 0, 3, 0, 1, 0x09, 0x29, 0x1a, 0x7c]
        );
        for text in [
            "0",
            "0.000000000",
            "-0.000100000",
            "1.5",
            "10000",
            "-98765432109876543210.123456789",
            // Above 7.9·10^28, where 96-bit decimal types stop.
            "99999999999999999999999999999.999999999",
            "123456789012345678901234567890.000000001",
        ] {
            let read = numeric_from_binary(&binary(text)).unwrap();
            assert_eq!(read, text, "{text}");
        }
    }
}
