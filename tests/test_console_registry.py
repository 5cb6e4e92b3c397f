"""One page registry (console/registry.py) feeds the navigation, the titles and every link:
a link to a page that does not exist, or a page file the registry does not know, fails here
(read from the source, so a link on a path no test clicks is checked too)."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

from console import registry

ROOT = Path(__file__).resolve().parents[1]
CONSOLE_CODE = [*(ROOT / "console").rglob("*.py"), *(ROOT / "pages").glob("*.py"), ROOT / "app.py"]


def calls_of(name: str) -> list[tuple[str, int, ast.expr]]:
    """(file, line, first argument) of every call of ``name`` in the console's code."""
    found = []
    for path in CONSOLE_CODE:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (isinstance(node, ast.Call) and node.args
                    and getattr(node.func, "id", getattr(node.func, "attr", None)) == name):
                found.append((str(path.relative_to(ROOT)), node.lineno, node.args[0]))
    return found


def test_every_link_names_a_registered_page():
    links = calls_of("page_link")
    assert links, "no page_link call found: the check reads the wrong code"
    keys = {page.key for page in registry.PAGES}
    for where, line, target in links:
        if isinstance(target, ast.Constant):
            assert target.value in keys, f"{where}:{line} links to unknown page {target.value!r}"
        else:   # computed: only the navigation (it walks the registry) and the one wrapper
            assert where in ("console/frame.py", "console/components.py"), \
                f"{where}:{line} links to a computed page"


def test_every_page_file_is_registered_and_draws_its_own_frame():
    files = {"app.py", *(f"pages/{p.name}" for p in (ROOT / "pages").glob("*.py"))}
    assert {page.path for page in registry.PAGES} == files
    for page in registry.PAGES:
        source = (ROOT / page.path).read_text(encoding="utf-8")
        assert f'render_frame("{page.key}")' in source, f"{page.path} does not frame itself as {page.key!r}"


def test_keys_and_titles_are_unique():
    assert len({page.key for page in registry.PAGES}) == len(registry.PAGES)
    assert len({page.title for page in registry.PAGES}) == len(registry.PAGES)


def test_an_unknown_page_is_an_error_that_names_the_pages():
    with pytest.raises(KeyError, match="tasks"):
        registry.page("taks")
