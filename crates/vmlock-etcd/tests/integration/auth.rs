//! etcd password authentication: a least-privilege user, wrong passwords,
//! a user without rights on the prefix, and token expiry under a held lock.

use std::time::{Duration, Instant};

use etcd_client::{Client, Permission};
use lockspace::{ClusterArbiter, Error, ResourceKey};
use vmlock_etcd::{EtcdArbiter, EtcdConfig};
use vmlock_testkit::etcd::{Etcd, start_single_args};

use crate::support::{self, Recorder};

const PASSWORD: &str = "vm-s3cret";

fn rk(name: &str) -> ResourceKey {
    ResourceKey {
        lockspace: String::new(),
        name: name.into(),
    }
}

/// Creates `root`, `vmlock` (read-write on the test prefix only),
/// `outsider` (read-write on another prefix) and `reader` (read-only on the
/// test prefix), then enables auth.
pub fn enable_auth(url: &str, prefix: &str) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = Client::connect([url], None).await.unwrap();
        let mut a = client.auth_client();
        let users = [
            ("root", "root-pw", None),
            ("vmlock", PASSWORD, Some(format!("{prefix}/"))),
            ("outsider", "out-pw", Some("/elsewhere/".to_owned())),
            ("reader", "read-pw", None),
        ];
        for (user, pw, range) in users {
            a.role_add(user).await.unwrap();
            let perm = match (user, range) {
                ("reader", _) => Some(Permission::read(format!("{prefix}/"))),
                (_, range) => range.map(Permission::read_write),
            };
            if let Some(perm) = perm {
                a.role_grant_permission(user, perm.with_prefix())
                    .await
                    .unwrap();
            }
            a.user_add(user, pw, None).await.unwrap();
            a.user_grant_role(user, user).await.unwrap();
        }
        a.auth_enable().await.unwrap();
    });
}

/// A plain-http etcd with auth on whose tokens expire after 1 s idle.
fn auth_etcd() -> Etcd {
    let etcd = start_single_args(&["--auth-token-ttl".to_owned(), "1".to_owned()]);
    enable_auth(&etcd.url(), "/vmlock-test");
    etcd
}

fn user_config(etcd: &Etcd, host: &str, dir: &std::path::Path, user: &str, pw: &str) -> EtcdConfig {
    let mut c = support::config(vec![etcd.url()], host, 2, dir);
    c.auth = Some((user.to_owned(), pw.to_owned()));
    c.op_timeout = Duration::from_millis(1000);
    c
}

#[test]
fn password_auth_holds_a_lock_past_token_and_lease_ttl() {
    let _g = support::serial();
    if !support::etcd_available() {
        return;
    }
    let etcd = auth_etcd();
    let dir = tempfile::tempdir().unwrap();
    let (fa, fb) = (Recorder::new(), Recorder::new());
    let a = EtcdArbiter::start(
        user_config(&etcd, "A", dir.path(), "vmlock", PASSWORD),
        fa.clone(),
    )
    .unwrap();
    let b = EtcdArbiter::start(
        user_config(&etcd, "B", dir.path(), "vmlock", PASSWORD),
        fb.clone(),
    )
    .unwrap();
    let lease = a.lease_id();
    let k = rk("/d/auth");
    a.acquire(&k, false, 10).unwrap();
    // TTL 2 s, tokens expire after 1 s idle: keepalives alone must carry
    // the lease, and the next request must re-authenticate.
    std::thread::sleep(Duration::from_secs(5));
    assert!(fa.events().is_empty(), "A was fenced: {:?}", fa.events());
    assert_eq!(a.lease_id(), lease, "the lease was replaced");
    let refused = b.acquire(&k, false, 20);
    assert!(
        matches!(&refused, Err(Error::ClusterBusy { why, .. }) if why.contains("host A")),
        "{refused:?}"
    );
    a.release(&k, 10, true);
    b.acquire(&k, false, 20).unwrap();
    assert_eq!(b.holders(&k).unwrap().len(), 1);
    assert!(fb.events().is_empty(), "B was fenced: {:?}", fb.events());
}

#[test]
fn wrong_credentials_fail_cleanly_at_start() {
    let _g = support::serial();
    if !support::etcd_available() {
        return;
    }
    let etcd = auth_etcd();
    let dir = tempfile::tempdir().unwrap();
    for (user, pw) in [("vmlock", "wrong"), ("nobody", PASSWORD)] {
        let t = Instant::now();
        let cfg = user_config(&etcd, "A", dir.path(), user, pw);
        let err = EtcdArbiter::start(cfg, Recorder::new())
            .unwrap_err()
            .to_string();
        assert!(err.contains("authentication failed"), "{user}: {err}");
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    }
    // No credentials at all against an etcd with auth on.
    let mut anon = support::config(vec![etcd.url()], "A", 2, dir.path());
    anon.op_timeout = Duration::from_millis(1000);
    let err = EtcdArbiter::start(anon, Recorder::new())
        .unwrap_err()
        .to_string();
    assert!(err.contains("user name is empty"), "{err}");
    // Nothing was granted or written in etcd's name for the failed starts.
    assert!(
        !dir.path().join("A-state.json").exists() || {
            let rec = vmlock_etcd::record::Record::load(&dir.path().join("A-state.json")).unwrap();
            rec.locks.is_empty()
        }
    );
}

#[test]
fn users_without_rights_on_the_prefix_get_clean_errors() {
    let _g = support::serial();
    if !support::etcd_available() {
        return;
    }
    let etcd = auth_etcd();
    let dir = tempfile::tempdir().unwrap();
    // No rights at all under the prefix: refused at start, naming it.
    let cfg = user_config(&etcd, "O", dir.path(), "outsider", "out-pw");
    let err = EtcdArbiter::start(cfg, Recorder::new())
        .unwrap_err()
        .to_string();
    assert!(err.contains("outsider may not read /vmlock-test/"), "{err}");
    // Read-only: starts (and can list holders), but acquires are refused
    // at once with a Cluster error, not a hang or a busy answer.
    let cfg = user_config(&etcd, "R", dir.path(), "reader", "read-pw");
    let r = EtcdArbiter::start(cfg, Recorder::new()).unwrap();
    assert!(r.holders(&rk("/d/x")).unwrap().is_empty());
    for shared in [false, true] {
        let t = Instant::now();
        match r.acquire(&rk("/d/x"), shared, 5) {
            Err(Error::Cluster { why, .. }) => assert!(why.contains("permission denied"), "{why}"),
            other => panic!("expected a Cluster error, got {other:?}"),
        }
        assert!(
            t.elapsed() < Duration::from_millis(900),
            "{:?}",
            t.elapsed()
        );
    }
    // The refused Txn wrote nothing, so no key was queued for deletion: a
    // retry goes straight to the Txn again (an orphan would be deleted
    // first, and that delete would be the refused call).
    let again = r.acquire(&rk("/d/x"), false, 5);
    assert!(
        matches!(&again, Err(Error::Cluster { why, .. })
            if why.contains("acquire txn failed") && why.contains("permission denied")),
        "{again:?}"
    );
}
