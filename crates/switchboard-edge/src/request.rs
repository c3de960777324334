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
    /// Splits and decodes as `application/x-www-form-urlencoded` does (`+` is a space, invalid
    /// UTF-8 is replaced), checking each part for `%` and `+` once instead of decoding it.
    pub(crate) fn parse(query: Option<&'a str>) -> Self {
        let pairs = query
            .unwrap_or_default()
            .split('&')
            .filter(|pair| !pair.is_empty())
            .map(|pair| {
                let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
                (decode(key), decode(value))
            })
            .collect();
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

fn decode(part: &str) -> Cow<'_, str> {
    if !part.contains(['%', '+']) {
        return Cow::Borrowed(part);
    }
    let spaced = part.replace('+', " ");
    Cow::Owned(percent_encoding::percent_decode_str(&spaced).decode_utf8_lossy().into_owned())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_the_query_as_forms_do_and_borrows_what_needs_no_decoding() {
        let raw = "hub=chat&&id&access_token=eyJ.a-b_c.d&user=a+b%20c&bad=%FF&k%3D=v=w";
        let query = ClientQuery::parse(Some(raw));
        let expected = url::form_urlencoded::parse(raw.as_bytes()).collect::<Vec<_>>();
        assert_eq!(query.pairs, expected);
        assert_eq!(query.get("user"), Some("a b c"));
        assert_eq!(query.get("bad"), Some("\u{FFFD}"));
        assert_eq!(query.get("k="), Some("v=w"));
        assert_eq!(query.get("id"), Some(""));
        assert!(matches!(query.pairs[2].1, Cow::Borrowed(_)), "a token needs no copy");
        assert!(ClientQuery::parse(None).pairs.is_empty());
        assert_eq!(query.without_token(), "hub=chat&id=&user=a+b+c&bad=%EF%BF%BD&k%3D=v%3Dw");
    }
}
