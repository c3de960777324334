//! Token verification for client connects and REST calls (azure-serverless.md §2-§3).

use crate::{AccessKeys, Audience, AuthError};
use base64::Engine;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{DecodingKey, Validation};
use serde_json::{Map, Value};

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
    validation: Validation,
}

impl Verifier {
    /// `leeway_secs` is the clock skew allowed on `exp` and `nbf`.
    pub fn new(keys: AccessKeys, audience: Audience, leeway_secs: u64) -> Self {
        let mut validation = Validation::new(jsonwebtoken::Algorithm::HS256);
        validation.algorithms = vec![jsonwebtoken::Algorithm::HS256, jsonwebtoken::Algorithm::HS512];
        validation.validate_aud = false;
        validation.validate_nbf = true;
        validation.leeway = leeway_secs;
        validation.set_required_spec_claims(&["exp"]);
        Self { keys, audience, validation }
    }

    /// The keys this verifier accepts (primary first).
    pub fn keys(&self) -> &AccessKeys {
        &self.keys
    }

    /// Checks a client token for `hub` (lower-cased hub identity) and returns who it names.
    pub fn verify_client(&self, token: &str, hub: &str) -> Result<ClientIdentity, AuthError> {
        let claims = self.decode(token)?;
        let aud_ok = audiences(&claims).any(|aud| self.audience.matches_client(aud, hub));
        if !aud_ok {
            return Err(AuthError::Audience(first_audience(&claims)));
        }
        Ok(identity_from(claims))
    }

    /// Checks a REST token for the request's raw path.
    pub fn verify_server(&self, token: &str, request_path: &str) -> Result<(), AuthError> {
        let claims = self.decode(token)?;
        if audiences(&claims).any(|aud| self.audience.matches_server(aud, request_path)) {
            Ok(())
        } else {
            Err(AuthError::Audience(first_audience(&claims)))
        }
    }

    fn decode(&self, token: &str) -> Result<Map<String, Value>, AuthError> {
        if token.is_empty() {
            return Err(AuthError::MissingToken);
        }
        check_algorithm(token)?;
        let mut last = AuthError::Signature;
        // `kid` is a per-process hash in the Azure SDK and means nothing here: try every key.
        for key in self.keys.current().iter() {
            let key = DecodingKey::from_secret(key.as_bytes());
            match jsonwebtoken::decode::<Map<String, Value>>(token, &key, &self.validation) {
                Ok(data) => return Ok(data.claims),
                Err(e) => {
                    last = match e.kind() {
                        ErrorKind::InvalidSignature => continue,
                        ErrorKind::ExpiredSignature => AuthError::Expired,
                        ErrorKind::ImmatureSignature => AuthError::NotYetValid,
                        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => AuthError::Algorithm,
                        ErrorKind::MissingRequiredClaim(c) => AuthError::Malformed(format!("missing '{c}' claim")),
                        other => AuthError::Malformed(format!("{other:?}").to_lowercase()),
                    };
                    if last != AuthError::Signature {
                        return Err(last);
                    }
                }
            }
        }
        Err(last)
    }
}

/// Refuses anything but HS256/HS512 (notably `alg: none`) with a clear error before any
/// signature work.
fn check_algorithm(token: &str) -> Result<(), AuthError> {
    let header = token.split('.').next().unwrap_or_default();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header.trim_end_matches('='))
        .map_err(|_| AuthError::Malformed("header is not base64url".into()))?;
    let header: Map<String, Value> =
        serde_json::from_slice(&bytes).map_err(|_| AuthError::Malformed("header is not a JSON object".into()))?;
    match header.get("alg").and_then(Value::as_str) {
        Some("HS256" | "HS512") => Ok(()),
        _ => Err(AuthError::Algorithm),
    }
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
    fn server_tokens() {
        let v = verifier();
        let claims = json!({"aud": "http://127.0.0.1/api/v1/hubs/chat?api-version=2022-06-01", "exp": now() + 60});
        let token = mint(&claims, "secondary-key", Algorithm::HS256);
        assert!(v.verify_server(&token, "/api/v1/hubs/chat").is_ok());
        assert!(matches!(v.verify_server(&token, "/api/v1/hubs/other"), Err(AuthError::Audience(_))));
    }
}
