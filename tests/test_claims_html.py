"""results/claims.html: the claims Markdown's preamble and one HTML table per claim."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from metalandscape.claims_html import write_claims_html


def test_one_table_per_claim_with_escaped_text(tmp_path: Path) -> None:
    md = tmp_path / "claims.md"
    md.write_text("# Claims\n\nconfig: a <b> & c\n\n## Claim 1\nignored\n")
    csv = tmp_path / "claims.csv"
    pd.DataFrame(
        {
            "claim": [2, 1, 1],
            "title": ["support <loss>", "flatness", "flatness"],
            "algorithm": ["maml", "maml", "fomaml"],
            "value": [0.123456, 1.0, 2.0],
            "verdict": ["holds", "fails", "holds"],
            "not_shown": ["x", "y", "z"],
        }
    ).to_csv(csv, index=False)
    out = tmp_path / "claims.html"
    log = tmp_path / "claims.log"
    assert write_claims_html(md, csv, out, log) == 3
    page = out.read_text()
    assert "<p>config: a &lt;b&gt; &amp; c</p>" in page and "ignored" not in page
    assert page.index("Claim 1: flatness") < page.index("Claim 2: support &lt;loss&gt;")
    assert page.count("<table") == 2 and "0.1235" in page and "not_shown" not in page
    assert log.read_text() == f"3 claim rows rendered to {out}\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "claims.csv",
        "claims.html",
        "claims.log",
        "claims.md",
    ]


def test_an_empty_table_says_so(tmp_path: Path) -> None:
    md = tmp_path / "claims.md"
    md.write_text("# Claims\n")
    csv = tmp_path / "claims.csv"
    csv.write_text("claim,title,verdict\n")
    out = tmp_path / "claims.html"
    assert write_claims_html(md, csv, out) == 0
    assert "No claim could be checked" in out.read_text()
