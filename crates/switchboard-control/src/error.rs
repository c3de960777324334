//! The crate's error type.

/// Errors of the control-plane storage.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// redb failed (I/O, corruption, transaction).
    #[error("storage: {0}")]
    Storage(#[from] redb::Error),
    /// A value could not be encoded.
    #[error("encode: {0}")]
    Encode(#[from] rmp_serde::encode::Error),
    /// A stored value could not be decoded.
    #[error("decode: {0}")]
    Decode(#[from] rmp_serde::decode::Error),
    /// Creating the data directory failed.
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    /// The blocking task running a storage call was cancelled (runtime shutting down).
    #[error("storage task cancelled")]
    Cancelled,
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Lets `?` lift each redb error type into [`Error`] (they all convert into `redb::Error`).
macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for Error {
            fn from(e: $t) -> Self {
                Error::Storage(e.into())
            }
        }
    )*};
}

from_redb!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    redb::SetDurabilityError
);
