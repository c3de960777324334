//! Client access tokens and the negotiate answer (azure-serverless.md §2).
//!
//! The claims are the ones the Azure Management SDK writes: `aud`, `exp`, `nbf`, `iat`,
//! `asrs.s.uid` for the user id, then the application's own claims, where names the service
//! reserves are renamed `asrs.u.<name>` (the service strips the prefix again before it hands
//! claims to upstream).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use switchboard_auth::{Algorithm, ConnectionString, mint};
use url::Url;

/// What a negotiate function returns to a SignalR client:
/// `{"url":"…/client/?hub=chat","accessToken":"<jwt>"}`.
///
/// The client treats `url` as a redirect and presents `access_token` as a bearer token to the
/// service's own negotiate endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NegotiateResponse {
    /// The client endpoint: `{ClientEndpoint or Endpoint+Port}/client/?hub={hub}`.
    pub url: String,
    /// A client token for that hub.
    pub access_token: String,
}

/// Claim names the service owns; an application claim with one of these names is renamed
/// `asrs.u.<name>` (the Azure SDK's `SystemClaims`).
pub const RESERVED_CLAIMS: [&str; 11] =
    ["aud", "exp", "iat", "nbf", "iss", "actort", "acr", "azp", "c_hash", "jti", "nonce"];

/// The prefix that keeps a colliding application claim apart from the reserved one.
pub const USER_CLAIM_PREFIX: &str = "asrs.u.";

/// The claim carrying the user id.
pub const USER_ID_CLAIM: &str = "asrs.s.uid";

/// The internal hub name clients connect to: `lower(app)_lower(hub)` or `lower(hub)`.
pub(crate) fn client_hub_name(hub: &str, application: Option<&str>) -> String {
    match application {
        Some(app) => format!("{}_{}", app.to_lowercase(), hub.to_lowercase()),
        None => hub.to_lowercase(),
    }
}

/// The audience of a client token: `{scheme}://{host}/client/?hub={hub}` of `Endpoint`, with
/// neither `Port` nor a port inside `Endpoint` (the SDK's audience base is scheme and host).
pub(crate) fn client_audience(endpoint: &Url, client_hub: &str) -> String {
    let host = endpoint.host_str().unwrap_or_default();
    format!("{}://{host}/client/?hub={client_hub}", endpoint.scheme())
}

/// Builds the token payload for a client of `audience`.
pub(crate) fn client_claims(
    audience: &str,
    user_id: Option<&str>,
    custom: &[(String, String)],
    lifetime: Duration,
    now_secs: u64,
) -> Map<String, Value> {
    let mut claims = Map::new();
    claims.insert("aud".into(), audience.into());
    claims.insert("exp".into(), now_secs.saturating_add(lifetime.as_secs()).into());
    claims.insert("nbf".into(), now_secs.into());
    claims.insert("iat".into(), now_secs.into());
    if let Some(user) = user_id {
        claims.insert(USER_ID_CLAIM.into(), user.into());
    }
    let mut seen_sub = false;
    for (name, value) in custom {
        // Only the first `sub` stays `sub` (it doubles as the user identifier); later ones
        // would become an array the service cannot read as an identifier.
        let keep_name = if name == "sub" { !std::mem::replace(&mut seen_sub, true) } else { !is_reserved(name) };
        let name = if keep_name { name.clone() } else { format!("{USER_CLAIM_PREFIX}{name}") };
        append_claim(&mut claims, name, value);
    }
    claims
}

fn is_reserved(name: &str) -> bool {
    RESERVED_CLAIMS.contains(&name)
}

/// Adds a claim; a repeated name becomes a JSON array, as .NET's JWT handler writes it.
fn append_claim(claims: &mut Map<String, Value>, name: String, value: &str) {
    match claims.get_mut(&name) {
        None => {
            claims.insert(name, value.into());
        }
        Some(Value::Array(values)) => values.push(value.into()),
        Some(existing) => {
            let first = existing.take();
            *existing = Value::Array(vec![first, value.into()]);
        }
    }
}

/// Mints the negotiate answer for `client_hub` (already app-prefixed and lower-cased).
pub(crate) fn negotiate(
    connection: &ConnectionString,
    access_key: &str,
    client_hub: &str,
    user_id: Option<&str>,
    claims: &[(String, String)],
    lifetime: Duration,
) -> NegotiateResponse {
    let audience = client_audience(&connection.endpoint, client_hub);
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let payload = client_claims(&audience, user_id, claims, lifetime, now);
    let access_token = mint(&Value::Object(payload), access_key, Algorithm::HS256);
    NegotiateResponse { url: connection.client_url(client_hub), access_token }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn standard_claims_and_user_id() {
        let claims = client_claims("http://a/client/?hub=h", Some("alice"), &[], Duration::from_secs(3600), 1000);
        assert_eq!(
            Value::Object(claims),
            json!({"aud": "http://a/client/?hub=h", "exp": 4600, "nbf": 1000, "iat": 1000, "asrs.s.uid": "alice"})
        );
        let anonymous = client_claims("x", None, &[], Duration::from_secs(60), 0);
        assert!(!anonymous.contains_key(USER_ID_CLAIM));
    }

    #[test]
    fn reserved_names_are_renamed_and_others_pass_through() {
        let mut custom: Vec<(&str, &str)> = RESERVED_CLAIMS.iter().map(|n| (*n, "mine")).collect();
        custom.extend([("role", "admin"), ("role", "dev"), ("sub", "first"), ("sub", "second"), ("x", "1")]);
        let claims = client_claims("real-aud", None, &pairs(&custom), Duration::from_secs(60), 10);
        assert_eq!(claims["aud"], "real-aud");
        assert_eq!(claims["exp"], 70);
        for name in RESERVED_CLAIMS {
            assert_eq!(claims[&format!("asrs.u.{name}")], "mine", "{name}");
        }
        assert!(!claims.contains_key("iss") && !claims.contains_key("jti"));
        assert_eq!(claims["role"], json!(["admin", "dev"]));
        assert_eq!(claims["sub"], "first");
        assert_eq!(claims["asrs.u.sub"], "second");
        assert_eq!(claims["x"], "1");
    }

    #[test]
    fn audience_drops_every_port_and_lowercases_nothing_itself() {
        let endpoint = Url::parse("https://svc.example.com:8443").unwrap();
        assert_eq!(client_audience(&endpoint, "app_chat"), "https://svc.example.com/client/?hub=app_chat");
        assert_eq!(client_hub_name("Chat", Some("MyApp")), "myapp_chat");
        assert_eq!(client_hub_name("Chat", None), "chat");
    }
}
