//! dlopen of libvirt lock-driver plugins (filled in by the testkit work).
