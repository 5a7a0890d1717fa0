//! A client of the daemon's API, over its Unix socket or over TCP with a
//! bearer token: what the CLI drives `dse serve` with.

pub use hyper::{Method, StatusCode};

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::Request;
use hyper::body::{Body, Frame, SizeHint};
use hyper_util::rt::TokioIo;
use std::path::PathBuf;
use std::pin::Pin;
use std::task::{Context, Poll};

/// Where the daemon listens.
#[derive(Debug, Clone)]
pub enum Endpoint {
    /// Its Unix socket.
    Unix(PathBuf),
    /// `host:port`, with the bearer token to send.
    Tcp {
        /// The address.
        addr: String,
        /// The token.
        token: String,
    },
}

/// Why a request got no answer.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nothing answers at the endpoint.
    #[error(
        "cannot reach dse serve at {endpoint}: {source}; is it running? (start it with `dse serve`)"
    )]
    Unreachable {
        /// Where.
        endpoint: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The exchange failed midway.
    #[error("talking to dse serve: {0}")]
    Http(#[from] hyper::Error),
    /// The request cannot be made (a path that is not a URI).
    #[error("building the request for {path:?}: {reason}")]
    Request {
        /// The path and query.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// What a path segment must escape: everything but unreserved characters
/// (RFC 3986), so that a name is always one segment, whatever it holds.
const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// `name` escaped as one URL path segment (or query value).
pub fn segment(name: &str) -> percent_encoding::PercentEncode<'_> {
    percent_encoding::utf8_percent_encode(name, SEGMENT)
}

/// A request body sent in chunks, reporting each chunk as it goes (for
/// progress bars on large applies).
struct Chunked {
    data: Bytes,
    sent: usize,
    progress: Box<dyn FnMut(usize) + Send>,
}

/// Bytes per chunk of an upload.
const CHUNK: usize = 1 << 20;

impl Body for Chunked {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if self.sent >= self.data.len() {
            return Poll::Ready(None);
        }
        let end = (self.sent + CHUNK).min(self.data.len());
        let chunk = self.data.slice(self.sent..end);
        self.sent = end;
        let sent = self.sent;
        (self.progress)(sent);
        Poll::Ready(Some(Ok(Frame::data(chunk))))
    }

    fn is_end_stream(&self) -> bool {
        self.sent >= self.data.len()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact((self.data.len() - self.sent) as u64)
    }
}

/// A request to send.
pub struct Call {
    /// The method.
    pub method: Method,
    /// Path and query.
    pub path: String,
    /// The body and its content type.
    pub body: Option<(&'static str, Bytes)>,
    /// Called with the bytes of the body sent so far.
    pub progress: Option<Box<dyn FnMut(usize) + Send>>,
}

impl Call {
    /// A request without a body.
    pub fn new(method: Method, path: impl Into<String>) -> Call {
        Call {
            method,
            path: path.into(),
            body: None,
            progress: None,
        }
    }

    /// With a JSON body.
    pub fn json(mut self, body: impl Into<Bytes>) -> Call {
        self.body = Some(("application/json", body.into()));
        self
    }
}

impl Endpoint {
    fn describe(&self) -> String {
        match self {
            Endpoint::Unix(p) => format!("unix socket {}", p.display()),
            Endpoint::Tcp { addr, .. } => format!("tcp {addr}"),
        }
    }

    /// Sends `call` and returns the status and the body of the answer.
    ///
    /// # Errors
    /// [`ClientError`] if no answer came.
    pub async fn send(&self, call: Call) -> Result<(StatusCode, Bytes), ClientError> {
        let unreachable = |source| ClientError::Unreachable {
            endpoint: self.describe(),
            source,
        };
        let path = call.path;
        let bad_request = |e: hyper::http::Error| ClientError::Request {
            path: path.clone(),
            reason: e.to_string(),
        };
        let mut req = Request::builder()
            .method(call.method)
            .uri(path.as_str())
            .header(hyper::header::HOST, "dse");
        if let Endpoint::Tcp { token, .. } = self {
            req = req.header(hyper::header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let (content_type, data) = call.body.unwrap_or(("application/json", Bytes::new()));
        let body = Chunked {
            data,
            sent: 0,
            progress: call.progress.unwrap_or_else(|| Box::new(|_| {})),
        };
        let req = req
            .header(hyper::header::CONTENT_TYPE, content_type)
            .body(body)
            .map_err(bad_request)?;
        let resp = match self {
            Endpoint::Unix(path) => {
                let s = tokio::net::UnixStream::connect(path)
                    .await
                    .map_err(unreachable)?;
                exchange(TokioIo::new(s), req).await?
            }
            Endpoint::Tcp { addr, .. } => {
                let s = tokio::net::TcpStream::connect(addr.as_str())
                    .await
                    .map_err(unreachable)?;
                exchange(TokioIo::new(s), req).await?
            }
        };
        let status = resp.status();
        let body = resp.into_body().collect().await?.to_bytes();
        Ok((status, body))
    }
}

async fn exchange<T>(
    io: T,
    req: Request<Chunked>,
) -> Result<hyper::Response<hyper::body::Incoming>, ClientError>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!("connection to dse serve: {e}");
        }
    });
    Ok(sender.send_request(req).await?)
}
