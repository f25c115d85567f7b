//! HTTP/1.1 as the own client writes and reads it, without I/O: the request head, the
//! response head (parsed by httparse) and the framing of the response body (chunked, by
//! length, or to the end of the connection), each over bytes the caller read.
//!
//! Everything an upstream sends is capped here: the head by the caller's buffer, its header
//! count by [`MAX_HEADERS`], a chunk-size line by [`MAX_LINE`], trailers by
//! [`MAX_TRAILER_BYTES`]. Body data is never held: [`Framing::step`] says where it is, and the
//! caller hands it on.

use http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Version};

/// Most header lines of one response head (hyper's default).
pub const MAX_HEADERS: usize = 100;

/// Longest chunk-size line (with its extensions) or trailer line.
pub const MAX_LINE: usize = 4 * 1024;

/// Most bytes of trailers after a chunked body.
pub const MAX_TRAILER_BYTES: usize = 16 * 1024;

/// Most informational (1xx) heads before the final one.
pub const MAX_INFORMATIONAL: usize = 8;

/// What was wrong with what an upstream sent, and where.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WireError {
    /// The head did not end within the read buffer.
    #[error("response head longer than {0} bytes")]
    HeadTooLarge(usize),
    /// httparse refused the head.
    #[error("malformed response head: {0}")]
    Head(httparse::Error),
    /// A header name or value that HTTP does not allow.
    #[error("invalid response header {0:?}")]
    Header(String),
    /// `content-length` missing digits, or several that disagree.
    #[error("invalid content-length")]
    ContentLength,
    /// `transfer-encoding` in an HTTP/1.0 response, which cannot frame a body that way.
    #[error("transfer-encoding in an HTTP/1.0 response")]
    TransferEncodingInHttp10,
    /// A 101: no upgrade was asked for.
    #[error("unexpected 101 Switching Protocols")]
    Upgrade,
    /// Informational heads without end.
    #[error("more than {MAX_INFORMATIONAL} informational responses")]
    TooManyInformational,
    /// A chunk-size line that is not hex digits (with optional extensions).
    #[error("malformed chunk-size line")]
    ChunkSize,
    /// A chunk-size or trailer line not ended by CRLF, or with a CR inside.
    #[error("chunk-size or trailer line not ended by CRLF")]
    Line,
    /// A chunk-size line or trailer line longer than [`MAX_LINE`].
    #[error("chunk-size or trailer line longer than {MAX_LINE} bytes")]
    LineTooLong,
    /// Chunk data not followed by CRLF.
    #[error("chunk data not followed by CRLF")]
    ChunkEnd,
    /// Trailers longer than [`MAX_TRAILER_BYTES`].
    #[error("trailers longer than {MAX_TRAILER_BYTES} bytes")]
    TrailersTooLong,
    /// The connection ended before the body did.
    #[error("connection closed before the end of the body")]
    Incomplete,
}

/// The request head of a POST of `body_len` bytes to `path` at `host`, with `headers` (a
/// `host` or `content-length` among them is left out: this writes its own).
pub fn request_head(
    path: &str,
    host: &HeaderValue,
    headers: &HeaderMap,
    body_len: usize,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(128 + headers.len() * 48);
    out.extend_from_slice(b"POST ");
    out.extend_from_slice(path.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\nhost: ");
    out.extend_from_slice(host.as_bytes());
    out.extend_from_slice(b"\r\ncontent-length: ");
    out.extend_from_slice(itoa::Buffer::new().format(body_len).as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in headers {
        if name == http::header::HOST || name == http::header::CONTENT_LENGTH {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// A final response head.
#[derive(Debug)]
pub struct ResponseHead {
    /// Status, version and headers.
    pub parts: http::response::Parts,
    /// How its body is delimited.
    pub framing: Framing,
    /// Whether the connection may carry another request once the body ended.
    pub keep_alive: bool,
}

/// What the start of a buffer holds.
#[derive(Debug)]
pub enum Head {
    /// Not a whole head yet.
    Partial,
    /// An informational (1xx) head of `len` bytes, to skip.
    Informational {
        /// Its length in bytes.
        len: usize,
    },
    /// The final head, of `len` bytes; the body follows.
    Final {
        /// The head.
        head: Box<ResponseHead>,
        /// Its length in bytes.
        len: usize,
    },
}

/// Parses the head at the start of `buf`; `cap` is the most a head may take (the caller's
/// buffer), past which a partial head is an error.
pub fn parse_head(buf: &[u8], cap: usize) -> Result<Head, WireError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut headers);
    let len = match response.parse(buf).map_err(WireError::Head)? {
        httparse::Status::Complete(len) => len,
        httparse::Status::Partial if buf.len() >= cap => return Err(WireError::HeadTooLarge(cap)),
        httparse::Status::Partial => return Ok(Head::Partial),
    };
    // httparse gives a code and version to a complete head.
    let code = response.code.unwrap_or_default();
    let status =
        StatusCode::from_u16(code).map_err(|_| WireError::Head(httparse::Error::Status))?;
    if status == StatusCode::SWITCHING_PROTOCOLS {
        return Err(WireError::Upgrade);
    }
    if status.is_informational() {
        return Ok(Head::Informational { len });
    }
    let version = match response.version {
        Some(0) => Version::HTTP_10,
        _ => Version::HTTP_11,
    };
    let mut map = HeaderMap::with_capacity(response.headers.len());
    for h in response.headers.iter() {
        let name = HeaderName::from_bytes(h.name.as_bytes())
            .map_err(|_| WireError::Header(h.name.to_owned()))?;
        let value =
            HeaderValue::from_bytes(h.value).map_err(|_| WireError::Header(h.name.to_owned()))?;
        map.append(name, value);
    }
    let framing = framing_of(status, version, &map)?;
    let keep_alive = version == Version::HTTP_11
        && framing.kind != Kind::Close
        && !has_token(&map, &http::header::CONNECTION, "close");
    let mut parts = http::Response::new(()).into_parts().0;
    parts.status = status;
    parts.version = version;
    parts.headers = map;
    Ok(Head::Final {
        head: Box::new(ResponseHead {
            parts,
            framing,
            keep_alive,
        }),
        len,
    })
}

/// How a response's body is delimited (RFC 9112 §6.3, for the response to a POST).
fn framing_of(
    status: StatusCode,
    version: Version,
    headers: &HeaderMap,
) -> Result<Framing, WireError> {
    if status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
        return Ok(Framing::new(Kind::Length(0)));
    }
    let mut codings = tokens(headers, &http::header::TRANSFER_ENCODING).peekable();
    if codings.peek().is_some() {
        if version == Version::HTTP_10 {
            return Err(WireError::TransferEncodingInHttp10);
        }
        // Chunked must be the last coding; a body coded otherwise runs to the close.
        let chunked = codings
            .last()
            .is_some_and(|c| c.eq_ignore_ascii_case(b"chunked"));
        return Ok(Framing::new(if chunked {
            Kind::Chunked(Chunked::Size)
        } else {
            Kind::Close
        }));
    }
    let mut length = None;
    for value in tokens(headers, &http::header::CONTENT_LENGTH) {
        let n = parse_decimal(value).ok_or(WireError::ContentLength)?;
        if length.is_some_and(|l| l != n) {
            return Err(WireError::ContentLength);
        }
        length = Some(n);
    }
    Ok(Framing::new(match length {
        Some(n) => Kind::Length(n),
        None if headers.contains_key(http::header::CONTENT_LENGTH) => {
            return Err(WireError::ContentLength);
        }
        None => Kind::Close,
    }))
}

/// The comma-separated, trimmed, non-empty elements of every `name` header.
fn tokens<'a>(
    headers: &'a HeaderMap,
    name: &http::header::HeaderName,
) -> impl Iterator<Item = &'a [u8]> {
    headers
        .get_all(name)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|t| !t.is_empty())
}

/// Whether a `name` header lists `token` (case-insensitive).
fn has_token(headers: &HeaderMap, name: &http::header::HeaderName, token: &str) -> bool {
    tokens(headers, name).any(|t| t.eq_ignore_ascii_case(token.as_bytes()))
}

/// 1 to 19 decimal digits (a u64 that cannot overflow), nothing else.
fn parse_decimal(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(
        digits
            .iter()
            .fold(0u64, |n, d| n * 10 + u64::from(d - b'0')),
    )
}

/// Where a response body stands: what the next bytes are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Framing {
    kind: Kind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    /// This many bytes of body are still to come.
    Length(u64),
    /// Chunked transfer coding, at this point of it.
    Chunked(Chunked),
    /// The body runs to the end of the connection.
    Close,
    /// The body ended.
    Done,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Chunked {
    /// A chunk-size line is next.
    Size,
    /// This many bytes of the current chunk's data are still to come.
    Data(u64),
    /// The CRLF after a chunk's data is next.
    DataEnd,
    /// Trailer lines (this many bytes of them so far), up to an empty line.
    Trailers(usize),
}

/// What the bytes at the start of the buffer are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// The first `n` bytes are body data, to hand on and then consume.
    Data(usize),
    /// The first `n` bytes are framing, to consume.
    Skip(usize),
    /// More bytes are needed (nothing to consume).
    More,
    /// The body ended after the first `n` bytes (framing, to consume); what follows is not
    /// this response's.
    Done(usize),
}

impl Framing {
    fn new(kind: Kind) -> Framing {
        Framing { kind }
    }

    /// What the start of `buf` (the bytes read and not yet consumed) is, moving past it.
    pub fn step(&mut self, buf: &[u8]) -> Result<Step, WireError> {
        match &mut self.kind {
            Kind::Done | Kind::Length(0) => {
                self.kind = Kind::Done;
                Ok(Step::Done(0))
            }
            Kind::Length(left) => Ok(take_data(left, buf)),
            Kind::Close if buf.is_empty() => Ok(Step::More),
            Kind::Close => Ok(Step::Data(buf.len())),
            Kind::Chunked(state) => {
                let step = chunked_step(state, buf)?;
                if let Step::Done(_) = step {
                    self.kind = Kind::Done;
                }
                Ok(step)
            }
        }
    }

    /// The connection ended: Ok if that ends the body (or it had ended), else the error.
    pub fn at_eof(&mut self) -> Result<(), WireError> {
        match std::mem::replace(&mut self.kind, Kind::Done) {
            Kind::Close | Kind::Done | Kind::Length(0) => Ok(()),
            _ => Err(WireError::Incomplete),
        }
    }
}

/// Up to `left` bytes of `buf` as data.
fn take_data(left: &mut u64, buf: &[u8]) -> Step {
    if buf.is_empty() {
        return Step::More;
    }
    let n = usize::try_from(*left).map_or(buf.len(), |l| l.min(buf.len()));
    *left -= n as u64;
    Step::Data(n)
}

fn chunked_step(state: &mut Chunked, buf: &[u8]) -> Result<Step, WireError> {
    match state {
        Chunked::Size => {
            let Some((line, len)) = line(buf)? else {
                return Ok(Step::More);
            };
            let size = chunk_size(line)?;
            *state = if size == 0 {
                Chunked::Trailers(0)
            } else {
                Chunked::Data(size)
            };
            Ok(Step::Skip(len))
        }
        Chunked::Data(left) => {
            let step = take_data(left, buf);
            if *left == 0 {
                *state = Chunked::DataEnd;
            }
            Ok(step)
        }
        Chunked::DataEnd => match buf {
            [b'\r', b'\n', ..] => {
                *state = Chunked::Size;
                Ok(Step::Skip(2))
            }
            [] | [b'\r'] => Ok(Step::More),
            _ => Err(WireError::ChunkEnd),
        },
        Chunked::Trailers(seen) => {
            let Some((line, len)) = line(buf)? else {
                return Ok(Step::More);
            };
            if line.is_empty() {
                return Ok(Step::Done(len));
            }
            *seen += len;
            if *seen > MAX_TRAILER_BYTES {
                return Err(WireError::TrailersTooLong);
            }
            Ok(Step::Skip(len))
        }
    }
}

/// The CRLF-ended line at the start of `buf` (without its CRLF) and its length with it, or
/// None when it has not all arrived.
fn line(buf: &[u8]) -> Result<Option<(&[u8], usize)>, WireError> {
    let window = &buf[..buf.len().min(MAX_LINE)];
    match window.iter().position(|&b| b == b'\n') {
        Some(at) => match window[..at].split_last() {
            Some((b'\r', line)) if !line.contains(&b'\r') => Ok(Some((line, at + 1))),
            _ => Err(WireError::Line),
        },
        None if buf.len() >= MAX_LINE => Err(WireError::LineTooLong),
        None => Ok(None),
    }
}

/// A chunk-size line's size: hex digits, then optional blanks and `;` extensions (ignored).
fn chunk_size(line: &[u8]) -> Result<u64, WireError> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    // 15 hex digits: a size that cannot overflow, and far beyond any real chunk.
    if digits == 0 || digits > 15 {
        return Err(WireError::ChunkSize);
    }
    let rest = line[digits..].trim_ascii_start();
    if !(rest.is_empty() || rest[0] == b';') {
        return Err(WireError::ChunkSize);
    }
    Ok(line[..digits].iter().fold(0u64, |n, &d| {
        // Only hex digits were counted above.
        let v = (d as char).to_digit(16).unwrap_or_default();
        (n << 4) | u64::from(v)
    }))
}

#[cfg(test)]
mod tests;
