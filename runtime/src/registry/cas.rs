//! Read-modify-write of one sled key whose update may refuse the value it finds.
//!
//! sled's `update_and_fetch` runs the update again whenever another writer changed the key
//! between its read and its compare-and-swap, so whatever the update notes on the side (an
//! error) must be the note of the attempt that was stored, not of an earlier one.

/// Updates `key` with `f`: `Ok(value)` stores `value` (`None` removes the key), `Err(e)`
/// leaves the key as `f` found it. Returns the value stored, or the error of the last attempt
/// — the one sled kept — never a stale error of an attempt it retried.
pub(crate) fn update_checked<E>(
    tree: &sled::Tree,
    key: impl AsRef<[u8]>,
    mut f: impl FnMut(Option<&[u8]>) -> Result<Option<Vec<u8>>, E>,
) -> sled::Result<Result<Option<sled::IVec>, E>> {
    let mut refused = None;
    let stored = tree.update_and_fetch(key, |old| {
        // A retry starts from scratch.
        refused = None;
        match f(old) {
            Ok(new) => new,
            Err(e) => {
                refused = Some(e);
                old.map(<[u8]>::to_vec)
            }
        }
    })?;
    Ok(match refused {
        Some(e) => Err(e),
        None => Ok(stored),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The first attempt finds a value it refuses and, meanwhile, another write makes the value
    /// acceptable (made from inside the update, so that sled's compare-and-swap fails for
    /// certain and it runs the update again): the outcome is the retry's, not the refusal.
    #[test]
    fn a_retried_update_reports_its_last_attempt() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let tree = db.open_tree("t").unwrap();
        tree.insert("k", b"bad".as_slice()).unwrap();
        let mut attempts = 0;
        let outcome = update_checked(&tree, "k", |old| {
            attempts += 1;
            match old {
                Some(b"bad") => {
                    tree.insert("k", b"good".as_slice()).unwrap();
                    Err("refused")
                }
                _ => Ok(Some(b"updated".to_vec())),
            }
        })
        .unwrap();
        assert_eq!(attempts, 2, "sled ran the update again");
        assert_eq!(outcome.unwrap().unwrap().as_ref(), b"updated");

        // And a refusal in the last attempt is reported, the value left alone.
        tree.insert("k", b"bad".as_slice()).unwrap();
        let outcome = update_checked(&tree, "k", |old| match old {
            Some(b"bad") => Err("refused"),
            _ => Ok(None),
        })
        .unwrap();
        assert_eq!(outcome, Err("refused"));
        assert_eq!(tree.get("k").unwrap().unwrap().as_ref(), b"bad");
    }
}
