//! Upstream templates: `{url, hub, category, event}` patterns, placeholders in the URL.

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

/// Characters left as they are when a placeholder is filled (unreserved URL characters).
const PLACEHOLDER: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// A pattern of a template: `*` (anything), `a,b` (a list, items trimmed) or an exact name.
/// Matching ignores ASCII case, since hub names are lower-cased by every SDK.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pattern {
    Any,
    OneOf(Vec<String>),
}

impl Pattern {
    pub fn parse(text: &str) -> Pattern {
        let text = text.trim();
        if text.is_empty() || text == "*" {
            return Pattern::Any;
        }
        Pattern::OneOf(text.split(',').map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()).collect())
    }

    pub fn matches(&self, value: &str) -> bool {
        match self {
            Pattern::Any => true,
            Pattern::OneOf(names) => names.iter().any(|n| n.eq_ignore_ascii_case(value)),
        }
    }
}

/// One upstream setting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    /// URL with optional `{hub}`, `{category}` and `{event}` placeholders.
    pub url: String,
    pub hub: Pattern,
    pub category: Pattern,
    pub event: Pattern,
}

impl Template {
    /// A template that matches every hub, category and event.
    pub fn catch_all(url: impl Into<String>) -> Template {
        Template { url: url.into(), hub: Pattern::Any, category: Pattern::Any, event: Pattern::Any }
    }

    /// The URL to call for an event, or `None` when the template does not match it.
    pub fn url_for(&self, hub: &str, category: &str, event: &str) -> Option<String> {
        if !(self.hub.matches(hub) && self.category.matches(category) && self.event.matches(event)) {
            return None;
        }
        let fill = |s: &str| utf8_percent_encode(s, PLACEHOLDER).to_string();
        Some(
            self.url
                .replace("{hub}", &fill(hub))
                .replace("{category}", &fill(category))
                .replace("{event}", &fill(event)),
        )
    }
}

/// The URL of the first template matching the event.
pub(crate) fn first_match(templates: &[Template], hub: &str, category: &str, event: &str) -> Option<String> {
    templates.iter().find_map(|t| t.url_for(hub, category, event))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns() {
        assert!(Pattern::parse("*").matches("x"));
        assert!(Pattern::parse("").matches("x"));
        let list = Pattern::parse(" chat , news");
        assert!(list.matches("chat") && list.matches("NEWS") && !list.matches("other"));
    }

    #[test]
    fn first_match_wins_and_placeholders_are_escaped() {
        let templates = vec![
            Template {
                url: "http://a/{hub}/{event}".into(),
                hub: Pattern::parse("chat"),
                category: Pattern::parse("messages"),
                event: Pattern::Any,
            },
            Template::catch_all("http://b/{category}?e={event}"),
        ];
        assert_eq!(first_match(&templates, "chat", "messages", "send it").as_deref(), Some("http://a/chat/send%20it"));
        assert_eq!(
            first_match(&templates, "chat", "connections", "connected").as_deref(),
            Some("http://b/connections?e=connected")
        );
        assert_eq!(first_match(&templates, "other", "messages", "a/b").as_deref(), Some("http://b/messages?e=a%2Fb"));
        assert_eq!(first_match(&templates[..1], "other", "messages", "x"), None);
    }
}
