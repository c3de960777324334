//! Token verification for client connects and REST calls (azure-serverless.md §2-§3).

use crate::audience::Named;
use crate::{AccessKeys, Audience, AuthError};
use base64::Engine;
use hmac::digest::KeyInit;
use hmac::{Hmac, Mac};
use serde_json::{Map, Value};
use sha2::{Sha256, Sha512};
use std::sync::{Arc, Mutex};

/// Keys here are verified tokens and their audiences (signed with our keys, so not chosen by an
/// attacker): a fast hash serves (SipHash of each ~300-byte token showed in the profile).
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// Claims that say who a client is, kept with its connection for routing and upstream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientIdentity {
    /// From `asrs.s.uid`, else `nameid`, else `sub`, else the long nameidentifier URI.
    pub user_id: Option<String>,
    /// Every other claim as `(type, value)`, registered JWT claims left out and the SDK's
    /// `asrs.u.` collision prefix stripped; arrays give one pair per element.
    pub claims: Vec<(String, String)>,
    /// `asrs.s.htt`: allowed transports as a bitmask (1 WebSockets, 2 SSE, 4 Long Polling).
    pub allowed_transports: Option<u32>,
    /// `asrs.s.cht`: a custom handshake timeout in seconds (Azure caps it at 30).
    pub handshake_timeout_secs: Option<u64>,
}

const NAME_IDENTIFIER_URI: &str = "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/nameidentifier";
const REGISTERED_CLAIMS: [&str; 4] = ["aud", "exp", "iat", "nbf"];

/// Verifies tokens against the node's keys and public endpoint.
#[derive(Debug, Clone)]
pub struct Verifier {
    keys: AccessKeys,
    audience: Audience,
    /// The clock skew allowed on `exp` and `nbf`, in seconds.
    leeway: u64,
    recent: Arc<Mutex<RecentTokens>>,
}

impl Verifier {
    /// `leeway_secs` is the clock skew allowed on `exp` and `nbf`.
    pub fn new(keys: AccessKeys, audience: Audience, leeway_secs: u64) -> Self {
        let recent = Arc::new(Mutex::new(RecentTokens::new(keys.version())));
        Self { keys, audience, leeway: leeway_secs, recent }
    }

    /// The keys this verifier accepts (primary first).
    pub fn keys(&self) -> &AccessKeys {
        &self.keys
    }

    /// Checks a client token for `hub` (lower-cased hub identity) and returns who it names.
    pub fn verify_client(&self, token: &str, hub: &str) -> Result<ClientIdentity, AuthError> {
        self.verified(token, |verified| {
            if verified.audiences.iter().any(|named| self.audience.names_client(named, hub)) {
                Ok(verified.identity.clone())
            } else {
                Err(AuthError::Audience(verified.first_audience.clone()))
            }
        })
    }

    /// Checks a REST token for the request's raw path.
    pub fn verify_server(&self, token: &str, request_path: &str) -> Result<(), AuthError> {
        self.verified(token, |verified| {
            if verified.audiences.iter().any(|named| named.names_path(request_path)) {
                Ok(())
            } else {
                Err(AuthError::Audience(verified.first_audience.clone()))
            }
        })
    }

    /// `check` of a token whose signature holds and which is valid now. A token verified
    /// recently under the same keys is only checked against the clock again (and `check` runs
    /// under the lock of the recent tokens, so it must be short): clients present their token
    /// to negotiate and again to connect, and SDKs reuse one token for a burst of REST calls.
    fn verified<T>(&self, token: &str, check: impl FnOnce(&Verified) -> Result<T, AuthError>) -> Result<T, AuthError> {
        if token.is_empty() {
            return Err(AuthError::MissingToken);
        }
        // Read before the keys: a token is only ever kept under a version no newer than the
        // keys that verified it.
        let version = self.keys.version();
        let now = unix_now();
        if let Some(verified) = lock(&self.recent).get(token, version) {
            verified.check_time(now, self.leeway)?;
            return check(verified);
        }
        let claims = signed_claims(token, &self.keys.current())?;
        // Most tokens name one of a few audiences (a hub's client URL): each is parsed once.
        let resolve = |aud: &str| lock(&self.recent).resolve(aud, &self.audience);
        let verified = Verified::new(claims, resolve)?;
        verified.check_time(now, self.leeway)?;
        let checked = check(&verified);
        // Only a token of a usual size (a few hundred bytes) is kept, so the memory stays small.
        if token.len() <= RecentTokens::LONGEST {
            lock(&self.recent).insert(token, version, verified);
        }
        checked
    }
}

/// The claims of a compact JWS signed with HMAC by one of `keys` (RFC 7515 §7.1, RFC 7518
/// §3.2). Checked here rather than by a general JWT library, which parsed the header three
/// times and the claims twice for every new client.
fn signed_claims(token: &str, keys: &[String]) -> Result<Map<String, Value>, AuthError> {
    let malformed = |what: &str| AuthError::Malformed(what.to_owned());
    let parts = || malformed("not three dot-separated parts");
    let (message, signature) = token.rsplit_once('.').ok_or_else(parts)?;
    let (header, payload) = message.rsplit_once('.').ok_or_else(parts)?;
    let algorithm = algorithm(header)?;
    let signature = base64url(signature).ok_or_else(|| malformed("signature is not base64url"))?;
    // `kid` is a per-process hash in the Azure SDK and means nothing here: try every key.
    if !keys.iter().any(|key| algorithm.signed(key, message, &signature)) {
        return Err(AuthError::Signature);
    }
    let payload = base64url(payload).ok_or_else(|| malformed("claims are not base64url"))?;
    serde_json::from_slice(&payload).map_err(|_| malformed("claims are not a JSON object"))
}

fn lock(recent: &Mutex<RecentTokens>) -> std::sync::MutexGuard<'_, RecentTokens> {
    recent.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// What a verified token says, reduced to what the checks need.
#[derive(Debug)]
struct Verified {
    /// `exp` and `nbf`, whole seconds since the epoch.
    expires: u64,
    not_before: Option<u64>,
    /// The audiences on our hosts; `first_audience` is the first of all, for the error.
    audiences: Vec<Named>,
    first_audience: String,
    identity: ClientIdentity,
}

impl Verified {
    /// Fails unless `exp` is present and it and any `nbf` are whole seconds.
    fn new(claims: Map<String, Value>, resolve: impl Fn(&str) -> Option<Named>) -> Result<Self, AuthError> {
        let seconds = |name: &str| match claims.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(value) => value.as_u64().map(Some).ok_or_else(|| {
                AuthError::Malformed(format!("the '{name}' claim is not whole seconds since the epoch"))
            }),
        };
        let expires = seconds("exp")?.ok_or_else(|| AuthError::Malformed("missing 'exp' claim".into()))?;
        let not_before = seconds("nbf")?;
        Ok(Self {
            expires,
            not_before,
            audiences: audiences(&claims).filter_map(resolve).collect(),
            first_audience: first_audience(&claims),
            identity: identity_from(claims),
        })
    }

    /// Expired once `exp` is more than `leeway` in the past; not yet valid while `nbf` is more
    /// than `leeway` ahead.
    fn check_time(&self, now: u64, leeway: u64) -> Result<(), AuthError> {
        if self.expires < now.saturating_sub(leeway) {
            Err(AuthError::Expired)
        } else if self.not_before.is_some_and(|nbf| nbf > now + leeway) {
            Err(AuthError::NotYetValid)
        } else {
            Ok(())
        }
    }
}

/// Tokens verified recently, keyed by their whole text (only a byte-identical token is found),
/// for the key set they were verified under (its [`AccessKeys::version`]): a key change
/// forgets them all. Two generations of at most [`RecentTokens::GENERATION`] tokens of at most
/// [`RecentTokens::LONGEST`] bytes bound the memory (about 1 MiB for typical tokens); a token
/// found in the older generation is still found until the newer one fills up again.
#[derive(Debug)]
struct RecentTokens {
    keys_version: u64,
    /// Boxed, so the tables stay small: a node keeps them at their largest once full.
    newer: HashMap<Box<str>, Box<Verified>>,
    older: HashMap<Box<str>, Box<Verified>>,
    /// Audiences of verified tokens, resolved (`None`: not one of our hosts).
    audiences: HashMap<Box<str>, Option<Named>>,
}

impl RecentTokens {
    const GENERATION: usize = 1024;
    const LONGEST: usize = 2048;
    const AUDIENCES: usize = 256;

    fn new(keys_version: u64) -> Self {
        Self { keys_version, newer: HashMap::default(), older: HashMap::default(), audiences: HashMap::default() }
    }

    /// Whether what is kept was verified under the keys of `keys_version`. A newer version
    /// forgets everything; an older one (a call that began before a key change) finds nothing
    /// and keeps nothing.
    fn holds(&mut self, keys_version: u64) -> bool {
        if keys_version > self.keys_version {
            *self = Self::new(keys_version);
        }
        keys_version == self.keys_version
    }

    /// What `aud` names, parsed once while it is among the last [`Self::AUDIENCES`] seen.
    fn resolve(&mut self, aud: &str, audience: &Audience) -> Option<Named> {
        if let Some(named) = self.audiences.get(aud) {
            return named.clone();
        }
        let named = audience.resolve(aud);
        if aud.len() <= Self::LONGEST {
            if self.audiences.len() >= Self::AUDIENCES {
                self.audiences.clear();
            }
            self.audiences.insert(aud.into(), named.clone());
        }
        named
    }

    fn get(&mut self, token: &str, keys_version: u64) -> Option<&Verified> {
        if !self.holds(keys_version) {
            return None;
        }
        self.newer.get(token).or_else(|| self.older.get(token)).map(Box::as_ref)
    }

    fn insert(&mut self, token: &str, keys_version: u64, verified: Verified) {
        if !self.holds(keys_version) {
            return;
        }
        if self.newer.len() >= Self::GENERATION {
            // The oldest generation's table is emptied and reused, not a new one grown. With
            // tables grown anew for each generation and entries not boxed, 19,500 clients
            // connecting left the node about 400 bytes more per connection (loadtest/RESULTS.md).
            std::mem::swap(&mut self.older, &mut self.newer);
            self.newer.clear();
        }
        self.newer.insert(token.into(), Box::new(verified));
    }
}

/// The algorithms a token may be signed with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Algorithm {
    HS256,
    HS512,
}

impl Algorithm {
    /// Whether `signature` is `message`'s HMAC under `key` (compared in constant time).
    fn signed(self, key: &str, message: &str, signature: &[u8]) -> bool {
        fn check<M: Mac + KeyInit>(key: &str, message: &str, signature: &[u8]) -> bool {
            let mut mac = <M as Mac>::new_from_slice(key.as_bytes()).expect("hmac takes any key length");
            mac.update(message.as_bytes());
            mac.verify_slice(signature).is_ok()
        }
        match self {
            Algorithm::HS256 => check::<Hmac<Sha256>>(key, message, signature),
            Algorithm::HS512 => check::<Hmac<Sha512>>(key, message, signature),
        }
    }
}

/// The header's `alg`: anything but HS256/HS512 (notably `none`) is refused with a clear error
/// before any signature work.
fn algorithm(header: &str) -> Result<Algorithm, AuthError> {
    #[derive(serde::Deserialize)]
    struct Header {
        alg: Option<Value>,
    }
    let bytes = base64url(header).ok_or_else(|| AuthError::Malformed("header is not base64url".into()))?;
    let header: Header =
        serde_json::from_slice(&bytes).map_err(|_| AuthError::Malformed("header is not a JSON object".into()))?;
    match header.alg.as_ref().and_then(Value::as_str) {
        Some("HS256") => Ok(Algorithm::HS256),
        Some("HS512") => Ok(Algorithm::HS512),
        _ => Err(AuthError::Algorithm),
    }
}

/// Unpadded base64url, the only encoding of a compact JWS (RFC 7515 §2).
fn base64url(text: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(text).ok()
}

fn audiences(claims: &Map<String, Value>) -> impl Iterator<Item = &str> {
    let list: Vec<&str> = match claims.get("aud") {
        Some(Value::String(s)) => vec![s.as_str()],
        Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    list.into_iter()
}

fn first_audience(claims: &Map<String, Value>) -> String {
    audiences(claims).next().unwrap_or("").chars().take(256).collect()
}

fn identity_from(claims: Map<String, Value>) -> ClientIdentity {
    let text = |key: &str| claims.get(key).and_then(claim_text).filter(|s| !s.is_empty());
    let user_id =
        text("asrs.s.uid").or_else(|| text("nameid")).or_else(|| text("sub")).or_else(|| text(NAME_IDENTIFIER_URI));
    let allowed_transports = claims.get("asrs.s.htt").and_then(number_claim).map(|v| v as u32);
    let handshake_timeout_secs = claims.get("asrs.s.cht").and_then(number_claim);
    let mut pairs = Vec::new();
    for (key, value) in &claims {
        if REGISTERED_CLAIMS.contains(&key.as_str()) {
            continue;
        }
        let name = key.strip_prefix("asrs.u.").unwrap_or(key);
        match value {
            Value::Array(items) => pairs.extend(items.iter().filter_map(claim_text).map(|v| (name.to_owned(), v))),
            other => pairs.extend(claim_text(other).map(|v| (name.to_owned(), v))),
        }
    }
    ClientIdentity { user_id, claims: pairs, allowed_transports, handshake_timeout_secs }
}

fn claim_text(value: &Value) -> Option<String> {
    match value {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

fn number_claim(value: &Value) -> Option<u64> {
    match value {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Algorithm, mint};
    use serde_json::json;
    use url::Url;

    fn verifier() -> Verifier {
        let keys = AccessKeys::new(["primary-key", "secondary-key"]).unwrap();
        let audience = Audience::new([&Url::parse("http://127.0.0.1:8080").unwrap()]);
        Verifier::new(keys, audience, 5)
    }

    fn now() -> i64 {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
    }

    fn client_claims(extra: Value) -> Value {
        let mut claims =
            json!({"aud": "http://127.0.0.1:8080/client/?hub=chat", "exp": now() + 60, "nbf": now(), "iat": now()});
        claims.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        claims
    }

    #[test]
    fn accepts_both_keys_and_algorithms() {
        let v = verifier();
        for key in ["primary-key", "secondary-key"] {
            for alg in [Algorithm::HS256, Algorithm::HS512] {
                let token = mint(&client_claims(json!({"asrs.s.uid": "alice"})), key, alg);
                assert_eq!(v.verify_client(&token, "chat").unwrap().user_id.as_deref(), Some("alice"));
            }
        }
    }

    #[test]
    fn user_id_precedence() {
        let v = verifier();
        let cases = [
            (json!({"asrs.s.uid": "a", "nameid": "b", "sub": "c"}), Some("a")),
            (json!({"nameid": "b", "sub": "c"}), Some("b")),
            (json!({"sub": "c"}), Some("c")),
            (json!({ NAME_IDENTIFIER_URI: "d" }), Some("d")),
            (json!({}), None),
        ];
        for (extra, expected) in cases {
            let token = mint(&client_claims(extra), "primary-key", Algorithm::HS256);
            assert_eq!(v.verify_client(&token, "chat").unwrap().user_id.as_deref(), expected);
        }
    }

    #[test]
    fn keeps_custom_claims_and_reads_system_claims() {
        let v = verifier();
        let extra = json!({"role": ["a", "b"], "asrs.u.aud": "x", "asrs.s.htt": 3, "asrs.s.cht": "20"});
        let token = mint(&client_claims(extra), "primary-key", Algorithm::HS256);
        let id = v.verify_client(&token, "chat").unwrap();
        assert!(id.claims.contains(&("role".into(), "a".into())));
        assert!(id.claims.contains(&("role".into(), "b".into())));
        assert!(id.claims.contains(&("aud".into(), "x".into())));
        assert!(!id.claims.iter().any(|(k, _)| k == "exp"));
        assert_eq!(id.allowed_transports, Some(3));
        assert_eq!(id.handshake_timeout_secs, Some(20));
    }

    #[test]
    fn refuses_bad_tokens_with_clear_errors() {
        let v = verifier();
        let wrong_key = mint(&client_claims(json!({})), "other", Algorithm::HS256);
        assert_eq!(v.verify_client(&wrong_key, "chat"), Err(AuthError::Signature));
        let expired = mint(
            &json!({"aud": "http://127.0.0.1:8080/client/?hub=chat", "exp": now() - 60}),
            "primary-key",
            Algorithm::HS256,
        );
        assert_eq!(v.verify_client(&expired, "chat"), Err(AuthError::Expired));
        let early = mint(&client_claims(json!({"nbf": now() + 600})), "primary-key", Algorithm::HS256);
        assert_eq!(v.verify_client(&early, "chat"), Err(AuthError::NotYetValid));
        let other_hub = mint(&client_claims(json!({})), "primary-key", Algorithm::HS256);
        assert!(matches!(v.verify_client(&other_hub, "other"), Err(AuthError::Audience(_))));
        let no_exp = mint(&json!({"aud": "http://127.0.0.1:8080/client/?hub=chat"}), "primary-key", Algorithm::HS256);
        assert!(matches!(v.verify_client(&no_exp, "chat"), Err(AuthError::Malformed(_))));
        assert_eq!(v.verify_client("", "chat"), Err(AuthError::MissingToken));
        assert!(matches!(v.verify_client("garbage", "chat"), Err(AuthError::Malformed(_))));
    }

    #[test]
    fn refuses_tampered_and_malformed_tokens() {
        let v = verifier();
        let b64 = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
        let token = mint(&client_claims(json!({"asrs.s.uid": "alice"})), "primary-key", Algorithm::HS256);
        let (header, rest) = token.split_once('.').unwrap();
        let (_, signature) = rest.split_once('.').unwrap();
        let other_claims = b64(&client_claims(json!({"asrs.s.uid": "mallory"})));
        assert_eq!(v.verify_client(&format!("{header}.{other_claims}.{signature}"), "chat"), Err(AuthError::Signature));
        let hs512_header = b64(&json!({"alg": "HS512", "typ": "JWT"}));
        assert_eq!(v.verify_client(&format!("{hs512_header}.{rest}"), "chat"), Err(AuthError::Signature));
        assert_eq!(v.verify_client(&format!("{token}x"), "chat"), Err(AuthError::Signature), "another signature");
        for bad in [format!("{token}="), format!("{token}!"), format!("{header}.{rest}.x"), format!("{header}.!.x")] {
            assert!(
                matches!(v.verify_client(&bad, "chat"), Err(AuthError::Malformed(_) | AuthError::Signature)),
                "{bad}"
            );
        }
        assert!(matches!(v.verify_client(&format!("{token}="), "chat"), Err(AuthError::Malformed(_))), "padding");
        assert!(v.verify_client(&token, "chat").is_ok(), "the untouched token still verifies");
    }

    #[test]
    fn refuses_alg_none_and_other_algorithms() {
        let v = verifier();
        let b64 = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
        let payload = b64(&client_claims(json!({})));
        for alg in ["none", "HS384", "RS256"] {
            let token = format!("{}.{payload}.", b64(&json!({"alg": alg, "typ": "JWT"})));
            assert_eq!(v.verify_client(&token, "chat"), Err(AuthError::Algorithm), "{alg}");
        }
    }

    #[test]
    fn a_token_seen_before_is_checked_again_for_its_audience_and_keys() {
        let v = verifier();
        let token = mint(&client_claims(json!({"asrs.s.uid": "alice"})), "secondary-key", Algorithm::HS256);
        for _ in 0..2 {
            assert_eq!(v.verify_client(&token, "chat").unwrap().user_id.as_deref(), Some("alice"));
            assert!(matches!(v.verify_client(&token, "other"), Err(AuthError::Audience(_))));
        }
        let long = mint(&client_claims(json!({"note": "x".repeat(3000)})), "primary-key", Algorithm::HS256);
        for _ in 0..2 {
            assert!(v.verify_client(&long, "chat").is_ok(), "a long token is verified each time, not kept");
        }
        let foreign = mint(
            &json!({"aud": "http://other.example/client/?hub=chat", "exp": now() + 60}),
            "primary-key",
            Algorithm::HS256,
        );
        let other_token_same_audience = mint(
            &json!({"aud": "http://other.example/client/?hub=chat", "exp": now() + 61}),
            "primary-key",
            Algorithm::HS256,
        );
        for token in [&foreign, &foreign, &other_token_same_audience] {
            assert!(matches!(v.verify_client(token, "chat"), Err(AuthError::Audience(_))), "another host, every time");
        }
        // A key removed by a reload no longer verifies the tokens it signed, seen or not.
        assert!(v.keys().replace(["primary-key"]));
        assert_eq!(v.verify_client(&token, "chat"), Err(AuthError::Signature));
        let server = mint(
            &json!({"aud": "http://127.0.0.1/api/v1/hubs/chat", "exp": now() + 60}),
            "primary-key",
            Algorithm::HS256,
        );
        for _ in 0..2 {
            assert!(v.verify_server(&server, "/api/v1/hubs/chat").is_ok());
            assert!(matches!(v.verify_server(&server, "/api/v1/hubs/other"), Err(AuthError::Audience(_))));
        }
    }

    #[test]
    fn the_time_claims_are_whole_seconds_held_to_the_clock() {
        let verified = |exp: Value, nbf: Option<Value>| {
            let mut claims = json!({"aud": "http://127.0.0.1:8080/client/?hub=chat", "exp": exp});
            if let Some(nbf) = nbf {
                claims["nbf"] = nbf;
            }
            let Value::Object(claims) = claims else { unreachable!() };
            Verified::new(claims, |aud| verifier().audience.resolve(aud))
        };
        let (now, leeway) = (1_000_000, 30);
        assert_eq!(verified(json!(now), None).unwrap().check_time(now + leeway, leeway), Ok(()));
        assert_eq!(verified(json!(now), None).unwrap().check_time(now + leeway + 1, leeway), Err(AuthError::Expired));
        assert_eq!(verified(json!(now + 60), Some(json!(now + leeway))).unwrap().check_time(now, leeway), Ok(()));
        let early = verified(json!(now + 60), Some(json!(now + leeway + 1))).unwrap();
        assert_eq!(early.check_time(now, leeway), Err(AuthError::NotYetValid));
        for (exp, nbf) in [(json!(now as f64 + 60.5), None), (json!(now + 60), Some(json!("soon"))), (json!(-1), None)]
        {
            assert!(matches!(verified(exp, nbf), Err(AuthError::Malformed(_))));
        }
        assert!(matches!(verified(Value::Null, None), Err(AuthError::Malformed(m)) if m.contains("missing 'exp'")));
    }

    #[test]
    fn recent_tokens_are_bounded_and_forgotten_when_the_keys_change() {
        let entry = || {
            let Value::Object(claims) = json!({"exp": 1}) else { unreachable!() };
            Verified::new(claims, |_| None).unwrap()
        };
        let mut recent = RecentTokens::new(0);
        for n in 0..=RecentTokens::GENERATION * 2 {
            recent.insert(&n.to_string(), 0, entry());
        }
        assert!(recent.newer.len() + recent.older.len() <= RecentTokens::GENERATION * 2);
        assert!(recent.get(&(RecentTokens::GENERATION * 2).to_string(), 0).is_some());
        assert!(recent.get(&RecentTokens::GENERATION.to_string(), 0).is_some(), "the older generation is kept");
        assert!(recent.get("0", 0).is_none(), "the oldest generation was dropped");
        recent.insert("0", 0, entry());
        assert!(recent.get("0", 1).is_none(), "another key set starts empty");
        assert!(recent.newer.is_empty() && recent.older.is_empty());
        recent.insert("0", 0, entry());
        assert!(recent.newer.is_empty(), "a token verified under older keys is not kept");
        recent.insert("1", 1, entry());
        assert!(recent.get("1", 0).is_none(), "nor found by a call that began under older keys");
        assert!(recent.get("1", 1).is_some());
    }

    /// A key replaced on the node (a reload) stops verifying tokens it signed, even those
    /// verified and kept a moment before.
    #[test]
    fn a_replaced_key_stops_verifying_tokens_seen_before() {
        let keys = AccessKeys::new(["old-key"]).unwrap();
        let v = Verifier::new(keys.clone(), Audience::new([&Url::parse("http://127.0.0.1").unwrap()]), 0);
        let claims = json!({"aud": "http://127.0.0.1/api/v1/hubs/chat", "exp": now() + 60});
        let token = mint(&claims, "old-key", Algorithm::HS256);
        assert!(v.verify_server(&token, "/api/v1/hubs/chat").is_ok());
        assert!(keys.replace(["new-key"]));
        assert_eq!(v.verify_server(&token, "/api/v1/hubs/chat"), Err(AuthError::Signature));
        let token = mint(&claims, "new-key", Algorithm::HS256);
        assert!(v.verify_server(&token, "/api/v1/hubs/chat").is_ok());
    }

    #[test]
    fn server_tokens() {
        let v = verifier();
        let claims = json!({"aud": "http://127.0.0.1/api/v1/hubs/chat?api-version=2022-06-01", "exp": now() + 60});
        let token = mint(&claims, "secondary-key", Algorithm::HS256);
        assert!(v.verify_server(&token, "/api/v1/hubs/chat").is_ok());
        assert!(matches!(v.verify_server(&token, "/api/v1/hubs/other"), Err(AuthError::Audience(_))));
    }
}
