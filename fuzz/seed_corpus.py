#!/usr/bin/env python3
"""Seed fuzz/corpus/ from vmlock-proto's captured fixtures (run from fuzz/).

decode_frame: every captured request and reply frame, as is.
decode_args:  [proc byte] + call payload for every lock request; [0] + error payload for
              every ERROR reply; [9] + a few hand-made admin typed-parameter arrays.
"""
import glob, os, struct

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
