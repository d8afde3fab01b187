#!/usr/bin/env python3
"""A plain sequential local copy, the yardstick of a restore: read SRC (cold
if the caller dropped the page cache), blake3 every byte, write DST, fsync
DST and its directory. Prints one line: bytes, seconds, MB/s (10^6 B/s).

  python3 scripts/local_copy.py SRC DST [--block-mib 1]
"""
import argparse, os, sys, time

import blake3  # pip install blake3


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("src")
    ap.add_argument("dst")
    ap.add_argument("--block-mib", type=int, default=1)
    a = ap.parse_args()
    block = a.block_mib << 20
    started = time.perf_counter()
    hasher = blake3.blake3()
    total = 0
    with open(a.src, "rb", buffering=0) as src, open(a.dst, "wb", buffering=0) as dst:
        while True:
            data = src.read(block)
            if not data:
                break
            hasher.update(data)
            dst.write(data)
            total += len(data)
        os.fsync(dst.fileno())
    d = os.open(os.path.dirname(os.path.abspath(a.dst)), os.O_RDONLY)
    os.fsync(d)
    os.close(d)
    t = time.perf_counter() - started
    print(f"local copy: {total} bytes in {t:.3f} s = {total / t / 1e6:.1f} MB/s blake3={hasher.hexdigest()[:16]}")


if __name__ == "__main__":
    sys.exit(main())
