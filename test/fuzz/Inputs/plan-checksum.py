"""Copies a plan file, writing its manifest's FNV-1a checksum into the
header as the plan fuzz target does before loading (fuzz/plan_fuzzer.cpp),
so that moe-run reaches what the fuzzer reached. --version N also sets the
header's format version (a finding kept across a format change).
usage: plan-checksum.py IN OUT [--version N]"""
import struct
import sys

b = bytearray(open(sys.argv[1], "rb").read())
if len(b) >= 64:
    if "--version" in sys.argv:
        struct.pack_into("<I", b, 8, int(sys.argv[sys.argv.index("--version") + 1]))
    (n,) = struct.unpack_from("<Q", b, 24)
    if n <= len(b) - 64:
        h = 1469598103934665603
        for c in b[64:64 + n]:
            h = ((h ^ c) * 1099511628211) & 0xFFFFFFFFFFFFFFFF
        struct.pack_into("<Q", b, 48, h)
open(sys.argv[2], "wb").write(bytes(b))
