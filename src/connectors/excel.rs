//! `excel`: an `.xlsx` workbook exported by an agency, read with `calamine`:
//! the first sheet or a named one, the header on a given row, data rows
//! after it. A vertically merged cell's value fills every row it spans (a
//! merged "household" or "district" cell belongs to each row beside it);
//! the other columns of a horizontally merged cell stay empty. Dates are
//! `YYYY-MM-DD` (with `THH:MM:SS` when the cell has a time), integral
//! numbers have no `.0`, and a number too long for a spreadsheet to hold
//! exactly (Excel keeps 15 significant digits, so an 18-digit ID number
//! typed as a number is already wrong) sends its row to quarantine, as does
//! a cell error. Rows with every cell empty are skipped. The sheet is read
//! into memory whole: a sheet holds at most 1,048,576 rows.

use std::fmt::Write as _;
use std::path::PathBuf;

use calamine::{Data, Range, Reader, Xlsx, open_workbook};

use super::{
    BatchBuilder, Checkpoint, Connector, ConnectorError, ConnectorSpec, PullStats, Pulled, Rejected,
};

/// Numbers at or above this magnitude have more significant digits than a
/// spreadsheet keeps.
const EXACT_LIMIT: f64 = 1e15;

pub(crate) struct ExcelConnector {
    spec: ConnectorSpec,
    path: PathBuf,
    sheet: Option<String>,
    /// 1-based.
    header_row: u32,
}

/// A loaded sheet: its cells with merged values filled down, and per
/// source column its 0-based column index.
struct Sheet {
    range: Range<Data>,
    columns: Vec<u32>,
}

impl ExcelConnector {
    pub(crate) fn new(
        spec: ConnectorSpec,
        path: PathBuf,
        sheet: Option<String>,
        header_row: u32,
    ) -> Self {
        ExcelConnector {
            spec,
            path,
            sheet,
            header_row,
        }
    }

    fn err_open(&self, reason: impl ToString) -> ConnectorError {
        ConnectorError::Open {
            source_name: self.spec.name.clone(),
            path: self.path.clone(),
            reason: reason.to_string(),
        }
    }

    fn load(&self) -> Result<Sheet, ConnectorError> {
        let mut book: Xlsx<_> = open_workbook(&self.path).map_err(|e| self.err_open(e))?;
        let names = book.sheet_names();
        let name = match &self.sheet {
            Some(s) if names.contains(s) => s.clone(),
            Some(s) => {
                return Err(self.err_open(format!("no sheet `{s}` (sheets: {})", names.join(", "))));
            }
            None => names
                .first()
                .cloned()
                .ok_or_else(|| self.err_open("the workbook has no sheet"))?,
        };
        let mut range = book.worksheet_range(&name).map_err(|e| self.err_open(e))?;
        let merged = book
            .merge_cells_by_sheet_name(&name)
            .map_err(|e| self.err_open(e))?;
        for m in merged {
            let top = range.get_value(m.start).cloned().unwrap_or(Data::Empty);
            for row in m.start.0 + 1..=m.end.0 {
                if range.get_value((row, m.start.1)).is_some() {
                    range.set_value((row, m.start.1), top.clone());
                }
            }
        }
        let header = self.header_row - 1;
        let (first_col, last_col) = match (range.start(), range.end()) {
            (Some(s), Some(e)) => (s.1, e.1),
            _ => (0, 0),
        };
        let names: Vec<(u32, String)> = (first_col..=last_col)
            .map(|c| {
                let v = range.get_value((header, c)).unwrap_or(&Data::Empty);
                (c, v.to_string().trim().to_string())
            })
            .collect();
        let mut columns = Vec::new();
        for col in self.spec.source_columns() {
            match names.iter().find(|(_, n)| n == col) {
                Some((c, _)) => columns.push(*c),
                None => {
                    return Err(ConnectorError::MissingColumn {
                        source_name: self.spec.name.clone(),
                        column: col.to_string(),
                        found: format!(
                            "{} (header row {} of sheet `{name}`)",
                            names
                                .iter()
                                .filter(|(_, n)| !n.is_empty())
                                .map(|(_, n)| n.as_str())
                                .collect::<Vec<_>>()
                                .join(", "),
                            self.header_row
                        ),
                    });
                }
            }
        }
        Ok(Sheet { range, columns })
    }
}

/// Render a cell as text into `out`, or say why its row is rejected.
fn render(cell: &Data, out: &mut String) -> Result<(), String> {
    match cell {
        Data::Empty => {}
        Data::String(s) | Data::DateTimeIso(s) | Data::DurationIso(s) => out.push_str(s),
        Data::Int(i) => {
            let _ = write!(out, "{i}");
        }
        Data::Float(f) => {
            if f.abs() >= EXACT_LIMIT {
                return Err(format!(
                    "the number {f:e} has more digits than a spreadsheet keeps exactly (15); store the column as text"
                ));
            }
            if f.fract() == 0.0 {
                let _ = write!(out, "{}", *f as i64);
            } else {
                let _ = write!(out, "{f}");
            }
        }
        Data::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Data::DateTime(d) => {
            let (y, mo, day, h, mi, s, ms) = d.to_ymd_hms_milli();
            if d.is_datetime() {
                let _ = write!(out, "{y:04}-{mo:02}-{day:02}");
                if (h, mi, s, ms) != (0, 0, 0, 0) {
                    let _ = write!(out, "T{h:02}:{mi:02}:{s:02}");
                    if ms != 0 {
                        let _ = write!(out, ".{ms:03}");
                    }
                }
            } else {
                // A duration: hours may exceed a day.
                let secs = (d.as_f64() * 86_400.0).round() as i64;
                let _ = write!(
                    out,
                    "{:02}:{:02}:{:02}",
                    secs / 3600,
                    secs / 60 % 60,
                    secs % 60
                );
            }
        }
        Data::Error(e) => return Err(format!("cell error {e}")),
    }
    Ok(())
}

impl Connector for ExcelConnector {
    fn spec(&self) -> &ConnectorSpec {
        &self.spec
    }

    fn check(&self) -> Result<(), ConnectorError> {
        self.load().map(|_| ())
    }

    fn pull(
        &self,
        _from: Option<&Checkpoint>,
        emit: &mut dyn FnMut(Pulled) -> Result<(), ConnectorError>,
    ) -> Result<PullStats, ConnectorError> {
        let sheet = self.load()?;
        let mut out = BatchBuilder::new(&self.spec);
        let last_row = sheet.range.end().map_or(0, |e| e.0);
        let mut values: Vec<String> = vec![String::new(); sheet.columns.len()];
        for row in self.header_row..=last_row {
            if sheet.range.end().is_none() {
                break;
            }
            let (first_col, last_col) = match (sheet.range.start(), sheet.range.end()) {
                (Some(s), Some(e)) => (s.1, e.1),
                _ => break,
            };
            let blank = (first_col..=last_col)
                .all(|c| matches!(sheet.range.get_value((row, c)), None | Some(Data::Empty)));
            if blank {
                continue;
            }
            let position = row as u64 + 1;
            let mut failure = None;
            for (slot, &col) in values.iter_mut().zip(&sheet.columns) {
                slot.clear();
                let cell = sheet.range.get_value((row, col)).unwrap_or(&Data::Empty);
                if let Err(reason) = render(cell, slot) {
                    failure.get_or_insert_with(|| format!("column {}: {reason}", col_name(col)));
                }
                out.stats.bytes += slot.len() as u64;
            }
            match failure {
                Some(reason) => out.reject(Rejected {
                    position,
                    reason,
                    raw: (first_col..=last_col)
                        .map(|c| {
                            sheet
                                .range
                                .get_value((row, c))
                                .unwrap_or(&Data::Empty)
                                .to_string()
                        })
                        .collect::<Vec<_>>()
                        .join("\t"),
                }),
                None => out.push(position, values.iter(), emit)?,
            }
        }
        out.finish(None, emit)
    }
}

/// `A`, `B`, … `AA` for a 0-based column index.
fn col_name(mut col: u32) -> String {
    let mut s = Vec::new();
    loop {
        s.push(b'A' + (col % 26) as u8);
        if col < 26 {
            break;
        }
        col = col / 26 - 1;
    }
    s.reverse();
    String::from_utf8(s).expect("ASCII letters")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connectors::{COL_SUBJECT, ConnectorConfig, SourceKind, build};
    use arrow_array::{Array, StringArray, UInt64Array};
    use rust_xlsxwriter::{ExcelDateTime, Format, Formula, Workbook};
    use std::collections::HashMap;

    fn spec() -> ConnectorSpec {
        ConnectorSpec {
            name: "x".into(),
            file: PathBuf::from("x.toml"),
            agency: "xj-gat".into(),
            dataset: "population".into(),
            subject_column: "身份证号".into(),
            record_id_column: "编号".into(),
            as_of_column: "更新日期".into(),
            columns: vec![
                ("姓名".into(), "population.name".into()),
                ("户号".into(), "population.household_address".into()),
            ],
            values: HashMap::new(),
            pull_interval: None,
        }
    }

    /// A workbook with a cover sheet and a data sheet whose header is on
    /// row 3, a household number merged over two rows, a date cell, an ID
    /// number typed as a number, and a cell error.
    fn workbook(dir: &std::path::Path) -> PathBuf {
        let mut book = Workbook::new();
        let cover = book.add_worksheet();
        cover.set_name("说明").expect("name");
        cover.write_string(0, 0, "人口信息导出").expect("write");
        let s = book.add_worksheet();
        s.set_name("人口").expect("name");
        s.write_string(0, 0, "导出单位：公安厅").expect("write");
        for (c, h) in ["编号", "身份证号", "姓名", "户号", "更新日期"]
            .iter()
            .enumerate()
        {
            s.write_string(2, c as u16, *h).expect("header");
        }
        let date = Format::new().set_num_format("yyyy-mm-dd");
        let rows: [(f64, &str, &str); 4] = [
            (1.0, "650102198506150010", "买买提·艾力"),
            (2.0, "650102198506150029", "阿依古丽"),
            (3.0, "", "数字身份证"),
            (4.0, "650102198506150037", "张三"),
        ];
        for (i, (id, idn, name)) in rows.iter().enumerate() {
            let r = 3 + i as u32;
            s.write_number(r, 0, *id).expect("id");
            if idn.is_empty() {
                s.write_number(r, 1, 650102198506150045.0)
                    .expect("number id");
            } else {
                s.write_string(r, 1, *idn).expect("idn");
            }
            s.write_string(r, 2, *name).expect("name");
            s.write_datetime_with_format(
                r,
                4,
                ExcelDateTime::from_ymd(2024, 1, 5 + i as u8).expect("date"),
                &date,
            )
            .expect("date");
        }
        // Household 0001 spans the first two data rows.
        s.merge_range(3, 3, 4, 3, "0001", &Format::new())
            .expect("merge");
        s.write_string(5, 3, "0002").expect("write");
        s.write_string(6, 3, "0003").expect("write");
        // A blank row, then a row whose name is a cell error.
        s.write_number(8, 0, 5.0).expect("id");
        s.write_string(8, 1, "650102198506150053").expect("idn");
        s.write_formula(8, 2, Formula::new("=1/0").set_result("#DIV/0!"))
            .expect("formula");
        let p = dir.join("p.xlsx");
        book.save(&p).expect("save");
        p
    }

    fn pull_all(
        dir: &std::path::Path,
        sheet: Option<&str>,
        header_row: u32,
    ) -> Result<(Vec<Vec<String>>, Vec<Rejected>), ConnectorError> {
        let config = ConnectorConfig {
            spec: spec(),
            source: SourceKind::Excel {
                path: "p.xlsx".into(),
                sheet: sheet.map(str::to_string),
                header_row,
            },
        };
        let c = build(&config, dir);
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
            let cols: Vec<StringArray> = (1..p.batch.num_columns())
                .map(|i| {
                    p.batch
                        .column(i)
                        .as_any()
                        .downcast_ref::<StringArray>()
                        .expect("str")
                        .clone()
                })
                .collect();
            assert_eq!(p.batch.schema().field(3).name(), COL_SUBJECT);
            for r in 0..pos.len() {
                let mut row = vec![pos.value(r).to_string()];
                row.extend(cols.iter().map(|c| c.value(r).to_string()));
                rows.push(row);
            }
            rejected.extend(p.rejected);
            Ok(())
        })?;
        Ok((rows, rejected))
    }

    #[test]
    fn named_sheet_header_row_merged_cells_dates_and_bad_rows() {
        let dir = tempfile::tempdir().expect("tempdir");
        workbook(dir.path());
        let (rows, rejected) = pull_all(dir.path(), Some("人口"), 3).expect("pull");
        // position, record id, as-of, subject, name, household
        let want: Vec<Vec<&str>> = vec![
            vec![
                "4",
                "1",
                "2024-01-05",
                "650102198506150010",
                "买买提·艾力",
                "0001",
            ],
            vec![
                "5",
                "2",
                "2024-01-06",
                "650102198506150029",
                "阿依古丽",
                "0001",
            ],
            vec!["7", "4", "2024-01-08", "650102198506150037", "张三", "0003"],
        ];
        assert_eq!(rows, want);
        assert_eq!(rejected.len(), 2, "{rejected:?}");
        assert_eq!(rejected[0].position, 6);
        assert!(
            rejected[0]
                .reason
                .starts_with("column B: the number 6.5010219850615e17 has more digits")
                && rejected[0].reason.contains("store the column as text"),
            "{}",
            rejected[0].reason
        );
        assert_eq!(rejected[1].position, 9);
        assert_eq!(rejected[1].reason, "column C: cell error #DIV/0!");
    }

    #[test]
    fn first_sheet_by_default_and_clear_errors() {
        let dir = tempfile::tempdir().expect("tempdir");
        workbook(dir.path());
        // The first sheet is the cover, which lacks the columns.
        let err = pull_all(dir.path(), None, 1).unwrap_err().to_string();
        assert!(
            err.contains("column `编号` named in the connector file is not in the source (columns found: 人口信息导出 (header row 1 of sheet `说明`))"),
            "{err}"
        );
        let err = pull_all(dir.path(), Some("户籍"), 3)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("no sheet `户籍` (sheets: 说明, 人口)"),
            "{err}"
        );
        assert_eq!(col_name(0), "A");
        assert_eq!(col_name(27), "AB");
    }
}
