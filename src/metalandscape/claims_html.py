"""results/claims.html: the claims table rendered for Snakemake's report.

The report shows HTML inline but offers Markdown and CSV only as downloads, so the workflow
renders the Markdown's preamble and one HTML table per claim from ``metalandscape claims``'s
outputs.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import TYPE_CHECKING

from metalandscape.atomic import atomic_output

if TYPE_CHECKING:
    import pandas as pd

#: Short column names of the page; the CSV keeps the full ones.
DIRECTION_SIGNS = {">=": "≥", "<=": "≤", ">": ">", "<": "<"}
STYLE = (
    "body{font-family:sans-serif;margin:1em;max-width:60em}"
    "table{border-collapse:collapse;font-size:90%;width:100%;table-layout:auto}"
    "td,th{border:1px solid #ccc;padding:2px 5px;vertical-align:top;overflow-wrap:anywhere}"
    "th{background:#eee;text-align:left}td.statistic{max-width:18em}"
    "td.number{white-space:nowrap;text-align:right}"
    ".holds{color:#1a7f37}.fails,.does-not-hold{color:#b42318}p.data{font-size:85%;color:#555}"
)


def _number(value: object) -> str:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return html.escape(str(value))
    return "–" if number != number else f"{number:.4g}"


def _setting(row: pd.Series) -> str:
    parts = [str(row[name]) for name in ("dataset", "variant") if name in row.index]
    if "way" in row.index and "shot" in row.index:
        shot = "all k" if str(row["shot"]) == "-1" else f"{row['shot']}-shot"
        parts.append(f"{row['way']}-way {shot}")
    return " ".join(part for part in parts if part and part != "nan")


def _value(row: pd.Series) -> str:
    text = _number(row.get("value"))
    low, high = row.get("ci_low"), row.get("ci_high")
    if low is not None and high is not None and low == low and high == high:
        text += f" [{_number(low)}, {_number(high)}]"
    return text


def _threshold(row: pd.Series) -> str:
    if "threshold" not in row.index:
        return ""
    sign = DIRECTION_SIGNS.get(str(row.get("direction", "")), str(row.get("direction", "")))
    return f"{sign} {_number(row['threshold'])}".strip()


def _cell(text: str, kind: str = "") -> str:
    return f"<td class='{kind}'>{text}</td>" if kind else f"<td>{text}</td>"


def claim_table(rows: pd.DataFrame) -> str:
    """One claim's rows as a narrow HTML table: setting, algorithm, statistic, value [95% CI],
    threshold, seeds, verdict (the CSV has every column separately)."""
    header = ["setting", "algorithm", "statistic", "value [95% CI]", "threshold", "seeds"]
    header.append("verdict")
    lines = ["<table>", "<tr>" + "".join(f"<th>{name}</th>" for name in header) + "</tr>"]
    for _, row in rows.iterrows():
        verdict = html.escape(str(row.get("verdict", "")))
        if bool(row.get("ci_excludes_threshold", False)) is True:
            verdict += " (CI clear of threshold)"
        cells = [
            _cell(html.escape(_setting(row))),
            _cell(html.escape(str(row.get("algorithm", "")))),
            _cell(html.escape(str(row.get("statistic", ""))), "statistic"),
            _cell(_value(row), "number"),
            _cell(html.escape(_threshold(row)), "number"),
            _cell(_number(row["seeds"]) if "seeds" in row.index else "", "number"),
            _cell(verdict, str(row.get("verdict", "")).replace(" ", "-")),
        ]
        lines.append("<tr>" + "".join(cells) + "</tr>")
    lines.append("</table>")
    return "\n".join(lines)


def render_claims_html(md_text: str, table: pd.DataFrame) -> str:
    """The HTML page of a claims Markdown (its preamble) and table (one HTML table per claim)."""
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>Claims</title>"
        f"<style>{STYLE}</style></head><body>"
    ]
    for line in md_text.splitlines():
        if line.startswith("## "):
            break
        if line.strip():
            parts.append(f"<p>{html.escape(line.lstrip('# '))}</p>")
    if "data" in table.columns:
        for note in sorted(set(table["data"].dropna().astype(str))):
            parts.append(f"<p class='data'>Data: {html.escape(note)}</p>")
    for claim, rows in table.groupby("claim", sort=True):
        parts.append(f"<h2>Claim {claim}: {html.escape(str(rows['title'].iloc[0]))}</h2>")
        parts.append(claim_table(rows))
    if table.empty:
        parts.append("<p>No claim could be checked: the inputs lack the metrics.</p>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def write_claims_html(
    md: str | Path, csv: str | Path, out: str | Path, log: str | Path | None = None
) -> int:
    """Write ``out`` (whole or not at all) from the claims files, and a one-line ``log``;
    the number of claim rows."""
    import pandas as pd

    table = pd.read_csv(csv)
    page = render_claims_html(Path(md).read_text(), table)
    with atomic_output(out) as temporary:
        temporary.write_text(page)
    if log is not None:
        Path(log).write_text(f"{len(table)} claim rows rendered to {out}\n")
    return len(table)
