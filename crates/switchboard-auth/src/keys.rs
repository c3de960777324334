//! Access keys: the set a node accepts (the first signs, every key verifies, replaced whole on a
//! reload), generating a key, and the upstream signature made with them.

use hmac::{Hmac, Mac};
use rand::Rng;
use sha2::Sha256;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

/// The access keys a node accepts. The first is the primary: it signs what the node mints.
/// Any key verifies, so a secondary key keeps tokens working while the primary is rotated.
///
/// Clones share one key set, so [`AccessKeys::replace`] (a reload) reaches every holder.
#[derive(Clone)]
pub struct AccessKeys {
    shared: Arc<Shared>,
}

struct Shared {
    keys: RwLock<Arc<[String]>>,
    /// Counts replacements, so a holder can tell the set changed with one atomic load.
    version: AtomicU64,
}

impl std::fmt::Debug for AccessKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AccessKeys({} keys)", self.current().len())
    }
}

impl AccessKeys {
    /// Builds the key set; empty strings are dropped. Returns `None` when no key remains.
    pub fn new<I, S>(keys: I) -> Option<Self>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let keys = Self::clean(keys)?;
        Some(Self { shared: Arc::new(Shared { keys: RwLock::new(keys), version: AtomicU64::new(0) }) })
    }

    fn clean<I, S>(keys: I) -> Option<Arc<[String]>>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let keys: Vec<String> = keys.into_iter().map(Into::into).filter(|k| !k.is_empty()).collect();
        (!keys.is_empty()).then(|| keys.into())
    }

    /// The key that signs minted tokens and appears in the printed connection string.
    pub fn primary(&self) -> String {
        self.current()[0].clone()
    }

    /// Every accepted key, primary first, as of now.
    pub fn current(&self) -> Arc<[String]> {
        self.shared.keys.read().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }

    /// Which key set is current: it grows with every replacement. A set read with
    /// [`AccessKeys::current`] after this is at least as new.
    pub(crate) fn version(&self) -> u64 {
        self.shared.version.load(Ordering::Acquire)
    }

    /// Swaps in a new key set for every holder of this one; `false` (and no change) when it is empty.
    pub fn replace<I, S>(&self, keys: I) -> bool
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let Some(keys) = Self::clean(keys) else { return false };
        let mut current = self.shared.keys.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        *current = keys;
        // Counted while the new set is in place and readers wait: whoever sees the new version
        // reads the new set.
        self.shared.version.fetch_add(1, Ordering::Release);
        true
    }
}

/// Creates a random access key in the shape Azure uses (base64 text of 32 random bytes).
pub fn generate_access_key() -> String {
    use base64::Engine;
    let bytes: [u8; 32] = rand::rng().random();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The `X-ASRS-Signature` value for an upstream request: `sha256=<HEX>` of
/// HMAC-SHA256(key, connection id) for every key, comma-joined without spaces (the Functions
/// trigger splits on `,` without trimming).
pub fn upstream_signature(keys: &AccessKeys, connection_id: &str) -> String {
    let mut out = String::new();
    for (i, key) in keys.current().iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes()).expect("hmac takes any key length");
        mac.update(connection_id.as_bytes());
        out.push_str("sha256=");
        for byte in mac.finalize().into_bytes() {
            let _ = write!(out, "{byte:02X}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replacement_reaches_every_clone_and_is_never_empty() {
        let keys = AccessKeys::new(["a", "b"]).unwrap();
        let held = keys.clone();
        assert!(keys.replace(["c", "b"]));
        assert_eq!(held.primary(), "c");
        assert_eq!(&*held.current(), &["c".to_owned(), "b".to_owned()]);
        assert!(!keys.replace(Vec::<String>::new()));
        assert!(!keys.replace([""]));
        assert_eq!(held.current().len(), 2);
    }

    #[test]
    fn signature_lists_every_key_without_spaces() {
        let keys = AccessKeys::new(["key1", "key2"]).unwrap();
        let sig = upstream_signature(&keys, "conn");
        let parts: Vec<&str> = sig.split(',').collect();
        assert_eq!(parts.len(), 2);
        assert!(parts.iter().all(|p| p.starts_with("sha256=") && p.len() == 7 + 64));
        assert!(!sig.contains(' '));
    }

    #[test]
    fn empty_keys_are_refused() {
        assert!(AccessKeys::new(["", ""]).is_none());
        assert_eq!(AccessKeys::new(["", "b"]).unwrap().primary(), "b");
    }

    #[test]
    fn generated_keys_differ() {
        assert_ne!(generate_access_key(), generate_access_key());
        assert_eq!(generate_access_key().len(), 44);
    }
}
