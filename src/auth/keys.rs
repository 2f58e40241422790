//! The keys tokens are checked against, read once from a file at start-up.
//! Each key carries the one algorithm it verifies, decided here from the
//! key itself and never from a token, so a token cannot pick a weaker
//! algorithm (`none`) or make an RSA public key serve as an HMAC secret.

use std::fmt;
use std::path::Path;

use base64::Engine as _;
use jsonwebtoken::{Algorithm, DecodingKey};
use serde::Deserialize;

use super::token::Refused;

/// RFC 7518 §3.2: an HS256 key must be at least as long as its hash.
pub const MIN_HS256_SECRET_LEN: usize = 32;

/// The keys a server accepts tokens from: one HS256 secret, one public key,
/// or a JWKS whose keys a token names by `kid`.
pub struct Keys {
    /// Where the keys came from, for messages.
    pub(super) source: String,
    pub(super) set: KeySet,
}

/// One key, or several told apart by `kid`.
pub(super) enum KeySet {
    One(Key),
    ByKid(Vec<(String, Key)>),
}

/// A verifying key and the only algorithm it accepts.
pub(super) struct Key {
    pub(super) algorithm: Algorithm,
    pub(super) decoding: DecodingKey,
}

impl Key {
    /// The algorithm as a JOSE header's `alg` names it.
    pub(super) fn algorithm_name(&self) -> &'static str {
        match self.algorithm {
            Algorithm::HS256 => "HS256",
            Algorithm::RS256 => "RS256",
            Algorithm::ES256 => "ES256",
            // Only the three above are ever loaded.
            _ => "unsupported",
        }
    }
}

impl Keys {
    /// An HS256 secret: the file's bytes, without the trailing newline an
    /// editor or `echo` leaves, at least [`MIN_HS256_SECRET_LEN`] bytes.
    pub fn hs256_secret_file(path: impl AsRef<Path>) -> Result<Self, String> {
        let path = path.as_ref();
        let bytes = read(path, "HS256 secret")?;
        let source = format!("HS256 secret file {}", path.display());
        Self::hs256_secret(trim_trailing_newlines(&bytes), source)
    }

    /// An HS256 secret of at least [`MIN_HS256_SECRET_LEN`] bytes, named
    /// `source` in messages.
    pub fn hs256_secret(secret: &[u8], source: String) -> Result<Self, String> {
        if secret.len() < MIN_HS256_SECRET_LEN {
            return Err(format!(
                "{source}: {} bytes, at least {MIN_HS256_SECRET_LEN} are needed",
                secret.len()
            ));
        }
        Ok(Self {
            source,
            set: KeySet::One(Key {
                algorithm: Algorithm::HS256,
                decoding: DecodingKey::from_secret(secret),
            }),
        })
    }

    /// A PEM public key: RSA (`PUBLIC KEY` or `RSA PUBLIC KEY`) verifies
    /// RS256, EC on P-256 verifies ES256; which one is read from the key.
    pub fn public_key_file(path: impl AsRef<Path>) -> Result<Self, String> {
        let path = path.as_ref();
        let bytes = read(path, "public key")?;
        let key = pem_public_key(&bytes)
            .map_err(|e| format!("public key file {}: {e}", path.display()))?;
        Ok(Self {
            source: format!("public key file {}", path.display()),
            set: KeySet::One(key),
        })
    }

    /// A JWKS (`{"keys": [...]}`) of RS256 and ES256 (P-256) public keys,
    /// each with a distinct `kid`. Any other key (HMAC, other curves,
    /// `use` other than `sig`) makes the whole file an error rather than
    /// being skipped, so a key the operator expects to work never silently
    /// does not.
    pub fn jwks_file(path: impl AsRef<Path>) -> Result<Self, String> {
        let path = path.as_ref();
        let bytes = read(path, "JWKS")?;
        let set = jwks(&bytes).map_err(|e| format!("JWKS file {}: {e}", path.display()))?;
        Ok(Self {
            source: format!("JWKS file {}", path.display()),
            set: KeySet::ByKid(set),
        })
    }

    /// The key a token's `kid` header picks. A single secret or public key
    /// ignores `kid`; a JWKS needs one unless it holds only one key.
    pub(super) fn key_for(&self, kid: Option<&str>) -> Result<&Key, Refused> {
        match (&self.set, kid) {
            (KeySet::One(key), _) => Ok(key),
            (KeySet::ByKid(keys), Some(kid)) => keys
                .iter()
                .find(|(id, _)| id == kid)
                .map(|(_, key)| key)
                .ok_or(Refused::UnknownKey),
            (KeySet::ByKid(keys), None) => match keys.as_slice() {
                [(_, key)] => Ok(key),
                _ => Err(Refused::UnknownKey),
            },
        }
    }
}

impl fmt::Debug for Keys {
    /// The source and each key's algorithm and `kid`, never key material.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut list = f.debug_list();
        match &self.set {
            KeySet::One(key) => {
                list.entry(&key.algorithm);
            }
            KeySet::ByKid(keys) => {
                for (kid, key) in keys {
                    list.entry(&format_args!("{:?} kid={kid:?}", key.algorithm));
                }
            }
        }
        list.finish()?;
        write!(f, " from {}", self.source)
    }
}

fn read(path: &Path, what: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("{what} file {}: {e}", path.display()))
}

fn trim_trailing_newlines(bytes: &[u8]) -> &[u8] {
    let end = bytes
        .iter()
        .rposition(|&b| b != b'\n' && b != b'\r')
        .map_or(0, |i| i + 1);
    &bytes[..end]
}

// DER contents of the object identifiers that name a public key's kind.
const OID_RSA_ENCRYPTION: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
const OID_EC_PUBLIC_KEY: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
const OID_P256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
const OID_ED25519: &[u8] = &[0x2b, 0x65, 0x70];

/// The first PEM block of a file, its algorithm read from its label and,
/// for `PUBLIC KEY` (SubjectPublicKeyInfo), from the DER inside.
fn pem_public_key(file: &[u8]) -> Result<Key, String> {
    let text = std::str::from_utf8(file).map_err(|_| "not PEM text".to_owned())?;
    let (label, block, der) = first_pem_block(text)?;
    let algorithm = match label {
        "RSA PUBLIC KEY" => Algorithm::RS256,
        "PUBLIC KEY" => spki_algorithm(&der)?,
        l if l.contains("PRIVATE KEY") => {
            return Err(format!(
                "holds a private key ({l}); give its public key (openssl pkey -pubout)"
            ))
        }
        "CERTIFICATE" => {
            return Err("holds a certificate; give its public key \
                 (openssl x509 -pubkey -noout)"
                .to_owned())
        }
        l => return Err(format!("a PEM {l:?} block, not a public key")),
    };
    let decoding = match algorithm {
        Algorithm::RS256 => DecodingKey::from_rsa_pem(block.as_bytes()),
        _ => DecodingKey::from_ec_pem(block.as_bytes()),
    }
    .map_err(|e| format!("unreadable {algorithm:?} public key: {e}"))?;
    Ok(Key {
        algorithm,
        decoding,
    })
}

/// The label, the whole block's text and the decoded body of the first
/// `-----BEGIN label-----` .. `-----END label-----` block.
fn first_pem_block(text: &str) -> Result<(&str, &str, Vec<u8>), String> {
    let start = text
        .find("-----BEGIN ")
        .ok_or_else(|| "no PEM block (-----BEGIN ...-----)".to_owned())?;
    let after = &text[start + "-----BEGIN ".len()..];
    let label_len = after
        .find("-----")
        .ok_or_else(|| "a PEM BEGIN line without its closing dashes".to_owned())?;
    let label = &after[..label_len];
    let body_start = start + "-----BEGIN ".len() + label_len + "-----".len();
    let end_line = format!("-----END {label}-----");
    let body_len = text[body_start..]
        .find(&end_line)
        .ok_or_else(|| format!("no {end_line} line"))?;
    let body: String = text[body_start..body_start + body_len]
        .chars()
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(body)
        .map_err(|e| format!("the PEM {label} block is not base64: {e}"))?;
    let block = &text[start..body_start + body_len + end_line.len()];
    Ok((label, block, der))
}

/// RS256 or ES256 from a SubjectPublicKeyInfo's AlgorithmIdentifier
/// (RFC 5280 §4.1.2.7; for EC, RFC 5480 §2.1.1 puts the curve in its
/// parameters).
fn spki_algorithm(der: &[u8]) -> Result<Algorithm, String> {
    let bad = || "the PUBLIC KEY block is not a DER SubjectPublicKeyInfo".to_owned();
    let (spki, _) = der_element(der, 0x30).ok_or_else(bad)?;
    let (algorithm_id, _) = der_element(spki, 0x30).ok_or_else(bad)?;
    let (oid, parameters) = der_element(algorithm_id, 0x06).ok_or_else(bad)?;
    match oid {
        OID_RSA_ENCRYPTION => Ok(Algorithm::RS256),
        OID_EC_PUBLIC_KEY => match der_element(parameters, 0x06) {
            Some((OID_P256, _)) => Ok(Algorithm::ES256),
            _ => Err(
                "an EC key on a curve other than P-256; only ES256 (P-256) is supported".to_owned(),
            ),
        },
        OID_ED25519 => Err("an Ed25519 key; only RS256 and ES256 are supported".to_owned()),
        _ => Err("a public key of an unsupported kind; only RSA and EC P-256 are".to_owned()),
    }
}

/// The contents of the DER element at the start of `input` if its tag is
/// `tag`, and what follows it.
fn der_element(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (&first, rest) = input.split_first()?;
    if first != tag {
        return None;
    }
    let (&len_byte, rest) = rest.split_first()?;
    let (len, rest) = if len_byte < 0x80 {
        (usize::from(len_byte), rest)
    } else {
        let count = usize::from(len_byte & 0x7f);
        if count == 0 || count > 4 || rest.len() < count {
            return None;
        }
        let len = rest[..count]
            .iter()
            .fold(0usize, |len, &b| (len << 8) | usize::from(b));
        (len, &rest[count..])
    };
    (rest.len() >= len).then(|| rest.split_at(len))
}

/// One entry of a JWKS, as RFC 7517 §4 and RFC 7518 §6 name its members;
/// members this server has no use for are ignored.
#[derive(Deserialize)]
struct Jwk {
    kid: Option<String>,
    kty: Option<String>,
    alg: Option<String>,
    #[serde(rename = "use")]
    key_use: Option<String>,
    crv: Option<String>,
    n: Option<String>,
    e: Option<String>,
    x: Option<String>,
    y: Option<String>,
}

#[derive(Deserialize)]
struct Jwks {
    keys: Vec<Jwk>,
}

fn jwks(file: &[u8]) -> Result<Vec<(String, Key)>, String> {
    let set: Jwks = serde_json::from_slice(file).map_err(|e| format!("not a JWKS: {e}"))?;
    if set.keys.is_empty() {
        return Err("no keys".to_owned());
    }
    let mut keys: Vec<(String, Key)> = Vec::with_capacity(set.keys.len());
    for (i, jwk) in set.keys.iter().enumerate() {
        let kid = match jwk.kid.as_deref() {
            Some(kid) if !kid.is_empty() => kid,
            _ => return Err(format!("key {i} has no kid")),
        };
        if keys.iter().any(|(id, _)| id == kid) {
            return Err(format!("two keys have kid {kid:?}"));
        }
        let key = jwk_key(jwk).map_err(|e| format!("key {kid:?}: {e}"))?;
        keys.push((kid.to_owned(), key));
    }
    Ok(keys)
}

fn jwk_key(jwk: &Jwk) -> Result<Key, String> {
    if let Some(key_use) = jwk.key_use.as_deref().filter(|&u| u != "sig") {
        return Err(format!("use is {key_use:?}, not \"sig\""));
    }
    let member = |value: &Option<String>, name: &str| {
        value.clone().ok_or_else(|| format!("no {name:?} member"))
    };
    let (algorithm, decoding) = match jwk.kty.as_deref() {
        Some("RSA") => {
            let (n, e) = (member(&jwk.n, "n")?, member(&jwk.e, "e")?);
            let key = DecodingKey::from_rsa_components(&n, &e)
                .map_err(|e| format!("unreadable RSA key: {e}"))?;
            (Algorithm::RS256, key)
        }
        Some("EC") => {
            match jwk.crv.as_deref() {
                Some("P-256") => {}
                crv => return Err(format!("crv {crv:?}: only P-256 (ES256) is supported")),
            }
            let (x, y) = (member(&jwk.x, "x")?, member(&jwk.y, "y")?);
            for (name, coordinate) in [("x", &x), ("y", &y)] {
                let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(coordinate)
                    .map_err(|e| format!("{name} is not base64url: {e}"))?;
                if bytes.len() != 32 {
                    return Err(format!("{name} is {} bytes, P-256 needs 32", bytes.len()));
                }
            }
            let key = DecodingKey::from_ec_components(&x, &y)
                .map_err(|e| format!("unreadable EC key: {e}"))?;
            (Algorithm::ES256, key)
        }
        kty => {
            return Err(format!(
                "kty {kty:?}: only RSA (RS256) and EC P-256 (ES256) keys are supported"
            ))
        }
    };
    let key = Key {
        algorithm,
        decoding,
    };
    let named = key.algorithm_name();
    if let Some(alg) = jwk.alg.as_deref().filter(|&alg| alg != named) {
        return Err(format!("alg {alg:?} does not fit a {named} key"));
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    /// A file in a directory of this test's own, removed when dropped.
    struct TempFile(PathBuf);

    impl TempFile {
        fn new(name: &str, contents: &[u8]) -> Self {
            let dir = std::env::temp_dir().join(format!("surge-auth-keys-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            let path = dir.join(name);
            std::fs::write(&path, contents).unwrap();
            Self(path)
        }
    }

    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    fn err<T>(result: Result<T, String>) -> String {
        match result {
            Ok(_) => panic!("loaded"),
            Err(e) => e,
        }
    }

    #[test]
    fn secrets_lose_trailing_newlines_and_must_be_long_enough() {
        assert_eq!(trim_trailing_newlines(b"abc\r\n\n"), b"abc");
        assert_eq!(trim_trailing_newlines(b"\n"), b"");
        assert_eq!(trim_trailing_newlines(b"a\nb"), b"a\nb");
        let short = TempFile::new("short", &[b'x'; 31]);
        let e = err(Keys::hs256_secret_file(&short.0));
        assert!(e.contains("short") && e.contains("31 bytes"), "{e}");
        let padded = TempFile::new("padded", b"0123456789012345678901234567890\n");
        assert!(err(Keys::hs256_secret_file(&padded.0)).contains("31 bytes"));
        let ok = TempFile::new("ok", b"01234567890123456789012345678901\n");
        let keys = Keys::hs256_secret_file(&ok.0).unwrap();
        assert!(format!("{keys:?}").starts_with("[HS256] from HS256 secret file"));
        assert!(!format!("{keys:?}").contains("0123"));
    }

    #[test]
    fn missing_files_name_the_file() {
        let e = err(Keys::public_key_file("/nonexistent/surge.pem"));
        assert!(
            e.starts_with("public key file /nonexistent/surge.pem: "),
            "{e}"
        );
        let e = err(Keys::jwks_file("/nonexistent/jwks.json"));
        assert!(e.starts_with("JWKS file /nonexistent/jwks.json: "), "{e}");
    }

    #[test]
    fn pem_files_that_are_not_public_keys_say_what_they_are() {
        for (pem, says) in [
            (
                "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
                "private key",
            ),
            (
                "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
                "certificate",
            ),
            (
                "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
                "SubjectPublicKeyInfo",
            ),
            (
                "-----BEGIN PUBLIC KEY-----\n!!\n-----END PUBLIC KEY-----\n",
                "not base64",
            ),
            (
                "-----BEGIN PUBLIC KEY-----\nAAAA\n",
                "no -----END PUBLIC KEY----- line",
            ),
            ("hello", "no PEM block"),
        ] {
            let file = TempFile::new("bad.pem", pem.as_bytes());
            let e = err(Keys::public_key_file(&file.0));
            assert!(e.contains(says), "{pem:?}: {e}");
        }
    }

    /// SubjectPublicKeyInfo headers (RFC 8410 §10.1 for Ed25519; a P-384
    /// AlgorithmIdentifier), enough to be told apart before any key bytes.
    #[test]
    fn unsupported_key_kinds_are_named() {
        let ed25519 = [0x30, 0x07, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70];
        assert!(spki_algorithm(&ed25519).unwrap_err().contains("Ed25519"));
        let p384 = [
            0x30, 0x12, 0x30, 0x10, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06,
            0x05, 0x2b, 0x81, 0x04, 0x00, 0x22,
        ];
        assert!(spki_algorithm(&p384).unwrap_err().contains("P-256"));
    }

    #[test]
    fn der_lengths_short_and_long() {
        assert_eq!(
            der_element(&[0x30, 2, 1, 2, 9], 0x30),
            Some((&[1, 2][..], &[9][..]))
        );
        assert_eq!(der_element(&[0x30, 2, 1], 0x30), None);
        assert_eq!(der_element(&[0x31, 0], 0x30), None);
        let mut long = vec![0x04, 0x81, 200];
        long.extend([7; 200]);
        assert_eq!(der_element(&long, 0x04).map(|(c, _)| c.len()), Some(200));
        let mut longer = vec![0x04, 0x82, 0x01, 0x00];
        longer.extend([7; 256]);
        assert_eq!(der_element(&longer, 0x04).map(|(c, _)| c.len()), Some(256));
        assert_eq!(der_element(&longer[..259], 0x04), None);
        assert_eq!(der_element(&[0x04, 0x80], 0x04), None);
    }

    const RSA_N: &str = "sXchDaQebHnPiGvyDOAT4saGEUetSyo9MKLOoWFsueri23bOdgWp4Dy1WlUzewbgBHod5pcM9H95GQRV3JDXboIRROSBigeC5yjU1hGzHHyXss8UDprecbAYxknTcQkhslANGRUZmdTOQ5qTRsLAt6BTYuyvVRdhS8exSZEy_c4gs_7svlJJQ4H9_NxsiIoLwAEk7-Q3UXERGYw_75IDrGA84-lA_-Ct4eTlXHBIY2EaV7t7LjJaynVJCpkv4LKjTTAumiGUIuQhrNhZLuF_RJLqHpM2kgWFLU7-VTdL1VbC2tejvcI2BlMkEpk1BzBZI0KQB0GaDWFLN-aEAw3vRw";

    fn jwks_err(json: &str) -> String {
        let file = TempFile::new("jwks.json", json.as_bytes());
        err(Keys::jwks_file(&file.0))
    }

    #[test]
    fn jwks_keys_need_distinct_kids_and_supported_kinds() {
        let rsa = |kid: &str| format!(r#"{{"kty":"RSA","kid":"{kid}","n":"{RSA_N}","e":"AQAB"}}"#);
        let two = format!(r#"{{"keys":[{},{}]}}"#, rsa("a"), rsa("b"));
        let file = TempFile::new("two.json", two.as_bytes());
        let keys = Keys::jwks_file(&file.0).unwrap();
        assert!(format!("{keys:?}").contains(r#"RS256 kid="b""#), "{keys:?}");
        assert!(keys.key_for(Some("a")).is_ok());
        assert_eq!(keys.key_for(Some("c")).err(), Some(Refused::UnknownKey));
        assert_eq!(keys.key_for(None).err(), Some(Refused::UnknownKey));

        for (json, says) in [
            ("[]".to_owned(), "not a JWKS"),
            (r#"{"keys":[]}"#.to_owned(), "no keys"),
            (
                format!(r#"{{"keys":[{},{}]}}"#, rsa("a"), rsa("a")),
                r#"two keys have kid "a""#,
            ),
            (
                r#"{"keys":[{"kty":"RSA","n":"AQAB","e":"AQAB"}]}"#.to_owned(),
                "key 0 has no kid",
            ),
            (
                r#"{"keys":[{"kty":"oct","kid":"h","k":"c2VjcmV0"}]}"#.to_owned(),
                r#"kty Some("oct")"#,
            ),
            (
                r#"{"keys":[{"kty":"EC","kid":"p","crv":"P-384","x":"AA","y":"AA"}]}"#.to_owned(),
                "only P-256",
            ),
            (
                r#"{"keys":[{"kty":"EC","kid":"p","crv":"P-256","x":"AA","y":"AA"}]}"#.to_owned(),
                "x is 1 bytes",
            ),
            (
                r#"{"keys":[{"kty":"RSA","kid":"r","e":"AQAB"}]}"#.to_owned(),
                r#"no "n" member"#,
            ),
            (
                rsa("r").replace(r#""kty""#, r#""use":"enc","kty""#),
                "use is \"enc\"",
            ),
            (
                rsa("r").replace(r#""kty""#, r#""alg":"HS256","kty""#),
                "alg \"HS256\" does not fit a RS256 key",
            ),
        ] {
            let json = if json.starts_with(r#"{"keys""#) || json == "[]" {
                json
            } else {
                format!(r#"{{"keys":[{json}]}}"#)
            };
            let e = jwks_err(&json);
            assert!(
                e.starts_with("JWKS file ") && e.contains(says),
                "{json}: {e}"
            );
        }
    }

    #[test]
    fn a_jwks_of_one_key_needs_no_kid_from_the_token() {
        let one = format!(
            r#"{{"keys":[{{"kty":"RSA","kid":"a","alg":"RS256","use":"sig","n":"{RSA_N}","e":"AQAB"}}]}}"#
        );
        let file = TempFile::new("one.json", one.as_bytes());
        let keys = Keys::jwks_file(&file.0).unwrap();
        assert!(keys.key_for(None).is_ok());
        assert_eq!(keys.key_for(Some("b")).err(), Some(Refused::UnknownKey));
    }
}
