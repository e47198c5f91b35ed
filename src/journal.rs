//! Append-only line journals (case journal, audit salts): finding the
//! complete lines after a crash, cutting a torn tail, and durable appends
//! that roll a failed write back and refuse further appends (fail closed).

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// The length of `bytes` up to and including its last newline: the part a
/// crash cannot have torn. Anything after it was never acknowledged.
pub fn complete_len(bytes: &[u8]) -> usize {
    bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1)
}

/// The complete lines of a journal's bytes, numbered from 1, without their
/// newlines; blank lines are skipped.
pub fn complete_lines(bytes: &[u8]) -> impl Iterator<Item = (usize, &[u8])> {
    bytes[..complete_len(bytes)]
        .split(|&b| b == b'\n')
        .enumerate()
        .map(|(i, l)| (i + 1, l))
        .filter(|(_, l)| !l.is_empty())
}

/// Open the journal at `path` (creating its directory): `replay` parses
/// its complete lines first, so a journal that does not parse is left as it
/// is; then a torn last line (a crash mid-write, never acknowledged) is cut
/// off and the file is opened for appending. `what` names the journal in
/// the warning about a torn line.
pub fn open_replayed<T>(
    path: &Path,
    what: &str,
    replay: impl FnOnce(&[u8]) -> Result<T, String>,
) -> Result<(T, Appender), String> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    }
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e.to_string()),
    };
    let replayed = replay(&bytes)?;
    let good = complete_len(&bytes);
    if good < bytes.len() {
        tracing::warn!(path = %path.display(), torn_bytes = bytes.len() - good, "cutting the torn last line of the {what}");
        truncate(path, good as u64).map_err(|e| e.to_string())?;
    }
    let appender = Appender::open(path).map_err(|e| e.to_string())?;
    Ok((replayed, appender))
}

/// Cut a file to `len` bytes, durably.
pub fn truncate(path: &Path, len: u64) -> io::Result<()> {
    let f = OpenOptions::new().write(true).open(path)?;
    f.set_len(len)?;
    f.sync_all()
}

/// An open journal to which whole lines are appended durably.
pub struct Appender {
    path: PathBuf,
    file: File,
    len: u64,
    failed: Option<String>,
}

impl Appender {
    /// Open `path` for appending (creating it and syncing its directory when
    /// new). The file must hold only complete lines.
    pub fn open(path: &Path) -> io::Result<Appender> {
        let existed = path.exists();
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        if !existed && let Some(dir) = path.parent() {
            File::open(dir)?.sync_all()?;
        }
        let len = file.metadata()?.len();
        Ok(Appender {
            path: path.to_path_buf(),
            file,
            len,
            failed: None,
        })
    }

    /// Append `line` and a newline, then fsync. On failure the file is cut
    /// back to its last good length and every later append fails too.
    pub fn append(&mut self, line: &[u8]) -> io::Result<()> {
        if let Some(reason) = &self.failed {
            return Err(io::Error::other(format!(
                "{}: an earlier append failed ({reason}); reopen to continue",
                self.path.display()
            )));
        }
        let mut buf = Vec::with_capacity(line.len() + 1);
        buf.extend_from_slice(line);
        buf.push(b'\n');
        match self
            .file
            .write_all(&buf)
            .and_then(|()| self.file.sync_data())
        {
            Ok(()) => {
                self.len += buf.len() as u64;
                Ok(())
            }
            Err(e) => {
                let _ = self
                    .file
                    .set_len(self.len)
                    .and_then(|()| self.file.sync_data());
                self.failed = Some(e.to_string());
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn complete_lines_stop_at_the_last_newline() {
        assert_eq!(complete_len(b""), 0);
        assert_eq!(complete_len(b"{\"a\":1}"), 0);
        assert_eq!(complete_len(b"a\nb\n\xe5\xbc"), 4);
        let lines: Vec<(usize, &[u8])> = complete_lines(b"a\n\nb\ntorn").collect();
        assert_eq!(lines, vec![(1, &b"a"[..]), (3, &b"b"[..])]);
    }

    #[test]
    fn appends_are_whole_lines() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("j.jsonl");
        let mut a = Appender::open(&path).expect("open");
        a.append(b"one").expect("append");
        a.append("二".as_bytes()).expect("append");
        assert_eq!(std::fs::read(&path).expect("read"), "one\n二\n".as_bytes());
    }
}
