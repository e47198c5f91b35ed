//! `csv`: delimited text files in UTF-8 or a legacy encoding (GBK, GB18030,
//! Big5 …). Rows are split at the byte level — every such encoding keeps
//! ASCII delimiters, quotes and newlines out of its multi-byte sequences —
//! and each field is decoded on its own, so an undecodable or ragged row is
//! quarantined with its line number while the rest continue.

use std::fs::File;
use std::io::BufReader;
use std::path::PathBuf;

use encoding_rs::Encoding;

use super::{
    BatchBuilder, Checkpoint, Connector, ConnectorError, ConnectorSpec, PullStats, Pulled, Rejected,
};

pub(crate) struct CsvConnector {
    spec: ConnectorSpec,
    path: PathBuf,
    encoding: &'static Encoding,
    delimiter: u8,
}

impl CsvConnector {
    pub(crate) fn new(spec: ConnectorSpec, path: PathBuf, encoding: &str, delimiter: u8) -> Self {
        // The label was validated when the connector file was loaded.
        let encoding = Encoding::for_label(encoding.as_bytes()).unwrap_or(encoding_rs::UTF_8);
        CsvConnector {
            spec,
            path,
            encoding,
            delimiter,
        }
    }

    fn open(&self) -> Result<(::csv::Reader<BufReader<File>>, Vec<usize>), ConnectorError> {
        let file = File::open(&self.path).map_err(|e| ConnectorError::Open {
            source_name: self.spec.name.clone(),
            path: self.path.clone(),
            reason: e.to_string(),
        })?;
        let mut reader = ::csv::ReaderBuilder::new()
            .delimiter(self.delimiter)
            .flexible(true)
            .has_headers(true)
            .from_reader(BufReader::with_capacity(1 << 20, file));
        let header = reader
            .byte_headers()
            .map_err(|e| self.read_error(1, &e.to_string()))?
            .clone();
        let names: Vec<String> = header
            .iter()
            .map(|h| {
                self.decode(h)
                    .unwrap_or_default()
                    .trim_start_matches('\u{feff}')
                    .trim()
                    .to_string()
            })
            .collect();
        let mut indices = Vec::new();
        for col in self.spec.source_columns() {
            match names.iter().position(|n| n == col) {
                Some(i) => indices.push(i),
                None => {
                    return Err(ConnectorError::MissingColumn {
                        source_name: self.spec.name.clone(),
                        column: col.to_string(),
                        found: names.join(", "),
                    });
                }
            }
        }
        Ok((reader, indices))
    }

    fn decode(&self, bytes: &[u8]) -> Option<String> {
        self.encoding
            .decode_without_bom_handling_and_without_replacement(bytes)
            .map(|c| c.into_owned())
    }

    fn read_error(&self, line: u64, reason: &str) -> ConnectorError {
        ConnectorError::Read {
            source_name: self.spec.name.clone(),
            position: format!("{}:{line}", self.path.display()),
            reason: reason.to_string(),
        }
    }
}

impl Connector for CsvConnector {
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
        let (mut reader, indices) = self.open()?;
        let width = reader.byte_headers().map(|h| h.len()).unwrap_or(0);
        let mut out = BatchBuilder::new(&self.spec);
        let mut record = ::csv::ByteRecord::new();
        loop {
            match reader.read_byte_record(&mut record) {
                Ok(false) => break,
                Ok(true) => {}
                Err(e) => {
                    // A broken quote or I/O error: the reader cannot resync,
                    // so the pull fails loudly rather than guess.
                    let line = e.position().map(|p| p.line()).unwrap_or(0);
                    return Err(self.read_error(line, &e.to_string()));
                }
            }
            let line = record.position().map(|p| p.line()).unwrap_or(0);
            out.stats.bytes += record.as_slice().len() as u64 + record.len() as u64;
            if record.len() != width {
                out.reject(Rejected {
                    position: line,
                    reason: format!(
                        "ragged row: {} fields where the header has {width}",
                        record.len()
                    ),
                    raw: self.encoding.decode(record.as_slice()).0.into_owned(),
                });
                continue;
            }
            let mut values = Vec::with_capacity(indices.len());
            let mut bad = None;
            for &i in &indices {
                match self.decode(&record[i]) {
                    Some(v) => values.push(v),
                    None => {
                        bad = Some(i);
                        break;
                    }
                }
            }
            if let Some(i) = bad {
                out.reject(Rejected {
                    position: line,
                    reason: format!("column {} is not valid {}", i + 1, self.encoding.name()),
                    raw: self.encoding.decode(record.as_slice()).0.into_owned(),
                });
                continue;
            }
            out.push(line, values, emit)?;
        }
        out.finish(None, emit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connectors::{COL_SUBJECT, SourceKind, build};
    use arrow_array::{Array, StringArray, UInt64Array};
    use std::collections::HashMap;

    fn spec() -> ConnectorSpec {
        ConnectorSpec {
            name: "t".into(),
            file: PathBuf::from("t.toml"),
            agency: "xj-mzt".into(),
            dataset: "marriage".into(),
            subject_column: "身份证号".into(),
            record_id_column: "登记编号".into(),
            as_of_column: "更新时间".into(),
            columns: vec![("姓名".into(), "population.name".into())],
            values: HashMap::new(),
            pull_interval: None,
        }
    }

    fn pull_all(bytes: &[u8], encoding: &str) -> (Vec<(u64, String, String)>, Vec<Rejected>) {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("m.csv"), bytes).expect("write");
        let config = crate::connectors::ConnectorConfig {
            spec: spec(),
            source: SourceKind::Csv {
                path: "m.csv".into(),
                encoding: encoding.into(),
                delimiter: ',',
            },
        };
        let c = build(&config, dir.path());
        let mut rows = Vec::new();
        let mut rejected = Vec::new();
        c.pull(None, &mut |p| {
            let pos = p
                .batch
                .column(0)
                .as_any()
                .downcast_ref::<UInt64Array>()
                .expect("u64")
                .clone();
            let subj = p
                .batch
                .column_by_name(COL_SUBJECT)
                .expect("subject")
                .as_any()
                .downcast_ref::<StringArray>()
                .expect("str")
                .clone();
            let name = p
                .batch
                .column_by_name("population.name")
                .expect("name")
                .as_any()
                .downcast_ref::<StringArray>()
                .expect("str")
                .clone();
            for i in 0..pos.len() {
                rows.push((
                    pos.value(i),
                    subj.value(i).to_string(),
                    name.value(i).to_string(),
                ));
            }
            rejected.extend(p.rejected);
            Ok(())
        })
        .expect("pull");
        (rows, rejected)
    }

    #[test]
    fn gbk_rows_decode_middle_dot_and_quarantine_bad_rows() {
        let text = "登记编号,身份证号,姓名,更新时间\n1,650102198506150010,买买提·艾力,2020-01-01\n2,650102198506150010,\"张,三\",2020-01-01\n3,x,ragged\n";
        let (mut bytes, _, unmappable) = encoding_rs::GBK.encode(text);
        assert!(!unmappable);
        let mut bytes = bytes.to_mut().clone();
        // A fourth row with a byte sequence that is not GBK.
        bytes.extend_from_slice(b"4,650102198506150010,\x81\x20,2020-01-01\n");
        let (rows, rejected) = pull_all(&bytes, "gbk");
        assert_eq!(rows.len(), 2);
        assert_eq!(
            rows[0],
            (2, "650102198506150010".into(), "买买提\u{b7}艾力".into())
        );
        assert_eq!(rows[1].2, "张,三");
        assert_eq!(rejected.len(), 2);
        assert_eq!(rejected[0].position, 4);
        assert!(
            rejected[0].reason.starts_with("ragged row"),
            "{}",
            rejected[0].reason
        );
        assert_eq!(rejected[1].position, 5);
        assert_eq!(rejected[1].reason, "column 3 is not valid GBK");
    }

    #[test]
    fn missing_column_is_a_clear_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("m.csv"), "登记编号,姓名\n").expect("write");
        let config = crate::connectors::ConnectorConfig {
            spec: spec(),
            source: SourceKind::Csv {
                path: "m.csv".into(),
                encoding: "utf-8".into(),
                delimiter: ',',
            },
        };
        let err = build(&config, dir.path()).check().unwrap_err().to_string();
        assert!(
            err.contains("column `更新时间` named in the connector file is not in the source"),
            "{err}"
        );
    }
}
