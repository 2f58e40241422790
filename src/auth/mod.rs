//! Signed connection tokens (JWT), the sans-IO core: what the server will
//! call at upgrade time to learn who a client is and which topics it may
//! use. **Invariant:** like `protocol`, no socket, clock or thread: keys are
//! read from files once, and time comes in as `now`.
//!
//! - **Keys pin the algorithm** ([`Keys`]): an HS256 secret file, a PEM
//!   public key (RSA → RS256, EC P-256 → ES256, read from the key) or a
//!   JWKS whose keys a token picks by `kid`. Each key verifies with its one
//!   algorithm; a token whose header `alg` differs is refused before any
//!   signature check. That is what stops `alg: none` and the HS/RS
//!   confusion (an RSA public key's bytes used as an HMAC secret). A JWKS
//!   of more than one key refuses a token without `kid`.
//! - **Claims** ([`Claims`], [`Keys::verify`]): `sub` is required; `exp`
//!   and `nbf` are checked against the caller's `now` with no leeway (the
//!   token is refused from its `exp` second on, and before its `nbf`
//!   second); `subscribe` and `publish` are lists of topic patterns.
//! - **Patterns** ([`TopicPattern`], [`allows`]): an exact topic, or
//!   `prefix.*` for any topic under `prefix.`. A `*` anywhere else makes
//!   the token [`Refused::Malformed`], since an issuer who wrote it meant
//!   something this server does not do.
//! - **Status codes** ([`Refused::status`]): every refusal of the token
//!   itself (missing, malformed, bad signature, expired, not yet valid,
//!   algorithm, unknown `kid`, missing claim) is 401. 403 is for a valid
//!   token whose patterns do not allow a topic, decided where the topic is
//!   known. [`Refused::label`] names each refusal for metrics.
//! - **Where the token is** ([`token_from`]): `Authorization: Bearer` first,
//!   else the `token=` query parameter (browsers cannot set headers on a
//!   WebSocket).

mod extract;
mod keys;
mod pattern;
mod token;

pub use extract::token_from;
pub use keys::{Keys, MIN_HS256_SECRET_LEN};
pub use pattern::{allows, TopicPattern};
pub use token::{Claims, Refused};

mod grant;
pub use grant::{why_refused, Grant, Tokens};
