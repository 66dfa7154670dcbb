"""mkdocs hook: the user guide page is README.md itself (one source), its image paths made
relative to docs/."""
from __future__ import annotations

from pathlib import Path
from typing import Any

README = Path(__file__).resolve().parent.parent / "README.md"


def on_page_markdown(markdown: str, page: Any, **_: Any) -> str:
    """Serve README.md as readme.md; the README links docs/x.png, the site has x.png."""
    if page.file.src_uri != "readme.md":
        return markdown
    return README.read_text(encoding="utf-8").replace("](docs/", "](")
