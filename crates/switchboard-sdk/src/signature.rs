//! Checking the `X-ASRS-Signature` header of upstream webhooks (azure-serverless.md §5.2).

use hmac::{Hmac, Mac};
use sha2::Sha256;

const PREFIX: &str = "sha256=";

/// Returns whether `header_value` proves the request came from a service holding one of
/// `access_keys`.
///
/// The header lists `sha256=<hex>` entries separated by `,` (one per key the service holds).
/// It is valid when any entry equals HMAC-SHA256(key = UTF-8 key, message = connection id) for
/// any of the keys. Hex is compared case-insensitively, spaces around entries are tolerated,
/// and the MAC comparison runs in constant time.
///
/// ```
/// use switchboard_auth::{AccessKeys, upstream_signature};
/// use switchboard_sdk::verify_upstream_signature;
///
/// let keys = AccessKeys::new(["primary-key"]).unwrap();
/// let header = upstream_signature(&keys, "conn-1");
/// assert!(verify_upstream_signature(keys.current().iter(), "conn-1", &header));
/// assert!(verify_upstream_signature(&["old-key", "primary-key"], "conn-1", &header));
/// assert!(!verify_upstream_signature(&["other-key"], "conn-1", &header));
/// ```
pub fn verify_upstream_signature<I>(access_keys: I, connection_id: &str, header_value: &str) -> bool
where
    I: IntoIterator,
    I::Item: AsRef<str>,
{
    let presented: Vec<[u8; 32]> = header_value.split(',').filter_map(parse_entry).collect();
    if presented.is_empty() {
        return false;
    }
    access_keys.into_iter().any(|key| {
        let mut mac = Hmac::<Sha256>::new_from_slice(key.as_ref().as_bytes()).expect("hmac takes any key length");
        mac.update(connection_id.as_bytes());
        presented.iter().any(|digest| mac.clone().verify_slice(digest).is_ok())
    })
}

/// Parses one `sha256=<64 hex digits>` entry.
fn parse_entry(entry: &str) -> Option<[u8; 32]> {
    let entry = entry.trim();
    let prefix = entry.get(..PREFIX.len())?;
    if !prefix.eq_ignore_ascii_case(PREFIX) {
        return None;
    }
    let hex = &entry.as_bytes()[PREFIX.len()..];
    if hex.len() != 64 {
        return None;
    }
    let mut digest = [0u8; 32];
    for (byte, pair) in digest.iter_mut().zip(hex.chunks_exact(2)) {
        *byte = hex_value(pair[0])? << 4 | hex_value(pair[1])?;
    }
    Some(digest)
}

fn hex_value(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        b'A'..=b'F' => Some(digit - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchboard_auth::{AccessKeys, upstream_signature};

    fn signature(keys: &[&str], connection_id: &str) -> String {
        upstream_signature(&AccessKeys::new(keys.iter().copied()).unwrap(), connection_id)
    }

    #[test]
    fn accepts_the_services_own_header() {
        let header = signature(&["key-a"], "conn");
        assert!(verify_upstream_signature(["key-a"], "conn", &header));
        assert!(verify_upstream_signature(AccessKeys::new(["key-a"]).unwrap().current().iter(), "conn", &header));
    }

    #[test]
    fn known_vector() {
        // HMAC-SHA256(key = "key", message = "The quick brown fox jumps over the lazy dog").
        let header = "sha256=f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8";
        assert!(verify_upstream_signature(["key"], "The quick brown fox jumps over the lazy dog", header));
    }

    #[test]
    fn refuses_forgeries() {
        let header = signature(&["key-a"], "conn");
        assert!(!verify_upstream_signature(["key-b"], "conn", &header));
        assert!(!verify_upstream_signature(["key-a"], "other-conn", &header));
        let mut tampered = header.clone().into_bytes();
        let last = tampered.len() - 1;
        tampered[last] = if tampered[last] == b'0' { b'1' } else { b'0' };
        assert!(!verify_upstream_signature(["key-a"], "conn", std::str::from_utf8(&tampered).unwrap()));
        for junk in ["", "sha256=", "sha256=zz", "md5=00", &header[7..], &format!("{header}00")] {
            assert!(!verify_upstream_signature(["key-a"], "conn", junk), "{junk}");
        }
        assert!(!verify_upstream_signature(Vec::<String>::new(), "conn", &header));
    }

    #[test]
    fn any_entry_against_any_key() {
        let header = signature(&["primary", "secondary"], "conn");
        assert!(verify_upstream_signature(["secondary"], "conn", &header));
        assert!(verify_upstream_signature(["unrelated", "primary"], "conn", &header));
        let second_only = signature(&["secondary"], "conn");
        assert!(verify_upstream_signature(&["primary", "secondary"], "conn", &second_only));
    }

    #[test]
    fn hex_case_and_spaces_do_not_matter() {
        let header = signature(&["k1", "k2"], "conn");
        assert!(header.bytes().any(|b| b.is_ascii_uppercase()), "the service writes upper-case hex");
        let lower = header.to_lowercase();
        assert!(verify_upstream_signature(["k2"], "conn", &lower));
        let spaced = header.replace(',', " , ");
        assert!(verify_upstream_signature(["k2"], "conn", &format!(" {spaced} ")));
        assert!(verify_upstream_signature(["k1"], "conn", &header.replace("sha256=", "SHA256=")));
    }
}
