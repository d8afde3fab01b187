#!/usr/bin/env python3
"""Run a command and say how busy the disk under DIR was meanwhile: bytes
read and written per second and the share of the time the device had I/O
in flight (/proc/diskstats, the "util" of iostat). The command's stdout and
stderr pass through; the summary goes to stderr as one line:

  disk vda during restore: read 1012 MB/s, write 1019 MB/s, busy 96% over 1.070 s

  python3 scripts/diskstat.py --dir DIR --label restore -- CMD [ARG...]

A disk busy ~100% of the time bounds whatever ran: no pipelining on top of
it can go faster. Linux only; MB/s means 10^6 bytes per second.
"""
import argparse
import os
import subprocess
import sys
import time


def device_of(path):
    """The whole-disk name (e.g. vda, nvme0n1) of the filesystem holding path."""
    dev = os.stat(path).st_dev
    major, minor = os.major(dev), os.minor(dev)
    # A partition's sysfs entry has a "partition" file; its parent is the disk.
    sys_path = os.path.realpath(f"/sys/dev/block/{major}:{minor}")
    if os.path.exists(os.path.join(sys_path, "partition")):
        sys_path = os.path.dirname(sys_path)
    return os.path.basename(sys_path)


def counters(device):
    """(sectors read, sectors written, ms with I/O in flight) of device."""
    with open("/proc/diskstats") as stats:
        for line in stats:
            fields = line.split()
            if fields[2] == device:
                return int(fields[5]), int(fields[9]), int(fields[12])
    raise SystemExit(f"diskstat: {device} is not in /proc/diskstats")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", default=".", help="a directory on the disk to watch")
    ap.add_argument("--label", default="the command")
    ap.add_argument("command", nargs=argparse.REMAINDER)
    a = ap.parse_args()
    command = a.command[1:] if a.command[:1] == ["--"] else a.command
    if not command:
        ap.error("no command to run")
    device = device_of(a.dir)
    before, started = counters(device), time.perf_counter()
    code = subprocess.call(command)
    after, seconds = counters(device), time.perf_counter() - started
    read_mb = (after[0] - before[0]) * 512 / seconds / 1e6
    write_mb = (after[1] - before[1]) * 512 / seconds / 1e6
    busy = (after[2] - before[2]) / 1000 / seconds
    print(
        f"disk {device} during {a.label}: read {read_mb:.0f} MB/s, write {write_mb:.0f} MB/s, "
        f"busy {busy * 100:.0f}% over {seconds:.3f} s",
        file=sys.stderr,
    )
    return code


if __name__ == "__main__":
    sys.exit(main())
