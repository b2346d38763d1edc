use super::*;

fn new_rev<'a>(manifest: &'a Manifest, bytes: &'a [u8], sha: &'a str) -> NewRevision<'a> {
    NewRevision {
        manifest,
        component: bytes,
        component_sha256: sha,
    }
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
    let m = Manifest::new("hello");
    let bytes = b"component".to_vec();
    let sha = sha256_hex(&bytes);
    {
        let reg = Registry::open(dir.path()).unwrap();
        reg.commit_revision(new_rev(&m, &bytes, &sha))
            .await
            .unwrap();
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
    reg.commit_revision(new_rev(&m, &bytes, &sha))
        .await
        .unwrap();
    assert!(reg.kv("hello").unwrap().get("secret").unwrap().is_none());
}
