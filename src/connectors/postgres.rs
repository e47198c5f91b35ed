//! `postgres`: a PostgreSQL table or query, read with the blocking
//! `postgres` client as one streamed result (`query_raw`: rows are decoded
//! as they arrive and the client's one-message channel pushes back on the
//! server, so memory stays bounded whatever the table's size). Values come in
//! binary form and are rendered as text here: integers and numerics exactly
//! (numeric digits, never through a float), dates as `YYYY-MM-DD`,
//! timestamps as ISO 8601 (`timestamptz` in UTC with `Z`), text checked as
//! UTF-8 (a `SQL_ASCII` database can hold any bytes). With a
//! `watermark_column` pulls are incremental and exact; see [`sql`].

use std::borrow::Cow;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use chrono::{NaiveDate, NaiveDateTime, NaiveTime, TimeDelta};
use postgres::fallible_iterator::FallibleIterator;
use postgres::types::{FromSql, Kind, Type};
use postgres::{Client, NoTls, Row};

use super::sql::{self, DbSource, Endpoint, Plan};
use super::{
    BatchBuilder, Checkpoint, Connector, ConnectorError, ConnectorSpec, PullMode, PullStats,
    Pulled, Rejected,
};

pub(crate) struct PostgresConnector {
    spec: ConnectorSpec,
    source: DbSource,
    data_dir: PathBuf,
}

/// How a column's binary value becomes text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Render {
    Bool,
    Int2,
    Int4,
    Int8,
    Oid,
    Float4,
    Float8,
    Numeric,
    Date,
    Time,
    Timestamp,
    TimestampTz,
    Text,
    Jsonb,
    Uuid,
    /// Bytes taken as UTF-8 text; a value that is not goes to quarantine.
    Bytea,
}

impl Render {
    fn of(ty: &Type) -> Option<Render> {
        Some(match *ty {
            Type::BOOL => Render::Bool,
            Type::INT2 => Render::Int2,
            Type::INT4 => Render::Int4,
            Type::INT8 => Render::Int8,
            Type::OID => Render::Oid,
            Type::FLOAT4 => Render::Float4,
            Type::FLOAT8 => Render::Float8,
            Type::NUMERIC => Render::Numeric,
            Type::DATE => Render::Date,
            Type::TIME => Render::Time,
            Type::TIMESTAMP => Render::Timestamp,
            Type::TIMESTAMPTZ => Render::TimestampTz,
            Type::TEXT
            | Type::VARCHAR
            | Type::BPCHAR
            | Type::NAME
            | Type::UNKNOWN
            | Type::JSON
            | Type::XML
            | Type::CHAR => Render::Text,
            Type::JSONB => Render::Jsonb,
            Type::UUID => Render::Uuid,
            Type::BYTEA => Render::Bytea,
            _ => match ty.kind() {
                // Enums travel as their label.
                Kind::Enum(_) => Render::Text,
                Kind::Domain(base) => return Render::of(base),
                _ => return None,
            },
        })
    }
}

/// A column's raw binary value, whatever its type.
struct RawValue<'a>(Option<&'a [u8]>);

impl<'a> FromSql<'a> for RawValue<'a> {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(RawValue(Some(raw)))
    }
    fn from_sql_null(_: &Type) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(RawValue(None))
    }
    fn accepts(_: &Type) -> bool {
        true
    }
}

fn be<const N: usize>(raw: &[u8]) -> Result<[u8; N], String> {
    raw.try_into()
        .map_err(|_| format!("expected {N} bytes, got {}", raw.len()))
}

/// PostgreSQL's epoch for dates and timestamps.
fn pg_epoch() -> NaiveDateTime {
    NaiveDate::from_ymd_opt(2000, 1, 1)
        .expect("2000-01-01 is a date")
        .and_time(NaiveTime::MIN)
}

/// Render a binary `numeric` exactly as PostgreSQL's own text output does.
fn numeric(raw: &[u8], out: &mut String) -> Result<(), String> {
    let word = |i: usize| -> Result<u16, String> {
        raw.get(i * 2..i * 2 + 2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]))
            .ok_or_else(|| "truncated numeric".to_string())
    };
    let ndigits = word(0)? as usize;
    let weight = word(1)? as i16 as i32;
    let sign = word(2)?;
    let dscale = word(3)? as usize;
    match sign {
        0x0000 | 0x4000 => {}
        0xC000 => {
            out.push_str("NaN");
            return Ok(());
        }
        0xD000 => {
            out.push_str("Infinity");
            return Ok(());
        }
        0xF000 => {
            out.push_str("-Infinity");
            return Ok(());
        }
        _ => return Err(format!("bad numeric sign {sign:#x}")),
    }
    let mut digits = Vec::with_capacity(ndigits);
    for i in 0..ndigits {
        let d = word(4 + i)?;
        if d > 9999 {
            return Err("bad numeric digit".to_string());
        }
        digits.push(d);
    }
    let digit = |i: i32| -> u16 {
        if i < 0 {
            0
        } else {
            digits.get(i as usize).copied().unwrap_or(0)
        }
    };
    if sign == 0x4000 {
        out.push('-');
    }
    if weight < 0 {
        out.push('0');
    } else {
        for i in 0..=weight {
            let d = digit(i);
            if i == 0 {
                let _ = write!(out, "{d}");
            } else {
                let _ = write!(out, "{d:04}");
            }
        }
    }
    if dscale > 0 {
        out.push('.');
        let start = out.len();
        let mut i = weight + 1;
        while out.len() - start < dscale {
            let _ = write!(out, "{:04}", digit(i));
            i += 1;
        }
        out.truncate(start + dscale);
    }
    Ok(())
}

/// `HH:MM:SS` with `.ffffff` only when there is a fraction.
fn time_of_day(micros: i64, out: &mut String) {
    let secs = micros.div_euclid(1_000_000);
    let frac = micros.rem_euclid(1_000_000);
    let _ = write!(
        out,
        "{:02}:{:02}:{:02}",
        secs / 3600,
        (secs / 60) % 60,
        secs % 60
    );
    if frac != 0 {
        let _ = write!(out, ".{frac:06}");
    }
}

/// Render one non-null value of a column as text into `out`; an error is
/// the reason its row goes to quarantine.
fn render(how: Render, raw: &[u8], out: &mut String) -> Result<(), String> {
    match how {
        Render::Bool => out.push_str(if raw.first() == Some(&1) {
            "true"
        } else {
            "false"
        }),
        Render::Int2 => {
            let _ = write!(out, "{}", i16::from_be_bytes(be(raw)?));
        }
        Render::Int4 => {
            let _ = write!(out, "{}", i32::from_be_bytes(be(raw)?));
        }
        Render::Int8 => {
            let _ = write!(out, "{}", i64::from_be_bytes(be(raw)?));
        }
        Render::Oid => {
            let _ = write!(out, "{}", u32::from_be_bytes(be(raw)?));
        }
        // Rust prints the shortest text that reads back as the same float.
        Render::Float4 => {
            let _ = write!(out, "{}", f32::from_be_bytes(be(raw)?));
        }
        Render::Float8 => {
            let _ = write!(out, "{}", f64::from_be_bytes(be(raw)?));
        }
        Render::Numeric => numeric(raw, out)?,
        Render::Date => match i32::from_be_bytes(be(raw)?) {
            i32::MAX => out.push_str("infinity"),
            i32::MIN => out.push_str("-infinity"),
            days => {
                let d = pg_epoch()
                    .date()
                    .checked_add_signed(TimeDelta::days(days as i64))
                    .ok_or_else(|| "date out of range".to_string())?;
                let _ = write!(out, "{}", d.format("%Y-%m-%d"));
            }
        },
        Render::Time => time_of_day(i64::from_be_bytes(be(raw)?), out),
        Render::Timestamp | Render::TimestampTz => match i64::from_be_bytes(be(raw)?) {
            i64::MAX => out.push_str("infinity"),
            i64::MIN => out.push_str("-infinity"),
            micros => {
                let t = pg_epoch()
                    .checked_add_signed(TimeDelta::microseconds(micros))
                    .ok_or_else(|| "timestamp out of range".to_string())?;
                let _ = write!(out, "{}T", t.date().format("%Y-%m-%d"));
                let day_micros = micros.rem_euclid(86_400_000_000);
                time_of_day(day_micros, out);
                if how == Render::TimestampTz {
                    out.push('Z');
                }
            }
        },
        Render::Text | Render::Bytea => out.push_str(utf8(raw)?),
        Render::Jsonb => match raw.split_first() {
            Some((1, rest)) => out.push_str(utf8(rest)?),
            _ => return Err("unknown jsonb version".to_string()),
        },
        Render::Uuid => {
            let b: [u8; 16] = be(raw)?;
            for (i, x) in b.iter().enumerate() {
                if matches!(i, 4 | 6 | 8 | 10) {
                    out.push('-');
                }
                let _ = write!(out, "{x:02x}");
            }
        }
    }
    Ok(())
}

fn utf8(raw: &[u8]) -> Result<&str, String> {
    std::str::from_utf8(raw).map_err(|e| format!("not valid UTF-8 at byte {}", e.valid_up_to()))
}

/// `"a"."b"` for `a.b`, doubling quotes inside.
fn quote_path(path: &str) -> String {
    path.split('.')
        .map(quote_ident)
        .collect::<Vec<_>>()
        .join(".")
}

fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// A described source: every column the relation has, and for the planned
/// columns how to render them and their SQL type name.
struct Described {
    render: Vec<Render>,
    type_names: Vec<String>,
}

impl PostgresConnector {
    pub(crate) fn new(spec: ConnectorSpec, source: DbSource, data_dir: PathBuf) -> Self {
        PostgresConnector {
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

    fn connect_error(&self, reason: String) -> ConnectorError {
        ConnectorError::Connect {
            source_name: self.spec.name.clone(),
            reason,
        }
    }

    /// Connect, with the secrets of the endpoint to redact from errors.
    fn connect(&self) -> Result<(Client, Vec<String>), ConnectorError> {
        let endpoint = self.source.endpoint(&self.spec.name, &self.data_dir)?;
        let secrets = endpoint.secrets();
        let mut config = match &endpoint {
            Endpoint::Url { url, origin } => url.parse::<postgres::Config>().map_err(|_| {
                // The parser's message may quote the URL; say where it is instead.
                ConnectorError::Credentials {
                    source_name: self.spec.name.clone(),
                    reason: format!("the connection URL in {origin} is not a valid postgres URL"),
                }
            })?,
            Endpoint::Parts {
                host,
                port,
                user,
                database,
                password,
            } => {
                let mut c = postgres::Config::new();
                c.host(host)
                    .port(port.unwrap_or(5432))
                    .user(user)
                    .dbname(database);
                if let Some(p) = password {
                    c.password(p);
                }
                c
            }
        };
        config
            .connect_timeout(Duration::from_secs(self.source.connect_timeout_secs))
            .application_name(&format!("sharebroker:{}", self.spec.name));
        let mut client = config
            .connect(NoTls)
            .map_err(|e| self.connect_error(sql::redact(&e.to_string(), &secrets)))?;
        // A `SQL_ASCII` database stores bytes unchecked, and the server
        // refuses to convert invalid ones to UTF-8 (failing the whole query):
        // take its bytes as they are and check each value here, so that one
        // bad value sends one row to quarantine. Every other server encoding
        // is validated on input and converted to UTF-8 by the server.
        let encoding = client
            .query_one("SHOW server_encoding", &[])
            .map_err(|e| self.connect_error(sql::redact(&e.to_string(), &secrets)))?;
        if encoding.get::<_, &str>(0) == "SQL_ASCII" {
            client
                .batch_execute("SET client_encoding = 'SQL_ASCII'")
                .map_err(|e| self.connect_error(sql::redact(&e.to_string(), &secrets)))?;
        }
        Ok((client, secrets))
    }

    /// Describe the relation and check that every planned column exists
    /// and has a type this connector renders.
    fn describe(
        &self,
        client: &mut Client,
        plan: &Plan,
        secrets: &[String],
    ) -> Result<Described, ConnectorError> {
        let stmt = client
            .prepare(&format!("SELECT * FROM {} LIMIT 0", self.relation()))
            .map_err(|e| self.read_error("describe", e, secrets))?;
        let found: Vec<String> = stmt
            .columns()
            .iter()
            .map(|c| c.name().to_string())
            .collect();
        sql::check_columns(&self.spec.name, &plan.select, &found)?;
        let mut render = Vec::new();
        let mut type_names = Vec::new();
        for col in &plan.select {
            let c = stmt
                .columns()
                .iter()
                .find(|c| c.name() == col)
                .expect("checked above");
            let ty = c.type_();
            render.push(Render::of(ty).ok_or_else(|| ConnectorError::Unsupported {
                source_name: self.spec.name.clone(),
                reason: format!(
                    "column `{col}` has type `{}`, which this connector does not read; cast it to text in a `query`",
                    ty.name()
                ),
            })?);
            type_names.push(format!(
                "{}.{}",
                quote_ident(ty.schema()),
                quote_ident(ty.name())
            ));
        }
        Ok(Described { render, type_names })
    }

    fn read_error(&self, position: &str, e: postgres::Error, secrets: &[String]) -> ConnectorError {
        let reason = match e.as_db_error() {
            Some(db) => format!("{}: {}", db.severity(), db.message()),
            // Anything else while reading is the connection going away; the
            // cause is further down the source chain.
            None => {
                let mut reason = format!("connection lost: {e}");
                let mut cause = std::error::Error::source(&e);
                while let Some(c) = cause {
                    let _ = write!(reason, ": {c}");
                    cause = c.source();
                }
                reason
            }
        };
        ConnectorError::Read {
            source_name: self.spec.name.clone(),
            position: position.to_string(),
            reason: sql::redact(&reason, secrets),
        }
    }

    /// The query of one pull and its parameters.
    fn query(
        &self,
        plan: &Plan,
        described: &Described,
        from: Option<&Checkpoint>,
    ) -> Result<(String, Vec<String>), ConnectorError> {
        let cols = plan
            .select
            .iter()
            .map(|c| quote_ident(c))
            .collect::<Vec<_>>()
            .join(", ");
        let mut q = format!("SELECT {cols} FROM {}", self.relation());
        let mut params = Vec::new();
        if let (Some(wm_col), Some(wm)) = (&self.source.watermark_column, plan.watermark) {
            let w = quote_ident(wm_col);
            let id = quote_ident(&self.spec.record_id_column);
            let _ = write!(q, " WHERE {w} IS NOT NULL AND {id} IS NOT NULL");
            if let Some(cp) = from {
                let (wv, idv) = cp.watermark_pair(&self.spec.name, wm_col)?;
                let _ = write!(
                    q,
                    " AND ({w}, {id}) > (CAST($1::text AS {}), CAST($2::text AS {}))",
                    described.type_names[wm], described.type_names[plan.record_id]
                );
                params.push(wv.to_string());
                params.push(idv.to_string());
            }
            let _ = write!(q, " ORDER BY {w}, {id}");
        }
        Ok((q, params))
    }
}

/// Decode row `row` into `values` (one buffer per selected column; `None`
/// for NULL or for a value that cannot be read). Every column is decoded,
/// so the watermark and record id are fresh even in a row that is
/// rejected; the first failure is the row's rejection reason.
fn decode_row(
    row: &Row,
    described: &Described,
    values: &mut [Option<String>],
) -> Result<(), String> {
    let mut failure = None;
    for (i, (how, slot)) in described.render.iter().zip(values.iter_mut()).enumerate() {
        let raw = match row.try_get::<usize, RawValue>(i) {
            Ok(raw) => raw.0,
            Err(e) => {
                *slot = None;
                failure.get_or_insert_with(|| format!("column {}: {e}", i + 1));
                continue;
            }
        };
        match raw {
            None => *slot = None,
            Some(bytes) => {
                let buf = slot.get_or_insert_with(String::new);
                buf.clear();
                if let Err(reason) = render(*how, bytes, buf) {
                    *slot = None;
                    failure.get_or_insert_with(|| {
                        format!("column `{}`: {reason}", row.columns()[i].name())
                    });
                }
            }
        }
    }
    failure.map_or(Ok(()), Err)
}

fn raw_of(row: &Row, columns: &[String]) -> String {
    sql::raw_row(
        columns,
        (0..columns.len()).map(|i| {
            row.try_get::<usize, RawValue>(i)
                .ok()
                .and_then(|v| v.0)
                .map(String::from_utf8_lossy)
                .map(|c| Cow::Owned(c.into_owned()))
        }),
    )
}

impl Connector for PostgresConnector {
    fn spec(&self) -> &ConnectorSpec {
        &self.spec
    }

    fn mode(&self) -> PullMode {
        self.source.mode()
    }

    fn check(&self) -> Result<(), ConnectorError> {
        let (mut client, secrets) = self.connect()?;
        let plan = Plan::new(&self.spec, self.source.watermark_column.as_deref());
        self.describe(&mut client, &plan, &secrets)?;
        if let Some(wm) = &self.source.watermark_column {
            // Incremental pulls cannot place a row without both keys.
            let q = format!(
                "SELECT count(*) FROM {} WHERE {} IS NULL OR {} IS NULL",
                self.relation(),
                quote_ident(wm),
                quote_ident(&self.spec.record_id_column)
            );
            let row = client
                .query_one(&q, &[])
                .map_err(|e| self.read_error("check", e, &secrets))?;
            let n: i64 = row.get(0);
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
        let (mut client, secrets) = self.connect()?;
        let plan = Plan::new(&self.spec, self.source.watermark_column.as_deref());
        let described = self.describe(&mut client, &plan, &secrets)?;
        let (query, params) = self.query(&plan, &described, from)?;
        let stmt = client
            .prepare_typed(&query, &vec![Type::TEXT; params.len()])
            .map_err(|e| self.read_error("prepare", e, &secrets))?;
        let mut rows = client
            .query_raw(&stmt, params.iter())
            .map_err(|e| self.read_error("query", e, &secrets))?;
        let mut out = BatchBuilder::new(&self.spec);
        let mut values: Vec<Option<String>> = vec![None; plan.select.len()];
        let wm_col = self.source.watermark_column.as_deref();
        let mut position = 0u64;
        // The (watermark, id) of the last row read whose keys could be
        // decoded: the checkpoint when a batch is emitted. Reused buffers.
        let (mut last_wm, mut last_id) = (String::new(), String::new());
        let mut have_last = false;
        let last = |have: bool, wm: &str, id: &str| -> Option<Checkpoint> {
            match (wm_col, have) {
                (Some(col), true) => Some(Checkpoint::watermark(col, wm, id)),
                _ => None,
            }
        };
        loop {
            let row = match rows.next() {
                Ok(Some(row)) => row,
                Ok(None) => break,
                Err(e) => {
                    return Err(self.read_error(&format!("row {}", position + 1), e, &secrets));
                }
            };
            position += 1;
            out.stats.bytes += row_bytes(&row);
            let decoded = decode_row(&row, &described, &mut values);
            let reason = match decoded {
                Err(reason) => Some(reason),
                Ok(()) if values[plan.record_id].as_deref().is_none_or(str::is_empty) => {
                    Some("the record id is empty".to_string())
                }
                Ok(()) => None,
            };
            // Rows come in (watermark, id) order; a rejected row moves the
            // checkpoint too, unless its watermark or id could not be read
            // (then a resumed pull reads it, and rejects it, again).
            if let Some(wm) = plan.watermark
                && let (Some(w), Some(id)) = (&values[wm], &values[plan.record_id])
            {
                last_wm.clear();
                last_wm.push_str(w);
                last_id.clear();
                last_id.push_str(id);
                have_last = true;
            }
            match reason {
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
        out.finish(last(have_last, &last_wm, &last_id), emit)
    }
}

/// Bytes of a row as it came over the wire, roughly (values only).
fn row_bytes(row: &Row) -> u64 {
    (0..row.len())
        .map(|i| {
            row.try_get::<usize, RawValue>(i)
                .ok()
                .and_then(|v| v.0)
                .map_or(0, |b| b.len() as u64)
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numerics_render_like_postgres() {
        // (ndigits, weight, sign, dscale, digits) → text
        let cases: &[(&[u16], i16, u16, u16, &str)] = &[
            (&[], 0, 0, 0, "0"),
            (&[], 0, 0, 2, "0.00"),
            (&[1], 0, 0, 0, "1"),
            (&[12, 3456], 1, 0, 0, "123456"),
            (&[12, 3456, 7800], 1, 0x4000, 3, "-123456.780"),
            (&[5000], -1, 0, 1, "0.5"),
            (&[12], -2, 0, 8, "0.00000012"),
            (&[6501, 234], 4, 0, 0, "65010234000000000000"),
            (&[], 0, 0xC000, 0, "NaN"),
        ];
        for (digits, weight, sign, dscale, want) in cases {
            let mut raw = Vec::new();
            raw.extend_from_slice(&(digits.len() as u16).to_be_bytes());
            raw.extend_from_slice(&weight.to_be_bytes());
            raw.extend_from_slice(&sign.to_be_bytes());
            raw.extend_from_slice(&dscale.to_be_bytes());
            for d in *digits {
                raw.extend_from_slice(&d.to_be_bytes());
            }
            let mut out = String::new();
            numeric(&raw, &mut out).expect("numeric");
            assert_eq!(&out, want);
        }
    }

    #[test]
    fn timestamps_render_iso() {
        let mut out = String::new();
        // 2000-01-01 00:00:00 minus one and a half seconds.
        render(Render::Timestamp, &(-1_500_000i64).to_be_bytes(), &mut out).expect("ts");
        assert_eq!(out, "1999-12-31T23:59:58.500000");
        out.clear();
        render(Render::TimestampTz, &0i64.to_be_bytes(), &mut out).expect("tstz");
        assert_eq!(out, "2000-01-01T00:00:00Z");
        out.clear();
        render(Render::Date, &(-1i32).to_be_bytes(), &mut out).expect("date");
        assert_eq!(out, "1999-12-31");
    }
}
