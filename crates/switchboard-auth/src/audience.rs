//! Audience checks with Azure's lenient rules (azure-serverless.md §3.2).
//!
//! SDK generations disagree on the audience they write: with or without the port, with or
//! without `?api-version=…`, and proxies change the host the request arrives on. So the host
//! is compared with the configured endpoint (port ignored), the path with the request path
//! (case-insensitive, percent-decoded, trailing `/` dropped), and the query is ignored except
//! for the `hub` of a client audience.

use percent_encoding::percent_decode_str;
use url::Url;

/// The hosts a token's audience may name, taken from the public endpoint and its aliases.
#[derive(Debug, Clone)]
pub struct Audience {
    hosts: Vec<String>,
    /// `{endpoint path}/client` of each endpoint, normalized: the one path a client audience names.
    client_paths: Vec<String>,
}

impl Audience {
    /// Accepts audiences naming any of `endpoints`' hosts. Loopback endpoints also accept the
    /// other loopback spellings (`localhost`, `127.0.0.1`, `[::1]`), which local tools mix freely.
    pub fn new<'a>(endpoints: impl IntoIterator<Item = &'a Url>) -> Self {
        let (mut hosts, mut client_paths) = (Vec::new(), Vec::new());
        for url in endpoints {
            let Some(host) = url.host_str() else { continue };
            client_paths.push(format!("{}/client", normalize_path(url.path())));
            let host = host.to_ascii_lowercase();
            if is_loopback(&host) {
                hosts.extend(["localhost", "127.0.0.1", "[::1]"].map(String::from));
            }
            hosts.push(host);
        }
        hosts.sort();
        hosts.dedup();
        client_paths.sort();
        client_paths.dedup();
        Self { hosts, client_paths }
    }

    /// Whether `aud` is a client audience for `hub`: exactly `{endpoint}/client/?hub={hub}`, with
    /// the leniencies of every audience (port, case, trailing `/`, other query values).
    pub fn matches_client(&self, aud: &str, hub: &str) -> bool {
        self.resolve(aud).is_some_and(|named| self.names_client(&named, hub))
    }

    /// Whether `aud` names the REST resource at `request_path` (the raw, still-encoded path).
    pub fn matches_server(&self, aud: &str, request_path: &str) -> bool {
        self.resolve(aud).is_some_and(|named| named.names_path(request_path))
    }

    /// What `aud` names, when it is a URL on one of our hosts.
    pub(crate) fn resolve(&self, aud: &str) -> Option<Named> {
        let url = Url::parse(aud).ok()?;
        let host = url.host_str()?.to_ascii_lowercase();
        if !self.hosts.contains(&host) {
            return None;
        }
        let hubs = url.query_pairs().filter(|(k, _)| k == "hub").map(|(_, v)| v.into_owned()).collect();
        Some(Named { path: normalize_path(url.path()), hubs })
    }

    /// Whether a resolved audience is a client audience for `hub`.
    pub(crate) fn names_client(&self, named: &Named, hub: &str) -> bool {
        self.client_paths.contains(&named.path) && named.hubs.iter().any(|h| h.eq_ignore_ascii_case(hub))
    }
}

/// An audience on one of our hosts, reduced to what the checks compare: kept with a verified
/// token, so a token presented again is checked without parsing its audience again.
#[derive(Debug, Clone)]
pub(crate) struct Named {
    /// The path, normalized.
    path: String,
    /// Every `hub` value of the query.
    hubs: Vec<String>,
}

impl Named {
    /// Whether this names the REST resource at `request_path` (the raw, still-encoded path).
    pub(crate) fn names_path(&self, request_path: &str) -> bool {
        if request_path.is_ascii() && !request_path.contains('%') {
            // What `normalize_path` would make of it, without building it: `self.path` is
            // already lower case.
            return self.path.eq_ignore_ascii_case(request_path.trim_end_matches('/'));
        }
        self.path == normalize_path(request_path)
    }
}

fn is_loopback(host: &str) -> bool {
    host == "localhost" || host.starts_with("127.") || host == "[::1]"
}

fn normalize_path(path: &str) -> String {
    let decoded = percent_decode_str(path).decode_utf8_lossy();
    decoded.trim_end_matches('/').to_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn audience() -> Audience {
        Audience::new([&Url::parse("https://svc.example.com:8443").unwrap()])
    }

    #[test]
    fn server_audiences_of_every_sdk_generation() {
        let a = audience();
        let path = "/api/hubs/chat/groups/a%2Fb/:send";
        for aud in [
            "https://svc.example.com/api/hubs/chat/groups/a%2Fb/:send?api-version=2022-06-01",
            "https://svc.example.com:8443/api/hubs/chat/groups/a%2Fb/:send",
            "http://SVC.example.com/api/hubs/Chat/groups/a%2Fb/:send/",
            "https://svc.example.com/api/hubs/chat/groups/a/b/:send",
        ] {
            assert!(a.matches_server(aud, path), "{aud}");
        }
        assert!(!a.matches_server("https://evil.example.com/api/hubs/chat/groups/a%2Fb/:send", path));
        assert!(!a.matches_server("https://svc.example.com/api/hubs/other/:send", path));
        assert!(!a.matches_server("not a url", path));
        // A plain request path is compared the same way as an encoded one.
        assert!(a.matches_server("https://svc.example.com/api/hubs/chat/users/Ann", "/API/hubs/Chat/users/ann/"));
        assert!(!a.matches_server("https://svc.example.com/api/hubs/chat/users/ann", "/api/hubs/chat/users/anna"));
        assert!(a.matches_server("https://svc.example.com/api/hubs/chat/users/%C3%84", "/api/hubs/chat/users/%c3%a4"));
    }

    #[test]
    fn client_audiences() {
        let a = audience();
        assert!(a.matches_client("https://svc.example.com/client/?hub=chat", "chat"));
        assert!(a.matches_client("https://svc.example.com:8443/client/?hub=Chat", "chat"));
        assert!(a.matches_client("https://svc.example.com/client?hub=chat&x=1", "chat"));
        assert!(!a.matches_client("https://svc.example.com/client/?hub=other", "chat"));
        assert!(!a.matches_client("https://svc.example.com/client/", "chat"));
        assert!(!a.matches_client("https://svc.example.com/api/v1/hubs/chat", "chat"));
        assert!(!a.matches_client("https://other.example.com/client/?hub=chat", "chat"));
        // W1: a path that merely ends in "client" is another resource.
        for other in
            ["/api/v1/hubs/xclient?hub=chat", "/xclient/?hub=chat", "/a/client/?hub=chat", "/clients/?hub=chat"]
        {
            assert!(!a.matches_client(&format!("https://svc.example.com{other}"), "chat"), "{other}");
        }
    }

    #[test]
    fn an_endpoint_with_a_path_names_its_own_client_path() {
        let a = Audience::new([&Url::parse("https://svc.example.com/signalr").unwrap()]);
        assert!(a.matches_client("https://svc.example.com/signalr/client/?hub=chat", "chat"));
        assert!(!a.matches_client("https://svc.example.com/client/?hub=chat", "chat"));
    }

    #[test]
    fn loopback_spellings_are_interchangeable() {
        let a = Audience::new([&Url::parse("http://127.0.0.1:8080").unwrap()]);
        assert!(a.matches_client("http://localhost:8080/client/?hub=h", "h"));
        assert!(a.matches_client("http://127.0.0.1/client/?hub=h", "h"));
    }
}
