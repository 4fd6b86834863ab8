"""``make demo``: Istio's bookinfo on meshwork, told as Istio's task pages tell it.

It starts meshwork with a fresh data dir under the temp dir (never touching
``~/.meshwork``) and free ports of its own, deploys Istio's bookinfo files
unmodified (``examples/bookinfo``), and walks through request routing,
routing by user, an 80/20 traffic shift, fault injection, ``why`` and
``proxy-status``. Each step prints the command it runs and what to notice.
It always stops what it started, even when a step fails, and then checks
that no process of its own is left (exit 1 if one is).
"""

from __future__ import annotations

import collections
import http.cookiejar
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
EXAMPLES = HERE.parent
BOOKINFO = EXAMPLES / "bookinfo"
ROUTES = EXAMPLES / "bookinfo-networking"
MESHWORK = [sys.executable, "-m", "meshwork"]
READY_TIMEOUT_S = 120  # bookinfo's seven pods on a busy 2-core machine
SHIFT_REQUESTS = 200
STOP_WAIT_S = 30  # how long `down` may take to see every pod process gone
# What the reviews part of the product page shows, by the markers the sample apps write.
VERSIONS = (
    ("Sorry, product reviews are currently unavailable", "reviews unavailable (error)"),
    ("Ratings service is currently unavailable", "ratings unavailable (no stars)"),
    ('color="red"', "v3 (red stars)"),
    ('color="black"', "v2 (black stars)"),
    ("Book Reviews", "v1 (no stars)"),
)


class DemoFailed(Exception):
    """A step did not show what it should."""


def say(text: str) -> None:
    print(text, flush=True)


def notice(text: str) -> None:
    for line in text.strip().splitlines():
        say(f"  -> {line}")


def run(title: str, *args: str, check: bool = True) -> str:
    """Run ``meshwork ARGS``, echoing the command and its output; return the output."""
    say(f"\n$ meshwork {shlex.join(args)}    # {title}")
    result = subprocess.run([*MESHWORK, *args], check=False, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, timeout=300)  # fmt: skip
    out = result.stdout.rstrip()
    if out:
        say(out)
    if check and result.returncode != 0:
        raise DemoFailed(f"meshwork {' '.join(args)} exited {result.returncode}")
    return out


def rel(path: Path) -> str:
    """``path`` as a person in the repository would type it."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Browser:
    """A browser pointed at the ingress gateway: a cookie jar, no proxies from the environment."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.opener = urllib.request.build_opener(
            urllib.request.ProxyHandler({}), urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar())
        )

    def get(self, path: str, data: dict[str, str] | None = None) -> tuple[int, str, float]:
        body = urllib.parse.urlencode(data).encode() if data is not None else None
        start = time.monotonic()
        try:
            with self.opener.open(self.base + path, data=body, timeout=30) as resp:
                return resp.status, resp.read().decode(), time.monotonic() - start
        except urllib.error.HTTPError as err:
            return err.code, err.read().decode(), time.monotonic() - start
        except OSError as err:
            return 0, str(err), time.monotonic() - start


def reviews_version(page: str) -> str:
    return next((name for marker, name in VERSIONS if marker in page), "no reviews section")


def summary(status: int, page: str, seconds: float) -> str:
    """One line for a product page: title, who is signed in, what reviews showed, by which pod."""
    title = re.search(r'<h3 class="text-center text-primary">([^<]*)</h3>', page)
    user = re.search(r'navbar-text navbar-right">([^ <]*)', page)
    pod = re.search(r"Reviews served by:</dt><u>([^<]*)</u>", page)
    return (f"{status}  {title.group(1) if title else '?'!r}  user={user.group(1) if user else '-'}  "
            f"reviews: {reviews_version(page)}{f' from {pod.group(1)}' if pod else ''}  ({seconds:.1f} s)")


def show_pages(browser: Browser, n: int, title: str) -> collections.Counter[str]:
    say(f"\n# {title}: GET {browser.base}/productpage x{n}")
    seen: collections.Counter[str] = collections.Counter()
    for _ in range(n):
        status, page, seconds = browser.get("/productpage")
        say("  " + summary(status, page, seconds))
        if status != 200:
            raise DemoFailed(f"the product page answered {status}: {page[:200]}")
        seen[reviews_version(page)] += 1
    return seen


def expect(ok: bool, message: str) -> None:
    if not ok:
        raise DemoFailed(message)


def wait_until_serving(browser: Browser) -> None:
    """The gateway and the apps start listening a moment after their pods turn ready."""
    deadline = time.monotonic() + 60
    while True:
        status, page, _ = browser.get("/productpage")
        if status == 200 and "Book Reviews" in page:
            return
        if time.monotonic() > deadline:
            raise DemoFailed(f"no product page through the gateway after 60 s (last answer {status})")
        time.sleep(0.5)


def shift(browser: Browser) -> None:
    """200 pages with the 80/20 rule, with `meshwork top services` taken while they flow."""
    counts: collections.Counter[str] = collections.Counter()

    def traffic() -> None:
        for _ in range(SHIFT_REQUESTS):
            status, page, _ = browser.get("/productpage")
            counts[reviews_version(page) if status == 200 else f"HTTP {status}"] += 1

    sender = threading.Thread(target=traffic)
    sender.start()
    run("golden signals per service while the 200 requests flow", "top", "services", "--interval", "2", check=False)
    notice("ratings gets about a fifth of reviews' requests: only v2 (and v3) call ratings")
    sender.join()
    say(f"\n# which reviews version served each of the {SHIFT_REQUESTS} pages")
    say(f"  {'VERSION':<22}{'PAGES':>6}{'SHARE':>8}")
    for name, count in counts.most_common():
        say(f"  {name:<22}{count:>6}{count / SHIFT_REQUESTS:>8.0%}")
    v1, v2 = counts["v1 (no stars)"], counts["v2 (black stars)"]
    notice("about 80 % v1 and 20 % v2, never v3: the weights of the VirtualService\n"
           "(over 200 requests the split wanders by a few percent, as a weighted draw does)")
    expect(v1 + v2 == SHIFT_REQUESTS, f"pages outside v1/v2 or errors: {dict(counts)}")
    expect(0.6 <= v1 / SHIFT_REQUESTS <= 0.95, f"the 80/20 split is off: {dict(counts)}")
    say(f"traffic shift: v1 {v1 / SHIFT_REQUESTS:.0%}, v2 {v2 / SHIFT_REQUESTS:.0%}")


def story(api_port: int, gw_port: int) -> None:
    out = run("start meshwork in the background with Istio's bookinfo files, unmodified",
              "up", "-d", "--port", str(api_port), "--ingress-ports", f"80:{free_port()},8080:{gw_port}",
              "-f", rel(BOOKINFO))  # fmt: skip
    notice("the server started this machine's node agent and the ingress gateway (istio-system);\n"
           "00-namespace.yaml labelled `default` istio-injection=enabled, so every pod gets a sidecar;\n"
           "the `open` line says where the Gateway serves the product page")
    url = re.search(r"^open (http://\S+)/productpage", out, re.MULTILINE)
    expect(url is not None, "`meshwork up` did not print the product page URL")
    assert url is not None
    browser = Browser(url.group(1))
    run("applying again changes nothing", "apply", "-f", rel(BOOKINFO))
    for deployment in ("details-v1", "ratings-v1", "reviews-v1", "reviews-v2", "reviews-v3", "productpage-v1"):
        run("wait until it is ready", "rollout", "status", f"deployment/{deployment}",
            "--timeout", f"{READY_TIMEOUT_S}s")
    run("the pods are local processes, each on its own loopback IP", "get", "pods", "-A", "-o", "wide")
    notice("READY 2/2: the app and its injected istio-proxy sidecar; no containers, no cluster")
    wait_until_serving(browser)

    seen = show_pages(browser, 6, "no VirtualService yet: reviews are balanced over v1, v2 and v3")
    notice("the stars change from page to page: " + ", ".join(sorted(seen)))

    run("Istio's task 'request routing': everyone to v1", "apply", "-f",
        rel(ROUTES / "virtual-service-all-v1.yaml"))
    notice("`converged in N ms (7/7 proxies)`: every sidecar acknowledged the new config before apply returned")
    seen = show_pages(browser, 6, "all v1")
    expect(set(seen) == {"v1 (no stars)"}, f"expected only v1 after virtual-service-all-v1: {dict(seen)}")
    say("routing: all to v1 (no stars)")

    run("route by user: jason to v2", "apply", "-f", rel(ROUTES / "virtual-service-reviews-test-v2.yaml"))
    status, page, seconds = browser.get("/login", {"username": "jason"})
    say(f"\n# sign in as jason: POST {browser.base}/login (the cookie lands in the jar, the redirect is followed)")
    say("  " + summary(status, page, seconds))
    expect(reviews_version(page) == "v2 (black stars)", f"jason should see black stars: {summary(status, page, 0)}")
    notice("productpage turns the `user` cookie into an `end-user: jason` header; the reviews\n"
           "VirtualService matches that header and sends jason to v2")
    say("routing by user: jason sees v2 (black stars)")
    anonymous = Browser(browser.base)
    seen = show_pages(anonymous, 3, "anyone else (a browser with no cookie)")
    expect(set(seen) == {"v1 (no stars)"}, f"anonymous users should stay on v1: {dict(seen)}")
    say("routing by user: anonymous sees v1 (no stars)")

    run("Istio's task 'traffic shifting': 80 % to v1, 20 % to v2", "apply", "-f",
        rel(ROUTES / "virtual-service-reviews-80-20.yaml"))
    shift(anonymous)

    run("back to jason on v2, then Istio's task 'fault injection': a 7 s delay on ratings for jason",
        "apply", "-f", rel(ROUTES / "virtual-service-reviews-test-v2.yaml"),
        "-f", rel(ROUTES / "virtual-service-ratings-test-delay.yaml"))
    say(f"\n# jason's page (takes a while): GET {browser.base}/productpage")
    status, page, seconds = browser.get("/productpage")
    say("  " + summary(status, page, seconds))
    notice("reviews v2 would wait 10 s for ratings, but productpage gives up on reviews after 3 s\n"
           "and one retry: after about 6 s jason sees 'Sorry, product reviews are currently\n"
           "unavailable' - the bug in the app's timeouts that Istio's task page uncovers")
    expect(reviews_version(page) == "reviews unavailable (error)", "jason should see the reviews error")
    say(f"fault delay: jason's reviews unavailable after {seconds:.1f} s")

    run("an abort instead: ratings answers jason with HTTP 500", "apply", "-f",
        rel(ROUTES / "virtual-service-ratings-test-abort.yaml"))
    status, page, seconds = browser.get("/productpage")
    say("  " + summary(status, page, seconds))
    notice("at once this time: reviews v2 shows 'Ratings service is currently unavailable'")
    expect(reviews_version(page) == "ratings unavailable (no stars)", "jason should see ratings unavailable")
    say("fault abort: Ratings service is currently unavailable")

    pod = run("find the reviews v2 pod", "get", "pods", "-l", "app=reviews,version=v2", "-o", "name").split("/")[-1]
    run("why: what that pod's sidecar does with jason's call to ratings", "why", pod,
        "http://ratings:9080/ratings/0", "-H", "end-user: jason")
    notice("the listener, the route and the VirtualService it came from, and the verdict:\n"
           "the fault aborts with 500 (Envoy's flag FI) before any ratings pod is asked")
    run("every proxy and the config version it acknowledged", "proxy-status")
    run("a typo is refused with file, line and field", "apply", "-f", rel(HERE / "broken.yaml"), check=False)
    notice("nothing of it was applied: a manifest with a mistake is refused whole")


def our_processes(home: Path) -> list[tuple[int, str]]:
    """Processes started for ``home``: its path in their command line or their working directory."""
    marker = str(home)
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
            cwd = os.readlink(entry / "cwd")
        except OSError:
            continue
        if marker in cmdline or cwd.startswith(marker):
            found.append((int(entry.name), cmdline))
    return found


def stop_and_check(home: Path) -> bool:
    """``meshwork down``, then look for anything left; kill and report leftovers (False)."""
    run("stop the server, the agent, the gateway and every pod", "down", check=False)
    if not Path("/proc/self").exists():
        return True  # no /proc to look in
    deadline = time.monotonic() + STOP_WAIT_S
    left = our_processes(home)
    while left and time.monotonic() < deadline:
        time.sleep(0.2)
        left = our_processes(home)
    if not left:
        say("\nno process left behind")
        return True
    say("\nLEFT BEHIND after `meshwork down`:")
    for pid, cmdline in left:
        say(f"  pid {pid}: {' '.join(cmdline.split())[:160]}")
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    return False


def main() -> int:
    started = time.monotonic()
    home = Path(tempfile.mkdtemp(prefix="meshwork-demo-"))
    os.environ["MESHWORK_HOME"] = str(home)
    for name in ("MESHWORK_SERVER", "MESHWORK_TOKEN"):
        os.environ.pop(name, None)
    api_port, gw_port = free_port(), free_port()
    failed: str | None = None
    try:
        story(api_port, gw_port)
    except (DemoFailed, subprocess.TimeoutExpired) as exc:
        failed = str(exc)
    except KeyboardInterrupt:
        failed = "interrupted"
    finally:
        clean = stop_and_check(home)
        shutil.rmtree(home, ignore_errors=True)
    say(f"\ndemo took {time.monotonic() - started:.0f} s")
    if failed:
        say(f"DEMO FAILED: {failed}")
        return 1
    if not clean:
        say("DEMO FAILED: processes were left behind")
        return 1
    say("keep it running to explore: meshwork up -f examples/bookinfo   (then open the URL it prints)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
