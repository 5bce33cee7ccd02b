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

#: The CSV columns shown, in order (those the CSV lacks are left out).
COLUMNS = (
    "data",
    "variant",
    "way",
    "shot",
    "algorithm",
    "statistic",
    "value",
    "ci_low",
    "ci_high",
    "direction",
    "threshold",
    "seeds",
    "verdict",
    "ci_excludes_threshold",
)
STYLE = (
    "body{font-family:sans-serif;margin:1em}table{border-collapse:collapse;font-size:90%}"
    "td,th{border:1px solid #ccc;padding:2px 6px}th{background:#eee}"
)


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
    for claim, rows in table.groupby("claim", sort=True):
        parts.append(f"<h2>Claim {claim}: {html.escape(str(rows['title'].iloc[0]))}</h2>")
        columns = [name for name in COLUMNS if name in rows.columns]
        parts.append(rows[columns].to_html(index=False, float_format="{:.4g}".format))
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
