//! Per-container log files: every line a guest writes to stdout or stderr is stored as
//! `<RFC 3339 timestamp> <stdout|stderr> <F|P> <text>` (the CRI log format), and the file is
//! rotated when it grows past its limit so a guest that floods its output bounds its own disk use.

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use jiff::Timestamp;
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};

/// Default size at which a log file is rotated (one rotated file is kept).
pub const DEFAULT_MAX_LOG_BYTES: u64 = 10 << 20;
/// A partial line longer than this is written out as a `P` (partial) record.
const MAX_LINE: usize = 16 << 10;

/// Which output stream a record came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    fn as_str(self) -> &'static str {
        match self {
            Self::Stdout => "stdout",
            Self::Stderr => "stderr",
        }
    }
}

struct Inner {
    path: PathBuf,
    file: Option<File>,
    size: u64,
    max_bytes: u64,
    partial: [Vec<u8>; 2],
}

impl Inner {
    fn record(&mut self, stream: Stream, text: &[u8], full: bool) {
        let ts = Timestamp::now();
        let mut line = format!(
            "{ts:.9} {} {} ",
            stream.as_str(),
            if full { "F" } else { "P" }
        )
        .into_bytes();
        line.extend_from_slice(text);
        line.push(b'\n');
        if self.size + line.len() as u64 > self.max_bytes && self.size > 0 {
            self.rotate();
        }
        if let Some(f) = self.file.as_mut() {
            // A full disk must not take the guest (or the kubelet) down: the line is dropped.
            if f.write_all(&line).is_ok() {
                self.size += line.len() as u64;
            }
        }
    }

    fn rotate(&mut self) {
        self.file = None;
        let _ = std::fs::rename(&self.path, rotated(&self.path));
        self.file = File::create(&self.path).ok();
        self.size = 0;
    }

    fn write(&mut self, stream: Stream, mut buf: &[u8]) {
        let idx = stream as usize;
        while let Some(nl) = buf.iter().position(|b| *b == b'\n') {
            let mut line = std::mem::take(&mut self.partial[idx]);
            line.extend_from_slice(&buf[..nl]);
            self.record(stream, &line, true);
            buf = &buf[nl + 1..];
        }
        self.partial[idx].extend_from_slice(buf);
        if self.partial[idx].len() >= MAX_LINE {
            let line = std::mem::take(&mut self.partial[idx]);
            self.record(stream, &line, false);
        }
    }

    fn flush_partials(&mut self) {
        for stream in [Stream::Stdout, Stream::Stderr] {
            let line = std::mem::take(&mut self.partial[stream as usize]);
            if !line.is_empty() {
                self.record(stream, &line, true);
            }
        }
    }
}

/// The path a log file is rotated to.
pub fn rotated(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".1");
    PathBuf::from(s)
}

/// One container run's log file, shared by its stdout and stderr.
#[derive(Clone)]
pub struct LogFile {
    inner: Arc<Mutex<Inner>>,
}

impl LogFile {
    /// Creates (truncating) the log file at `path`.
    pub fn create(path: &Path, max_bytes: u64) -> io::Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .open(path)?;
        Ok(Self {
            inner: Arc::new(Mutex::new(Inner {
                path: path.to_path_buf(),
                file: Some(file),
                size: 0,
                max_bytes,
                partial: [Vec::new(), Vec::new()],
            })),
        })
    }

    /// A WASI output stream that writes records for `stream`.
    pub fn stream(&self, stream: Stream) -> LogStream {
        LogStream {
            log: self.clone(),
            stream,
        }
    }

    /// Writes out unterminated last lines; called when the container ends.
    pub fn finish(&self) {
        if let Ok(mut inner) = self.inner.lock() {
            inner.flush_partials();
        }
    }

    /// Writes a line on behalf of the kubelet (e.g. why a container could not start).
    pub fn note(&self, stream: Stream, text: &str) {
        if let Ok(mut inner) = self.inner.lock() {
            inner.record(stream, text.as_bytes(), true);
        }
    }
}

/// The guest's stdout or stderr.
#[derive(Clone)]
pub struct LogStream {
    log: LogFile,
    stream: Stream,
}

impl IsTerminal for LogStream {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for LogStream {
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl AsyncWrite for LogStream {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        // Local appends are short; the file is written under the lock without a blocking pool.
        match self.log.inner.lock() {
            Ok(mut inner) => inner.write(self.stream, buf),
            Err(_) => return Poll::Ready(Err(io::Error::other("log writer poisoned"))),
        }
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// One parsed record of a log file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub timestamp: String,
    pub stream: String,
    pub full: bool,
    pub text: String,
}

/// Parses one line of a log file; `None` for a malformed line.
pub fn parse(line: &str) -> Option<Record> {
    let mut parts = line.splitn(4, ' ');
    let timestamp = parts.next()?.to_string();
    let stream = parts.next()?.to_string();
    let tag = parts.next()?;
    let text = parts.next().unwrap_or("").to_string();
    Some(Record {
        timestamp,
        stream,
        full: tag != "P",
        text,
    })
}

/// Every record of a log (the rotated file first), in order.
pub fn read_all(path: &Path) -> io::Result<Vec<Record>> {
    let mut out = Vec::new();
    for p in [rotated(path), path.to_path_buf()] {
        match File::open(&p) {
            Ok(f) => {
                for line in BufReader::new(f).lines() {
                    if let Some(r) = parse(&line?) {
                        out.push(r);
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_timestamped_per_stream_and_partials_flushed_at_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c/0.log");
        let log = LogFile::create(&path, DEFAULT_MAX_LOG_BYTES).unwrap();
        log.inner.lock().unwrap().write(Stream::Stdout, b"one\ntw");
        log.inner.lock().unwrap().write(Stream::Stderr, b"err\n");
        log.inner.lock().unwrap().write(Stream::Stdout, b"o\nthree");
        log.finish();
        let recs = read_all(&path).unwrap();
        let texts: Vec<_> = recs
            .iter()
            .map(|r| (r.stream.as_str(), r.text.as_str()))
            .collect();
        assert_eq!(
            texts,
            vec![
                ("stdout", "one"),
                ("stderr", "err"),
                ("stdout", "two"),
                ("stdout", "three")
            ]
        );
        assert!(recs[0].timestamp.parse::<Timestamp>().is_ok());
    }

    #[test]
    fn a_flood_of_output_is_rotated_and_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        let log = LogFile::create(&path, 4096).unwrap();
        for i in 0..1000 {
            log.inner
                .lock()
                .unwrap()
                .write(Stream::Stdout, format!("line {i}\n").as_bytes());
        }
        let main = std::fs::metadata(&path).unwrap().len();
        let old = std::fs::metadata(rotated(&path)).unwrap().len();
        assert!(main <= 4096 && old <= 4096, "{main} {old}");
        let recs = read_all(&path).unwrap();
        assert_eq!(recs.last().unwrap().text, "line 999");
    }
}
