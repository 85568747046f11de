"""The nightly summary ``outbox/_reports/YYYY-MM-DD.html``: one self-contained page (thumbnails
embedded as data URIs, so the report survives retention cleanup of the result folders) listing
the night's jobs with class (or that the target was not found), segments, timings, the
separation's notes and a thumbnail of the comparison plot."""

from __future__ import annotations

import base64
import datetime as dt
import html
import io
import os
import socket
import string
from importlib import resources
from pathlib import Path
from typing import Any

from .ledger import DONE, FAILED, Ledger

MAX_THUMBNAILS = 500
THUMB_WIDTH = 240


def thumbnail_data_uri(png: Path, width: int = THUMB_WIDTH) -> str | None:
    """A small PNG of ``png`` as a ``data:`` URI, or None when it cannot be read."""
    try:
        from PIL import Image  # matplotlib depends on Pillow

        with Image.open(png) as im:
            im = im.convert("RGB")
            im.thumbnail((width, width * 4))
            buf = io.BytesIO()
            im.save(buf, format="PNG", optimize=True)
    except (OSError, ValueError):
        return None
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _fmt_time(t: float | None) -> str:
    return "" if t is None else dt.datetime.fromtimestamp(t).strftime("%H:%M:%S")


def _num(x: Any, nd: int = 2) -> str:
    return "" if x is None else f"{float(x):.{nd}f}"


def _row(job: dict[str, Any], thumbs_left: list[int]) -> str:
    e = html.escape
    summary = job.get("summary") or {}
    segs = summary.get("segments") or []
    seg_txt = ", ".join(f"{s.get('start', 0):.1f}–{s.get('end', 0):.1f}" for s in segs[:12])
    if len(segs) > 12:
        seg_txt += f" … (+{len(segs) - 12})"
    timings = summary.get("timings") or {}
    t_txt = " · ".join(f"{k} {v:.2f}" for k, v in timings.items() if isinstance(v, (int, float)))
    result_dir = job.get("result_dir")
    cls = summary.get("class_name") or ("—" if job["state"] == DONE else "")
    thumb = ""
    if job["state"] == DONE and result_dir and thumbs_left[0] > 0:
        plot = (summary.get("files") or {}).get("comparison_plot")
        if plot:
            uri = thumbnail_data_uri(Path(result_dir) / plot)
            if uri:
                thumbs_left[0] -= 1
                thumb = f'<a href="{e(Path(result_dir).as_uri())}/{e(plot)}"><img src="{uri}" alt="comparison plot"></a>'
    if job["state"] == FAILED:
        err = job.get("error") or {}
        thumb = f'<div class="err">{e(str(err.get("stage", "")))}: {e(str(err.get("message", "")))}</div>'
    if job["state"] == DONE and summary.get("target_found") is False:
        cls = f"{cls} · target not found"
    notes = "".join(f'<br><small class="note">note: {e(str(n))}</small>' for n in summary.get("notes") or [])
    name = f'{e(job["name"])}<br><small>{e(job["id"])} · attempt {job.get("attempt", 0)}</small>{notes}'
    return (
        f'<tr class="{e(job["state"])}"><td>{_fmt_time(job.get("finished_at"))}</td><td>{name}</td>'
        f'<td>{e(job["state"])}</td><td>{e(str(cls))}</td><td>{e(seg_txt)}</td>'
        f'<td class="num">{_num(job.get("queue_wait_s"))}</td><td class="num">{_num(job.get("run_s"))}</td>'
        f"<td>{e(t_txt)}</td><td>{thumb}</td></tr>"
    )


def render(jobs: list[dict[str, Any]], day: dt.date, start: float, end: float) -> str:
    """The report page for ``jobs`` (ledger rows) finished in ``[start, end)``."""
    done = [j for j in jobs if j["state"] == DONE]
    failed = [j for j in jobs if j["state"] == FAILED]
    runs = [j["run_s"] for j in done if j.get("run_s") is not None]
    summary = [
        f"<span><b>{len(jobs)}</b> jobs</span>",
        f"<span><b>{len(done)}</b> done</span>",
        f"<span><b>{len(failed)}</b> failed</span>",
    ]
    not_found = sum(1 for j in done if (j.get("summary") or {}).get("target_found") is False)
    if not_found:
        summary.append(f"<span><b>{not_found}</b> with the target not found</span>")
    if runs:
        summary.append(f"<span>mean run <b>{sum(runs) / len(runs):.2f} s</b></span>")
    thumbs_left = [MAX_THUMBNAILS]
    rows = "\n".join(_row(j, thumbs_left) for j in jobs) or '<tr><td colspan="9">No jobs finished in this period.</td></tr>'
    template = string.Template(resources.files("daemon").joinpath("report.html").read_text(encoding="utf-8"))
    return template.substitute(
        date=html.escape(day.isoformat()),
        start=html.escape(dt.datetime.fromtimestamp(start).isoformat(sep=" ", timespec="minutes")),
        end=html.escape(dt.datetime.fromtimestamp(end).isoformat(sep=" ", timespec="minutes")),
        generated=html.escape(dt.datetime.now().isoformat(sep=" ", timespec="seconds")),
        host=html.escape(socket.gethostname()),
        summary=" ".join(summary),
        rows=rows,
    )


def write_report(ledger: Ledger, outbox: Path, day: dt.date, start: float, end: float) -> Path:
    """Write ``outbox/_reports/DAY.html`` atomically (two daemons writing it is harmless)."""
    jobs = ledger.finished_between(start, end)
    page = render(jobs, day, start, end)
    folder = outbox / "_reports"
    folder.mkdir(mode=0o750, exist_ok=True)
    path = folder / f"{day.isoformat()}.html"
    tmp = folder / f".{path.name}.tmp-{os.getpid()}"
    tmp.write_text(page, encoding="utf-8")
    os.replace(tmp, path)
    return path
