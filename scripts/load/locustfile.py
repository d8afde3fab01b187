"""Dupla HTTP API load test for locust (pip install locust blake3).

Each simulated user registers once (409 "already exists" is fine), logs in at
the manager, then loops: a fresh random file of 1-100 MiB is placed by the
manager, staged at the storage server it names and sent in one PUT (the
answer says it is committed with two copies), downloaded whole, downloaded
by one random byte range, and removed from the catalog. The same steps as
scripts/load/dupla-http.jmx, for JMeter users.

    locust -f scripts/load/locustfile.py --host http://127.0.0.1:8080 \
        --headless --users 20 --spawn-rate 2 --run-time 2m --csv /tmp/dupla-load

Environment: DUPLA_LOAD_USER_PREFIX (load: users load1..loadN),
DUPLA_LOAD_PASSWORD, DUPLA_LOAD_MIN_MIB (1), DUPLA_LOAD_MAX_MIB (100),
DUPLA_LOAD_SERVER_URL (empty: the server the manager picks).

Why the transfers bypass locust's own HTTP client: with a streamed body it
stops the clock at the response headers. Here the clock runs to the last
byte, and each transfer is reported with its bytes as the content size, so
the CSV gives bytes per second as well as latency.
"""

import itertools
import os
import random
import time
import uuid

import blake3
import requests
from locust import HttpUser, constant, task

MIB = 1 << 20
PREFIX = os.environ.get("DUPLA_LOAD_USER_PREFIX", "load")
PASSWORD = os.environ.get("DUPLA_LOAD_PASSWORD", "load test password")
MIN_MIB = int(os.environ.get("DUPLA_LOAD_MIN_MIB", "1"))
MAX_MIB = int(os.environ.get("DUPLA_LOAD_MAX_MIB", "100"))
SERVER_URL = os.environ.get("DUPLA_LOAD_SERVER_URL", "")
# Pieces of the request and response bodies: the user never holds a file.
PIECE = MIB
# Connect, then read: a 100 MiB transfer under load may take minutes.
TIMEOUT = (10, 600)
# The largest ranged download.
MAX_RANGE = 8 * MIB

# Users are numbered as they start (gevent: one thread, no lock needed).
numbers = itertools.count(1)


class Failed(Exception):
    """A response that is not what the API promises."""


class FreshBytes:
    """`size` fresh random bytes, hashed as they are sent, 1 MiB at a time.
    Fresh: the cluster stores chunks by content, so the same bytes again
    would be deduplicated. Sized: requests then sends a Content-Length
    rather than a chunked body, as browsers and curl do (and the server
    commits while it stages such an upload)."""

    def __init__(self, size):
        self.size = size
        self.hasher = blake3.blake3()

    def __len__(self):
        return self.size

    def __iter__(self):
        left = self.size
        while left > 0:
            piece = os.urandom(min(PIECE, left))
            self.hasher.update(piece)
            left -= len(piece)
            yield piece


class DuplaUser(HttpUser):
    # No think time: every user keeps one transfer going all the time.
    wait_time = constant(0)

    def on_start(self):
        self.login = f"{PREFIX}{next(numbers)}"
        with self.client.post(
            "/api/register",
            json={
                "login": self.login,
                "password": PASSWORD,
                "first_names": "Load",
                "last_names": "Tester",
                "age": 30,
                "gender": "other",
            },
            name="register",
            catch_response=True,
        ) as r:
            if r.status_code in (200, 409):  # 409: registered by an earlier run
                r.success()
        r = self.client.post(
            "/api/login", json={"login": self.login, "password": PASSWORD}, name="login"
        )
        r.raise_for_status()
        self.auth = {"authorization": f"Bearer {r.json()['token']}"}
        # A plain session for the transfers (see the module comment).
        self.http = requests.Session()
        self.http.headers.update(self.auth)

    def on_stop(self):
        self.client.post("/api/logout", headers=self.auth, name="logout")

    @task
    def upload_and_download(self):
        size = random.randint(MIN_MIB * MIB, MAX_MIB * MIB)
        name = f"locust/{self.login}/{uuid.uuid4()}.bin"
        r = self.client.post(
            "/api/uploads", json={"name": name, "size": size}, headers=self.auth, name="place (manager)"
        )
        if not r.ok:
            return
        url = SERVER_URL or r.json()["url"]
        digest = self.timed("upload (server)", lambda: self.upload(url, name, size))
        if digest is None:
            return
        self.timed("download whole (server)", lambda: self.download(url, name, size, digest))
        start = random.randrange(size)
        end = min(size - 1, start + random.randint(1, MAX_RANGE))
        self.timed("download range (server)", lambda: self.download_range(url, name, start, end, size))
        self.client.delete("/api/file", params={"name": name}, headers=self.auth, name="remove (manager)")

    def timed(self, label, transfer):
        """Run `transfer` (which answers (bytes, result)) and report it to
        locust with its time to the last byte; its result, None on failure."""
        started = time.perf_counter()
        try:
            moved, result = transfer()
            error = None
        except Exception as e:  # reported to locust, counted as an error
            moved, result, error = 0, None, e
        self.environment.events.request.fire(
            request_type="HTTP",
            name=label,
            response_time=(time.perf_counter() - started) * 1000,
            response_length=moved,
            exception=error,
            context={},
        )
        return result

    def upload(self, url, name, size):
        """Stage `size` fresh random bytes and PUT them in one request; their blake3."""
        r = self.http.post(f"{url}/api/uploads", json={"name": name, "size": size}, timeout=TIMEOUT)
        check(r, 200)
        upload_id = r.json()["id"]
        body = FreshBytes(size)
        r = self.http.put(
            f"{url}/api/uploads/{upload_id}",
            params={"offset": 0},
            data=body,
            headers={"content-type": "application/octet-stream"},
            timeout=TIMEOUT,
        )
        check(r, 200)
        state = r.json()
        digest = body.hasher.hexdigest()
        if not state["done"] or state["file"]["copies"] != 2 or state["file"]["blake3"] != digest:
            raise Failed(f"upload not committed as sent: {state}")
        return size, digest

    def download(self, url, name, size, digest):
        """The whole file, hashed as it arrives and checked against what was sent."""
        with self.http.get(
            f"{url}/api/files/content", params={"name": name}, stream=True, timeout=TIMEOUT
        ) as r:
            check(r, 200)
            hasher, got = blake3.blake3(), 0
            for piece in r.iter_content(PIECE):
                hasher.update(piece)
                got += len(piece)
        if got != size or hasher.hexdigest() != digest:
            raise Failed(f"downloaded {got} of {size} bytes, blake3 {'matches' if hasher.hexdigest() == digest else 'differs'}")
        return got, True

    def download_range(self, url, name, start, end, size):
        """Bytes start..=end: a 206 with exactly those bytes."""
        with self.http.get(
            f"{url}/api/files/content",
            params={"name": name},
            headers={"range": f"bytes={start}-{end}"},
            stream=True,
            timeout=TIMEOUT,
        ) as r:
            check(r, 206)
            if r.headers.get("content-range") != f"bytes {start}-{end}/{size}":
                raise Failed(f"content-range {r.headers.get('content-range')}")
            got = sum(len(piece) for piece in r.iter_content(PIECE))
        if got != end - start + 1:
            raise Failed(f"range of {end - start + 1} bytes answered with {got}")
        return got, True


def check(response, status):
    if response.status_code != status:
        # Errors are small JSON; never read a file's bytes into a message.
        octets = response.headers.get("content-type", "").startswith("application/octet-stream")
        detail = "" if octets else response.text[:200]
        raise Failed(f"{response.request.method} {response.url.split('?')[0]}: {response.status_code} {detail}")
