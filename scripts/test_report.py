#!/usr/bin/env python3
"""Turn a test run into docs/test-report.md (issue 11, "informe de pruebas").

Input is either nextest's JUnit XML (`--junit target/nextest/ci/junit.xml`,
per-test results and durations) or, without cargo-nextest, the plain output
of `cargo test --workspace` (`--libtest FILE`: results per test, durations
per test binary only, since stable libtest does not time single tests).

Tests are grouped by area, one per test binary: a crate's unit tests, a
binary's, or one file of testkit/tests/. Each area's one-line description
is read from the code (the crate's Cargo.toml `description`, the test
file's `//!` header), so it stays true as tests are added.

A test that passed but said it could not run here (a missing chromedriver,
no network namespaces: such tests print "skipped" and pass) is counted as
skipped, with its reason.
"""

import argparse
import collections
import datetime
import json
import os
import platform
import re
import subprocess
import sys
import xml.etree.ElementTree as ET

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# What tests print when they cannot run on this machine (see
# testkit/tests/console_browser.rs, e2e_binaries.rs, partition.rs,
# testkit/src/mosquitto.rs).
SKIP_SAID = re.compile(r"(?im)^\s*(?:skipped:.*|SKIPPED\b.*)$|^.*\btest skipped\b.*$")

Case = collections.namedtuple("Case", "area name result seconds note")


def crate_dirs():
    """Package name -> directory, for the workspace's crates."""
    out = {}
    for d in ["."] + sorted(os.listdir(TOP)):
        toml = os.path.join(TOP, d, "Cargo.toml")
        if os.path.isfile(toml):
            m = re.search(r'(?m)^name\s*=\s*"([^"]+)"', open(toml).read())
            if m:
                out[m.group(1)] = os.path.normpath(os.path.join(TOP, d))
    return out


def first_sentence(text):
    text = " ".join(text.split())
    m = re.match(r"(.+?\.)(\s|$)", text)
    return (m.group(1) if m else text)[:400]


def module_doc(path):
    """The first sentence of a file's `//!` header."""
    try:
        lines = open(path).read().splitlines()
    except OSError:
        return ""
    doc = []
    for line in lines:
        if line.startswith("//!"):
            doc.append(line[3:].strip())
        elif doc or line.strip():
            break
    return first_sentence(" ".join(doc))


def describe(area, crates):
    """One line about a test binary, from nextest's binary id
    (`crate`, `crate::bin/name`, `crate::test_file`)."""
    crate, _, rest = area.partition("::")
    root = crates.get(crate)
    if root is None:
        return ""
    if rest.startswith("bin/"):
        return f"Unit tests of the `{rest[4:]}` binary."
    if rest:
        return module_doc(os.path.join(root, "tests", rest + ".rs"))
    toml = open(os.path.join(root, "Cargo.toml")).read()
    m = re.search(r'(?m)^description\s*=\s*"([^"]+)"', toml)
    what = m.group(1) if m else crate
    return f"Unit tests of the library ({what})."


def from_junit(path):
    cases = []
    root = ET.parse(path).getroot()
    for suite in root.iter("testsuite"):
        area = suite.get("name")
        for case in suite.iter("testcase"):
            failure = case.find("failure")
            if failure is None:
                failure = case.find("error")
            seconds = float(case.get("time") or 0)
            if failure is not None:
                message = panic_of(failure.text or "") or failure.get("message") or "failed"
                cases.append(Case(area, case.get("name"), "failed", seconds, message))
                continue
            if case.find("skipped") is not None:
                cases.append(Case(area, case.get("name"), "skipped", seconds, "ignored"))
                continue
            output = "\n".join(
                (e.text or "") for tag in ("system-out", "system-err") for e in case.iter(tag)
            )
            said = SKIP_SAID.search(output)
            if said:
                cases.append(Case(area, case.get("name"), "skipped", seconds, said.group(0).strip()))
            else:
                cases.append(Case(area, case.get("name"), "passed", seconds, ""))
    return cases


def panic_of(output):
    """The panic message in a failed test's output: the line after
    `thread '…' panicked at file:line:col:`."""
    lines = output.splitlines()
    for i, line in enumerate(lines):
        if "panicked at" in line:
            after = line.split("panicked at", 1)[1].strip()
            message = lines[i + 1].strip() if i + 1 < len(lines) else ""
            return f"{message} ({after.rstrip(':')})" if message else after
    return ""


def from_nextest_list(path, ran):
    """Tests nextest knows but did not run (#[ignore], filtered out)."""
    cases = []
    try:
        listing = json.load(open(path))
    except (OSError, ValueError):
        return cases
    for area, suite in listing.get("rust-suites", {}).items():
        for name, info in suite.get("testcases", {}).items():
            if (area, name) not in ran:
                why = "ignored" if info.get("ignored") else "not run"
                cases.append(Case(area, name, "skipped", 0.0, why))
    return cases


def from_libtest(path, crates):
    """`cargo test` output: `Running tests/x.rs (target/debug/deps/x-…)`,
    `test name ... ok`, `test result: … finished in 1.2s`. Areas are named
    as nextest names them; times are per area."""
    cases, times, area = [], {}, "?"
    for line in open(path, errors="replace"):
        m = re.match(r"\s+Running (?:unittests )?(\S+) \((\S+)\)", line)
        if m:
            # A package's integration tests run after its unit tests, so
            # the last crate named settles a `tests/x.rs` two crates have.
            area = libtest_area(m.group(1), m.group(2), crates, area.split("::")[0])
            continue
        m = re.match(r"\s+Doc-tests (\S+)", line)
        if m:
            area = f"{m.group(1).replace('_', '-')} (doc tests)"
            continue
        m = re.match(r"test (.+?) \.\.\. (ok|FAILED|ignored)", line)
        if m:
            result = {"ok": "passed", "FAILED": "failed", "ignored": "skipped"}[m.group(2)]
            cases.append(Case(area, m.group(1), result, None, ""))
            continue
        m = re.match(r"test result: .*finished in ([0-9.]+)s", line)
        if m:
            times[area] = times.get(area, 0.0) + float(m.group(1))
    return cases, times


def libtest_area(source, binary, crates, last_crate):
    """nextest's binary id for a `Running SOURCE (BINARY)` line."""
    base = re.sub(r"-[0-9a-f]{16}$", "", os.path.basename(binary))
    if source.startswith("tests/"):
        stem = os.path.splitext(os.path.basename(source))[0]
        owners = [n for n, d in crates.items() if os.path.isfile(os.path.join(d, source))]
        owner = owners[0] if len(owners) == 1 else last_crate if last_crate in owners else "?"
        return f"{owner}::{stem}"
    crate = next((n for n in crates if n.replace("-", "_") == base), base)
    if source.endswith("main.rs"):
        for name, root in crates.items():
            bins = re.findall(r'(?m)^name\s*=\s*"([^"]+)"\s*\npath\s*=\s*"src/main.rs"',
                              open(os.path.join(root, "Cargo.toml")).read())
            if bins and bins[0].replace("-", "_") == base:
                return f"{name}::bin/{bins[0]}"
    return crate


def machine():
    cpu = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        kb = int(open("/proc/meminfo").readline().split()[1])
        mem = f", {kb / (1 << 20):.1f} GiB RAM"
    except (OSError, ValueError, IndexError):
        pass
    rustc = run(["rustc", "--version"]) or "rustc ?"
    return f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs ({cpu}){mem}; {rustc}"


def run(cmd):
    try:
        return subprocess.run(cmd, cwd=TOP, capture_output=True, text=True).stdout.strip()
    except OSError:
        return ""


def duration(seconds):
    if seconds is None:
        return "–"
    if seconds >= 60:
        return f"{int(seconds // 60)} min {seconds % 60:.0f} s"
    return f"{seconds:.2f} s"


def cell(text):
    text = " ".join(str(text).split()).replace("|", "\\|")
    return text if len(text) <= 160 else text[:157] + "…"


def render(cases, times, wall, command, crates):
    by_area = collections.OrderedDict()
    for c in sorted(cases, key=lambda c: (c.area, c.name)):
        by_area.setdefault(c.area, []).append(c)
    count = collections.Counter(c.result for c in cases)
    summed = sum(c.seconds or 0 for c in cases)
    commit = run(["git", "rev-parse", "--short=12", "HEAD"]) or "?"
    # The report itself changes with every run: only other changes count.
    changed = [l for l in run(["git", "status", "--porcelain", "--untracked-files=no"]).splitlines() if not l.endswith("docs/test-report.md")]
    dirty = " (with uncommitted changes)" if changed else ""
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    out = [
        "# Test report",
        "",
        f"Generated by `scripts/test-report.sh` ({command}); do not edit by hand.",
        "",
        f"- **Date:** {now}",
        f"- **Commit:** `{commit}`{dirty}",
        f"- **Machine:** {machine()}",
        "",
        "## Totals",
        "",
        "| passed | failed | skipped | total | wall time | sum of test times |",
        "| ---: | ---: | ---: | ---: | ---: | ---: |",
        f"| {count['passed']} | {count['failed']} | {count['skipped']} | {len(cases)} | "
        f"{duration(wall)} | {duration(summed) if any(c.seconds is not None for c in cases) else '–'} |",
        "",
        "Skipped: a test marked `#[ignore]`, or one that could not run on this machine and said",
        "so (it passes with a message; the reason is shown). The wall time is the whole run,",
        "build included; tests run in parallel, so the sum of test times can be larger.",
        "",
        "## Areas",
        "",
        "| area | what it covers | tests | passed | failed | skipped | time |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for area, items in by_area.items():
        c = collections.Counter(i.result for i in items)
        t = times.get(area, sum(i.seconds or 0 for i in items))
        out.append(
            f"| [`{area}`](#{anchor(area)}) | {cell(describe(area, crates))} | {len(items)} | "
            f"{c['passed']} | {c['failed']} | {c['skipped']} | {duration(t)} |"
        )
    for area, items in by_area.items():
        out += ["", f"## {area}", ""]
        about = describe(area, crates)
        if about:
            out += [about, ""]
        out += ["| test | result | duration |", "| --- | --- | ---: |"]
        for i in items:
            result = {"passed": "pass", "failed": "**FAIL**", "skipped": "skipped"}[i.result]
            if i.note:
                result += f": {cell(i.note)}"
            out.append(f"| `{i.name}` | {result} | {duration(i.seconds)} |")
    failed = [c for c in cases if c.result == "failed"]
    if failed:
        out += ["", "## Failures", ""]
        out += [f"- `{c.area}` `{c.name}`: {cell(c.note)}" for c in failed]
    return "\n".join(out) + "\n"


def anchor(title):
    """GitHub's heading anchor."""
    return re.sub(r"[^a-z0-9 _-]", "", title.lower()).replace(" ", "-")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--junit", help="nextest JUnit XML")
    src.add_argument("--libtest", help="saved output of `cargo test --workspace`")
    p.add_argument("--list", help="`cargo nextest list --message-format json` output")
    p.add_argument("--wall", type=float, help="seconds the whole run took")
    p.add_argument("--command", default="cargo nextest run --workspace --profile ci")
    p.add_argument("--out", default=os.path.join(TOP, "docs", "test-report.md"))
    args = p.parse_args()
    crates = crate_dirs()
    times = {}
    if args.junit:
        cases = from_junit(args.junit)
        if args.list:
            cases += from_nextest_list(args.list, {(c.area, c.name) for c in cases})
    else:
        cases, times = from_libtest(args.libtest, crates)
    if not cases:
        sys.exit("test_report: no test results found")
    with open(args.out, "w") as f:
        f.write(render(cases, times, args.wall, args.command, crates))
    count = collections.Counter(c.result for c in cases)
    print(
        f"{args.out}: {count['passed']} passed, {count['failed']} failed, "
        f"{count['skipped']} skipped, {len(cases)} tests"
    )


if __name__ == "__main__":
    main()
