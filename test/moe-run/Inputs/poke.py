"""Writes hostile files for hostile.test and weight-checksum.test.

poke.py IN OUT OFFSET WIDTH VALUE: a copy of IN with the little-endian
WIDTH-byte field at OFFSET set to VALUE (hex or decimal).
poke.py --npy DESCR SHAPE DATABYTES OUT: an .npy file whose header declares
DESCR and SHAPE (as numpy writes them), followed by DATABYTES zero bytes.
poke.py --flip-segment DESCRIBE IN OUT SEGMENT [MASK]: a copy of IN (a plan,
or the weight file that holds SEGMENT) with the middle byte of weight
segment SEGMENT XORed with MASK (default 0x40). DESCRIBE is the output of
`moe-run --describe` on the plan, whose segment lines give each segment's
size and offset in its file's data region.
"""
import re
import sys

if sys.argv[1] == "--npy":
    descr, shape, nbytes, out = sys.argv[2:6]
    header = "{'descr': '%s', 'fortran_order': False, 'shape': %s, }" % (
        descr, shape)
    header += " " * ((64 - (10 + len(header) + 1) % 64) % 64) + "\n"
    data = b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little")
    data += header.encode() + bytes(int(nbytes))
    open(out, "wb").write(data)
elif sys.argv[1] == "--flip-segment":
    describe, src, out, segment = sys.argv[2:6]
    mask = int(sys.argv[6], 0) if len(sys.argv) > 6 else 0x40
    m = None
    for line in open(describe):
        m = re.match(r"\s+%s: (\d+) bytes, .*, offset (\d+)$" %
                     re.escape(segment), line) or m
    if not m:
        sys.exit("poke.py: no segment '%s' in %s" % (segment, describe))
    size, offset = int(m.group(1)), int(m.group(2))
    data = bytearray(open(src, "rb").read())
    # The data region: the plan header's data_offset, or a weight file's
    # page after its header.
    base = 4096 if data[:8] == b"MOEWGHT\0" else int.from_bytes(
        data[32:40], "little")
    data[base + offset + size // 2] ^= mask
    open(out, "wb").write(data)
else:
    src, out, offset, width, value = sys.argv[1:6]
    data = bytearray(open(src, "rb").read())
    offset, width = int(offset), int(width)
    data[offset:offset + width] = int(value, 0).to_bytes(width, "little")
    open(out, "wb").write(data)
