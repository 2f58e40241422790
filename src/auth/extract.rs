//! Where a client puts its token on the upgrade request. Browsers cannot
//! set headers on a WebSocket, so the query parameter `token=` is accepted
//! beside the `Authorization: Bearer` header that other clients send.

/// The token of an upgrade request: the `Authorization` header's bearer
/// token if it has one (the scheme compared case-insensitively, RFC 9110
/// §11.1), else the `token=` query parameter. The query value is taken as
/// sent, not percent-decoded: a JWT is base64url and dots, which need no
/// encoding. An empty token counts as none.
pub fn token_from<'a>(query: Option<&'a str>, authorization: Option<&'a [u8]>) -> Option<&'a str> {
    authorization
        .and_then(bearer_token)
        .or_else(|| query.and_then(query_token))
}

/// The token of an `Authorization: Bearer <token>` value; spaces or tabs
/// separate the scheme from the token.
fn bearer_token(value: &[u8]) -> Option<&str> {
    let value = std::str::from_utf8(value).ok()?.trim();
    let (scheme, token) = value.split_once([' ', '\t'])?;
    let token = token.trim_start();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// The first `token=` parameter of a query string.
fn query_token(query: &str) -> Option<&str> {
    query
        .split('&')
        .find_map(|pair| pair.strip_prefix("token="))
        .filter(|token| !token.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_header_comes_first() {
        assert_eq!(token_from(Some("token=q"), Some(b"Bearer h")), Some("h"));
    }

    #[test]
    fn the_scheme_is_case_insensitive() {
        for header in [
            &b"bearer h"[..],
            b"BEARER h",
            b"BeArEr   h",
            b"  Bearer h  ",
        ] {
            assert_eq!(token_from(None, Some(header)), Some("h"), "{header:?}");
        }
    }

    #[test]
    fn other_schemes_and_empty_tokens_fall_back_to_the_query() {
        for header in [
            &b"Basic dXNlcjpwYXNz"[..],
            b"Bearer",
            b"Bearer ",
            b"Bearerh",
            b"\xff h",
        ] {
            assert_eq!(
                token_from(Some("token=q"), Some(header)),
                Some("q"),
                "{header:?}"
            );
            assert_eq!(token_from(None, Some(header)), None, "{header:?}");
        }
    }

    #[test]
    fn the_query_parameter_is_found_among_others() {
        assert_eq!(token_from(Some("token=a.b.c"), None), Some("a.b.c"));
        assert_eq!(token_from(Some("x=1&token=t&y=2"), None), Some("t"));
        assert_eq!(token_from(Some("token=t&token=u"), None), Some("t"));
        assert_eq!(token_from(Some("mytoken=t"), None), None);
        assert_eq!(token_from(Some("token="), None), None);
        assert_eq!(token_from(Some("token"), None), None);
        assert_eq!(token_from(Some(""), None), None);
        assert_eq!(token_from(None, None), None);
    }
}
