//! `vmlock-fenced`: stops this host's cluster lock holders when vmlockd's
//! etcd lease deadline passes, even if vmlockd itself is frozen or gone
//! (see `vmlockd::fenced_main`). Started by vmlockd; not meant to be run by hand.

fn main() {
    std::process::exit(vmlockd::fenced_main());
}
