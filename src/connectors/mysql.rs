//! `mysql`: a MariaDB or MySQL table or query, read with the blocking
//! `mysql` client (pure Rust, no TLS) as one prepared statement whose result
//! is read row by row off the socket (the server streams, the client never
//! buffers the set), so memory stays bounded. Values arrive typed (binary
//! protocol) and are rendered as text here: integers exactly, decimals as
//! the server's own digits, dates as `YYYY-MM-DD`, datetimes as ISO 8601
//! (`TIMESTAMP` columns read in UTC, with `Z`), strings checked as UTF-8
//! (binary and legacy-charset columns can hold any bytes). With a
//! `watermark_column` pulls are incremental and exact; see [`sql`].

use std::borrow::Cow;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use mysql::consts::ColumnType;
use mysql::prelude::Queryable;
use mysql::{Conn, Opts, OptsBuilder, Row, Value};

use super::sql::{self, DbSource, Endpoint, Plan};
use super::{
    BatchBuilder, Checkpoint, Connector, ConnectorError, ConnectorSpec, PullMode, PullStats,
    Pulled, Rejected,
};

pub(crate) struct MysqlConnector {
    spec: ConnectorSpec,
    source: DbSource,
    data_dir: PathBuf,
}

/// What a planned column is, for rendering it and for binding a
/// checkpoint value compared with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Col {
    Signed,
    Unsigned,
    /// Exact decimal with this many fraction digits.
    Decimal(u8),
    Float,
    Date,
    DateTime,
    /// `TIMESTAMP`: read in the session's UTC.
    Timestamp,
    Time,
    Text,
}

impl Col {
    fn of(c: &mysql::Column) -> Col {
        use ColumnType::*;
        let unsigned = c
            .flags()
            .contains(mysql::consts::ColumnFlags::UNSIGNED_FLAG);
        match c.column_type() {
            MYSQL_TYPE_TINY | MYSQL_TYPE_SHORT | MYSQL_TYPE_INT24 | MYSQL_TYPE_LONG
            | MYSQL_TYPE_LONGLONG | MYSQL_TYPE_YEAR => {
                if unsigned {
                    Col::Unsigned
                } else {
                    Col::Signed
                }
            }
            MYSQL_TYPE_DECIMAL | MYSQL_TYPE_NEWDECIMAL => Col::Decimal(c.decimals()),
            MYSQL_TYPE_FLOAT | MYSQL_TYPE_DOUBLE => Col::Float,
            MYSQL_TYPE_DATE | MYSQL_TYPE_NEWDATE => Col::Date,
            MYSQL_TYPE_DATETIME | MYSQL_TYPE_DATETIME2 => Col::DateTime,
            MYSQL_TYPE_TIMESTAMP | MYSQL_TYPE_TIMESTAMP2 => Col::Timestamp,
            MYSQL_TYPE_TIME | MYSQL_TYPE_TIME2 => Col::Time,
            _ => Col::Text,
        }
    }
}

/// Render one value as text into `out`: `Ok(false)` for NULL, an error is
/// the reason its row goes to quarantine. `param` renders temporal values
/// the way the server reads them back (no `T`, no `Z`), for checkpoints.
fn render(col: Col, v: &Value, out: &mut String, param: bool) -> Result<bool, String> {
    match v {
        Value::NULL => return Ok(false),
        Value::Bytes(b) => out.push_str(
            std::str::from_utf8(b)
                .map_err(|e| format!("not valid UTF-8 at byte {}", e.valid_up_to()))?,
        ),
        Value::Int(i) => {
            let _ = write!(out, "{i}");
        }
        Value::UInt(u) => {
            let _ = write!(out, "{u}");
        }
        // Rust prints the shortest text that reads back as the same float.
        Value::Float(f) => {
            let _ = write!(out, "{f}");
        }
        Value::Double(f) => {
            let _ = write!(out, "{f}");
        }
        Value::Date(y, mo, d, h, mi, s, us) => {
            let _ = write!(out, "{y:04}-{mo:02}-{d:02}");
            if col != Col::Date {
                out.push(if param { ' ' } else { 'T' });
                let _ = write!(out, "{h:02}:{mi:02}:{s:02}");
                if *us != 0 || param {
                    let _ = write!(out, ".{us:06}");
                }
                if col == Col::Timestamp && !param {
                    out.push('Z');
                }
            }
        }
        Value::Time(neg, days, h, mi, s, us) => {
            if *neg {
                out.push('-');
            }
            let hours = *days as u64 * 24 + *h as u64;
            let _ = write!(out, "{hours:02}:{mi:02}:{s:02}");
            if *us != 0 {
                let _ = write!(out, ".{us:06}");
            }
        }
    }
    Ok(true)
}

/// A checkpoint value bound as a parameter of the column's own kind, so the
/// server compares like with like (a string against a `BIGINT` would be
/// compared as floating point).
fn param(col: Col, text: &str) -> Value {
    match col {
        Col::Signed => text
            .parse::<i64>()
            .map(Value::Int)
            .unwrap_or_else(|_| Value::Bytes(text.as_bytes().to_vec())),
        Col::Unsigned => text
            .parse::<u64>()
            .map(Value::UInt)
            .unwrap_or_else(|_| Value::Bytes(text.as_bytes().to_vec())),
        _ => Value::Bytes(text.as_bytes().to_vec()),
    }
}

/// The placeholder for a checkpoint value compared with a column.
fn placeholder(col: Col) -> String {
    match col {
        Col::Decimal(scale) => format!("CAST(? AS DECIMAL(65, {}))", scale.min(30)),
        Col::Float => "CAST(? AS DOUBLE)".to_string(),
        _ => "?".to_string(),
    }
}

fn quote_ident(s: &str) -> String {
    format!("`{}`", s.replace('`', "``"))
}

fn quote_path(path: &str) -> String {
    path.split('.')
        .map(quote_ident)
        .collect::<Vec<_>>()
        .join(".")
}

impl MysqlConnector {
    pub(crate) fn new(spec: ConnectorSpec, source: DbSource, data_dir: PathBuf) -> Self {
        MysqlConnector {
            spec,
            source,
            data_dir,
        }
    }

    fn relation(&self) -> String {
        match (&self.source.table, &self.source.query) {
            (Some(t), _) => quote_path(t),
            (None, Some(q)) => format!("({q}) AS src"),
            (None, None) => "(SELECT 1) AS src".to_string(),
        }
    }

    fn connect(&self) -> Result<(Conn, Vec<String>), ConnectorError> {
        let endpoint = self.source.endpoint(&self.spec.name, &self.data_dir)?;
        let secrets = endpoint.secrets();
        let builder = match &endpoint {
            Endpoint::Url { url, origin } => {
                let opts = Opts::from_url(url).map_err(|_| {
                    // The parser's message may quote parts of the URL.
                    ConnectorError::Credentials {
                        source_name: self.spec.name.clone(),
                        reason: format!("the connection URL in {origin} is not a valid mysql URL"),
                    }
                })?;
                OptsBuilder::from_opts(opts)
            }
            Endpoint::Parts {
                host,
                port,
                user,
                database,
                password,
            } => OptsBuilder::new()
                .ip_or_hostname(Some(host.clone()))
                .tcp_port(port.unwrap_or(3306))
                .user(Some(user.clone()))
                .db_name(Some(database.clone()))
                .pass(password.clone()),
        };
        let opts = builder
            .prefer_socket(false)
            .tcp_connect_timeout(Some(Duration::from_secs(self.source.connect_timeout_secs)))
            // `TIMESTAMP` values are read in UTC and rendered with `Z`.
            .init(vec!["SET time_zone = '+00:00'", "SET NAMES utf8mb4"]);
        let conn = Conn::new(opts).map_err(|e| ConnectorError::Connect {
            source_name: self.spec.name.clone(),
            reason: sql::redact(&e.to_string(), &secrets),
        })?;
        Ok((conn, secrets))
    }

    fn read_error(&self, position: &str, e: mysql::Error, secrets: &[String]) -> ConnectorError {
        let reason = match &e {
            mysql::Error::IoError(io) => format!("connection lost: {io}"),
            mysql::Error::CodecError(c) => format!("connection lost: {c}"),
            _ => e.to_string(),
        };
        ConnectorError::Read {
            source_name: self.spec.name.clone(),
            position: position.to_string(),
            reason: sql::redact(&reason, secrets),
        }
    }

    /// The kind of every planned column, after checking they all exist.
    fn describe(
        &self,
        conn: &mut Conn,
        plan: &Plan,
        secrets: &[String],
    ) -> Result<Vec<Col>, ConnectorError> {
        let stmt = conn
            .prep(format!("SELECT * FROM {} LIMIT 0", self.relation()))
            .map_err(|e| self.read_error("describe", e, secrets))?;
        let columns = stmt.columns();
        let found: Vec<String> = columns.iter().map(|c| c.name_str().into_owned()).collect();
        let _ = conn.close(stmt);
        sql::check_columns(&self.spec.name, &plan.select, &found)?;
        Ok(plan
            .select
            .iter()
            .map(|s| {
                let i = found.iter().position(|f| f == s).expect("checked above");
                Col::of(&columns[i])
            })
            .collect())
    }

    fn query(
        &self,
        plan: &Plan,
        cols: &[Col],
        from: Option<&Checkpoint>,
    ) -> Result<(String, Vec<Value>), ConnectorError> {
        let list = plan
            .select
            .iter()
            .map(|c| quote_ident(c))
            .collect::<Vec<_>>()
            .join(", ");
        let mut q = format!("SELECT {list} FROM {}", self.relation());
        let mut params = Vec::new();
        if let (Some(wm_col), Some(wm)) = (&self.source.watermark_column, plan.watermark) {
            let w = quote_ident(wm_col);
            let id = quote_ident(&self.spec.record_id_column);
            let _ = write!(q, " WHERE {w} IS NOT NULL AND {id} IS NOT NULL");
            if let Some(cp) = from {
                let (wv, idv) = cp.watermark_pair(&self.spec.name, wm_col)?;
                let (pw, pid) = (placeholder(cols[wm]), placeholder(cols[plan.record_id]));
                // The expanded form of `(w, id) > (?, ?)`, which every
                // MariaDB / MySQL version can serve from an index on (w, id).
                let _ = write!(q, " AND ({w} > {pw} OR ({w} = {pw} AND {id} > {pid}))");
                params.push(param(cols[wm], wv));
                params.push(param(cols[wm], wv));
                params.push(param(cols[plan.record_id], idv));
            }
            let _ = write!(q, " ORDER BY {w}, {id}");
        }
        Ok((q, params))
    }
}

fn raw_of(row: &Row, columns: &[String]) -> String {
    sql::raw_row(
        columns,
        (0..columns.len()).map(|i| match row.as_ref(i) {
            None | Some(Value::NULL) => None,
            Some(Value::Bytes(b)) => Some(Cow::Owned(String::from_utf8_lossy(b).into_owned())),
            Some(v) => {
                let mut s = String::new();
                let _ = render(Col::DateTime, v, &mut s, false);
                Some(Cow::Owned(s))
            }
        }),
    )
}

impl Connector for MysqlConnector {
    fn spec(&self) -> &ConnectorSpec {
        &self.spec
    }

    fn mode(&self) -> PullMode {
        self.source.mode()
    }

    fn check(&self) -> Result<(), ConnectorError> {
        let (mut conn, secrets) = self.connect()?;
        let plan = Plan::new(&self.spec, self.source.watermark_column.as_deref());
        self.describe(&mut conn, &plan, &secrets)?;
        if let Some(wm) = &self.source.watermark_column {
            let q = format!(
                "SELECT COUNT(*) FROM {} WHERE {} IS NULL OR {} IS NULL",
                self.relation(),
                quote_ident(wm),
                quote_ident(&self.spec.record_id_column)
            );
            let n: Option<u64> = conn
                .query_first(q)
                .map_err(|e| self.read_error("check", e, &secrets))?;
            let n = n.unwrap_or(0);
            if n > 0 {
                return Err(ConnectorError::Unsupported {
                    source_name: self.spec.name.clone(),
                    reason: format!(
                        "{n} rows have no watermark (`{wm}`) or record id and are never seen by incremental pulls; fill them in or remove `watermark_column`"
                    ),
                });
            }
        }
        Ok(())
    }

    fn pull(
        &self,
        from: Option<&Checkpoint>,
        emit: &mut dyn FnMut(Pulled) -> Result<(), ConnectorError>,
    ) -> Result<PullStats, ConnectorError> {
        let (mut conn, secrets) = self.connect()?;
        let plan = Plan::new(&self.spec, self.source.watermark_column.as_deref());
        let cols = self.describe(&mut conn, &plan, &secrets)?;
        let (query, params) = self.query(&plan, &cols, from)?;
        let wm_col = self.source.watermark_column.as_deref();
        let mut out = BatchBuilder::new(&self.spec);
        let mut values: Vec<Option<String>> = vec![None; plan.select.len()];
        let (mut last_wm, mut last_id) = (String::new(), String::new());
        let mut have_last = false;
        let last = |have: bool, wm: &str, id: &str| -> Option<Checkpoint> {
            match (wm_col, have) {
                (Some(col), true) => Some(Checkpoint::watermark(col, wm, id)),
                _ => None,
            }
        };
        let mut position = 0u64;
        let mut result = conn
            .exec_iter(query.as_str(), params)
            .map_err(|e| self.read_error("query", e, &secrets))?;
        let outcome = (|| -> Result<(), ConnectorError> {
            for row in result.by_ref() {
                let row = row
                    .map_err(|e| self.read_error(&format!("row {}", position + 1), e, &secrets))?;
                position += 1;
                let mut failure: Option<String> = None;
                for (i, (col, slot)) in cols.iter().zip(values.iter_mut()).enumerate() {
                    let buf = slot.get_or_insert_with(String::new);
                    buf.clear();
                    let v = row.as_ref(i).unwrap_or(&Value::NULL);
                    if let Value::Bytes(b) = v {
                        out.stats.bytes += b.len() as u64;
                    } else {
                        out.stats.bytes += 8;
                    }
                    match render(*col, v, buf, false) {
                        Ok(true) => {}
                        Ok(false) => *slot = None,
                        Err(reason) => {
                            *slot = None;
                            failure.get_or_insert_with(|| {
                                format!("column `{}`: {reason}", plan.select[i])
                            });
                        }
                    }
                }
                if failure.is_none() && values[plan.record_id].as_deref().is_none_or(str::is_empty)
                {
                    failure = Some("the record id is empty".to_string());
                }
                if let Some(wm) = plan.watermark
                    && values[wm].is_some()
                    && values[plan.record_id].is_some()
                {
                    last_wm.clear();
                    let v = row.as_ref(wm).unwrap_or(&Value::NULL);
                    // Temporal watermarks are kept in the server's own form.
                    let _ = render(cols[wm], v, &mut last_wm, true);
                    last_id.clear();
                    last_id.push_str(values[plan.record_id].as_deref().unwrap_or(""));
                    have_last = true;
                }
                match failure {
                    Some(reason) => out.reject(Rejected {
                        position,
                        reason,
                        raw: raw_of(&row, &plan.select),
                    }),
                    None => out.push_row(
                        position,
                        plan.batch_index
                            .iter()
                            .map(|&i| values[i].as_deref().unwrap_or("")),
                    ),
                }
                if out.is_full() {
                    out.flush(last(have_last, &last_wm, &last_id), emit)?;
                }
            }
            Ok(())
        })();
        if let Err(e) = outcome {
            // Dropping an unfinished result reads the rest of it off the
            // wire; on failure drop the connection instead.
            std::mem::forget(result);
            return Err(e);
        }
        drop(result);
        out.finish(last(have_last, &last_wm, &last_id), emit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_render_iso_and_exact() {
        let cases: &[(Col, Value, &str, &str)] = &[
            (
                Col::Signed,
                Value::Int(-650102198506150010),
                "-650102198506150010",
                "-650102198506150010",
            ),
            (
                Col::Decimal(2),
                Value::Bytes(b"12345678901234567.89".to_vec()),
                "12345678901234567.89",
                "12345678901234567.89",
            ),
            (
                Col::Date,
                Value::Date(1985, 6, 15, 0, 0, 0, 0),
                "1985-06-15",
                "1985-06-15",
            ),
            (
                Col::DateTime,
                Value::Date(2024, 1, 2, 3, 4, 5, 0),
                "2024-01-02T03:04:05",
                "2024-01-02 03:04:05.000000",
            ),
            (
                Col::Timestamp,
                Value::Date(2024, 1, 2, 3, 4, 5, 120),
                "2024-01-02T03:04:05.000120Z",
                "2024-01-02 03:04:05.000120",
            ),
            (
                Col::Time,
                Value::Time(true, 1, 2, 3, 4, 0),
                "-26:03:04",
                "-26:03:04",
            ),
            (Col::Float, Value::Double(0.1), "0.1", "0.1"),
        ];
        for (col, v, want, want_param) in cases {
            let mut out = String::new();
            assert!(render(*col, v, &mut out, false).expect("render"));
            assert_eq!(&out, want);
            out.clear();
            render(*col, v, &mut out, true).expect("render");
            assert_eq!(&out, want_param);
        }
        let mut out = String::new();
        let err = render(
            Col::Text,
            &Value::Bytes(b"ab\xff".to_vec()),
            &mut out,
            false,
        )
        .unwrap_err();
        assert_eq!(err, "not valid UTF-8 at byte 2");
    }
}
