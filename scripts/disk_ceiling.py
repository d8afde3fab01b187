#!/usr/bin/env python3
"""The fastest any restore could be on this disk: read SRC cold and, at the
same time, write as many bytes to DST and fsync them, with nothing else in
the way (no network, no hashing, no chunking). A restore does exactly this
much disk work: the holder reads its chunk files while the client writes the
file. Prints one line: bytes, seconds, MB/s (10^6 B/s).

  python3 scripts/disk_ceiling.py SRC DST [--block-mib 1]

Beside scripts/local_copy.py (which reads, then writes) this shows whether
the disk can read and write at once: if this is no faster than the local
copy, reads and writes share one budget, and no restore can beat a local
copy by much however well it overlaps its work.
"""
import argparse
import os
import sys
import threading
import time


def read_all(path, block, out):
    total = 0
    with open(path, "rb", buffering=0) as src:
        while True:
            data = src.read(block)
            if not data:
                break
            total += len(data)
    out.append(total)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("src")
    ap.add_argument("dst")
    ap.add_argument("--block-mib", type=int, default=1)
    a = ap.parse_args()
    block = a.block_mib << 20
    size = os.path.getsize(a.src)
    payload = os.urandom(block)
    read = []
    started = time.perf_counter()
    reader = threading.Thread(target=read_all, args=(a.src, block, read))
    reader.start()
    with open(a.dst, "wb", buffering=0) as dst:
        left = size
        while left > 0:
            n = min(left, block)
            dst.write(payload[:n])
            left -= n
        os.fsync(dst.fileno())
    reader.join()
    t = time.perf_counter() - started
    print(f"disk ceiling: read {read[0]} bytes while writing {size} in {t:.3f} s = {size / t / 1e6:.1f} MB/s")


if __name__ == "__main__":
    sys.exit(main())
