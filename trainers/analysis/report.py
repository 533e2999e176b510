"""The analysis as a self-contained HTML page (figures inlined as base64 PNG data URIs), as markdown, and
as a Prefect markdown artifact when running inside a flow run."""

from __future__ import annotations

import base64
import html
import json
import sys

SECTIONS = {
    "run": "Run",
    "removal": "Modality removal",
    "corruption": "Corruption",
    "dynamics": "Training dynamics",
    "detection": "Does calibration find the unreliable modality?",
    "visualisation": "Feature-level visualisation",
    "notes": "Notes",
}

# Marks every image with whether it decoded (naturalWidth > 0) and the page with the count, so a headless
# browser's DOM dump shows whether all figures render.
RENDER_CHECK = """<script>
window.addEventListener("load", function () {
  var images = Array.prototype.slice.call(document.images), ok = 0;
  images.forEach(function (img) {
    var good = img.complete && img.naturalWidth > 0;
    img.setAttribute("data-rendered", good ? "yes" : "no");
    if (good) { ok += 1; }
  });
  document.body.setAttribute("data-images", ok + "/" + images.length);
});
</script>"""

STYLE = """<style>
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; line-height: 1.4; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; margin-top: 2em; }
table { border-collapse: collapse; margin: .8em 0; font-size: .9em; }
th, td { border: 1px solid #ccc; padding: .25em .6em; text-align: right; }
th { background: #f3f3f3; } td:first-child, th:first-child { text-align: left; }
figure { margin: 1em 0; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { font-size: .85em; color: #555; }
.note { background: #fff8e1; padding: .5em .8em; border-left: 3px solid #f0b400; }
nav a { margin-right: 1em; } pre { background: #f6f6f6; padding: .6em; overflow-x: auto; font-size: .8em; }
</style>"""


def fmt(value, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def table_html(columns: list[str], rows: list[list]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(fmt(v))}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def table_md(columns: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def figure_html(title: str, data: bytes) -> str:
    encoded = base64.b64encode(data).decode("ascii")
    return (
        f'<figure><img src="data:image/png;base64,{encoded}" alt="{html.escape(title)}">'
        f"<figcaption>{html.escape(title)}</figcaption></figure>"
    )


def note_html(text: str) -> str:
    return f'<p class="note">{html.escape(text)}</p>'


class Document:
    """Sections of blocks, each block rendered both as HTML and as markdown."""

    def __init__(self, title: str):
        self.title = title
        self.sections: dict[str, list[tuple[str, str]]] = {key: [] for key in SECTIONS}

    def text(self, section: str, text: str) -> None:
        self.sections[section].append((f"<p>{html.escape(text)}</p>", text))

    def note(self, section: str, text: str) -> None:
        self.sections[section].append((note_html(text), f"> {text}"))

    def table(self, section: str, columns: list[str], rows: list[list], caption: str | None = None) -> None:
        head = f"<p><b>{html.escape(caption)}</b></p>" if caption else ""
        self.sections[section].append(
            (head + table_html(columns, rows), (f"**{caption}**\n\n" if caption else "") + table_md(columns, rows))
        )

    def figure(self, section: str, title: str, data: bytes, name: str) -> None:
        self.sections[section].append((figure_html(title, data), f"*figure: {title} (`figures/{name}.png`)*"))

    def code(self, section: str, obj) -> None:
        text = json.dumps(obj, indent=2, default=str)
        self.sections[section].append((f"<pre>{html.escape(text)}</pre>", f"```json\n{text}\n```"))

    def html(self) -> str:
        nav = "".join(f'<a href="#{key}">{html.escape(name)}</a>' for key, name in SECTIONS.items())
        parts = [
            f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(self.title)}'
            f"</title>{STYLE}</head><body><h1>{html.escape(self.title)}</h1><nav>{nav}</nav>"
        ]
        for key, name in SECTIONS.items():
            blocks = "".join(b for b, _ in self.sections[key]) or "<p>Nothing to report.</p>"
            parts.append(f'<section id="{key}"><h2>{html.escape(name)}</h2>{blocks}</section>')
        parts.append(f"{RENDER_CHECK}</body></html>")
        return "".join(parts)

    def markdown(self, with_figures: bool = False) -> str:
        parts = [f"# {self.title}"]
        for key, name in SECTIONS.items():
            blocks = [md for html_, md in self.sections[key] if with_figures or not md.startswith("*figure:")]
            if blocks:
                parts.append(f"## {name}\n\n" + "\n\n".join(blocks))
        return "\n\n".join(parts) + "\n"


def publish_artifact(summary_md: str, key: str = "precal-analysis") -> str | None:
    """A Prefect markdown artifact of the summary, only inside a flow or task run (elsewhere nothing happens).
    Returns the artifact id or None. A flow run has Prefect imported already; outside one, importing it
    just to find that out would cost seconds."""
    if "prefect" not in sys.modules:
        return None
    from prefect.context import FlowRunContext, TaskRunContext

    if FlowRunContext.get() is None and TaskRunContext.get() is None:
        return None
    from prefect.artifacts import create_markdown_artifact

    return str(create_markdown_artifact(markdown=summary_md, key=key, description="precal analysis summary"))
