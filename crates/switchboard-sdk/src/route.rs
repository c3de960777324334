//! Building REST paths and queries the way the Azure SDK does (`Uri.EscapeDataString` on every
//! path segment and query value), so a group such as `a/b` travels as `a%2Fb`.

use crate::SdkError;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

/// Everything except RFC 3986 unreserved characters is escaped, like `Uri.EscapeDataString`.
const ESCAPE: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~');

/// The API version every dated route is called with.
pub(crate) const API_VERSION: &str = "2022-06-01";

/// A REST path under `/api` plus its query, still relative to the REST base URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RestPath {
    /// Encoded path starting with `/api`.
    path: String,
    /// Encoded `key=value` pairs, joined with `&` when rendered.
    query: Vec<String>,
}

impl RestPath {
    /// `/api/health`.
    pub(crate) fn health() -> Self {
        Self { path: "/api/health".to_owned(), query: Vec::new() }.with_query("api-version", API_VERSION)
    }

    /// `/api/hubs/{hub}` with `application` (both lower-cased, as the SDK sends them).
    pub(crate) fn hub(hub: &str, application: Option<&str>) -> Result<Self, SdkError> {
        let mut path = Self { path: "/api/hubs".to_owned(), query: Vec::new() }.segment(&hub.to_lowercase())?;
        if let Some(application) = application {
            path = path.with_query("application", &application.to_lowercase());
        }
        Ok(path.with_query("api-version", API_VERSION))
    }

    /// Appends a caller-supplied value as one escaped segment.
    ///
    /// Empty, `.` and `..` segments are refused: URL normalisation would silently turn them
    /// into a different route (`%2E%2E` is a dot segment too, per the URL standard).
    pub(crate) fn segment(mut self, value: &str) -> Result<Self, SdkError> {
        if value.is_empty() || value == "." || value == ".." {
            return Err(SdkError::InvalidArgument(format!("'{value}' cannot be used as a path segment")));
        }
        self.path.push('/');
        self.path.extend(utf8_percent_encode(value, ESCAPE));
        Ok(self)
    }

    /// Appends a fixed segment such as `groups` or `:send`.
    pub(crate) fn literal(mut self, literal: &'static str) -> Self {
        debug_assert!(!literal.contains('/'), "literals are single segments");
        self.path.push('/');
        self.path.push_str(literal);
        self
    }

    /// Adds `key=value`; keys may repeat (`excluded=a&excluded=b`).
    pub(crate) fn with_query(mut self, key: &str, value: &str) -> Self {
        self.query.push(format!("{}={}", utf8_percent_encode(key, ESCAPE), utf8_percent_encode(value, ESCAPE)));
        self
    }

    /// Adds one `excluded` pair per connection id.
    pub(crate) fn with_excluded(self, excluded: &[&str]) -> Self {
        excluded.iter().fold(self, |path, id| path.with_query("excluded", id))
    }

    /// Adds `reason` when given.
    pub(crate) fn with_reason(self, reason: Option<&str>) -> Self {
        match reason {
            Some(reason) => self.with_query("reason", reason),
            None => self,
        }
    }

    /// The full request URL for `rest_base` (no trailing `/`).
    pub(crate) fn url(&self, rest_base: &str) -> String {
        if self.query.is_empty() {
            return self.audience(rest_base);
        }
        format!("{rest_base}{}?{}", self.path, self.query.join("&"))
    }

    /// The server-token audience: the request URL without its query (§3).
    pub(crate) fn audience(&self, rest_base: &str) -> String {
        format!("{rest_base}{}", self.path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "http://127.0.0.1:8080";

    #[test]
    fn segments_are_escaped_like_escape_data_string() {
        let path = RestPath::hub("Chat", None).unwrap().literal("groups").segment("a/b c?#%é~-_.").unwrap();
        assert_eq!(
            path.url(BASE),
            "http://127.0.0.1:8080/api/hubs/chat/groups/a%2Fb%20c%3F%23%25%C3%A9~-_.?api-version=2022-06-01"
        );
        assert_eq!(path.audience(BASE), "http://127.0.0.1:8080/api/hubs/chat/groups/a%2Fb%20c%3F%23%25%C3%A9~-_.");
    }

    #[test]
    fn application_excluded_and_reason_go_to_the_query() {
        let path = RestPath::hub("chat", Some("MyApp"))
            .unwrap()
            .literal(":closeConnections")
            .with_excluded(&["c1", "c&2"])
            .with_reason(Some("bye now"));
        assert_eq!(
            path.url(BASE),
            "http://127.0.0.1:8080/api/hubs/chat/:closeConnections?application=myapp&api-version=2022-06-01\
             &excluded=c1&excluded=c%262&reason=bye%20now"
        );
        assert_eq!(path.audience(BASE), "http://127.0.0.1:8080/api/hubs/chat/:closeConnections");
    }

    #[test]
    fn segments_that_urls_would_rewrite_are_refused() {
        for bad in ["", ".", ".."] {
            let err = RestPath::hub("chat", None).unwrap().literal("groups").segment(bad).unwrap_err();
            assert!(matches!(err, SdkError::InvalidArgument(_)), "{bad}");
        }
        assert!(RestPath::hub("", None).is_err());
        assert!(RestPath::hub("chat", None).unwrap().segment("...").is_ok());
    }

    #[test]
    fn health_path() {
        assert_eq!(RestPath::health().url(BASE), "http://127.0.0.1:8080/api/health?api-version=2022-06-01");
    }
}
