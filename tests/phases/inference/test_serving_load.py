"""Serving under load and bad clients (issue 17, item 8): many concurrent clients, clients that go away
mid-stream, huge bodies, and the process's memory after all of them, against the real server on loopback.

Generation speed is taken out of the picture where an outcome would depend on it: :class:`Forwards`
hooks the served model's forward pass, counts the passes (one per generated token) and, when gated,
holds each pass until the test lets it run. Every wait is bounded by a deadline and only paces the
test; nothing asserts on a duration.
"""

import gc
import json
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

import httpx
import openai

CHAT = [{"role": "user", "content": "What does posixpath.join do?"}]


class Forwards:
    """Counts the served model's forward passes; gated, each pass waits for a permit (at most 60 s)."""

    def __init__(self, model, gated: bool = False):
        self.model, self.count = model, 0
        self.permits, self.opened = threading.Semaphore(0), threading.Event()
        if not gated:
            self.opened.set()

    def _hook(self, module, args):
        if not self.opened.is_set():
            self.permits.acquire(timeout=60)
        self.count += 1

    def let(self, n: int) -> None:
        self.permits.release(n)

    def open(self) -> None:
        self.opened.set()
        self.permits.release()  # the pass already waiting

    def __enter__(self):
        self.handle = self.model.register_forward_pre_hook(self._hook)
        return self

    def __exit__(self, *exc):
        self.open()
        self.handle.remove()


def until(condition, what: str, limit_s: float = 60) -> None:
    """Poll ``condition`` until it holds; fail naming ``what`` if it does not within ``limit_s``."""
    deadline = time.monotonic() + limit_s
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.02)


def client(served, retries: int = 0):
    return openai.OpenAI(base_url=f"{served.url}/v1", api_key="unused", max_retries=retries, timeout=60)


def still_serving(served) -> None:
    assert httpx.get(f"{served.url}/health", timeout=30).json() == {"status": "ok"}
    r = httpx.post(f"{served.url}/v1/completions", json={"prompt": "def f(", "max_tokens": 2}, timeout=60)
    assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] <= 2


# ------------------------------------------------------------------ requests, as four kinds of client


def chat(served, stream: bool) -> str:  # greedy: the toy model's first tokens are text, never an immediate end
    c = client(served)
    if not stream:
        return c.chat.completions.create(model="toy", messages=CHAT, max_tokens=3, temperature=0).choices[0].message.content
    chunks = list(c.chat.completions.create(model="toy", messages=CHAT, max_tokens=3, temperature=0, stream=True))
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")
    return "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)


def completion(served, stream: bool) -> str:
    body = {"prompt": "def read_config(path):", "max_tokens": 3, "temperature": 0, "stream": stream}
    if not stream:
        r = httpx.post(f"{served.url}/v1/completions", json=body, timeout=60).raise_for_status()
        return r.json()["choices"][0]["text"]
    with httpx.stream("POST", f"{served.url}/v1/completions", json=body, timeout=60) as r:
        if r.status_code != 200:
            r.read()
            r.raise_for_status()
        assert r.headers["content-type"].startswith("text/event-stream")
        events = [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: ") and line != "data: [DONE]"]
    assert events[-1]["choices"][0]["finish_reason"] in ("stop", "length")
    return "".join(e["choices"][0].get("text") or "" for e in events if e.get("choices"))


GOOD = [lambda s: chat(s, False), lambda s: chat(s, True), lambda s: completion(s, False), lambda s: completion(s, True)]
BAD = [
    (b"{not json", 400, "not JSON"),
    (b'{"model": "toy"}', 400, "missing required field"),
    (b'{"messages": [{"role": "user", "content": "hi"}], "max_tokens": 999}', 400, "above this server's cap"),
    (json.dumps({"messages": [{"role": "user", "content": "x" * 5000}]}).encode(), 413, "5000 characters"),
]


def bad(served, body: bytes) -> httpx.Response:
    return httpx.post(f"{served.url}/v1/chat/completions", content=body, headers={"content-type": "application/json"}, timeout=60)


def run_all(jobs) -> list:
    """Start every job at once (a barrier), one thread each; the outcome of each: its value or its exception."""
    start = threading.Barrier(len(jobs))

    def one(job):
        start.wait(30)
        try:
            return job()
        except Exception as e:  # noqa: BLE001 -- the test sorts outcomes by kind
            return e

    with ThreadPoolExecutor(len(jobs)) as pool:
        return list(pool.map(one, jobs))


# ------------------------------------------------------------------ 1. many concurrent clients


def test_concurrent_clients_get_answers_or_their_4xx(served):
    """16 clients at once: 8 generations (chat and completions, streamed and not, the openai client and
    httpx) held in flight together, and 8 bad requests answered meanwhile with their JSON 4xx."""
    pending, gone = served.guard.limits.max_pending, served.guard.stats["disconnected"]
    assert pending == 8  # the conftest's server: the 8 generations below fill it exactly
    jobs = [lambda g=g: g(served) for g in GOOD * 2] + [lambda b=b: bad(served, b[0]) for b in BAD * 2]
    with Forwards(served.guard.model, gated=True) as fw, ThreadPoolExecutor(1) as bg:
        outcomes = bg.submit(run_all, jobs)
        until(lambda: served.guard.active == pending, f"{pending} generations in flight at once")
        fw.open()
        outcomes = outcomes.result(120)
    texts, refusals = outcomes[:8], outcomes[8:]
    assert all(isinstance(t, str) and t for t in texts), texts
    for r, (_, status, words) in zip(refusals, BAD * 2, strict=True):
        assert isinstance(r, httpx.Response) and r.status_code == status and words in r.json()["error"]["message"], r
    assert served.guard.active == 0 and served.guard.stats["disconnected"] == gone  # streams read to the end are not disconnects
    still_serving(served)


def test_past_max_pending_clients_get_a_503_with_retry_after(served):
    """24 clients at once while generation is held: exactly max_pending are admitted and answered,
    the others get a JSON 503 with Retry-After at once."""
    pending, before = served.guard.limits.max_pending, served.guard.stats.copy()
    jobs = [lambda g=g: g(served) for g in GOOD * 6]
    with Forwards(served.guard.model, gated=True) as fw, ThreadPoolExecutor(1) as bg:
        outcomes = bg.submit(run_all, jobs)
        until(lambda: served.guard.stats["busy"] - before["busy"] == len(jobs) - pending, "the refusals past max_pending")
        assert served.guard.active == pending
        fw.open()
        outcomes = outcomes.result(120)
    answered = [o for o in outcomes if isinstance(o, str)]
    refused = [o for o in outcomes if not isinstance(o, str)]
    assert len(answered) == pending and all(answered), outcomes
    assert len(refused) == len(jobs) - pending
    for e in refused:
        response = e.response if isinstance(e, (openai.APIStatusError, httpx.HTTPStatusError)) else None
        assert response is not None and response.status_code == 503, repr(e)
        assert response.headers["retry-after"] == str(served.guard.limits.retry_after_s)
        error = response.json()["error"]
        assert error["type"] == "server_busy" and f"{pending} generations are running or queued" in error["message"]
    assert served.guard.stats["admitted"] - before["admitted"] == pending
    still_serving(served)


# ------------------------------------------------------------------ 2. clients that go away mid-stream


def raw_post(served, path: str, head: str, body: bytes = b"") -> socket.socket:
    """A POST on a plain socket: the test decides what is sent and when the socket closes."""
    url = urlsplit(served.url)
    s = socket.create_connection((url.hostname, url.port), timeout=30)
    s.sendall(f"POST {path} HTTP/1.1\r\nHost: {url.netloc}\r\nContent-Type: application/json\r\n{head}\r\n".encode() + body)
    return s


def read_until(s: socket.socket, marker: bytes, limit: int = 1 << 20) -> bytes:
    got = b""
    while marker not in got:
        part = s.recv(65536)
        assert part and len(got) < limit, f"the server closed or sent {len(got)} bytes without {marker!r}: {got[-500:]!r}"
        got += part
    return got


STREAMS = [  # path, body, what the first content chunk holds
    ("/v1/chat/completions", {"messages": CHAT, "max_tokens": 32, "temperature": 0, "stream": True}, b'"content":"'),
    ("/v1/completions", {"prompt": "def read_config(path):", "max_tokens": 32, "temperature": 0, "stream": True}, b'"text":"'),
]


def test_a_client_that_goes_away_mid_stream_stops_its_generation(served):
    """Streams of 32 tokens whose clients close the socket after the first content chunk: the server
    counts each disconnect, its generation stops at the next token (the passes it ran are counted),
    and the next client is answered. Control: the same request read to the end takes all 32 passes."""
    with Forwards(served.guard.model) as fw:
        full = httpx.post(f"{served.url}{STREAMS[1][0]}", json={**STREAMS[1][1], "stream": False}, timeout=60).json()
    assert full["usage"]["completion_tokens"] == fw.count == 32  # the toy model does not stop early: 32 passes are due
    for i in range(4):
        path, body, marker = STREAMS[i % 2]
        gone = served.guard.stats["disconnected"]
        with Forwards(served.guard.model, gated=True) as fw:
            payload = json.dumps(body).encode()
            s = raw_post(served, path, f"Content-Length: {len(payload)}\r\n", payload)
            fw.let(3)
            read_until(s, marker)
            s.close()
            until(lambda gone=gone: served.guard.stats["disconnected"] == gone + 1, "the server to see the client go")
            fw.open()
            after = httpx.post(f"{served.url}/v1/completions", json={"prompt": "def f(", "max_tokens": 2}, timeout=60)
            assert after.status_code == 200  # generations run one at a time: this one ran after the abandoned one ended
            abandoned = fw.count - after.json()["usage"]["completion_tokens"]
        assert 1 <= abandoned <= 4, f"the abandoned stream ran {abandoned} forward passes; 3 were allowed before the client left (32 were asked)"
    assert served.guard.active == 0
    still_serving(served)


# ------------------------------------------------------------------ 3. huge bodies


def test_a_body_over_the_cap_is_refused_from_its_content_length_before_it_is_sent(served):
    s = raw_post(served, "/v1/chat/completions", "Content-Length: 50000000\r\n")  # the body never follows
    head, _, rest = read_until(s, b"}}").partition(b"\r\n\r\n")
    s.close()
    assert head.startswith(b"HTTP/1.1 413")
    assert "50000000 bytes (Content-Length), over this server's limit of 1000000" in json.loads(rest)["error"]["message"]
    still_serving(served)


def test_a_chunked_body_over_the_cap_is_refused_once_it_passes_it(served):
    """No Content-Length (httpx sends a generator chunked): 2.5 MB in 64 KiB chunks, refused after 1 MB."""
    chunk = b" " * 65536

    def body():
        yield b'{"prompt": "'
        for _ in range(40):
            yield chunk

    r = httpx.post(f"{served.url}/v1/completions", content=body(), headers={"content-type": "application/json"}, timeout=60)
    assert r.status_code == 413 and "passed this server's limit of 1000000 bytes" in r.json()["error"]["message"]
    assert "content-length" not in {k.lower() for k in r.request.headers} and r.request.headers["transfer-encoding"] == "chunked"
    still_serving(served)


# ------------------------------------------------------------------ 4. memory


def rss_mib() -> float:
    gc.collect()
    with open("/proc/self/status") as f:  # the server runs in a thread of this process
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024


def abuse(served, kind: int) -> None:
    """One of six requests, the first five refused or abandoned; ~1 MB bodies where the kind has one."""
    if kind == 0:  # declared 5 MB, 1 MB sent
        s = raw_post(served, "/v1/completions", "Content-Length: 5000000\r\n", b" " * 1_000_000)
        assert read_until(s, b"}}").startswith(b"HTTP/1.1 413")
        s.close()
    elif kind == 1:  # chunked past the cap
        r = httpx.post(f"{served.url}/v1/completions", content=iter([b'{"prompt": "'] + [b"x" * 65536] * 20), timeout=60)
        assert r.status_code == 413
    elif kind == 2:  # 990 KB of prompt: under the body cap, over max_prompt_chars
        assert bad(served, json.dumps({"messages": [{"role": "user", "content": "y" * 990_000}]}).encode()).status_code == 413
    elif kind == 3:  # 990 KB that is not JSON
        assert bad(served, b"{" + b"z" * 990_000).status_code == 400
    elif kind == 4:  # a stream abandoned after its first content chunk
        path, body, marker = STREAMS[0]
        payload = json.dumps(body).encode()
        s = raw_post(served, path, f"Content-Length: {len(payload)}\r\n", payload)
        read_until(s, marker)
        s.close()
    else:
        r = httpx.post(f"{served.url}/v1/completions", json={"prompt": "def f(", "max_tokens": 2}, timeout=60)
        assert r.status_code == 200


def test_memory_stays_bounded_under_refused_bodies_and_disconnects(served):
    """60 requests after a warm-up round of each kind: 40 carry ~1 MB bodies that are refused (30 of them
    read by the server, 20 parsed), 10 streams are abandoned, 10 are answered. Measured growth: 0.1-3.4 MiB,
    flat from 60 to 240 requests. The bound, 12 MiB, is over 3x that, and under what keeping only the
    20 parsed bodies costs (~20 MiB; keeping every body read: ~30 MiB)."""
    for kind in range(6):
        abuse(served, kind)
    refused, start = served.guard.stats["refused"], rss_mib()
    for i in range(60):
        abuse(served, i % 6)
    grown = rss_mib() - start
    assert served.guard.stats["refused"] - refused == 40
    assert grown < 12, f"the process grew by {grown:.1f} MiB over 60 requests"
    until(lambda: served.guard.active == 0, "the abandoned streams to end")
    still_serving(served)
