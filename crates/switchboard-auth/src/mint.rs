//! Token minting the way the Azure SDKs do it: HS256 (or HS512), `aud`, `exp`, `nbf`, `iat`.

use jsonwebtoken::{EncodingKey, Header};
use serde_json::{Value, json};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use jsonwebtoken::Algorithm;

/// Signs `claims` with `key` (raw UTF-8 bytes).
pub fn mint(claims: &Value, key: &str, algorithm: Algorithm) -> String {
    let header = Header { alg: algorithm, typ: Some("JWT".into()), ..Header::default() };
    jsonwebtoken::encode(&header, claims, &EncodingKey::from_secret(key.as_bytes()))
        .expect("serializing a JSON value cannot fail")
}

/// A client token for `audience` (`{endpoint}/client/?hub={hub}`), optionally naming a user.
pub fn mint_client_token(audience: &str, user_id: Option<&str>, lifetime: Duration, key: &str) -> String {
    let mut claims = standard_claims(audience, lifetime);
    if let Some(user) = user_id {
        claims["asrs.s.uid"] = Value::String(user.to_owned());
    }
    mint(&claims, key, Algorithm::HS256)
}

/// A REST token whose audience is the request URL without its query.
pub fn mint_server_token(audience: &str, lifetime: Duration, key: &str) -> String {
    mint(&standard_claims(audience, lifetime), key, Algorithm::HS256)
}

fn standard_claims(audience: &str, lifetime: Duration) -> Value {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    json!({"aud": audience, "exp": now + lifetime.as_secs(), "nbf": now, "iat": now})
}
