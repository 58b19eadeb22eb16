"""Writes hostile files for hostile.test.

poke.py IN OUT OFFSET WIDTH VALUE: a copy of IN with the little-endian
WIDTH-byte field at OFFSET set to VALUE (hex or decimal).
poke.py --npy DESCR SHAPE DATABYTES OUT: an .npy file whose header declares
DESCR and SHAPE (as numpy writes them), followed by DATABYTES zero bytes.
"""
import sys

if sys.argv[1] == "--npy":
    descr, shape, nbytes, out = sys.argv[2:6]
    header = "{'descr': '%s', 'fortran_order': False, 'shape': %s, }" % (
        descr, shape)
    header += " " * ((64 - (10 + len(header) + 1) % 64) % 64) + "\n"
    data = b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little")
    data += header.encode() + bytes(int(nbytes))
    open(out, "wb").write(data)
else:
    src, out, offset, width, value = sys.argv[1:6]
    data = bytearray(open(src, "rb").read())
    offset, width = int(offset), int(width)
    data[offset:offset + width] = int(value, 0).to_bytes(width, "little")
    open(out, "wb").write(data)
