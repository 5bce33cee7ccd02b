"""Screenshots of a Snakemake report in headless Chromium, after clicking through it.

The report is one self-contained page driven by JavaScript without addressable views, so each
screenshot is taken of a copy of the page with a small script appended that clicks, in order,
the elements whose text is each step (``row:TEXT:N`` clicks the N-th icon of the row holding
TEXT: 0 shows the file, 1 its caption)::

    python tests/report_screenshots.py report.html shots/
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

CLICKER = """
<script>
function metalandscapeClick(step) {
  const [kind, text, index] = step.startsWith('row:') ? step.split(':') : ['text', step, 0];
  const nodes = [...document.querySelectorAll('a,li,span,div,button,td,th,p')];
  let found = nodes.filter(node => node.textContent.trim() === text).pop();
  if (kind === 'text') { if (found) { found.click(); } return; }
  while (found && found.querySelectorAll('svg').length < 2) { found = found.parentElement; }
  if (found) {
    found.querySelectorAll('svg')[+index].dispatchEvent(new MouseEvent('click', {bubbles: true}));
  }
}
window.addEventListener('load', () => {
  STEPS.forEach((step, i) => setTimeout(() => metalandscapeClick(step), 700 * (i + 1)));
});
</script>
"""

#: name: clicks; what the report must show after them.
VIEWS: dict[str, list[str]] = {
    "home": [],
    "fig02_image": ["Fig. 02 Flatness", "row:fig2:0"],
    "fig02_caption": ["Fig. 02 Flatness", "row:fig2:1"],
    "claims": ["Claims", "row:results/claims.html:0"],
}


def chromium() -> str | None:
    """The Chromium executable, if installed."""
    return shutil.which("chromium") or shutil.which("chromium-browser")


def screenshot(
    report: Path, out: Path, steps: list[str], size: tuple[int, int] = (1400, 1000)
) -> Path:
    """``out`` (.png): the report after clicking ``steps``."""
    browser = chromium()
    if browser is None:
        raise RuntimeError("chromium not found (Debian: apt-get install chromium)")
    page = report.read_text()
    head, body_end, tail = page.rpartition("</body>")  # the page's own, not one in its scripts
    clicked = out.with_suffix(".html")
    clicked.write_text(head + CLICKER.replace("STEPS", json.dumps(steps)) + body_end + tail)
    subprocess.run(
        [
            browser,
            *("--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"),
            *("--virtual-time-budget=10000", f"--window-size={size[0]},{size[1]}"),
            *(f"--screenshot={out}", clicked.resolve().as_uri()),
        ],
        check=True,
        capture_output=True,
        timeout=180,
    )
    clicked.unlink()
    return out


def screenshots(report: Path, folder: Path) -> dict[str, Path]:
    """One screenshot per entry of :data:`VIEWS`, in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    return {
        name: screenshot(report, folder / f"{name}.png", steps) for name, steps in VIEWS.items()
    }


if __name__ == "__main__":
    for name, path in screenshots(Path(sys.argv[1]), Path(sys.argv[2])).items():
        print(f"{name}: {path}")
