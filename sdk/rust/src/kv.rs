//! The function's key/value store, persisted by the runtime.
//!
//! Each function has its own namespace: keys never collide with another function's, and
//! deleting the function deletes its keys. Values are bytes; [`increment`] keeps an `i64`
//! counter atomically, so concurrent invocations never lose an update.
//!
//! Each function has a quota (`limits.kv_max_keys`, `limits.kv_max_bytes` in `fn.toml`): a
//! write past it fails with [`Error::TooLarge`] and changes nothing.
//!
//! Errors are [`Error`] (too large or over the quota, or the store failed); `?` converts them to
//! [`crate::Error::Internal`] in a handler.
//!
//! # Examples
//!
//! ```no_run
//! use slmfn_sdk::kv;
//!
//! # fn main() -> Result<(), slmfn_sdk::Error> {
//! kv::set("user/ada", "Ada Lovelace")?;
//! assert_eq!(kv::get_string("user/ada")?.as_deref(), Some("Ada Lovelace"));
//! assert_eq!(kv::list_keys("user/")?, ["user/ada"]);
//! let visits = kv::increment("visits", 1)?;
//! kv::delete("user/ada")?;
//! # let _ = visits;
//! # Ok(())
//! # }
//! ```

use crate::wit::slmfn::agent::kv as wit;

pub use wit::{Error, KeyPage};

/// A `Result` whose error is the kv [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

/// Reads a key; `None` when absent.
pub fn get(key: &str) -> Result<Option<Vec<u8>>> {
    wit::get(key)
}

/// Reads a key as UTF-8 text; `None` when absent, [`Error::Io`] when the value is not UTF-8.
pub fn get_string(key: &str) -> Result<Option<String>> {
    get(key)?
        .map(|bytes| {
            String::from_utf8(bytes)
                .map_err(|e| Error::Io(format!("value of key {key:?} is not UTF-8: {e}")))
        })
        .transpose()
}

/// Writes a key, replacing any value.
pub fn set(key: &str, value: impl AsRef<[u8]>) -> Result<()> {
    wit::set(key, value.as_ref())
}

/// Deletes a key; deleting an absent key is not an error.
pub fn delete(key: &str) -> Result<()> {
    wit::delete(key)
}

/// The keys starting with `prefix`, sorted (`""` lists every key); [`Error::TooLarge`] when
/// more than 1000 match: list those with [`list_keys_page`].
pub fn list_keys(prefix: &str) -> Result<Vec<String>> {
    wit::list_keys(prefix)
}

/// One page of the keys starting with `prefix`: at most `limit` (1–1000) keys that sort after
/// `after` (`None`: from the first), and in [`KeyPage::next`] the `after` of the next page.
///
/// ```no_run
/// # fn main() -> Result<(), slmfn_sdk::kv::Error> {
/// let mut after = None;
/// loop {
///     let page = slmfn_sdk::kv::list_keys_page("user/", after.as_deref(), 100)?;
///     for key in &page.keys { /* ... */ }
///     match page.next {
///         Some(next) => after = Some(next),
///         None => break,
///     }
/// }
/// # Ok(())
/// # }
/// ```
pub fn list_keys_page(prefix: &str, after: Option<&str>, limit: u32) -> Result<KeyPage> {
    wit::list_keys_page(prefix, after, limit)
}

/// Atomically adds `delta` to the counter at `key` (absent counts as 0) and returns the new
/// value. The counter is stored as a little-endian `i64`, so [`get`] reads it as 8 bytes.
pub fn increment(key: &str, delta: i64) -> Result<i64> {
    wit::increment(key, delta)
}
