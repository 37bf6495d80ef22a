#!/usr/bin/env python3
"""Writes seeds for `corpus_load` from a real corpus file: its first documents, cut at
document boundaries, as complete and valid files of a few sizes.

Each seed starts with the fuzz target's switch byte (3: it rewrites the token count and
the checksum, so mutations reach the checks behind them).

    python3 seed.py ../../../web/corpus/default.samdcorp corpus/corpus_load
"""

import os
import struct
import sys

HEADER = struct.Struct("<8sIIIIQQ")  # magic, version, width, vocab, docs, hash, slots


def seeds(data: bytes):
    magic, version, width, vocab, _docs, tok_hash, slots = HEADER.unpack_from(data)
    separator = b"\xff" * width
    body = data[HEADER.size:HEADER.size + width * slots]
    docs, at = 0, 0
    for want in (1, 2, 5, 20):
        while docs < want and at < len(body):
            at += width
            if body[at - width:at] == separator:
                docs += 1
        head = HEADER.pack(magic, version, width, vocab, docs, tok_hash, at // width)
        yield want, b"\x03" + head + body[:at] + b"\0" * 8


def main():
    src, out = sys.argv[1], sys.argv[2]
    os.makedirs(out, exist_ok=True)
    with open(src, "rb") as f:
        data = f.read()
    for docs, seed in seeds(data):
        with open(os.path.join(out, f"docs-{docs}"), "wb") as f:
            f.write(seed)
        print(f"docs-{docs}: {len(seed)} bytes")


if __name__ == "__main__":
    main()
