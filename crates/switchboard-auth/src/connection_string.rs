//! Azure SignalR connection strings (`Endpoint=…;AccessKey=…;Version=1.0;`), parsed with the
//! service's leniencies.

use crate::AuthError;
use std::collections::HashMap;
use url::Url;

/// A parsed Azure SignalR connection string (`Endpoint=…;AccessKey=…;Version=1.0;`).
///
/// Keys are case-insensitive, parts are split on `;` and then at the first `=`, both sides
/// trimmed; empty parts and parts without `=` are ignored, duplicate keys are an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionString {
    /// Identity of the service and the base of every token audience (trailing `/` trimmed).
    pub endpoint: Url,
    /// Signing key, used as raw UTF-8 bytes. Absent only with an `AuthType`.
    pub access_key: Option<String>,
    /// `1.x`; defaults to `1.0`.
    pub version: String,
    /// Replaces the port of `endpoint` for connecting, never for audiences.
    pub port: Option<u16>,
    /// Base handed to clients when a proxy sits in front of the client endpoint.
    pub client_endpoint: Option<Url>,
    /// Base used for REST calls.
    pub server_endpoint: Option<Url>,
    /// Entra ID modes (`aad`, `azure`, `azure.msi`, `azure.app`); kept for callers, not used here.
    pub auth_type: Option<String>,
}

impl std::str::FromStr for ConnectionString {
    type Err = AuthError;

    fn from_str(text: &str) -> Result<Self, AuthError> {
        let err = |m: &str| AuthError::ConnectionString(m.to_owned());
        let mut map: HashMap<String, String> = HashMap::new();
        for part in text.split(';').map(str::trim).filter(|p| !p.is_empty()) {
            let Some((key, value)) = part.split_once('=') else { continue };
            let key = key.trim().to_ascii_lowercase();
            if map.insert(key.clone(), value.trim().to_owned()).is_some() {
                return Err(AuthError::ConnectionString(format!("duplicate key '{key}'")));
            }
        }
        let parse_url = |key: &str| -> Result<Option<Url>, AuthError> {
            let Some(value) = map.get(key) else { return Ok(None) };
            let url = Url::parse(value.trim_end_matches('/'))
                .map_err(|e| AuthError::ConnectionString(format!("{key} is not an absolute URL: {e}")))?;
            if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
                return Err(AuthError::ConnectionString(format!("{key} must be an http or https URL")));
            }
            Ok(Some(url))
        };
        let endpoint = parse_url("endpoint")?.ok_or_else(|| err("Endpoint is required"))?;
        let auth_type = map.get("authtype").cloned();
        let access_key = map.get("accesskey").cloned().filter(|k| !k.is_empty());
        if access_key.is_none() && auth_type.is_none() {
            return Err(err("AccessKey is required"));
        }
        let version = map.get("version").cloned().unwrap_or_else(|| "1.0".to_owned());
        if !is_valid_version(&version) {
            return Err(err("Version must look like 1.0"));
        }
        let port = match map.get("port") {
            None => None,
            Some(p) => match p.parse::<u16>() {
                Ok(p) if p > 0 => Some(p),
                _ => return Err(err("Port must be an integer from 1 to 65535")),
            },
        };
        Ok(Self {
            endpoint,
            access_key,
            version,
            port,
            client_endpoint: parse_url("clientendpoint")?,
            server_endpoint: parse_url("serverendpoint")?,
            auth_type,
        })
    }
}

/// `^1\.\d+(?:[\w-.]+)?$`, the rule of Azure's parser.
fn is_valid_version(v: &str) -> bool {
    let Some(rest) = v.strip_prefix("1.") else { return false };
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    digits > 0 && rest[digits..].bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

impl ConnectionString {
    /// The service URL to connect to: `Endpoint` with `Port` applied.
    pub fn service_url(&self) -> Url {
        let mut url = self.endpoint.clone();
        if let Some(port) = self.port {
            let _ = url.set_port(Some(port));
        }
        url
    }

    /// Base URL for REST calls (`ServerEndpoint`, else the service URL), without trailing `/`.
    pub fn rest_base(&self) -> String {
        let url = self.server_endpoint.clone().unwrap_or_else(|| self.service_url());
        url.as_str().trim_end_matches('/').to_owned()
    }

    /// The URL handed to clients by negotiate: `{ClientEndpoint or service}/client/?hub={hub}`.
    pub fn client_url(&self, hub: &str) -> String {
        let url = self.client_endpoint.clone().unwrap_or_else(|| self.service_url());
        format!("{}/client/?hub={}", url.as_str().trim_end_matches('/'), hub.to_ascii_lowercase())
    }

    /// The audience of a client token for `hub`, as the Azure SDK writes it (no port applied).
    pub fn client_audience(&self, hub: &str) -> String {
        format!("{}/client/?hub={}", self.endpoint.as_str().trim_end_matches('/'), hub.to_ascii_lowercase())
    }
}

impl std::fmt::Display for ConnectionString {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Endpoint={}", self.endpoint.as_str().trim_end_matches('/'))?;
        if let Some(key) = &self.access_key {
            write!(f, ";AccessKey={key}")?;
        }
        if let Some(port) = self.port {
            write!(f, ";Port={port}")?;
        }
        if let Some(url) = &self.client_endpoint {
            write!(f, ";ClientEndpoint={}", url.as_str().trim_end_matches('/'))?;
        }
        if let Some(url) = &self.server_endpoint {
            write!(f, ";ServerEndpoint={}", url.as_str().trim_end_matches('/'))?;
        }
        if let Some(auth) = &self.auth_type {
            write!(f, ";AuthType={auth}")?;
        }
        write!(f, ";Version={};", self.version)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<ConnectionString, AuthError> {
        s.parse()
    }

    #[test]
    fn parses_the_typical_string() {
        let cs = parse("Endpoint=https://x.service.signalr.net;AccessKey=abc=;Version=1.0;").unwrap();
        assert_eq!(cs.endpoint.as_str(), "https://x.service.signalr.net/");
        assert_eq!(cs.access_key.as_deref(), Some("abc="));
        assert_eq!(cs.client_url("Chat"), "https://x.service.signalr.net/client/?hub=chat");
        assert_eq!(cs.rest_base(), "https://x.service.signalr.net");
    }

    #[test]
    fn keys_are_case_insensitive_and_port_applies_to_connecting_only() {
        let cs = parse(" endpoint = http://localhost ; PORT=8888;accesskey=K;version=1.0-preview").unwrap();
        assert_eq!(cs.port, Some(8888));
        assert_eq!(cs.rest_base(), "http://localhost:8888");
        assert_eq!(cs.client_audience("h"), "http://localhost/client/?hub=h");
        assert_eq!(cs.version, "1.0-preview");
    }

    #[test]
    fn client_and_server_endpoints() {
        let cs = parse("Endpoint=http://a;AccessKey=K;ClientEndpoint=https://gw/;ServerEndpoint=http://internal:9000")
            .unwrap();
        assert_eq!(cs.client_url("h"), "https://gw/client/?hub=h");
        assert_eq!(cs.rest_base(), "http://internal:9000");
        assert_eq!(cs.client_audience("h"), "http://a/client/?hub=h");
    }

    #[test]
    fn rejects_bad_strings() {
        for bad in [
            "AccessKey=K",
            "Endpoint=ftp://x;AccessKey=K",
            "Endpoint=notaurl;AccessKey=K",
            "Endpoint=http://x",
            "Endpoint=http://x;AccessKey=K;Version=2.0",
            "Endpoint=http://x;AccessKey=K;Port=0",
            "Endpoint=http://x;AccessKey=K;Port=99999",
            "Endpoint=http://x;endpoint=http://y;AccessKey=K",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn display_round_trips() {
        let text = "Endpoint=http://127.0.0.1:8080;AccessKey=K;Version=1.0;";
        assert_eq!(parse(text).unwrap().to_string(), text);
    }

    #[test]
    fn auth_type_needs_no_key() {
        assert!(parse("Endpoint=https://x;AuthType=azure.msi;Version=1.0").is_ok());
    }
}
