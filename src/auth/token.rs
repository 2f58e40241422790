//! Checking one token: its header against the key it names, its signature
//! (by `jsonwebtoken`), then its claims against a `now` the caller passes
//! in, so that the check is a pure function of its inputs.

use std::fmt;

use base64::Engine as _;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::Validation;
use serde::Deserialize;

use super::keys::Keys;
use super::pattern::TopicPattern;

/// Why a token was refused. Every refusal here is about the token itself,
/// so each answers 401; 403 is for a valid token that lacks a permission,
/// which is decided where the topic is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Not three base64url parts of JSON, a claim of the wrong type, an
    /// unreadable topic pattern, or a `crit` header (no extension is
    /// understood here, RFC 7515 §4.1.11).
    Malformed,
    /// The signature does not verify with the key.
    BadSignature,
    /// `exp` is at or before now.
    Expired,
    /// `nbf` is after now.
    NotYetValid,
    /// The header's `alg` is not the key's algorithm (`none`, HS256 against
    /// an RSA key, ...).
    Algorithm,
    /// The `kid` names no key, or a JWKS of several keys got no `kid`.
    UnknownKey,
    /// A claim this server requires is absent (or, for `sub`, empty).
    MissingClaim(&'static str),
}

impl Refused {
    /// The refusal's name as a metrics label value.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::BadSignature => "bad_signature",
            Self::Expired => "expired",
            Self::NotYetValid => "not_yet_valid",
            Self::Algorithm => "algorithm",
            Self::UnknownKey => "unknown_key",
            Self::MissingClaim(_) => "missing_claim",
        }
    }

    /// The HTTP status the upgrade is refused with: 401, the token did not
    /// authenticate anyone.
    pub fn status(&self) -> u16 {
        401
    }
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Malformed => f.write_str("malformed token"),
            Self::BadSignature => f.write_str("bad token signature"),
            Self::Expired => f.write_str("token expired"),
            Self::NotYetValid => f.write_str("token not yet valid"),
            Self::Algorithm => f.write_str("token algorithm does not match its key"),
            Self::UnknownKey => f.write_str("token names no known key"),
            Self::MissingClaim(claim) => write!(f, "token lacks the {claim:?} claim"),
        }
    }
}

impl std::error::Error for Refused {}

/// What a verified token says about its holder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    /// Who the holder is (`sub`, required and non-empty).
    pub sub: String,
    /// When the token expires, in Unix seconds, if it does.
    pub exp: Option<u64>,
    /// The topics the holder may subscribe to; `None` when the claim is
    /// absent, which the caller's policy interprets.
    pub subscribe: Option<Vec<TopicPattern>>,
    /// The topics the holder may publish to; `None` when absent.
    pub publish: Option<Vec<TopicPattern>>,
}

/// The header members read before the signature is checked.
#[derive(Deserialize)]
struct Header {
    alg: String,
    kid: Option<String>,
    crit: Option<serde_json::Value>,
}

/// The claims as sent. NumericDates must be whole seconds (as every common
/// issuer writes them); a fractional or negative one is `Malformed`.
#[derive(Deserialize)]
struct SentClaims {
    sub: Option<String>,
    exp: Option<u64>,
    nbf: Option<u64>,
    subscribe: Option<Vec<String>>,
    publish: Option<Vec<String>>,
}

impl Keys {
    /// Verifies `token` at `now_unix_secs`: the key its `kid` picks, that
    /// key's algorithm and no other, the signature, then `exp` (refused
    /// from that second on) and `nbf` (refused before it) with no leeway,
    /// `sub`, and the topic patterns. Claims are read only once the
    /// signature holds.
    pub fn verify(&self, token: &str, now_unix_secs: u64) -> Result<Claims, Refused> {
        let header = read_header(token)?;
        if header.crit.is_some() {
            return Err(Refused::Malformed);
        }
        let key = self.key_for(header.kid.as_deref())?;
        if header.alg != key.algorithm_name() {
            return Err(Refused::Algorithm);
        }
        let mut validation = Validation::new(key.algorithm);
        // Time is checked below against the caller's `now`, not the clock.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.leeway = 0;
        // No audience is configured yet, so none is checked.
        validation.validate_aud = false;
        validation.required_spec_claims.clear();
        let sent = jsonwebtoken::decode::<SentClaims>(token, &key.decoding, &validation)
            .map_err(|e| refusal(e.kind()))?
            .claims;
        if sent.exp.is_some_and(|exp| now_unix_secs >= exp) {
            return Err(Refused::Expired);
        }
        if sent.nbf.is_some_and(|nbf| now_unix_secs < nbf) {
            return Err(Refused::NotYetValid);
        }
        let sub = sent
            .sub
            .filter(|sub| !sub.is_empty())
            .ok_or(Refused::MissingClaim("sub"))?;
        Ok(Claims {
            sub,
            exp: sent.exp,
            subscribe: patterns(sent.subscribe)?,
            publish: patterns(sent.publish)?,
        })
    }
}

/// The JOSE header of a compact JWS of exactly three parts.
fn read_header(token: &str) -> Result<Header, Refused> {
    let mut parts = token.split('.');
    let (Some(header), Some(_), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Refused::Malformed);
    };
    let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header)
        .map_err(|_| Refused::Malformed)?;
    serde_json::from_slice(&json).map_err(|_| Refused::Malformed)
}

/// A claim's patterns; one that does not parse refuses the whole token, as
/// it means the issuer wrote something this server would read differently.
fn patterns(claim: Option<Vec<String>>) -> Result<Option<Vec<TopicPattern>>, Refused> {
    claim
        .map(|list| {
            list.iter()
                .map(|text| TopicPattern::parse(text).map_err(|_| Refused::Malformed))
                .collect()
        })
        .transpose()
}

/// The refusal for an error from `jsonwebtoken::decode`, given that its own
/// time and audience checks are off.
fn refusal(kind: &ErrorKind) -> Refused {
    match kind {
        ErrorKind::InvalidSignature
        | ErrorKind::InvalidEcdsaKey
        | ErrorKind::InvalidRsaKey(_)
        | ErrorKind::InvalidKeyFormat
        | ErrorKind::Crypto(_) => Refused::BadSignature,
        ErrorKind::InvalidAlgorithm
        | ErrorKind::InvalidAlgorithmName
        | ErrorKind::MissingAlgorithm => Refused::Algorithm,
        ErrorKind::ExpiredSignature => Refused::Expired,
        ErrorKind::ImmatureSignature => Refused::NotYetValid,
        _ => Refused::Malformed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::keys::{Key, KeySet};
    use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header as JwtHeader};
    use serde_json::json;

    const SECRET: &[u8] = b"an HS256 secret of thirty-two bytes or more";
    const NOW: u64 = 1_800_000_000;

    fn keys() -> Keys {
        Keys {
            source: "test".to_owned(),
            set: KeySet::One(Key {
                algorithm: Algorithm::HS256,
                decoding: DecodingKey::from_secret(SECRET),
            }),
        }
    }

    fn signed(claims: serde_json::Value) -> String {
        jsonwebtoken::encode(
            &JwtHeader::default(),
            &claims,
            &EncodingKey::from_secret(SECRET),
        )
        .unwrap()
    }

    fn b64(json: &serde_json::Value) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json.to_string())
    }

    #[test]
    fn a_good_token_yields_its_claims() {
        let token = signed(json!({
            "sub": "alice", "exp": NOW + 1, "nbf": NOW,
            "subscribe": ["chat", "news.*"], "publish": [],
        }));
        let claims = keys().verify(&token, NOW).unwrap();
        assert_eq!(claims.sub, "alice");
        assert_eq!(claims.exp, Some(NOW + 1));
        assert_eq!(
            claims.subscribe,
            Some(vec![
                TopicPattern::Exact("chat".to_owned()),
                TopicPattern::Prefix("news.".to_owned())
            ])
        );
        assert_eq!(claims.publish, Some(vec![]));
        let bare = keys().verify(&signed(json!({"sub": "bob"})), NOW).unwrap();
        assert_eq!((bare.exp, bare.subscribe, bare.publish), (None, None, None));
    }

    #[test]
    fn time_is_exact_at_the_edges() {
        let token = signed(json!({"sub": "a", "exp": NOW, "nbf": NOW - 10}));
        assert!(keys().verify(&token, NOW - 1).is_ok());
        assert_eq!(keys().verify(&token, NOW), Err(Refused::Expired));
        assert_eq!(keys().verify(&token, NOW - 11), Err(Refused::NotYetValid));
        assert!(keys().verify(&token, NOW - 10).is_ok());
    }

    #[test]
    fn sub_is_required_and_not_empty() {
        for claims in [json!({"exp": NOW + 9}), json!({"sub": ""})] {
            let token = signed(claims);
            assert_eq!(
                keys().verify(&token, NOW),
                Err(Refused::MissingClaim("sub"))
            );
        }
    }

    #[test]
    fn wrong_types_and_bad_patterns_are_malformed() {
        for claims in [
            json!({"sub": 5}),
            json!({"sub": "a", "exp": "soon"}),
            json!({"sub": "a", "exp": -1}),
            json!({"sub": "a", "subscribe": "chat"}),
            json!({"sub": "a", "publish": ["*"]}),
            json!({"sub": "a", "subscribe": ["a.*.b"]}),
        ] {
            let token = signed(claims.clone());
            assert_eq!(
                keys().verify(&token, NOW),
                Err(Refused::Malformed),
                "{claims}"
            );
        }
    }

    #[test]
    fn broken_tokens_are_malformed() {
        let good = signed(json!({"sub": "a"}));
        let (head, rest) = good.split_once('.').unwrap();
        for token in [
            String::new(),
            "a.b".to_owned(),
            format!("{good}.x"),
            format!("!{head}.{rest}"),
            format!("{}.{rest}", b64(&json!({"typ": "JWT"}))),
            format!("{}.{rest}", b64(&json!({"alg": "HS256", "crit": ["exp"]}))),
        ] {
            assert_eq!(
                keys().verify(&token, NOW),
                Err(Refused::Malformed),
                "{token}"
            );
        }
    }

    #[test]
    fn the_key_decides_the_algorithm() {
        let claims = b64(&json!({"sub": "a"}));
        for alg in ["none", "None", "HS512", "RS256", "hs256"] {
            let token = format!("{}.{claims}.", b64(&json!({"alg": alg})));
            assert_eq!(keys().verify(&token, NOW), Err(Refused::Algorithm), "{alg}");
        }
        let hs512 = jsonwebtoken::encode(
            &JwtHeader::new(Algorithm::HS512),
            &json!({"sub": "a"}),
            &EncodingKey::from_secret(SECRET),
        )
        .unwrap();
        assert_eq!(keys().verify(&hs512, NOW), Err(Refused::Algorithm));
    }

    #[test]
    fn another_secret_is_a_bad_signature() {
        let token = jsonwebtoken::encode(
            &JwtHeader::default(),
            &json!({"sub": "a"}),
            &EncodingKey::from_secret(b"another secret of thirty-two bytes or more"),
        )
        .unwrap();
        assert_eq!(keys().verify(&token, NOW), Err(Refused::BadSignature));
        let mut tampered = signed(json!({"sub": "a"}));
        let (head, _) = tampered.rsplit_once('.').unwrap();
        tampered = format!("{head}.{}", b64(&json!("not the signature")));
        assert_eq!(keys().verify(&tampered, NOW), Err(Refused::BadSignature));
    }

    #[test]
    fn claims_of_an_unsigned_token_are_never_read() {
        // A forged, expired token without `sub` is refused for its
        // signature, not for what it claims.
        let forged = jsonwebtoken::encode(
            &JwtHeader::default(),
            &json!({"exp": 1}),
            &EncodingKey::from_secret(b"not the server's secret, but long enough"),
        )
        .unwrap();
        assert_eq!(keys().verify(&forged, NOW), Err(Refused::BadSignature));
    }

    #[test]
    fn every_refusal_is_401_with_its_own_label() {
        let all = [
            Refused::Malformed,
            Refused::BadSignature,
            Refused::Expired,
            Refused::NotYetValid,
            Refused::Algorithm,
            Refused::UnknownKey,
            Refused::MissingClaim("sub"),
        ];
        let labels: std::collections::HashSet<_> = all.iter().map(Refused::label).collect();
        assert_eq!(labels.len(), all.len());
        assert!(all.iter().all(|r| r.status() == 401));
        assert_eq!(
            Refused::MissingClaim("sub").to_string(),
            "token lacks the \"sub\" claim"
        );
    }
}
