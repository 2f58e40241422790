//! Who may upgrade at all, whatever the load: an Origin allowlist (the
//! cross-site WebSocket hijacking defence), a required token, a required
//! subprotocol, and a hook for the embedder's own rule. The rules are
//! settings (`config/admission.rs`, the hook's interface in
//! `config/upgrade_hook.rs`); checking a request against them is here.

use super::stats::Reason;
pub use crate::config::admission::Policy;
pub use crate::config::upgrade_hook::{Hook, UpgradeHook, UpgradeRequest};

/// A policy refusal: the reason and the HTTP status to answer with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Denied {
    /// Which rule refused.
    pub reason: Reason,
    /// The status to answer with.
    pub status: u16,
}

impl Policy {
    /// Checks every rule in order: Origin, token, subprotocol, hook.
    pub fn check(&self, request: &UpgradeRequest<'_>) -> Result<(), Denied> {
        let deny = |reason: Reason| Denied {
            reason,
            status: reason.status(),
        };
        if !self.allowed_origins.is_empty() {
            if let Some(origin) = request.header("origin") {
                if !self.origin_allowed(origin) {
                    return Err(deny(Reason::Origin));
                }
            }
        }
        if !self.tokens.is_empty() && !self.token_ok(request) {
            return Err(deny(Reason::Token));
        }
        if self.require_subprotocol && request.subprotocol.is_none() {
            return Err(deny(Reason::Subprotocol));
        }
        if let Some(Hook(hook)) = &self.hook {
            if let Err(status) = hook.check(request) {
                let status = if (400..=599).contains(&status) {
                    status
                } else {
                    403
                };
                return Err(Denied {
                    reason: Reason::Hook,
                    status,
                });
            }
        }
        Ok(())
    }

    fn origin_allowed(&self, origin: &[u8]) -> bool {
        let Ok(origin) = std::str::from_utf8(origin) else {
            return false;
        };
        let origin = origin.trim().to_ascii_lowercase();
        self.allowed_origins.iter().any(|allowed| {
            let allowed = allowed.to_ascii_lowercase();
            match allowed.split_once("://*.") {
                Some((scheme, domain)) => origin
                    .strip_prefix(scheme)
                    .and_then(|rest| rest.strip_prefix("://"))
                    .and_then(|host| host.strip_suffix(domain))
                    .is_some_and(|sub| sub.len() > 1 && sub.ends_with('.')),
                None => allowed == "*" || allowed == origin,
            }
        })
    }

    fn token_ok(&self, request: &UpgradeRequest<'_>) -> bool {
        let offered = crate::auth::token_from(request.query, request.header("authorization"));
        offered.is_some_and(|offered| {
            self.tokens.iter().fold(false, |ok, t| {
                ok | constant_time_eq(t.as_bytes(), offered.as_bytes())
            })
        })
    }
}

/// Compares without an early exit, so response timing does not reveal how
/// much of a guessed token was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn request<'a>(
        target: &'a str,
        headers: &'a [httparse::Header<'a>],
        subprotocol: Option<&'a str>,
    ) -> UpgradeRequest<'a> {
        UpgradeRequest::new(target, headers, "192.0.2.1".parse().unwrap(), subprotocol)
    }

    fn origin(value: &str) -> [httparse::Header<'_>; 1] {
        [httparse::Header {
            name: "Origin",
            value: value.as_bytes(),
        }]
    }

    #[test]
    fn origins_exact_and_wildcard() {
        let policy = Policy {
            allowed_origins: vec![
                "https://app.example.com".into(),
                "https://*.example.org".into(),
            ],
            ..Policy::default()
        };
        let check = |o: &str| policy.check(&request("/", &origin(o), None)).is_ok();
        assert!(check("https://app.example.com"));
        assert!(check("HTTPS://App.Example.com"));
        assert!(check("https://a.example.org"));
        assert!(check("https://a.b.example.org"));
        assert!(!check("https://example.org"));
        assert!(!check("https://evil-example.org"));
        assert!(!check("http://a.example.org"));
        assert!(!check("https://app.example.com.evil.net"));
        assert!(!check("null"));
        // No Origin at all: not a browser, not this rule's business.
        assert!(policy.check(&request("/", &[], None)).is_ok());
        let denied = policy
            .check(&request("/", &origin("https://evil.net"), None))
            .unwrap_err();
        assert_eq!((denied.reason, denied.status), (Reason::Origin, 403));
    }

    #[test]
    fn tokens_from_query_or_bearer() {
        let policy = Policy {
            tokens: vec!["s3cret".into()],
            ..Policy::default()
        };
        let bearer = [httparse::Header {
            name: "Authorization",
            value: b"Bearer s3cret",
        }];
        assert!(policy
            .check(&request("/feed?a=1&token=s3cret", &[], None))
            .is_ok());
        assert!(policy.check(&request("/feed", &bearer, None)).is_ok());
        for value in ["bearer s3cret", "BEARER s3cret", "Bearer\t s3cret "] {
            let header = [httparse::Header {
                name: "Authorization",
                value: value.as_bytes(),
            }];
            assert!(
                policy.check(&request("/feed", &header, None)).is_ok(),
                "{value}"
            );
        }
        for value in ["Basic s3cret", "Bearers3cret", "Bearer", "Bearer s3cre"] {
            let header = [httparse::Header {
                name: "Authorization",
                value: value.as_bytes(),
            }];
            assert!(
                policy.check(&request("/feed", &header, None)).is_err(),
                "{value}"
            );
        }
        for target in [
            "/feed",
            "/feed?token=s3cre",
            "/feed?token=s3cret2",
            "/feed?tok=s3cret",
        ] {
            let denied = policy.check(&request(target, &[], None)).unwrap_err();
            assert_eq!(
                (denied.reason, denied.status),
                (Reason::Token, 401),
                "{target}"
            );
        }
    }

    #[test]
    fn subprotocol_and_hook() {
        struct OnlyFeeds;
        impl UpgradeHook for OnlyFeeds {
            fn check(&self, request: &UpgradeRequest<'_>) -> Result<(), u16> {
                if request.path.starts_with("/feed/") {
                    Ok(())
                } else {
                    Err(404)
                }
            }
        }
        let policy = Policy {
            require_subprotocol: true,
            hook: Some(Hook(Arc::new(OnlyFeeds))),
            ..Policy::default()
        };
        let denied = policy.check(&request("/feed/x", &[], None)).unwrap_err();
        assert_eq!((denied.reason, denied.status), (Reason::Subprotocol, 400));
        assert!(policy.check(&request("/feed/x", &[], Some("v1"))).is_ok());
        let denied = policy
            .check(&request("/other", &[], Some("v1")))
            .unwrap_err();
        assert_eq!((denied.reason, denied.status), (Reason::Hook, 404));
    }
}
