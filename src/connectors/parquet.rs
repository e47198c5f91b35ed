//! `parquet`: a Parquet file exported by an agency. Only the mapped columns
//! are read; any column type castable to text is accepted.

use std::fs::File;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use arrow_array::{Array, ArrayRef, RecordBatch, StringArray, UInt64Array};
use arrow_schema::DataType;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use super::{BATCH_ROWS, Checkpoint, Connector, ConnectorError, ConnectorSpec, PullStats, Pulled};

pub(crate) struct ParquetConnector {
    spec: ConnectorSpec,
    path: PathBuf,
}

impl ParquetConnector {
    pub(crate) fn new(spec: ConnectorSpec, path: PathBuf) -> Self {
        ParquetConnector { spec, path }
    }

    fn err_open(&self, reason: impl ToString) -> ConnectorError {
        ConnectorError::Open {
            source_name: self.spec.name.clone(),
            path: self.path.clone(),
            reason: reason.to_string(),
        }
    }

    /// The reader builder and, per source column in spec order, its index
    /// among the top-level columns of the file.
    fn open(&self) -> Result<(ParquetRecordBatchReaderBuilder<File>, Vec<usize>), ConnectorError> {
        let file = File::open(&self.path).map_err(|e| self.err_open(e))?;
        let builder =
            ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| self.err_open(e))?;
        let schema = builder.schema().clone();
        let mut indices = Vec::new();
        for col in self.spec.source_columns() {
            match schema.index_of(col) {
                Ok(i) => indices.push(i),
                Err(_) => {
                    return Err(ConnectorError::MissingColumn {
                        source_name: self.spec.name.clone(),
                        column: col.to_string(),
                        found: schema
                            .fields()
                            .iter()
                            .map(|f| f.name().as_str())
                            .collect::<Vec<_>>()
                            .join(", "),
                    });
                }
            }
        }
        Ok((builder, indices))
    }
}

impl Connector for ParquetConnector {
    fn spec(&self) -> &ConnectorSpec {
        &self.spec
    }

    fn check(&self) -> Result<(), ConnectorError> {
        self.open().map(|_| ())
    }

    fn pull(
        &self,
        _from: Option<&Checkpoint>,
        emit: &mut dyn FnMut(Pulled) -> Result<(), ConnectorError>,
    ) -> Result<PullStats, ConnectorError> {
        let started = Instant::now();
        let (builder, indices) = self.open()?;
        let mut sorted = indices.clone();
        sorted.sort_unstable();
        sorted.dedup();
        let mask = ProjectionMask::roots(builder.parquet_schema(), sorted.iter().copied());
        let reader = builder
            .with_projection(mask)
            .with_batch_size(BATCH_ROWS)
            .build()
            .map_err(|e| self.err_open(e))?;
        let schema = self.spec.batch_schema();
        let mut stats = PullStats::default();
        for batch in reader {
            let batch = batch.map_err(|e| ConnectorError::Read {
                source_name: self.spec.name.clone(),
                position: format!("{} row {}", self.path.display(), stats.rows + 1),
                reason: e.to_string(),
            })?;
            let first = stats.rows + 1;
            let n = batch.num_rows();
            let mut arrays: Vec<ArrayRef> = vec![Arc::new(UInt64Array::from_iter_values(
                first..first + n as u64,
            ))];
            for &i in &indices {
                // The projected batch keeps file order; find the column again.
                let pos = sorted
                    .binary_search(&i)
                    .map_err(|_| self.err_open("projection lost a column"))?;
                let col = batch.column(pos);
                let text = if col.data_type() == &DataType::Utf8 {
                    col.clone()
                } else {
                    // `safe: false`: a value that cannot be text is an error,
                    // never a silent null.
                    let options = arrow_cast::CastOptions {
                        safe: false,
                        ..Default::default()
                    };
                    arrow_cast::cast_with_options(col, &DataType::Utf8, &options).map_err(|e| {
                        ConnectorError::Read {
                            source_name: self.spec.name.clone(),
                            position: format!("{} column {}", self.path.display(), i + 1),
                            reason: format!("cannot read as text: {e}"),
                        }
                    })?
                };
                // Missing values become empty strings: the normaliser decides.
                let text = if text.null_count() > 0 {
                    let s = text
                        .as_any()
                        .downcast_ref::<StringArray>()
                        .ok_or_else(|| self.err_open("cast to text failed"))?;
                    Arc::new(
                        s.iter()
                            .map(|v| Some(v.unwrap_or("")))
                            .collect::<StringArray>(),
                    ) as ArrayRef
                } else {
                    text
                };
                stats.bytes += text.get_buffer_memory_size() as u64;
                arrays.push(text);
            }
            let out = RecordBatch::try_new(schema.clone(), arrays).map_err(|e| self.err_open(e))?;
            stats.rows += n as u64;
            emit(Pulled {
                batch: out,
                rejected: Vec::new(),
                checkpoint: None,
            })?;
        }
        stats.elapsed = started.elapsed();
        Ok(stats)
    }
}
