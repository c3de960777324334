//! Reading what every client-endpoint request carries: the hub, the access token, the id.

use crate::EdgeState;
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, StatusCode, header};
use std::borrow::Cow;
use switchboard_auth::ClientIdentity;
use switchboard_hub::is_valid_hub_name;

/// The parsed query of a client-endpoint request. Values borrow from the query unless they
/// had to be decoded (a base64url token never does).
pub(crate) struct ClientQuery<'a> {
    pub(crate) pairs: Vec<(Cow<'a, str>, Cow<'a, str>)>,
}

impl<'a> ClientQuery<'a> {
    pub(crate) fn parse(query: Option<&'a str>) -> Self {
        let pairs = url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()).collect();
        Self { pairs }
    }

    pub(crate) fn get(&self, key: &str) -> Option<&str> {
        self.pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_ref())
    }

    /// The query as upstream sees it: the access token removed.
    pub(crate) fn without_token(&self) -> String {
        let mut out = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in self.pairs.iter().filter(|(k, _)| k != "access_token") {
            out.append_pair(k, v);
        }
        out.finish()
    }
}

/// An error answered as plain text with its status (never a redirect: pitfall 7).
pub(crate) fn refuse(status: StatusCode, message: impl Into<String>) -> Response {
    let mut message: String = message.into();
    message.push('\n');
    (status, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], message).into_response()
}

/// Validates the hub and token of a request; returns the lower-cased hub and the identity.
pub(crate) fn authenticate(
    state: &EdgeState,
    headers: &HeaderMap,
    query: &ClientQuery,
) -> Result<(String, ClientIdentity), Response> {
    let hub = query.get("hub").unwrap_or_default();
    if !is_valid_hub_name(hub) {
        return Err(refuse(StatusCode::BAD_REQUEST, format!("invalid hub name '{}'", truncate(hub))));
    }
    let hub = hub.to_ascii_lowercase();
    let token = bearer(headers).or_else(|| query.get("access_token")).unwrap_or_default();
    match state.verifier.verify_client(token, &hub) {
        Ok(identity) => Ok((hub, identity)),
        Err(e) => Err(refuse(StatusCode::UNAUTHORIZED, e.to_string())),
    }
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

fn truncate(s: &str) -> String {
    s.chars().take(64).collect()
}
