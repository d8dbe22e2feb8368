//! The load's HTTP/1.1 client: one keep-alive TCP connection, one request at a time, and nothing else.
//!
//! A general client (reqwest over hyper) cost the load generator about 35 µs of CPU per request: header maps,
//! URL parsing, a connection pool, a task per connection. On a 2-core machine that is CPU the service under
//! test does not get. Here the request is written into one reused buffer from parts prepared up front (the
//! `Host` and `Authorization` lines are built once per connection; only the request line and the body change),
//! sent with one `write`, and the answer is read into another reused buffer and parsed just enough: the status,
//! `Content-Length` (orderflow and the baseline always send it; anything else, chunked bodies included, is an
//! error), the version in a strong `ETag`, `X-Consistency` and `Connection: close`. The body is read in full
//! and dropped, as a client that uses it would have to read it too.

use std::io::{self, Write as _};
use std::net::SocketAddr;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// A head larger than this is refused (orderflow's are a few hundred bytes).
const MAX_HEAD: usize = 16 * 1024;
/// Read buffer: room for a search page in one read, most of the time.
const READ_CHUNK: usize = 32 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Post,
}

/// What the load needs of an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    /// The version in a strong ETag `"N"`.
    pub version: Option<u64>,
    /// `X-Consistency: strong`: answered from the write model rather than the view.
    pub strong: bool,
}

/// One keep-alive connection to the service; (re)connects when it has none.
pub struct Conn {
    addr: SocketAddr,
    stream: Option<TcpStream>,
    /// The `Host` and `Authorization` lines, built once.
    fixed: Vec<u8>,
    /// The request being sent.
    out: Vec<u8>,
    /// Bytes read and not yet consumed.
    input: Vec<u8>,
}

impl Conn {
    /// `host` is the `Host` header's value; `token` a bearer token sent with every request.
    pub fn new(addr: SocketAddr, host: &str, token: Option<&str>) -> Self {
        let mut fixed = Vec::with_capacity(64 + token.map_or(0, str::len));
        fixed.extend_from_slice(b"Host: ");
        fixed.extend_from_slice(host.as_bytes());
        fixed.extend_from_slice(b"\r\n");
        if let Some(token) = token {
            fixed.extend_from_slice(b"Authorization: Bearer ");
            fixed.extend_from_slice(token.as_bytes());
            fixed.extend_from_slice(b"\r\n");
        }
        Self { addr, stream: None, fixed, out: Vec::with_capacity(2048), input: Vec::with_capacity(READ_CHUNK) }
    }

    /// Drops the connection (after a timeout the state of the exchange is unknown); the next request opens
    /// a new one.
    pub fn reset(&mut self) {
        self.stream = None;
        self.input.clear();
    }

    /// Sends one request (`body`: a JSON body, sent with `POST`) and reads its whole answer. An error leaves
    /// the connection closed. A kept-alive connection that the service had closed while idle (the write fails,
    /// or the connection ends before any byte of the answer) is reopened and the request sent once more.
    pub async fn send(&mut self, method: Method, path: &str, body: Option<&[u8]>) -> io::Result<Answer> {
        encode(&mut self.out, method, path, &self.fixed, body);
        let reused = self.stream.is_some();
        match self.exchange().await {
            Err(Failure { error, answer_started: false }) if reused && stale(&error) => {
                self.exchange().await.map_err(|f| f.error)
            }
            result => result.map_err(|f| f.error),
        }
    }

    async fn exchange(&mut self) -> Result<Answer, Failure> {
        let mut answer_started = false;
        let result = self.exchange_inner(&mut answer_started).await;
        if result.is_err() {
            self.reset();
        }
        result.map_err(|error| Failure { error, answer_started })
    }

    async fn exchange_inner(&mut self, answer_started: &mut bool) -> io::Result<Answer> {
        let stream = match &mut self.stream {
            Some(stream) => stream,
            None => {
                let stream = TcpStream::connect(self.addr).await?;
                stream.set_nodelay(true)?;
                self.input.clear();
                self.stream.insert(stream)
            }
        };
        stream.write_all(&self.out).await?;
        let head = loop {
            if let Some(head) = parse_head(&self.input)? {
                break head;
            }
            read_more(stream, &mut self.input).await?;
            *answer_started = true;
        };
        let end = head.len + head.content_length;
        while self.input.len() < end {
            read_more(stream, &mut self.input).await?;
        }
        if self.input.len() == end {
            self.input.clear();
        } else {
            self.input.drain(..end);
        }
        if head.close {
            self.stream = None;
        }
        Ok(Answer { status: head.status, version: head.version, strong: head.strong })
    }
}

struct Failure {
    error: io::Error,
    /// Some of the answer had arrived: the service got the request.
    answer_started: bool,
}

/// What a kept-alive connection that the other side closed looks like.
fn stale(error: &io::Error) -> bool {
    matches!(error.kind(), io::ErrorKind::UnexpectedEof | io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset)
}

async fn read_more(stream: &mut TcpStream, input: &mut Vec<u8>) -> io::Result<()> {
    if input.capacity() - input.len() < READ_CHUNK / 4 {
        input.reserve(READ_CHUNK);
    }
    match stream.read_buf(input).await? {
        0 => Err(io::ErrorKind::UnexpectedEof.into()),
        _ => Ok(()),
    }
}

/// Writes the request into `out`: request line, the fixed lines, then for a body its type, length and bytes.
pub fn encode(out: &mut Vec<u8>, method: Method, path: &str, fixed: &[u8], body: Option<&[u8]>) {
    out.clear();
    out.extend_from_slice(match method {
        Method::Get => b"GET ",
        Method::Post => b"POST ",
    });
    out.extend_from_slice(path.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    out.extend_from_slice(fixed);
    match body {
        Some(body) => {
            out.extend_from_slice(b"Content-Type: application/json\r\nContent-Length: ");
            let _ = write!(out, "{}", body.len());
            out.extend_from_slice(b"\r\n\r\n");
            out.extend_from_slice(body);
        }
        None => out.extend_from_slice(b"\r\n"),
    }
}

/// The parts of a response head the load reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    pub status: u16,
    /// Bytes of the head, the blank line included: the body starts there.
    pub len: usize,
    pub content_length: usize,
    pub version: Option<u64>,
    pub strong: bool,
    /// The service closes the connection after this answer.
    pub close: bool,
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_owned())
}

/// Parses a response head at the start of `input`: `None` while it is incomplete.
pub fn parse_head(input: &[u8]) -> io::Result<Option<Head>> {
    let Some(blank) = input.windows(4).position(|w| w == b"\r\n\r\n") else {
        return if input.len() > MAX_HEAD { Err(invalid("response head too large")) } else { Ok(None) };
    };
    let mut lines = input[..blank].split(|&b| b == b'\n').map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let status_line = lines.next().unwrap_or_default();
    let (http10, rest) = if let Some(rest) = status_line.strip_prefix(b"HTTP/1.1 ") {
        (false, rest)
    } else if let Some(rest) = status_line.strip_prefix(b"HTTP/1.0 ") {
        (true, rest)
    } else {
        return Err(invalid("not an HTTP/1.x response"));
    };
    let status = match rest.get(..3) {
        Some(&[a, b, c]) if [a, b, c].iter().all(u8::is_ascii_digit) => {
            u16::from(a - b'0') * 100 + u16::from(b - b'0') * 10 + u16::from(c - b'0')
        }
        _ => return Err(invalid("bad status line")),
    };
    let mut head = Head { status, len: blank + 4, content_length: 0, version: None, strong: false, close: http10 };
    let mut length = None;
    for line in lines {
        let Some(colon) = line.iter().position(|&b| b == b':') else { return Err(invalid("bad header line")) };
        let (name, value) = (&line[..colon], line[colon + 1..].trim_ascii());
        if name.eq_ignore_ascii_case(b"content-length") {
            let n = std::str::from_utf8(value)
                .ok()
                .and_then(|v| v.parse::<usize>().ok())
                .ok_or_else(|| invalid("bad Content-Length"))?;
            if length.is_some_and(|l| l != n) {
                return Err(invalid("conflicting Content-Length"));
            }
            length = Some(n);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            return Err(invalid("Transfer-Encoding is not supported (the service sends Content-Length)"));
        } else if name.eq_ignore_ascii_case(b"etag") {
            head.version = value
                .strip_prefix(b"\"")
                .and_then(|v| v.strip_suffix(b"\""))
                .and_then(|v| std::str::from_utf8(v).ok())
                .and_then(|v| v.parse().ok());
        } else if name.eq_ignore_ascii_case(b"x-consistency") {
            head.strong = value.eq_ignore_ascii_case(b"strong");
        } else if name.eq_ignore_ascii_case(b"connection") {
            let v = value.to_ascii_lowercase();
            if v.windows(5).any(|w| w == b"close") {
                head.close = true;
            } else if http10 && v.windows(10).any(|w| w == b"keep-alive") {
                head.close = false;
            }
        }
    }
    head.content_length = match length {
        Some(n) => n,
        // No body by definition.
        None if status == 204 || status == 304 => 0,
        None => return Err(invalid("no Content-Length")),
    };
    Ok(Some(head))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_a_post_with_the_fixed_lines() {
        let mut out = Vec::new();
        let conn = Conn::new("127.0.0.1:1".parse().unwrap(), "127.0.0.1:1", Some("t0k"));
        encode(&mut out, Method::Post, "/orders", &conn.fixed, Some(br#"{"a":1}"#));
        assert_eq!(
            out,
            b"POST /orders HTTP/1.1\r\nHost: 127.0.0.1:1\r\nAuthorization: Bearer t0k\r\n\
              Content-Type: application/json\r\nContent-Length: 7\r\n\r\n{\"a\":1}"
        );
        encode(&mut out, Method::Get, "/orders/x", b"Host: h\r\n", None);
        assert_eq!(out, b"GET /orders/x HTTP/1.1\r\nHost: h\r\n\r\n");
    }

    #[test]
    fn parses_what_the_load_needs() {
        let answer = b"HTTP/1.1 201 Created\r\ncontent-length: 5\r\nETag: \"3\"\r\nx-consistency: strong\r\n\r\nhello";
        let head = parse_head(answer).unwrap().unwrap();
        assert_eq!(
            head,
            Head {
                status: 201,
                len: answer.len() - 5,
                content_length: 5,
                version: Some(3),
                strong: true,
                close: false
            }
        );
        // Incomplete until the blank line.
        assert_eq!(parse_head(&answer[..20]).unwrap(), None);
        // Weak ETags carry no version; `Connection: close` and HTTP/1.0 close.
        let head = parse_head(b"HTTP/1.1 200 OK\r\nETag: W/\"3\"\r\nConnection: close\r\nContent-Length: 0\r\n\r\n");
        let head = head.unwrap().unwrap();
        assert_eq!((head.version, head.close), (None, true));
        assert!(parse_head(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n").unwrap().unwrap().close);
        assert_eq!(parse_head(b"HTTP/1.1 204 No Content\r\n\r\n").unwrap().unwrap().content_length, 0);
    }

    #[test]
    fn refuses_what_it_cannot_read() {
        for bad in [
            &b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            b"HTTP/2 200\r\n\r\n",
            b"HTTP/1.1 2x0 OK\r\n\r\n",
        ] {
            assert!(parse_head(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
        assert!(parse_head(&vec![b'a'; MAX_HEAD + 1]).is_err());
    }

    /// Against a scripted server: keep-alive reuse, a body split over reads, reconnecting after a close.
    #[tokio::test]
    async fn talks_to_a_server() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let mut requests = Vec::new();
            // First connection: two answers, the second in pieces and closing; then a second connection.
            for answers in [
                vec![
                    &b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\nETag: \"1\"\r\n\r\n{}"[..],
                    b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 10\r\n\r\n0123",
                ],
                vec![b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n"],
            ] {
                let (mut socket, _) = listener.accept().await.unwrap();
                for answer in answers {
                    let mut buf = vec![0; 4096];
                    let n = socket.read(&mut buf).await.unwrap();
                    requests.push(String::from_utf8_lossy(&buf[..n]).into_owned());
                    socket.write_all(answer).await.unwrap();
                    if answer.ends_with(b"0123") {
                        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                        socket.write_all(b"456789").await.unwrap();
                    }
                }
            }
            requests
        });
        let mut conn = Conn::new(addr, "h", None);
        let a = conn.send(Method::Post, "/orders", Some(b"{}")).await.unwrap();
        assert_eq!(a, Answer { status: 201, version: Some(1), strong: false });
        let a = conn.send(Method::Get, "/orders/1", None).await.unwrap();
        assert_eq!(a.status, 200);
        assert!(conn.stream.is_none(), "closed after `Connection: close`");
        let a = conn.send(Method::Get, "/orders/2", None).await.unwrap();
        assert_eq!(a.status, 404);
        let requests = server.await.unwrap();
        assert!(requests[0].starts_with("POST /orders HTTP/1.1\r\nHost: h\r\nContent-Type"), "{}", requests[0]);
        assert_eq!(requests[2], "GET /orders/2 HTTP/1.1\r\nHost: h\r\n\r\n");
    }
}
