//! Measures Parquet compression codecs on a lake's own data files.
//!
//! Reads every Parquet file under a directory (a `usage_events` table written by
//! `allot ingest`), then encodes each file again, in memory, with each codec
//! allot could write (snappy, zstd level 1, lz4, none) and otherwise the settings
//! the file was written with (dictionary or plain, column by column, as its
//! metadata says), and decodes the result. It prints, per codec, the total
//! encoded size and the median over three rounds of the time to encode and
//! decode every file on one thread, so the codec choice in
//! `docs/decisions/0016-parquet-codec-lz4.md` rests on figures from the files users get. `scripts/bench-codecs` runs it.
//!
//! ```text
//! parquet_codecs LAKE/usage_events
//! ```

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::Encoding;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::{WriterProperties, WriterPropertiesBuilder};
use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::schema::types::ColumnPath;

type Failure = Box<dyn std::error::Error>;

fn main() -> Result<(), Failure> {
    let Some(dir) = std::env::args().nth(1) else {
        eprintln!("usage: parquet_codecs DIR (a table directory of Parquet files)");
        std::process::exit(2);
    };
    let mut paths = Vec::new();
    parquet_files(Path::new(&dir), &mut paths)?;
    paths.sort();
    let contents: Vec<Vec<u8>> = paths.iter().map(std::fs::read).collect::<Result<_, _>>()?;
    let Some(first) = contents.first() else {
        eprintln!("parquet_codecs: no Parquet file under {dir}");
        std::process::exit(2);
    };
    let plain = plain_columns(first)?;
    println!("columns written without a dictionary: {}", plain.join(", "));
    let files: Vec<Vec<RecordBatch>> = contents
        .iter()
        .map(|bytes| read_batches(bytes))
        .collect::<Result<_, Failure>>()?;
    let rows: usize = files.iter().flatten().map(RecordBatch::num_rows).sum();
    println!("{} files, {rows} rows", files.len());
    println!(
        "{:<10} {:>12} {:>12} {:>14} {:>14}",
        "codec", "bytes", "bytes/row", "encode ns/row", "decode ns/row"
    );
    let codecs = [
        ("snappy", Compression::SNAPPY),
        ("zstd(1)", Compression::ZSTD(ZstdLevel::try_new(1)?)),
        ("lz4_raw", Compression::LZ4_RAW),
        ("none", Compression::UNCOMPRESSED),
    ];
    for (name, codec) in codecs {
        let properties = plain
            .iter()
            .fold(
                WriterProperties::builder().set_compression(codec),
                |builder: WriterPropertiesBuilder, column| {
                    builder.set_column_dictionary_enabled(ColumnPath::from(column.as_str()), false)
                },
            )
            .build();
        let mut encode_times = Vec::new();
        let mut decode_times = Vec::new();
        let mut size = 0;
        for _ in 0..3 {
            let started = Instant::now();
            let encoded: Vec<Vec<u8>> = files
                .iter()
                .map(|batches| encode(batches, &properties))
                .collect::<Result<_, Failure>>()?;
            encode_times.push(started.elapsed());
            size = encoded.iter().map(Vec::len).sum::<usize>();
            let started = Instant::now();
            for bytes in &encoded {
                read_batches(bytes)?;
            }
            decode_times.push(started.elapsed());
        }
        let per_row = |times: &mut Vec<Duration>| {
            times.sort();
            times[1].as_nanos() as f64 / rows.max(1) as f64
        };
        println!(
            "{name:<10} {size:>12} {:>12.1} {:>14.0} {:>14.0}",
            size as f64 / rows.max(1) as f64,
            per_row(&mut encode_times),
            per_row(&mut decode_times),
        );
    }
    Ok(())
}

/// Every `*.parquet` file under `dir`, recursively.
fn parquet_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), Failure> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            parquet_files(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "parquet") {
            out.push(path);
        }
    }
    Ok(())
}

/// The columns of a Parquet file's first row group written without a dictionary.
fn plain_columns(bytes: &[u8]) -> Result<Vec<String>, Failure> {
    let reader = SerializedFileReader::new(bytes::Bytes::copy_from_slice(bytes))?;
    let Some(group) = reader.metadata().row_groups().first() else {
        return Ok(Vec::new());
    };
    Ok(group
        .columns()
        .iter()
        .filter(|chunk| {
            chunk.dictionary_page_offset().is_none()
                && !chunk.encodings().any(|e| e == Encoding::RLE_DICTIONARY)
        })
        .map(|chunk| chunk.column_path().string())
        .collect())
}

fn read_batches(bytes: &[u8]) -> Result<Vec<RecordBatch>, Failure> {
    let reader =
        ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::copy_from_slice(bytes))?.build()?;
    Ok(reader.collect::<Result<_, _>>()?)
}

fn encode(batches: &[RecordBatch], properties: &WriterProperties) -> Result<Vec<u8>, Failure> {
    let Some(first) = batches.first() else {
        return Ok(Vec::new());
    };
    let mut writer = ArrowWriter::try_new(Vec::new(), first.schema(), Some(properties.clone()))?;
    for batch in batches {
        writer.write(batch)?;
    }
    Ok(writer.into_inner()?)
}
