#!/usr/bin/env python3
"""Seed fuzz/corpus/ from real inputs (run from fuzz/).

decode_frame: every captured request and reply frame of vmlock-proto's fixtures, as is.
decode_args:  [proc byte] + call payload for every lock request; [0] + error payload for
              every ERROR reply; [9] + a few hand-made admin typed-parameter arrays.
parse_config: our shipped dist/*.conf and Debian's libvirt-daemon-system 9.0 configs, each
              as shipped and with its commented-out examples made live; a few hand-made
              files for the corners of the grammar. Debian's files are taken from the cache
              vmlock-conf's `debian_files` test fills (run it first), or from --debian DIR.
read_state:   virtlockd 9.0's real state file, the legacy layouts the reader accepts, and
              a state written by our own vmlockd (corpus/read_state/seed_ours_live,
              captured from a live re-exec by capture_state.sh; not made here).

After `cargo fuzz cmin`, the committed corpora keep the seeds of parse_config (except
Debian's files, which are fetched, never committed) and of read_state next to the
minimised inputs: they are the real-world inputs the stable replay tests must keep seeing.

    python3 seed_corpus.py [--debian DIR/etc/libvirt]
"""
import glob, os, re, struct, sys

FIX = "../crates/vmlock-proto/tests/fixtures"


def frames(b):
    while b:
        (n,) = struct.unpack(">I", b[:4])
        yield b[:n]
        b = b[n:]


def write(target, name, data):
    os.makedirs(f"corpus/{target}", exist_ok=True)
    with open(f"corpus/{target}/{name}", "wb") as f:
        f.write(data)


def xstr(s):
    b = s.encode()
    return struct.pack(">I", len(b)) + b + b"\0" * (-len(b) % 4)


for path in sorted(glob.glob(f"{FIX}/*.bin")):
    base = os.path.basename(path)[: -len(".bin")]
    data = open(path, "rb").read()
    write("decode_frame", f"seed_{base}", data)
    for i, fr in enumerate(frames(data)):
        prog, _vers, proc_, mtype, _serial, status = struct.unpack(">IIiiIi", fr[4:28])
        payload = fr[28:]
        if prog == 0x0EA7BEEF and mtype == 0 and 1 <= proc_ <= 8:
            write("decode_args", f"seed_{base}_{i}", bytes([proc_]) + payload)
        if status == 1:
            write("decode_args", f"seed_{base}_{i}", b"\0" + payload)

params = [
    xstr("nclients_max") + struct.pack(">iI", 2, 1024),
    xstr("readonly") + struct.pack(">ii", 6, 0),
    xstr("sock_addr") + struct.pack(">i", 7) + xstr("/run/libvirt/virtlockd-sock"),
    xstr("unix_process_id") + struct.pack(">iq", 3, 4242),
    xstr("timestamp") + struct.pack(">iQ", 4, 1 << 40),
    xstr("load") + struct.pack(">id", 5, 0.5),
    xstr("min") + struct.pack(">ii", 1, -1),
]
write("decode_args", "seed_typed_params", b"\x09" + struct.pack(">I", len(params)) + b"".join(params))
write("decode_args", "seed_typed_params_bad_tag", b"\x09" + struct.pack(">I", 1) + xstr("x") + struct.pack(">i", 8))


# vmlock's inquiry program (0x766d6c6b): calls as [200 + proc] + payload, replies as
# [210 + proc] + payload, and two whole call frames for decode_frame.
INQ = 0x766D6C6B
uuid = bytes(range(16))
calls = {
    1: struct.pack(">I", 0),
    2: struct.pack(">I", 1) + xstr("") + struct.pack(">I", 1) + xstr("/d/a.img")
       + struct.pack(">I", 1) + xstr("web1") + struct.pack(">I", 1) + uuid
       + struct.pack(">III", 1, 4242, 0),
    3: xstr("/var/lib/libvirt/lockd/files") + xstr("abc") + struct.pack(">II", 0, 1),
}
for proc_, payload in calls.items():
    write("decode_args", f"seed_inquiry_call_{proc_}", bytes([200 + proc_]) + payload)
    hdr = struct.pack(">IIiiIi", INQ, 1, proc_, 0, 1, 0)
    write("decode_frame", f"seed_inquiry_call_{proc_}", struct.pack(">I", 4 + len(hdr) + len(payload)) + hdr + payload)
row = (xstr("") + xstr("/d/a.img") + xstr("/d/a.img") + struct.pack(">II", 0, 1) + xstr("web1")
       + uuid + struct.pack(">IIq", 3, 4242, 1700000000) + xstr("hv3"))
rets = {
    1: struct.pack(">I", 2) + xstr("pid") + struct.pack(">iq", 3, 77)
       + xstr("lock_kind") + struct.pack(">i", 7) + xstr("ofd"),
    2: struct.pack(">I", 1) + row + struct.pack(">I", 1),
    3: struct.pack(">II", 1, 0),
}
for proc_, payload in rets.items():
    write("decode_args", f"seed_inquiry_ret_{proc_}", bytes([210 + proc_]) + payload)


# ---- parse_config ----------------------------------------------------------------------

def uncomment(text):
    """`#key = value` example lines (and the rest of a list they open) made live."""
    out, in_list = [], False
    for line in text.splitlines():
        body = line[1:] if line.startswith("#") else None
        live = None
        if body is not None and in_list:
            in_list, live = "]" not in body, body
        elif body is not None and re.match(r"[A-Za-z][A-Za-z0-9_]*[ \t]*=", body):
            in_list, live = "[" in body and "]" not in body, body
        out.append(live if live is not None else line)
    return "\n".join(out) + "\n"


def debian_dir():
    if "--debian" in sys.argv:
        return sys.argv[sys.argv.index("--debian") + 1]
    target = os.environ.get("CARGO_TARGET_DIR", "../target")
    return f"{target}/tmp/libvirt-daemon-system/etc/libvirt"


confs = [(f"dist_{os.path.basename(p)}", p) for p in sorted(glob.glob("../dist/*.conf"))]
deb = debian_dir()
if not os.path.isdir(deb):
    sys.exit(f"{deb}: no Debian configs; run `cargo test -p vmlock-conf --test debian_files`")
confs += [(f"debian_{os.path.basename(p)}", p) for p in sorted(glob.glob(f"{deb}/*.conf"))]
for name, path in confs:
    text = open(path, encoding="utf-8").read()
    write("parse_config", f"seed_{name}", text.encode())
    write("parse_config", f"seed_{name}_live", uncomment(text).encode())

grammar = {
    "lists": b'a = [ "x", \'y\', -1, +2, 3,\n  [ [], [ "" ] ], ]\nb = []\n',
    "triple": b'a = """line 1\nline "2" it\'s"""\nb = """"q"""\n',
    "separators": b"a=1;b=-0;\tc = 'z' # trailing\n\r\n;d=\"\"\n",
    "crlf": b'max_clients = 10\r\nlog_level = 4\r\n',
    "nul": b'a = "x\x00y"\nb = """a"\x00"""\n',
    "utf8": "unix_sock_dir = \"/run/é\"\nhost_id = 'ñ'\n".encode(),
    "big_numbers": b"a = 18446744073709551615\nb = -9223372036854775808\nc = 18446744073709551616\n",
    "daemon_all": (
        b'log_level = 4\nlog_filters = "1:locking"\nlog_outputs = "3:stderr"\n'
        b'max_clients = 7\nadmin_max_clients = 9\nunix_sock_dir = "/run/x"\n'
        b'lock_kind = "posix"\nholder_kill_grace_ms = 0\nlock_backend = "etcd"\n'
        b'etcd_endpoints = [ "http://10.0.0.1:2379", "http://10.0.0.2:2379" ]\n'
        b'etcd_prefix = "/p"\nhost_id = "h1"\nlease_ttl = 1\non_lease_loss = "pause"\n'
        b"max_clients = 8\nunknown = 1\n"
    ),
    "lockd_all": (
        b"auto_disk_leases = 0\nrequire_lease_for_disks = 1\n"
        b'file_lockspace_dir = "/var/lib/libvirt/lockd/files"\n'
        b'lvm_lockspace_dir = "/var/lib/libvirt/lockd/lvmvolumes"\n'
        b'scsi_lockspace_dir = "/var/lib/libvirt/lockd/scsivolumes"\n'
    ),
    "bad_types": b'log_level = 5\nlock_kind = "flock"\nmax_clients = -1\nauto_disk_leases = 2\n',
}
for name, data in grammar.items():
    write("parse_config", f"seed_grammar_{name}", data)

# ---- read_state ------------------------------------------------------------------------

write("read_state", "seed_virtlockd_9.0", open("../crates/vmlockd/tests/fixtures/virtlockd-9.0-restart-state.json", "rb").read())
priv = ('"privateData": {"restricted": true, "ownerPid": 9, "ownerId": 1, "ownerName": "vm", '
        '"ownerUUID": "c7a5fdbd-edaf-9455-926a-d65c16db1809"}')
legacy = {
    "server_key": '{"server": {"max_clients": 20, "services": [{"socks": [{"fd": 3}]}], '
                  '"clients": [{"sock": {"fd": 4}, ' + priv + '}]}, '
                  '"defaultLockspace": {"resources": []}, "lockspaces": [], "magic": "77"}',
    "servers_array": '{"daemon": {"servers": [{"max_clients": 20, "services": [{"socks": '
                     '[{"fd": 3, "unlinkUNIX": false}]}], "clients": []}]}, '
                     '"defaultLockspace": {"resources": []}, "lockspaces": [], "magic": "77"}',
    "no_servers_key": '{"daemon": {"max_clients": 5, "next_client_id": 3, "services": '
                      '[{"socks": [{"fd": 3, "isClient": false}]}], "clients": [{"id": 2, '
                      '"conn_time": 1700000000, "sock": {"fd": 4, "isClient": true}, ' + priv +
                      '}]}, "defaultLockspace": {"resources": [{"name": "/d", "path": "/d", '
                      '"fd": 5, "lockHeld": true, "flags": 1, "owners": [9, 4294967297]}]}, '
                      '"magic": "1"}',
    "ours_extras": '{"daemon": {"servers": {"virtlockd": {"max_clients": 1, "next_client_id": 2, '
                   '"services": [{"socks": [{"fd": 3}]}], "clients": [{"id": 1, "sock": '
                   '{"fd": 4}, "vmlockUnread": "0000001c20008686", ' + priv + '}]}}}, '
                   '"defaultLockspace": {"resources": []}, "lockspaces": [{"directory": "/ls", '
                   '"resources": [{"name": "n", "path": "/ls/n", "fd": 6, "lockHeld": false, '
                   '"flags": 2, "owners": [], "vmlockLockKind": "ofd", "vmlockAliases": '
                   '[["", "/ls/n"]]}]}], "vmlockLingering": [{"path": "/x", "fd": 7}], '
                   '"magic": "42"}',
}
for name, text in legacy.items():
    write("read_state", f"seed_{name}", text.encode())
