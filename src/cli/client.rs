//! HTTP/1.1 over the daemon's Unix socket: one request per connection, status + body.
//!
//! This is all the CLI knows of the daemon (docs/api.md §3). It does not interpret answers;
//! `commands` decides what a status means. A socket that is missing or refuses is its
//! own error, [`ClientError::Unreachable`], because it has its own exit code (69) and
//! its own advice: start the daemon.

use std::path::{Path, PathBuf};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{header, Method, Request};
use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;

/// How long one request may take before we give up. Generous: a 10,000-card batch is
/// one transaction with a full fsync, and that may take a while on a slow disk.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);

/// Failing to talk to the daemon at all.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nothing listens at the socket path (missing, refused, or a path through a file).
    #[error(
        "cannot reach the contactq daemon at {} ({}): start it with `contactq daemon` or `systemctl start contactq`",
        path.display(), os_reason(source)
    )]
    Unreachable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The socket exists but connecting failed otherwise (typically permission denied).
    #[error("cannot connect to the contactq daemon at {} ({})", path.display(), os_reason(source))]
    Connect {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The connection broke, or the other end does not speak HTTP.
    #[error("talking to the contactq daemon failed: {0}")]
    Http(#[from] hyper::Error),
    /// The request itself cannot be written (an idempotency key a header cannot hold).
    #[error("cannot build the request: {0}")]
    Request(String),
    /// No answer in time.
    #[error("the contactq daemon at {} did not answer within {secs} s", path.display())]
    TimedOut { path: PathBuf, secs: u64 },
    /// A downloaded body could not be written out.
    #[error("cannot write what the daemon sent: {0}")]
    Write(#[source] std::io::Error),
}

/// `No such file or directory`, without Rust's ` (os error 2)` suffix.
fn os_reason(err: &std::io::Error) -> String {
    let text = err.to_string();
    match text.find(" (os error") {
        Some(cut) => text[..cut].to_string(),
        None => text,
    }
}

/// A request to send: method, path (with query), optional JSON body and idempotency key.
#[derive(Debug, Clone)]
pub struct ApiRequest {
    pub method: Method,
    pub path: String,
    pub body: Option<Vec<u8>>,
    pub idempotency_key: Option<String>,
}

impl ApiRequest {
    pub fn get(path: impl Into<String>) -> Self {
        Self {
            method: Method::GET,
            path: path.into(),
            body: None,
            idempotency_key: None,
        }
    }

    pub fn delete(path: impl Into<String>) -> Self {
        Self {
            method: Method::DELETE,
            ..Self::get(path)
        }
    }

    /// A POST; `body` None sends an empty body (retry, pause, resume).
    pub fn post(path: impl Into<String>, body: Option<Vec<u8>>) -> Self {
        Self {
            method: Method::POST,
            body,
            ..Self::get(path)
        }
    }

    pub fn with_idempotency_key(mut self, key: Option<String>) -> Self {
        self.idempotency_key = key;
        self
    }
}

/// What the daemon answered.
#[derive(Debug, Clone)]
pub struct ApiResponse {
    pub status: u16,
    pub body: Bytes,
}

impl ApiResponse {
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// The daemon's socket.
#[derive(Debug, Clone)]
pub struct Client {
    socket: PathBuf,
    timeout: Duration,
}

impl Client {
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        Self {
            socket: socket.into(),
            timeout: DEFAULT_TIMEOUT,
        }
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Sends one request on a fresh connection and reads the whole answer.
    pub async fn send(&self, request: ApiRequest) -> Result<ApiResponse, ClientError> {
        match tokio::time::timeout(self.timeout, self.exchange(request)).await {
            Ok(answer) => answer,
            Err(_) => Err(ClientError::TimedOut {
                path: self.socket.clone(),
                secs: self.timeout.as_secs(),
            }),
        }
    }

    /// Opens a connection; the task drives its I/O until the sender is dropped.
    async fn connect(
        &self,
    ) -> Result<
        (
            hyper::client::conn::http1::SendRequest<Full<Bytes>>,
            tokio::task::JoinHandle<Result<(), hyper::Error>>,
        ),
        ClientError,
    > {
        let stream = UnixStream::connect(&self.socket).await.map_err(|source| {
            let path = self.socket.clone();
            match source.raw_os_error() {
                Some(libc::ENOENT | libc::ECONNREFUSED | libc::ENOTDIR) => {
                    ClientError::Unreachable { path, source }
                }
                _ => ClientError::Connect { path, source },
            }
        })?;
        let (sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        Ok((sender, tokio::spawn(connection)))
    }

    /// GETs `path` and streams a 200's body into `out`, answering the bytes written;
    /// any other answer is read whole (error bodies are small) and handed back. Each
    /// chunk must arrive within the client's time-out, not the whole body.
    pub async fn download(
        &self,
        path: &str,
        out: &mut (dyn std::io::Write + Send),
    ) -> Result<Result<u64, ApiResponse>, ClientError> {
        let timed_out = || ClientError::TimedOut {
            path: self.socket.clone(),
            secs: self.timeout.as_secs(),
        };
        let (mut sender, driver) = self.connect().await?;
        let request = Request::builder()
            .method(Method::GET)
            .uri(path)
            .header(header::HOST, "localhost")
            .body(Full::new(Bytes::new()))
            .map_err(|err| ClientError::Request(err.to_string()))?;
        let response = tokio::time::timeout(self.timeout, sender.send_request(request))
            .await
            .map_err(|_| timed_out())??;
        let status = response.status().as_u16();
        let mut body = response.into_body();
        if status != 200 {
            let body = tokio::time::timeout(self.timeout, body.collect())
                .await
                .map_err(|_| timed_out())??
                .to_bytes();
            driver.abort();
            return Ok(Err(ApiResponse { status, body }));
        }
        let mut written = 0u64;
        while let Some(frame) = tokio::time::timeout(self.timeout, body.frame())
            .await
            .map_err(|_| timed_out())?
        {
            if let Ok(data) = frame?.into_data() {
                out.write_all(&data).map_err(ClientError::Write)?;
                written += data.len() as u64;
            }
        }
        drop(sender);
        driver.abort();
        Ok(Ok(written))
    }

    /// GETs `path` and, on a 200, hands back its body line by line as it arrives (the
    /// NDJSON of `GET /v1/events`); any other answer is read whole and handed back.
    /// Each line must arrive within `idle` (a follow stream's heartbeats see to it).
    pub async fn lines(
        &self,
        path: &str,
        idle: Duration,
    ) -> Result<Result<Lines, ApiResponse>, ClientError> {
        let (mut sender, driver) = self.connect().await?;
        let request = Request::builder()
            .method(Method::GET)
            .uri(path)
            .header(header::HOST, "localhost")
            .body(Full::new(Bytes::new()))
            .map_err(|err| ClientError::Request(err.to_string()))?;
        let response = tokio::time::timeout(self.timeout, sender.send_request(request))
            .await
            .map_err(|_| ClientError::TimedOut {
                path: self.socket.clone(),
                secs: self.timeout.as_secs(),
            })??;
        let status = response.status().as_u16();
        let body = response.into_body();
        if status != 200 {
            let body = body.collect().await?.to_bytes();
            driver.abort();
            return Ok(Err(ApiResponse { status, body }));
        }
        Ok(Ok(Lines {
            body,
            pending: Vec::new(),
            idle,
            socket: self.socket.clone(),
            _sender: sender,
            driver,
        }))
    }

    async fn exchange(&self, request: ApiRequest) -> Result<ApiResponse, ClientError> {
        let (mut sender, driver) = self.connect().await?;

        let mut builder = Request::builder()
            .method(request.method)
            .uri(request.path)
            .header(header::HOST, "localhost")
            .header(header::ACCEPT, "application/json");
        if request.body.is_some() {
            builder = builder.header(header::CONTENT_TYPE, "application/json");
        }
        if let Some(key) = &request.idempotency_key {
            builder = builder.header("Idempotency-Key", key);
        }
        let body = Full::new(Bytes::from(request.body.unwrap_or_default()));
        // Only our own path strings and a user's key reach the builder; a key with bytes
        // a header cannot hold is the one way this fails.
        let http_request = builder
            .body(body)
            .map_err(|err| ClientError::Request(err.to_string()))?;

        let response = sender.send_request(http_request).await?;
        let status = response.status().as_u16();
        let body = response.into_body().collect().await?.to_bytes();
        drop(sender);
        driver.abort();
        Ok(ApiResponse { status, body })
    }
}

/// A streamed answer, one line at a time.
pub struct Lines {
    body: hyper::body::Incoming,
    pending: Vec<u8>,
    idle: Duration,
    socket: PathBuf,
    _sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    driver: tokio::task::JoinHandle<Result<(), hyper::Error>>,
}

impl Lines {
    /// The next line (without its newline), or None once the daemon ended the answer.
    pub async fn next_line(&mut self) -> Result<Option<String>, ClientError> {
        loop {
            if let Some(end) = self.pending.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.pending.drain(..=end).collect();
                return Ok(Some(
                    String::from_utf8_lossy(&line[..line.len() - 1]).into_owned(),
                ));
            }
            let frame = tokio::time::timeout(self.idle, self.body.frame())
                .await
                .map_err(|_| ClientError::TimedOut {
                    path: self.socket.clone(),
                    secs: self.idle.as_secs(),
                })?;
            match frame {
                None => {
                    if self.pending.is_empty() {
                        return Ok(None);
                    }
                    let rest = std::mem::take(&mut self.pending);
                    return Ok(Some(String::from_utf8_lossy(&rest).into_owned()));
                }
                Some(frame) => {
                    if let Ok(data) = frame?.into_data() {
                        self.pending.extend_from_slice(&data);
                    }
                }
            }
        }
    }
}

impl Drop for Lines {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

/// Percent-encodes a path segment or query value: everything but RFC 3986's
/// unreserved characters.
pub fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(byte as char)
            }
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_and_path_segments_are_percent_encoded() {
        assert_eq!(encode("main"), "main");
        assert_eq!(encode("a b/c?d&e=f"), "a%20b%2Fc%3Fd%26e%3Df");
        assert_eq!(encode("é"), "%C3%A9");
    }

    #[tokio::test]
    async fn a_missing_socket_is_unreachable_and_names_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nothing.sock");
        let err = Client::new(&path)
            .send(ApiRequest::get("/v1/health"))
            .await
            .unwrap_err();
        assert!(matches!(err, ClientError::Unreachable { .. }), "{err:?}");
        let text = err.to_string();
        assert!(text.contains(&path.display().to_string()), "{text}");
        assert!(text.contains("(No such file or directory)"), "{text}");
        assert!(text.contains("contactq daemon"), "{text}");
    }

    #[tokio::test]
    async fn a_path_through_a_regular_file_is_unreachable_too() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("plain");
        std::fs::write(&file, b"").unwrap();
        let err = Client::new(file.join("x.sock"))
            .send(ApiRequest::get("/v1/health"))
            .await
            .unwrap_err();
        assert!(matches!(err, ClientError::Unreachable { .. }), "{err:?}");
    }
}
