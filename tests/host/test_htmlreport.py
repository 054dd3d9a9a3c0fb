"""`pagebuf report FILE --html`: the page, opened offline in a real headless browser
(Debian's chromium, driven over its DevTools pipe): it shows the table and the overall
verdict, the plot decodes and is painted as drawn, nothing is fetched, and nothing from
the file is markup."""

from __future__ import annotations

import base64
import io
import json
import os
import re
import select
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from pagebuf import cli, htmlreport

REQUIRE = os.environ.get("PAGEBUF_REQUIRE_KERNELS") == "1"  # make test: nothing may be missing
try:
    import matplotlib  # noqa: F401
    from PIL import Image, ImageChops, ImageStat  # matplotlib's own dependency
except ImportError:
    if REQUIRE:
        raise
    pytest.skip("the page's plot needs matplotlib (pagebuf[plot])", allow_module_level=True)

CHROMIUM = shutil.which("chromium")
ARMS = ["cached", "dma", "single-cpu", "flush", "positive", "inject"]
FINDINGS = [
    {"name": "architecture", "verdict": "info", "value": "aarch64", "detail": ""},
    {"name": "O_SYNC mapping of RAM", "verdict": "risk", "value": "Normal non-cacheable",
     "detail": "mismatched attributes (Arm ARM)"},
]  # fmt: skip


def run_file(path: Path, arms: list[str] = ARMS, name: str | None = None,
             note: str = "") -> Path:  # fmt: skip
    """A finished compare run on a board: cached corrupts two lines a check, the rest
    stay clean, the controls fire and find. `name`, `note`: the first arm's, as written."""
    recs: list[dict[str, Any]] = [{
        "type": "header", "started": "2025-03-01T10:00:00+0000", "pagebuf_version": "0.1.0",
        "kernel": "6.12.9-arm64", "machine": "aarch64", "line_size": 64,
        "module": {"api_version": 3, "max_order": 10},
        "params": {"arms": arms, "buffers": 1, "order": 1, "seed": 7, "via": "auto"},
        "doctor": {"findings": FINDINGS, "summary": "aliases can diverge here"},
    }]  # fmt: skip
    verdicts = {"cached": "corrupted", "positive": "fired", "inject": "injected-detected"}
    for t in range(5):
        for arm in arms:
            bad = [[64 * t, "stale"], [4096 + 64 * t, "stale"]] if arm == "cached" else []
            recs.append({"type": "check", "arm": arm, "t": float(t), "buffer": 1, "bytes": 8192,
                         "lines_checked": 128, "bad_lines": len(bad), "bad": bad,
                         "seconds": 0.001})  # fmt: skip
    recs += [{"type": "arm_summary", "arm": a, "verdict": verdicts.get(a, "clean"), "note": ""}
             for a in arms]  # fmt: skip
    text = "".join(json.dumps(r) + "\n" for r in recs)
    if name is not None:
        text = text.replace('"cached"', json.dumps(name)).replace(
            '"note": ""', f'"note": {json.dumps(note)}', 1)  # fmt: skip
    path.write_text(text)
    return path


class Links(HTMLParser):
    """Every URL a page's markup would load, and its elements by tag."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.tags: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.urls += [v or "" for k, v in attrs if k in ("src", "href", "srcset", "data")]


def test_the_page_is_one_file_that_loads_nothing(tmp_path: Path) -> None:
    src = run_file(tmp_path / "pagebuf-compare-1.jsonl")
    out = tmp_path / "r.html"
    assert cli.main(["report", str(src), "--html", str(out)]) == 1
    page = Links()
    page.feed(out.read_text())
    assert page.urls and all(u.startswith("data:image/png;base64,") for u in page.urls)
    assert "script" not in page.tags and page.tags.count("table") == 4
    assert "default-src 'none'" in out.read_text()  # and its policy forbids anything else


def test_a_run_without_checks_gets_a_page_that_says_why_there_is_no_plot(tmp_path: Path) -> None:
    src = tmp_path / "run.jsonl"
    src.write_text(json.dumps({"type": "arm_summary", "arm": "flush", "verdict": "skipped",
                               "note": "cache_ops none"}) + "\n")  # fmt: skip
    htmlreport.write(str(src), str(tmp_path / "r.html"))
    text = (tmp_path / "r.html").read_text()
    assert '<p id="no-plot">no plot: no check records to plot</p>' in text and "<img" not in text


# --- In a real browser ---


# Puts the pipes' ends (whatever numbers they got) on fds 3 and 4, then runs the browser.
ONTO_3_AND_4 = """
import fcntl, os, sys
high = [fcntl.fcntl(int(fd), fcntl.F_DUPFD, 10) for fd in sys.argv[1:3]]
for fd in sys.argv[1:3]:
    os.close(int(fd))
for fd, want in zip(high, (3, 4)):
    os.dup2(fd, want)
    os.close(fd)
os.execv(sys.argv[3], sys.argv[3:])
"""


class Browser:
    """Headless chromium over --remote-debugging-pipe: commands on fd 3, replies and
    events on fd 4, each a JSON message ended by a NUL."""

    def __init__(self, exe: str, profile: str) -> None:
        to_r, self._to = os.pipe()
        self._from, from_w = os.pipe()
        self.proc = subprocess.Popen(
            [sys.executable, "-c", ONTO_3_AND_4, str(to_r), str(from_w), exe, "--headless",
             "--no-sandbox", "--disable-gpu", "--remote-debugging-pipe", "--no-first-run",
             "--disable-extensions", f"--user-data-dir={profile}", "about:blank"],
            pass_fds=(to_r, from_w), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        os.close(to_r)
        os.close(from_w)
        self._buf, self._id, self.events = b"", 0, []  # type: ignore[var-annotated]

    def _next(self) -> dict[str, Any]:
        while b"\0" not in self._buf:
            # A hang guard, not a timing assertion: chromium answers in well under a second.
            if not select.select([self._from], [], [], 120)[0]:
                raise TimeoutError("chromium did not answer in 120 s")
            chunk = os.read(self._from, 1 << 16)
            if not chunk:
                raise EOFError(f"chromium exited ({self.proc.poll()})")
            self._buf += chunk
        msg, self._buf = self._buf.split(b"\0", 1)
        return json.loads(msg)  # type: ignore[no-any-return]

    def call(self, method: str, params: dict[str, Any] | None = None,
             session: str | None = None) -> dict[str, Any]:  # fmt: skip
        self._id += 1
        msg: dict[str, Any] = {"id": self._id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self._to, json.dumps(msg).encode() + b"\0")
        while True:
            reply = self._next()
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})  # type: ignore[no-any-return]
            self.events.append(reply)

    def wait_for(self, event: str, session: str) -> None:
        while not any(e.get("method") == event and e.get("sessionId") == session
                      for e in self.events):  # fmt: skip
            self.events.append(self._next())

    def open(self, url: str) -> str:
        """A new page at `url`, loaded; its session."""
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})[
            "sessionId"]  # fmt: skip
        self.call("Emulation.setDeviceMetricsOverride", {"width": 1280, "height": 1000,
                  "deviceScaleFactor": 1, "mobile": False}, session)  # fmt: skip
        # No scrollbar: a screenshot beyond the viewport would lay the page out again
        # without it, shifting what was measured with it.
        self.call("Emulation.setScrollbarsHidden", {"hidden": True}, session)
        for domain in ("Page", "Network", "Runtime"):
            self.call(f"{domain}.enable", session=session)
        self.call("Page.navigate", {"url": url}, session)
        self.wait_for("Page.loadEventFired", session)
        return session

    def evaluate(self, session: str, js: str) -> Any:
        got = self.call("Runtime.evaluate", {"expression": js, "returnByValue": True,
                                             "awaitPromise": True}, session)  # fmt: skip
        assert "exceptionDetails" not in got, got
        return got["result"].get("value")

    def requested(self, session: str) -> list[str]:
        return [e["params"]["request"]["url"] for e in self.events
                if e.get("method") == "Network.requestWillBeSent"
                and e.get("sessionId") == session]  # fmt: skip

    def close(self) -> None:
        try:
            self.call("Browser.close")
        except (EOFError, OSError):
            pass
        self.proc.wait()
        os.close(self._to)
        os.close(self._from)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if CHROMIUM is None:
        if REQUIRE:
            pytest.fail("no chromium: make setup installs it (APT_PACKAGES)")
        pytest.skip("the page is checked in chromium (apt install chromium)")
    with tempfile.TemporaryDirectory(prefix="pagebuf-chromium-") as profile:
        b = Browser(CHROMIUM, profile)
        try:
            yield b
        finally:
            b.close()


SHOWN = """(async () => {
  const cells = sel => [...document.querySelectorAll(sel)].map(
      tr => [...tr.children].map(td => td.textContent));
  const img = document.getElementById('plot');
  let decoded = 'no image';
  if (img) { try { await img.decode(); decoded = 'ok'; } catch (e) { decoded = String(e); } }
  const box = el => { const r = el.getBoundingClientRect();
                      return {x: r.left + scrollX, y: r.top + scrollY, w: r.width, h: r.height}; };
  return {
    title: document.title,
    overall: document.getElementById('overall').textContent,
    head: cells('#arms thead tr')[0], rows: cells('#arms tbody tr'),
    table: box(document.getElementById('arms')),
    doctor: cells('#doctor tbody tr'), params: cells('#params tbody tr'),
    img: img && {decoded, w: img.naturalWidth, h: img.naturalHeight, box: {
      x: box(img).x + img.clientLeft, y: box(img).y + img.clientTop,
      w: img.clientWidth, h: img.clientHeight}},  // inside its border
    images: document.images.length,
    active: document.querySelectorAll('script, iframe, object, embed, form').length,
  };
})()"""


def shown(browser: Browser, page: Path) -> tuple[dict[str, Any], str, list[str]]:
    """What the browser shows of a page, its session, and every URL it requested."""
    session = browser.open(page.as_uri())
    return browser.evaluate(session, SHOWN), session, browser.requested(session)


def painted(browser: Browser, session: str, box: dict[str, float]) -> Any:
    """The pixels the browser painted in `box` of the page, as an RGB image."""
    clip = {"x": box["x"], "y": box["y"], "width": box["w"], "height": box["h"], "scale": 1}
    shot = browser.call(
        "Page.captureScreenshot",
        {"format": "png", "clip": clip, "captureBeyondViewport": True},
        session,
    )
    return Image.open(io.BytesIO(base64.b64decode(shot["data"]))).convert("RGB")


def embedded(page: Path) -> Any:
    """The drawing the page embeds, decoded here."""
    data = re.search(r'src="data:image/png;base64,([^"]+)"', page.read_text())
    assert data is not None
    return Image.open(io.BytesIO(base64.b64decode(data.group(1)))).convert("RGB")


def difference(shot: Any, drawn: Any) -> float:
    """Mean absolute difference per channel (0-255) of two images of one size, the
    smallest of those shifted by up to a pixel (where layout rounds a fractional place)."""
    assert shot.size == drawn.size
    w, h = shot.size
    return min(
        sum(ImageStat.Stat(ImageChops.difference(
            shot.crop((max(dx, 0), max(dy, 0), w + min(dx, 0), h + min(dy, 0))),
            drawn.crop((max(-dx, 0), max(-dy, 0), w + min(-dx, 0), h + min(-dy, 0))),
        )).mean) / 3
        for dx in (-1, 0, 1) for dy in (-1, 0, 1)
    )  # fmt: skip


def test_the_browser_shows_the_verdict_the_table_and_the_plot(
    browser: Browser, tmp_path: Path
) -> None:
    src = run_file(tmp_path / "pagebuf-compare-1.jsonl")
    out = tmp_path / "report.html"
    assert cli.main(["report", str(src), "--html", str(out)]) == 1
    got, session, urls = shown(browser, out)
    assert got["title"] == "pagebuf compare: FAIL"
    assert got["overall"] == "FAIL corruption in cached"
    assert got["head"][:2] == ["ARM", "VIA"] and got["head"][-2:] == ["VERDICT", "NOTE"]
    assert [(r[0], r[2], r[3], r[-2]) for r in got["rows"]] == [
        ("cached", "640", "10", "corrupted"), ("dma", "640", "0", "clean"),
        ("single-cpu", "640", "0", "clean"), ("flush", "640", "0", "clean"),
        ("positive", "640", "0", "fired"), ("inject", "640", "0", "injected-detected")]  # fmt: skip
    assert got["table"]["w"] > 300 and got["table"]["h"] > 6 * 15  # laid out, not hidden
    assert [r[:3] for r in got["doctor"]] == [[f["verdict"], f["name"], f["value"]]
                                             for f in FINDINGS]  # fmt: skip
    assert ["seed", "7"] in got["params"]
    drawn = embedded(out)
    assert got["img"]["decoded"] == "ok" and (got["img"]["w"], got["img"]["h"]) == drawn.size
    assert got["images"] == 1 and got["active"] == 0
    assert urls and all(u == out.as_uri() or u.startswith("data:") for u in urls), urls
    # The plot is painted at its size, and it is the drawing that was embedded, pixel for
    # pixel within rounding: a broken image or a blank box would differ everywhere.
    shot = painted(browser, session, got["img"]["box"])
    assert difference(shot, drawn) < 1.0
    assert len(shot.getcolors(1 << 16) or range(1 << 16)) > 64  # not one flat colour


@pytest.mark.parametrize("where", ["signature", "pixels"])
def test_a_damaged_plot_is_seen_as_such(browser: Browser, tmp_path: Path, where: str) -> None:
    """The checks above can fail: the page with its PNG's signature damaged does not
    decode; with damaged pixel data it does not paint the drawing."""
    src = run_file(tmp_path / "pagebuf-compare-1.jsonl")
    out = tmp_path / "report.html"
    htmlreport.write(str(src), str(out))
    drawn, text = embedded(out), out.read_text()
    start = text.index("base64,") + 7 + (0 if where == "signature" else 2000)
    out.write_text(text[:start] + "A" * 3000 + text[start + 3000 :])
    got, session, _ = shown(browser, out)
    if where == "signature":
        assert got["img"]["decoded"] != "ok" and got["img"]["w"] == 0
    else:
        box = {**got["img"]["box"], "w": drawn.size[0], "h": drawn.size[1]}
        assert difference(painted(browser, session, box), drawn) > 1.0


def test_text_from_the_file_is_shown_as_text(browser: Browser, tmp_path: Path) -> None:
    name = "<img src=x onerror=\"document.title='owned'\">"
    note = "</td></tr></table><script>document.title='owned'</script><iframe src=x>"
    src = run_file(tmp_path / "pagebuf-compare-1.jsonl", name=name, note=note)
    out = tmp_path / "hostile.html"
    htmlreport.write(str(src), str(out))
    got, _, urls = shown(browser, out)
    assert got["title"] == "pagebuf run: FAIL" and got["active"] == 0
    assert got["images"] == 1  # the plot, and no image made of a name
    first = got["rows"][0]
    assert (first[0], first[-1]) == (name, note) and len(got["rows"]) == len(ARMS)
    assert all(u == out.as_uri() or u.startswith("data:") for u in urls), urls
