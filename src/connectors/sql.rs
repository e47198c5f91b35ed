//! What the relational connectors (`postgres`, `mysql`) share: their
//! connector-file section, credentials resolved at connect time from the
//! environment or a file (never from the connector file, never into an
//! error), and the plan of one pull — which columns to select, in which
//! order, and from where an incremental pull resumes.

// Without either database feature, only the config section is used.
#![cfg_attr(not(any(feature = "postgres", feature = "mysql")), allow(dead_code))]

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{ConnectorError, ConnectorSpec};
use crate::config::{ConfigError, Source};

/// The `[source]` section of a `postgres` or `mysql` connector file.
///
/// Exactly one of `table` and `query`; exactly one way to connect: `url_env`,
/// `url_file`, or `host` (with `port`, `user`, `database` and at most one of
/// `password_env` / `password_file`). There is deliberately no `password`
/// key: a secret never sits in a connector file.
#[derive(Deserialize, Debug, Clone, Default)]
#[serde(deny_unknown_fields)]
pub struct DbSource {
    /// A table or view, optionally schema-qualified (`schema.table`).
    #[serde(default)]
    pub table: Option<String>,
    /// A `SELECT` whose result is the source; it is wrapped as a subquery.
    #[serde(default)]
    pub query: Option<String>,
    /// Name of an environment variable holding the connection URL.
    #[serde(default)]
    pub url_env: Option<String>,
    /// File holding the connection URL (relative: against the data directory).
    #[serde(default)]
    pub url_file: Option<PathBuf>,
    #[serde(default)]
    pub host: Option<String>,
    /// Default: 5432 for postgres, 3306 for mysql.
    #[serde(default)]
    pub port: Option<u16>,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub database: Option<String>,
    /// Name of an environment variable holding the password.
    #[serde(default)]
    pub password_env: Option<String>,
    /// File holding the password (relative: against the data directory);
    /// one trailing newline is ignored.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// A column that grows whenever a row is inserted or updated (update
    /// time, or an increasing id). When set, pulls are incremental: rows
    /// after the last (watermark, record id) pair pulled, in that order.
    #[serde(default)]
    pub watermark_column: Option<String>,
    /// Seconds to wait for a connection; default 10.
    #[serde(default = "default_connect_timeout_secs")]
    pub connect_timeout_secs: u64,
}

fn default_connect_timeout_secs() -> u64 {
    10
}

/// The line of `key = …` inside the `[source]` table of a connector file,
/// for error messages (serde loses spans inside tagged enums).
pub(crate) fn source_key_line(src: &Source, key: &str) -> Option<usize> {
    let mut in_source = false;
    for (i, line) in src.text.lines().enumerate() {
        let t = line.trim();
        if t.starts_with('[') {
            in_source = t == "[source]";
            continue;
        }
        if in_source
            && t.strip_prefix(key)
                .is_some_and(|r| r.trim_start().starts_with('='))
        {
            return Some(i + 1);
        }
    }
    None
}

impl DbSource {
    /// Incremental with a watermark column, a snapshot without.
    pub(crate) fn mode(&self) -> super::PullMode {
        if self.watermark_column.is_some() {
            super::PullMode::Incremental
        } else {
            super::PullMode::Snapshot
        }
    }

    /// Structural checks of a connector file's `[source]` section.
    pub(crate) fn validate(&self, src: &Source, errors: &mut Vec<ConfigError>) {
        let err = |key: &str, reason: String| {
            ConfigError::new(&src.path, format!("source.{key}"), reason)
                .at_line(source_key_line(src, key))
        };
        match (&self.table, &self.query) {
            (Some(_), Some(_)) => errors.push(err(
                "query",
                "give either `table` or `query`, not both".to_string(),
            )),
            (None, None) => errors.push(err("table", "give `table` or `query`".to_string())),
            (Some(t), None) if t.trim().is_empty() || t.split('.').any(|p| p.is_empty()) => {
                errors.push(err("table", format!("`{t}` is not a table name")))
            }
            (None, Some(q)) if q.trim().is_empty() => {
                errors.push(err("query", "the query is empty".to_string()))
            }
            _ => {}
        }
        let ways = [
            self.url_env.is_some(),
            self.url_file.is_some(),
            self.host.is_some(),
        ]
        .iter()
        .filter(|w| **w)
        .count();
        if ways != 1 {
            errors.push(err(
                "url_env",
                "give exactly one of `url_env`, `url_file` or `host` (with `user`, `database` and `password_env` or `password_file`)".to_string(),
            ));
        }
        if self.host.is_none() {
            for (key, set) in [
                ("port", self.port.is_some()),
                ("user", self.user.is_some()),
                ("database", self.database.is_some()),
                ("password_env", self.password_env.is_some()),
                ("password_file", self.password_file.is_some()),
            ] {
                if set {
                    errors.push(err(
                        key,
                        format!("`{key}` goes with `host`; a URL carries its own"),
                    ));
                }
            }
        } else {
            if self.user.is_none() {
                errors.push(err("host", "`host` needs `user`".to_string()));
            }
            if self.database.is_none() {
                errors.push(err("host", "`host` needs `database`".to_string()));
            }
            if self.password_env.is_some() && self.password_file.is_some() {
                errors.push(err(
                    "password_file",
                    "give at most one of `password_env` and `password_file`".to_string(),
                ));
            }
        }
        if let Some(w) = &self.watermark_column
            && w.trim().is_empty()
        {
            errors.push(err(
                "watermark_column",
                "the watermark column is empty".to_string(),
            ));
        }
        if self.connect_timeout_secs == 0 {
            errors.push(err(
                "connect_timeout_secs",
                "must be at least 1".to_string(),
            ));
        }
    }

    /// Resolve where and as whom to connect. Secrets are read now, not when
    /// the connector file is loaded, so a rotated password is picked up by
    /// the next pull.
    pub(crate) fn endpoint(
        &self,
        source_name: &str,
        data_dir: &Path,
    ) -> Result<Endpoint, ConnectorError> {
        let cred = |reason: String| ConnectorError::Credentials {
            source_name: source_name.to_string(),
            reason,
        };
        let read_file = |path: &Path, what: &str| -> Result<String, ConnectorError> {
            let p = data_dir.join(path);
            let text = std::fs::read_to_string(&p)
                .map_err(|e| cred(format!("cannot read {what} file {}: {e}", p.display())))?;
            let text = text.strip_suffix('\n').unwrap_or(&text);
            Ok(text.strip_suffix('\r').unwrap_or(text).to_string())
        };
        let read_env = |var: &str, what: &str| -> Result<String, ConnectorError> {
            std::env::var(var).map_err(|_| {
                cred(format!(
                    "environment variable `{var}` (the {what}) is not set or not valid unicode"
                ))
            })
        };
        if let Some(var) = &self.url_env {
            return Ok(Endpoint::Url {
                url: read_env(var, "connection URL")?,
                origin: format!("environment variable `{var}`"),
            });
        }
        if let Some(path) = &self.url_file {
            return Ok(Endpoint::Url {
                url: read_file(path, "connection URL")?,
                origin: format!("file {}", data_dir.join(path).display()),
            });
        }
        let password = match (&self.password_env, &self.password_file) {
            (Some(var), _) => Some(read_env(var, "password")?),
            (None, Some(path)) => Some(read_file(path, "password")?),
            (None, None) => None,
        };
        Ok(Endpoint::Parts {
            host: self.host.clone().unwrap_or_default(),
            port: self.port,
            user: self.user.clone().unwrap_or_default(),
            database: self.database.clone().unwrap_or_default(),
            password,
        })
    }
}

/// Where to connect, with the secret in it. Deliberately not `Debug`.
pub(crate) enum Endpoint {
    Url {
        url: String,
        /// Where the URL came from, for errors (never the URL itself).
        origin: String,
    },
    Parts {
        host: String,
        port: Option<u16>,
        user: String,
        database: String,
        password: Option<String>,
    },
}

impl Endpoint {
    /// The secret in this endpoint: the password, or for a URL the whole
    /// URL's user-info part, for [`redact`].
    pub(crate) fn secrets(&self) -> Vec<String> {
        match self {
            Endpoint::Url { url, .. } => {
                let mut out = vec![url.clone()];
                // `scheme://user:password@host/…`
                if let Some(rest) = url.split_once("://").map(|(_, r)| r)
                    && let Some((userinfo, _)) = rest.rsplit_once('@')
                    && let Some((_, pw)) = userinfo.split_once(':')
                    && !pw.is_empty()
                {
                    out.push(pw.to_string());
                    if let Ok(decoded) = percent_decode(pw) {
                        out.push(decoded);
                    }
                }
                out
            }
            Endpoint::Parts { password, .. } => password.iter().cloned().collect(),
        }
    }
}

fn percent_decode(s: &str) -> Result<String, ()> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = std::str::from_utf8(&b[i + 1..i + 3]).map_err(|_| ())?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| ())?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| ())
}

/// `text` with every occurrence of each secret replaced by `***`: applied to
/// every client-library error before it leaves the connector, in case a
/// library ever echoes what it was given.
pub(crate) fn redact(text: &str, secrets: &[String]) -> String {
    let mut out = text.to_string();
    for s in secrets {
        if s.len() >= 3 {
            out = out.replace(s.as_str(), "***");
        }
    }
    out
}

/// The columns one pull selects and how the batch columns map onto them.
pub(crate) struct Plan {
    /// Distinct source columns, in select order.
    pub(crate) select: Vec<String>,
    /// For each of [`ConnectorSpec::source_columns`], its index in `select`.
    pub(crate) batch_index: Vec<usize>,
    /// Index in `select` of the record id.
    pub(crate) record_id: usize,
    /// Index in `select` of the watermark, for incremental pulls.
    pub(crate) watermark: Option<usize>,
}

impl Plan {
    pub(crate) fn new(spec: &ConnectorSpec, watermark: Option<&str>) -> Plan {
        let mut select: Vec<String> = Vec::new();
        let index_of = |c: &str, select: &mut Vec<String>| match select.iter().position(|s| s == c)
        {
            Some(i) => i,
            None => {
                select.push(c.to_string());
                select.len() - 1
            }
        };
        let batch_index: Vec<usize> = spec
            .source_columns()
            .into_iter()
            .map(|c| index_of(c, &mut select))
            .collect();
        let record_id = batch_index[0];
        let watermark = watermark.map(|w| index_of(w, &mut select));
        Plan {
            select,
            batch_index,
            record_id,
            watermark,
        }
    }
}

/// The error for mapped columns the source lacks, listing what it has.
pub(crate) fn check_columns(
    source_name: &str,
    wanted: &[String],
    found: &[String],
) -> Result<(), ConnectorError> {
    match wanted.iter().find(|w| !found.contains(w)) {
        Some(missing) => Err(ConnectorError::MissingColumn {
            source_name: source_name.to_string(),
            column: missing.clone(),
            found: found.join(", "),
        }),
        None => Ok(()),
    }
}

/// A rejected database row's raw text: `column=value` pairs, lossily
/// decoded, for the steward who fixes it (quarantine only, never logs).
pub(crate) fn raw_row<'a>(
    columns: &[String],
    values: impl Iterator<Item = Option<std::borrow::Cow<'a, str>>>,
) -> String {
    let mut out = String::new();
    for (c, v) in columns.iter().zip(values) {
        if !out.is_empty() {
            out.push_str(", ");
        }
        out.push_str(c);
        out.push('=');
        match v {
            Some(v) => out.push_str(&v),
            None => out.push_str("NULL"),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_hides_url_passwords_plain_and_encoded() {
        let e = Endpoint::Url {
            url: "postgres://u:p%40ss-word@h/db".into(),
            origin: "x".into(),
        };
        let s = e.secrets();
        let msg = "failed for postgres://u:p%40ss-word@h/db with p@ss-word and p%40ss-word";
        let out = redact(msg, &s);
        assert!(!out.contains("ss-word"), "{out}");
    }

    #[test]
    fn plan_selects_each_column_once() {
        let spec = ConnectorSpec {
            name: "t".into(),
            file: PathBuf::from("t.toml"),
            agency: "a".into(),
            dataset: "d".into(),
            subject_column: "id_number".into(),
            record_id_column: "rid".into(),
            as_of_column: "updated".into(),
            columns: vec![
                ("id_number".into(), "population.id_number".into()),
                ("name".into(), "population.name".into()),
            ],
            values: Default::default(),
            pull_interval: None,
        };
        let p = Plan::new(&spec, Some("updated"));
        assert_eq!(p.select, ["rid", "updated", "id_number", "name"]);
        assert_eq!(p.batch_index, [0, 1, 2, 2, 3]);
        assert_eq!(p.watermark, Some(1));
        let p = Plan::new(&spec, Some("seq"));
        assert_eq!(p.watermark, Some(4));
    }
}
