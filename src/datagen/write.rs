//! Output sinks: Parquet (all-Utf8 columns, ZSTD) and CSV (UTF-8 or GBK),
//! buffered in bounded batches and written under a temporary name that is
//! renamed to the final name only when the file is complete.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::builder::StringBuilder;
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;

use super::{BATCH_ROWS, GenError};

/// A file being written: removed on drop unless committed.
struct PendingFile {
    tmp: PathBuf,
    path: PathBuf,
    committed: bool,
}

impl PendingFile {
    fn new(dir: &Path, name: &str) -> Self {
        PendingFile {
            tmp: dir.join(format!(".{name}.partial")),
            path: dir.join(name),
            committed: false,
        }
    }

    fn create(&self) -> Result<File, GenError> {
        File::create(&self.tmp).map_err(|source| GenError::io(&self.tmp, source))
    }

    /// Sync the finished file and move it to its final name.
    fn commit(&mut self, file: &File) -> Result<PathBuf, GenError> {
        file.sync_all()
            .map_err(|source| GenError::io(&self.tmp, source))?;
        std::fs::rename(&self.tmp, &self.path)
            .map_err(|source| GenError::io(&self.path, source))?;
        self.committed = true;
        Ok(self.path.clone())
    }
}

impl Drop for PendingFile {
    fn drop(&mut self) {
        if !self.committed {
            // Best effort: a leftover `.partial` file is harmless.
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// A Parquet file of non-null `Utf8` columns, one row group per batch.
pub(crate) struct ParquetSink {
    file: PendingFile,
    schema: SchemaRef,
    writer: Option<ArrowWriter<File>>,
    builders: Vec<StringBuilder>,
    buffered: usize,
    rows: usize,
}

impl ParquetSink {
    pub(crate) fn create(dir: &Path, name: &str, columns: &[&str]) -> Result<Self, GenError> {
        let file = PendingFile::new(dir, name);
        let schema: SchemaRef = Arc::new(Schema::new(
            columns
                .iter()
                .map(|c| Field::new(*c, DataType::Utf8, false))
                .collect::<Vec<_>>(),
        ));
        let props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(ZstdLevel::default()))
            .set_max_row_group_row_count(Some(BATCH_ROWS))
            .build();
        let out = file.create()?;
        let writer = ArrowWriter::try_new(out, schema.clone(), Some(props))
            .map_err(|source| GenError::parquet(&file.tmp, source))?;
        Ok(ParquetSink {
            builders: columns.iter().map(|_| StringBuilder::new()).collect(),
            file,
            schema,
            writer: Some(writer),
            buffered: 0,
            rows: 0,
        })
    }

    /// Append one row (one value per column).
    pub(crate) fn push(&mut self, row: &[&str]) -> Result<(), GenError> {
        debug_assert_eq!(row.len(), self.builders.len());
        for (builder, value) in self.builders.iter_mut().zip(row) {
            builder.append_value(value);
        }
        self.buffered += 1;
        self.rows += 1;
        if self.buffered >= BATCH_ROWS {
            self.flush_batch()?;
        }
        Ok(())
    }

    fn flush_batch(&mut self) -> Result<(), GenError> {
        if self.buffered == 0 {
            return Ok(());
        }
        let arrays: Vec<ArrayRef> = self
            .builders
            .iter_mut()
            .map(|b| Arc::new(b.finish()) as ArrayRef)
            .collect();
        let batch = RecordBatch::try_new(self.schema.clone(), arrays)
            .map_err(|source| GenError::arrow(&self.file.tmp, source))?;
        if let Some(writer) = self.writer.as_mut() {
            writer
                .write(&batch)
                .map_err(|source| GenError::parquet(&self.file.tmp, source))?;
        }
        self.buffered = 0;
        Ok(())
    }

    /// Write the footer, rename into place; returns the path and row count.
    pub(crate) fn finish(mut self) -> Result<(PathBuf, usize), GenError> {
        self.flush_batch()?;
        let writer = self
            .writer
            .take()
            .expect("finish consumes the sink, so the writer is still present");
        let out = writer
            .into_inner()
            .map_err(|source| GenError::parquet(&self.file.tmp, source))?;
        let path = self.file.commit(&out)?;
        Ok((path, self.rows))
    }
}

/// Text encoding of a CSV file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TextEncoding {
    Utf8,
    /// GBK via encoding_rs; an unencodable character is an error, never an
    /// HTML numeric reference in the file.
    Gbk,
}

/// A CSV file, encoded chunk by chunk.
pub(crate) struct CsvSink {
    file: PendingFile,
    encoding: TextEncoding,
    out: BufWriter<File>,
    chunk: csv::Writer<Vec<u8>>,
    buffered: usize,
    rows: usize,
}

fn chunk_writer(encoding: TextEncoding) -> csv::Writer<Vec<u8>> {
    // Windows-era GBK exports end lines with CRLF; the UTF-8 ones with LF.
    let terminator = match encoding {
        TextEncoding::Gbk => csv::Terminator::CRLF,
        TextEncoding::Utf8 => csv::Terminator::Any(b'\n'),
    };
    csv::WriterBuilder::new()
        .has_headers(false)
        .terminator(terminator)
        .from_writer(Vec::with_capacity(1 << 20))
}

impl CsvSink {
    pub(crate) fn create(
        dir: &Path,
        name: &str,
        encoding: TextEncoding,
        header: &[&str],
    ) -> Result<Self, GenError> {
        let file = PendingFile::new(dir, name);
        let out = BufWriter::new(file.create()?);
        let mut sink = CsvSink {
            file,
            encoding,
            out,
            chunk: chunk_writer(encoding),
            buffered: 0,
            rows: 0,
        };
        sink.write(header)?;
        Ok(sink)
    }

    fn write(&mut self, row: &[&str]) -> Result<(), GenError> {
        self.chunk
            .write_record(row)
            .map_err(|source| GenError::csv(&self.file.tmp, source))?;
        self.buffered += 1;
        if self.buffered >= BATCH_ROWS {
            self.flush_chunk()?;
        }
        Ok(())
    }

    /// Append one data row.
    pub(crate) fn push(&mut self, row: &[&str]) -> Result<(), GenError> {
        self.rows += 1;
        self.write(row)
    }

    fn flush_chunk(&mut self) -> Result<(), GenError> {
        let writer = std::mem::replace(&mut self.chunk, chunk_writer(self.encoding));
        let bytes = writer
            .into_inner()
            .map_err(|e| GenError::io(&self.file.tmp, e.into_error()))?;
        self.buffered = 0;
        let encoded = match self.encoding {
            TextEncoding::Utf8 => bytes,
            TextEncoding::Gbk => {
                // The csv writer only adds ASCII to the UTF-8 values it got.
                let text = String::from_utf8(bytes).map_err(|_| GenError::Encoding {
                    path: self.file.tmp.clone(),
                    character: '\u{FFFD}',
                })?;
                let (encoded, _, had_errors) = encoding_rs::GBK.encode(&text);
                if had_errors {
                    let character = text
                        .chars()
                        .find(|c| encoding_rs::GBK.encode(c.encode_utf8(&mut [0; 4])).2)
                        .unwrap_or('\u{FFFD}');
                    return Err(GenError::Encoding {
                        path: self.file.tmp.clone(),
                        character,
                    });
                }
                encoded.into_owned()
            }
        };
        self.out
            .write_all(&encoded)
            .map_err(|source| GenError::io(&self.file.tmp, source))
    }

    /// Flush, rename into place; returns the path and data-row count.
    pub(crate) fn finish(mut self) -> Result<(PathBuf, usize), GenError> {
        self.flush_chunk()?;
        self.out
            .flush()
            .map_err(|source| GenError::io(&self.file.tmp, source))?;
        let path = self.file.commit(self.out.get_ref())?;
        Ok((path, self.rows))
    }
}
