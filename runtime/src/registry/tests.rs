use super::*;

fn new_rev<'a>(manifest: &'a Manifest, bytes: &'a [u8], sha: &'a str) -> NewRevision<'a> {
    NewRevision {
        manifest,
        component: bytes,
        component_sha256: sha,
    }
}

/// Commits a revision of a function `hello`.
async fn commit_hello(reg: &Registry) -> RevisionRecord {
    let m = Manifest::new("hello");
    let bytes = b"component".to_vec();
    let sha = sha256_hex(&bytes);
    reg.commit_revision(new_rev(&m, &bytes, &sha))
        .await
        .unwrap()
}

#[tokio::test]
async fn deploy_rollback_delete_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let m = Manifest::new("hello");
    let (a, b) = (b"component-a".to_vec(), b"component-b".to_vec());
    let (sa, sb) = (sha256_hex(&a), sha256_hex(&b));
    let r1;
    let r2;
    {
        let reg = Registry::open(dir.path()).unwrap();
        r1 = reg.commit_revision(new_rev(&m, &a, &sa)).await.unwrap();
        reg.put_artifact(&sa, "e1", b"art").unwrap();
        r2 = reg.commit_revision(new_rev(&m, &b, &sb)).await.unwrap();
        let f = reg.function("hello").unwrap();
        assert_eq!(f.current, r2.revision);
        assert_eq!(f.revisions, vec![r1.revision, r2.revision]);
        assert_eq!(reg.artifact(&sa, "e1").unwrap().unwrap().as_ref(), b"art");
        let back = reg.rollback("hello", None).await.unwrap();
        assert_eq!(back.revision, r1.revision);
        assert!(matches!(
            reg.rollback("hello", None).await,
            Err(RegistryError::NoEarlierRevision(_))
        ));
        reg.kv("hello").unwrap().insert("k", "v").unwrap();
    }
    // Survives a reopen.
    let reg = Registry::open(dir.path()).unwrap();
    let f = reg.function("hello").unwrap();
    assert_eq!(f.current, r1.revision);
    assert_eq!(reg.revisions("hello").unwrap().len(), 2);
    assert_eq!(reg.component(&sb).unwrap().unwrap().as_ref(), b);
    reg.rollback("hello", Some(r2.revision)).await.unwrap();
    assert!(matches!(
        reg.rollback("hello", Some(Uuid::now_v7())).await,
        Err(RegistryError::RevisionNotFound { .. })
    ));
    reg.delete("hello").await.unwrap();
    assert!(matches!(
        reg.function("hello"),
        Err(RegistryError::FunctionNotFound(_))
    ));
    assert!(reg.component(&sa).unwrap().is_none());
    assert!(reg.artifact(&sa, "e1").unwrap().is_none());
    assert!(reg.kv("hello").unwrap().is_empty());
}

#[tokio::test]
async fn concurrent_commits_all_recorded_one_current() {
    let dir = tempfile::tempdir().unwrap();
    let reg = Registry::open(dir.path()).unwrap();
    let mut tasks = Vec::new();
    for i in 0..20 {
        let reg = reg.clone();
        tasks.push(tokio::spawn(async move {
            let m = Manifest::new("f");
            let bytes = format!("component-{i}").into_bytes();
            let sha = sha256_hex(&bytes);
            reg.commit_revision(new_rev(&m, &bytes, &sha))
                .await
                .unwrap()
                .revision
        }));
    }
    let mut ids = Vec::new();
    for t in tasks {
        ids.push(t.await.unwrap());
    }
    let f = reg.function("f").unwrap();
    assert_eq!(f.revisions.len(), 20);
    for id in &ids {
        assert!(f.revisions.contains(id));
    }
    assert!(ids.contains(&f.current));
}

#[tokio::test]
async fn sweeps_unreferenced_revisions() {
    let dir = tempfile::tempdir().unwrap();
    {
        let reg = Registry::open(dir.path()).unwrap();
        // What an interrupted deploy leaves: a revision and a component, no function pointer.
        let rec = RevisionRecord {
            function: "ghost".into(),
            revision: Uuid::now_v7(),
            created_at: records::now_rfc3339(),
            component_sha256: "abc".into(),
            component_size: 1,
            manifest: Manifest::new("ghost"),
        };
        reg.revisions
            .insert(revision_key("ghost", &rec.revision), encode(&rec))
            .unwrap();
        reg.components.insert("abc", b"x".as_slice()).unwrap();
        reg.db.flush().unwrap();
    }
    let reg = Registry::open(dir.path()).unwrap();
    assert!(reg.revisions.is_empty());
    assert!(reg.components.is_empty());
    assert!(reg.list_functions().unwrap().is_empty());
}

#[test]
fn second_open_fails_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let _reg = Registry::open(dir.path()).unwrap();
    // sled's lock is per process too (flock on a new file descriptor conflicts).
    let err = Registry::open(dir.path())
        .err()
        .expect("second open must fail");
    assert!(
        err.to_string().contains("in use by another slmfn runtime"),
        "{err}"
    );
}

/// A precompiled artifact is handed out only while its bytes match the digest stored with
/// them: a flipped byte, a truncated value or an entry without a digest (an older runtime's,
/// or written by something else) reads as absent and is removed, so the component is
/// compiled again instead of mapping unchecked bytes as native code.
#[test]
fn an_artifact_that_fails_its_digest_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let reg = Registry::open(dir.path()).unwrap();
    let key = artifact_key("abc", "e1");
    reg.put_artifact("abc", "e1", b"native code").unwrap();
    assert_eq!(
        reg.artifact("abc", "e1").unwrap().unwrap().as_ref(),
        b"native code"
    );
    let stored = reg.artifacts.get(&key).unwrap().unwrap().to_vec();
    let mut flipped = stored.clone();
    *flipped.last_mut().unwrap() ^= 1;
    let corrupt: [Vec<u8>; 3] = [
        flipped,
        stored[..stored.len() - 1].to_vec(),
        b"native code".to_vec(),
    ];
    for (i, value) in corrupt.into_iter().enumerate() {
        reg.artifacts.insert(&key, value).unwrap();
        assert!(reg.artifact("abc", "e1").unwrap().is_none(), "case {i}");
        assert!(
            reg.artifacts.get(&key).unwrap().is_none(),
            "case {i}: removed"
        );
    }
    // Stored again, it is served again.
    reg.put_artifact("abc", "e1", b"native code").unwrap();
    assert!(reg.artifact("abc", "e1").unwrap().is_some());
}

/// A crash between a delete's commit point (the function record removed and flushed) and the
/// drop of its kv tree leaves an orphaned namespace: the next open drops it, so a new function
/// of the same name starts with an empty kv instead of inheriting the old data.
#[tokio::test]
async fn a_deleted_functions_kv_never_reaches_a_new_function_of_its_name() {
    let dir = tempfile::tempdir().unwrap();
    {
        let reg = Registry::open(dir.path()).unwrap();
        commit_hello(&reg).await;
        reg.kv("hello").unwrap().insert("secret", "old").unwrap();
        // The delete's commit point, then the crash.
        reg.functions.remove("hello").unwrap();
        reg.db.flush().unwrap();
    }
    let reg = Registry::open(dir.path()).unwrap();
    assert!(
        !reg.db
            .tree_names()
            .iter()
            .any(|t| t.as_ref() == b"kv/hello"),
        "the orphaned kv tree survived the reopen"
    );
    commit_hello(&reg).await;
    assert!(reg.kv("hello").unwrap().get("secret").unwrap().is_none());
}

fn quota(max_keys: u64, max_bytes: u64) -> KvQuota {
    KvQuota {
        max_keys,
        max_bytes,
    }
}

/// Writes past the quota are refused and change nothing; overwrites and deletes that add
/// nothing pass; the count survives a reopen and follows every write.
#[tokio::test]
async fn kv_writes_stay_within_the_quota() {
    let dir = tempfile::tempdir().unwrap();
    {
        let reg = Registry::open(dir.path()).unwrap();
        // A function of the name exists: the open's sweep drops the kv of any other.
        commit_hello(&reg).await;
        let kv = reg.kv_namespace("hello", quota(3, 40)).unwrap();
        for k in ["a", "b", "c"] {
            kv.set(k, b"0123456789").unwrap();
        }
        assert_eq!(kv.usage().unwrap(), KvUsage { keys: 3, bytes: 33 });
        let err = kv.set("d", b"x").unwrap_err();
        assert!(
            matches!(&err, KvError::TooLarge(m) if m.contains("quota of 3 keys")),
            "{err}"
        );
        assert_eq!(kv.get("d").unwrap(), None, "a refused write leaves nothing");
        let err = kv.increment("d", 1).unwrap_err();
        assert!(matches!(err, KvError::TooLarge(_)), "{err}");
        // 33 bytes held: growing "a" by 8 passes 40.
        let err = kv.set("a", b"0123456789abcdefgh").unwrap_err();
        assert!(
            matches!(&err, KvError::TooLarge(m) if m.contains("40 bytes")),
            "{err}"
        );
        assert_eq!(kv.get("a").unwrap().unwrap(), b"0123456789");
        kv.set("a", b"01234").unwrap();
        kv.delete("b").unwrap();
        kv.delete("absent").unwrap();
        assert_eq!(kv.usage().unwrap(), KvUsage { keys: 2, bytes: 17 });
        assert_eq!(kv.increment("d", 5).unwrap(), 5);
        assert_eq!(kv.usage().unwrap(), KvUsage { keys: 3, bytes: 26 });
    }
    let reg = Registry::open(dir.path()).unwrap();
    // A lowered quota: what is there stays, shrinking passes, nothing new gets in.
    let kv = reg.kv_namespace("hello", quota(1, 10)).unwrap();
    assert_eq!(kv.usage().unwrap(), KvUsage { keys: 3, bytes: 26 });
    kv.set("a", b"0").unwrap();
    assert!(kv.set("e", b"").is_err());
}

/// Concurrent writers of new keys never take the namespace past its quota.
#[test]
fn concurrent_kv_writers_never_pass_the_quota() {
    let dir = tempfile::tempdir().unwrap();
    let reg = Registry::open(dir.path()).unwrap();
    let kv = reg.kv_namespace("hello", quota(50, 1 << 20)).unwrap();
    let stored: usize = std::thread::scope(|s| {
        let writers: Vec<_> = (0..4)
            .map(|t| {
                let kv = kv.clone();
                s.spawn(move || {
                    (0..40)
                        .filter(|i| kv.set(&format!("{t}/{i}"), b"v").is_ok())
                        .count()
                })
            })
            .collect();
        writers.into_iter().map(|w| w.join().unwrap()).sum()
    });
    assert_eq!(stored, 50);
    assert_eq!(kv.usage().unwrap().keys, 50);
    assert_eq!(kv.list_page("", None, 1000).unwrap().keys.len(), 50);
}

/// Pages follow each other through the cursor; a listing of more than a page is refused.
#[test]
fn kv_listings_are_bounded_and_paged() {
    let dir = tempfile::tempdir().unwrap();
    let reg = Registry::open(dir.path()).unwrap();
    let kv = reg.kv_namespace("hello", quota(5000, 1 << 24)).unwrap();
    for k in ["a", "u/1", "u/2", "u/3", "u/4", "u/5", "v"] {
        kv.set(k, b"").unwrap();
    }
    let mut after = None;
    let mut pages = Vec::new();
    loop {
        let page = kv.list_page("u/", after.as_deref(), 2).unwrap();
        pages.push(page.keys.clone());
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    assert_eq!(pages, [vec!["u/1", "u/2"], vec!["u/3", "u/4"], vec!["u/5"]]);
    // A cursor before the prefix starts at the prefix; a limit of 0 is 1.
    assert_eq!(kv.list_page("u/", Some("a"), 0).unwrap().keys, ["u/1"]);
    assert_eq!(kv.list("u/").unwrap().len(), 5);
    for i in 0..MAX_PAGE {
        kv.set(&format!("w/{i:04}"), b"").unwrap();
    }
    assert_eq!(kv.list("w/").unwrap().len(), MAX_PAGE);
    kv.set("w/9999", b"").unwrap();
    let err = kv.list("w/").unwrap_err();
    assert!(
        matches!(&err, KvError::TooLarge(m) if m.contains("list-keys-page")),
        "{err}"
    );
}

/// A record that does not decode is set aside at open: the registry opens, serves the rest,
/// keeps the quarantined function's revisions, components and kv, and lists what it set
/// aside.
#[tokio::test]
async fn a_corrupt_record_is_quarantined_and_the_rest_opens() {
    let dir = tempfile::tempdir().unwrap();
    let (good, bad) = (Manifest::new("good"), Manifest::new("bad"));
    let bytes = b"component".to_vec();
    let other = b"other component".to_vec();
    let (sha, other_sha) = (sha256_hex(&bytes), sha256_hex(&other));
    let bad_rev;
    {
        let reg = Registry::open(dir.path()).unwrap();
        reg.commit_revision(new_rev(&good, &bytes, &sha))
            .await
            .unwrap();
        bad_rev = reg
            .commit_revision(new_rev(&bad, &other, &other_sha))
            .await
            .unwrap();
        reg.kv("bad").unwrap().insert("memory", "kept").unwrap();
        reg.functions.insert("bad", b"{not json".to_vec()).unwrap();
        reg.db.flush().unwrap();
    }
    let reg = Registry::open(dir.path()).unwrap();
    let names: Vec<_> = reg
        .list_functions()
        .unwrap()
        .into_iter()
        .map(|f| f.name)
        .collect();
    assert_eq!(names, ["good"]);
    let quarantined = reg.quarantined().unwrap();
    assert_eq!(quarantined.len(), 1);
    assert_eq!(
        (quarantined[0].tree.as_str(), quarantined[0].key.as_str()),
        ("functions", "bad")
    );
    assert!(
        quarantined[0].reason.contains("key must be a string"),
        "{:?}",
        quarantined[0]
    );
    assert_eq!(quarantined[0].value_hex, hex::encode(b"{not json"));
    assert_eq!(reg.quarantined_count(), 1);
    assert_eq!(reg.revision("bad", bad_rev.revision).unwrap(), bad_rev);
    assert!(reg.component(&other_sha).unwrap().is_some());
    assert_eq!(
        reg.kv("bad")
            .unwrap()
            .get("memory")
            .unwrap()
            .unwrap()
            .as_ref(),
        b"kept"
    );
    // Reopening again changes nothing.
    drop(reg);
    let reg = Registry::open(dir.path()).unwrap();
    assert_eq!(reg.quarantined_count(), 1);
    assert_eq!(reg.list_functions().unwrap().len(), 1);
}
