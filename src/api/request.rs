//! An API request's head, read sans-IO from the bytes received so far
//! (httparse), and the answer every mistake gets. It never touches a
//! socket: the listener feeds it and writes what it says.

use std::fmt::Write;

/// The longest request head, in bytes; longer: 431.
pub(crate) const MAX_HEAD: usize = 8 << 10;
/// Most header lines; more: 431.
const MAX_HEADERS: usize = 32;

/// A request method the API knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Method {
    Get,
    Post,
    /// Any other: answered 405 on a known path.
    Other,
}

/// What the head of a request says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Head {
    pub(crate) method: Method,
    /// The path, without the query.
    pub(crate) path: String,
    /// The query, without `?`.
    pub(crate) query: Option<String>,
    /// `Content-Length`, when given.
    pub(crate) content_length: Option<usize>,
    /// A `Transfer-Encoding` was given (no chunked body is taken).
    pub(crate) transfer_encoding: bool,
    /// The media type of `Content-Type`, lowercased, without parameters.
    pub(crate) content_type: Option<String>,
    /// The `Authorization` header's value.
    pub(crate) authorization: Option<Vec<u8>>,
    /// `Expect: 100-continue`: the client waits for a go-ahead.
    pub(crate) expect_continue: bool,
    /// Bytes of the head, blank line included.
    pub(crate) len: usize,
}

/// An answer: a status, a JSON body and any extra header lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Answer {
    pub(crate) status: u16,
    pub(crate) body: String,
    /// Whole lines, each ending in CRLF.
    pub(crate) headers: String,
}

impl Answer {
    /// A success with `body` (JSON text).
    pub(crate) fn ok(body: String) -> Self {
        Self {
            status: 200,
            body,
            headers: String::new(),
        }
    }

    /// An error: `{"error": message}`.
    pub(crate) fn error(status: u16, message: &str) -> Self {
        Self {
            status,
            body: serde_json::json!({ "error": message }).to_string(),
            headers: String::new(),
        }
    }

    /// The same with one more header line.
    pub(crate) fn with_header(mut self, name: &str, value: &str) -> Self {
        let _ = write!(self.headers, "{name}: {value}\r\n");
        self
    }

    /// The whole HTTP/1.1 response; the connection closes after it.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
             Cache-Control: no-store\r\nConnection: close\r\n{}\r\n",
            self.status,
            reason(self.status),
            self.body.len(),
            self.headers
        );
        out.push_str(&self.body);
        out.into_bytes()
    }
}

/// The reason phrase of every status the API answers.
pub(crate) fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        411 => "Length Required",
        413 => "Content Too Large",
        415 => "Unsupported Media Type",
        422 => "Unprocessable Content",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Error",
    }
}

/// Reads the head from the bytes received so far: `Ok(None)` while it is
/// incomplete, or the answer that refuses it.
pub(crate) fn parse_head(buf: &[u8]) -> Result<Option<Head>, Answer> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() >= MAX_HEAD => {
            return Err(too_large_head());
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(too_large_head()),
        Err(e) => return Err(Answer::error(400, &format!("malformed request: {e}"))),
    };
    if len > MAX_HEAD {
        return Err(too_large_head());
    }
    if req.version != Some(1) {
        return Err(Answer::error(400, "HTTP/1.1 requests only"));
    }
    let method = match req.method {
        Some("GET") => Method::Get,
        Some("POST") => Method::Post,
        _ => Method::Other,
    };
    let target = req.path.unwrap_or_default();
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q.to_owned())),
        None => (target, None),
    };
    let mut head = Head {
        method,
        path: path.to_owned(),
        query,
        content_length: None,
        transfer_encoding: false,
        content_type: None,
        authorization: None,
        expect_continue: false,
        len,
    };
    for h in req.headers.iter() {
        let value = h.value;
        if h.name.eq_ignore_ascii_case("content-length") {
            let n = std::str::from_utf8(value)
                .ok()
                .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|v| v.parse::<usize>().ok())
                .ok_or_else(|| Answer::error(400, "Content-Length is not a number"))?;
            if head.content_length.is_some_and(|m| m != n) {
                return Err(Answer::error(400, "two different Content-Length headers"));
            }
            head.content_length = Some(n);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            head.transfer_encoding = true;
        } else if h.name.eq_ignore_ascii_case("content-type") {
            let media = value.split(|&b| b == b';').next().unwrap_or_default();
            head.content_type = Some(String::from_utf8_lossy(media.trim_ascii()).to_lowercase());
        } else if h.name.eq_ignore_ascii_case("authorization") {
            if head.authorization.is_some() {
                return Err(Answer::error(400, "two Authorization headers"));
            }
            head.authorization = Some(value.to_vec());
        } else if h.name.eq_ignore_ascii_case("expect") {
            head.expect_continue = value.eq_ignore_ascii_case(b"100-continue");
        }
    }
    Ok(Some(head))
}

fn too_large_head() -> Answer {
    Answer::error(
        431,
        &format!("the request head is over {MAX_HEAD} bytes or {MAX_HEADERS} header lines"),
    )
}

/// The key an `Authorization: Bearer KEY` value carries, or the 401 that
/// refuses a value without one.
pub(crate) fn bearer(value: Option<&[u8]>) -> Result<&[u8], Answer> {
    let refuse = |why: &str| {
        Answer::error(401, why).with_header("WWW-Authenticate", "Bearer realm=\"surge-api\"")
    };
    let value = value.ok_or_else(|| refuse("missing Authorization: Bearer KEY"))?;
    let scheme = value
        .get(..7)
        .filter(|s| s.eq_ignore_ascii_case(b"bearer "));
    match scheme {
        Some(_) if !value[7..].trim_ascii().is_empty() => Ok(value[7..].trim_ascii()),
        _ => Err(refuse("Authorization must be Bearer KEY")),
    }
}

/// The value of `name` in query `query`, percent-decoded; `Err` when it
/// is there but not UTF-8.
pub(crate) fn query_param(query: Option<&str>, name: &str) -> Result<Option<String>, Answer> {
    let Some(query) = query else { return Ok(None) };
    for pair in query.split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if k == name {
            let plus = v.replace('+', " ");
            return percent_encoding::percent_decode_str(&plus)
                .decode_utf8()
                .map(|v| Some(v.into_owned()))
                .map_err(|_| Answer::error(400, &format!("query parameter {name} is not UTF-8")));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_head_is_read_once_complete_with_what_the_api_needs() {
        let req = b"POST /api/publish?x=1 HTTP/1.1\r\nHost: a\r\nContent-Length: 12\r\n\
                    Content-Type: Application/JSON; charset=utf-8\r\nAuthorization: Bearer k\r\n\r\n{}";
        assert_eq!(parse_head(&req[..20]), Ok(None));
        let head = parse_head(req).unwrap().unwrap();
        assert_eq!(head.method, Method::Post);
        assert_eq!(
            (head.path.as_str(), head.query.as_deref()),
            ("/api/publish", Some("x=1"))
        );
        assert_eq!(head.content_length, Some(12));
        assert_eq!(head.content_type.as_deref(), Some("application/json"));
        assert_eq!(head.len, req.len() - 2);
        assert_eq!(bearer(head.authorization.as_deref()), Ok(&b"k"[..]));
    }

    #[test]
    fn every_malformed_head_has_its_status() {
        let status = |r: &[u8]| parse_head(r).unwrap_err().status;
        assert_eq!(status(b"GET / HTTP/1.1\r\nContent-Length: x\r\n\r\n"), 400);
        assert_eq!(status(b"GET / HTTP/1.1\r\nContent-Length: -1\r\n\r\n"), 400);
        assert_eq!(
            status(b"GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"),
            400
        );
        assert_eq!(status(b"GET / HTTP/1.0\r\n\r\n"), 400);
        assert_eq!(status(b"GE\x01T / HTTP/1.1\r\n\r\n"), 400);
        let long = format!("GET / HTTP/1.1\r\nX: {}\r\n", "a".repeat(MAX_HEAD));
        assert_eq!(status(long.as_bytes()), 431);
        let many = format!("GET / HTTP/1.1\r\n{}\r\n", "X: 1\r\n".repeat(40));
        assert_eq!(status(many.as_bytes()), 431);
    }

    #[test]
    fn bearer_keys_and_query_parameters_are_read_strictly() {
        assert_eq!(bearer(None).unwrap_err().status, 401);
        assert!(bearer(None)
            .unwrap_err()
            .headers
            .contains("WWW-Authenticate: Bearer"));
        assert_eq!(bearer(Some(b"Basic abc")).unwrap_err().status, 401);
        assert_eq!(bearer(Some(b"Bearer ")).unwrap_err().status, 401);
        assert_eq!(bearer(Some(b"bearer  key ")), Ok(&b"key"[..]));
        let q = Some("a=1&user=al%20ice+b&z");
        assert_eq!(query_param(q, "user"), Ok(Some("al ice b".into())));
        assert_eq!(query_param(q, "z"), Ok(Some(String::new())));
        assert_eq!(query_param(q, "nope"), Ok(None));
        assert_eq!(
            query_param(Some("user=%ff"), "user").unwrap_err().status,
            400
        );
    }

    #[test]
    fn answers_are_whole_responses() {
        let a = Answer::error(405, "no").with_header("Allow", "GET");
        let text = String::from_utf8(a.encode()).unwrap();
        assert!(text.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"));
        assert!(text.contains("\r\nAllow: GET\r\n"));
        assert!(text.ends_with("\r\n\r\n{\"error\":\"no\"}"));
    }
}
