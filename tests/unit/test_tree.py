"""The tree shows the design: no import circles, no import running back up a layer, no
docstring or comment citing a file that is not in the tree, and a README layout that
names every package and loose module of proxy/.

The import graph is built from the source with ``ast`` (nothing is imported). A circle
counts module-level imports only, leaving out ``if TYPE_CHECKING:`` blocks (they never run).
The layers count every import, in functions too: a lower layer must not reach up at all.
Each check runs first on a small made-up tree with the fault, so it is known to fail.
"""

from __future__ import annotations

import ast
import io
import re
import subprocess
import tokenize
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# (a module's package prefix, the prefixes it may import from within proxy). The core is
# pure and sits at the bottom; the config is read by everything above it; only the
# command line's own modules import the command line.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("proxy.core", ("proxy.core",)),
    ("proxy.config", ("proxy.config", "proxy.core")),
)
TOP = "proxy.cli"

# Third-party projects whose source files a comment may cite (with the project named
# in the same sentence): those files are not in this tree, on purpose.
THIRD_PARTY = ("asyncssh", "h11", "ssh-audit", "warpgate", "openssh")
# A path under one of these is this repository's, wherever it is cited.
REPO_FOLDERS = ("proxy/", "tests/", "benchmarks/", "scripts/", "config/", "systemd/", "docs/")


def modules(root: Path) -> dict[str, Path]:
    """Every module under ``root`` (a ``proxy`` folder) by dotted name."""
    found: dict[str, Path] = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def _type_checking(node: ast.stmt) -> bool:
    if not isinstance(node, ast.If):
        return False
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(node: ast.AST, name: str, is_package: bool, known: set[str]) -> Iterator[str]:
    """The proxy modules one import statement names (a ``from X import y`` names
    ``X.y`` when that is a module, else ``X``)."""
    if isinstance(node, ast.Import):
        for alias in node.names:
            if alias.name.split(".")[0] == "proxy":
                yield alias.name
    elif isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level:
            package = name.split(".") if is_package else name.split(".")[:-1]
            package = package[: len(package) - (node.level - 1)]
            base = ".".join([*package, base] if base else package)
        if base.split(".")[0] != "proxy":
            return
        for alias in node.names:
            full = f"{base}.{alias.name}"
            yield full if full in known else base


def _walk(stmts: list[ast.stmt], *, deep: bool) -> Iterator[ast.AST]:
    """The statements that run (TYPE_CHECKING blocks left out); ``deep`` also enters
    functions and classes, else only what runs at import."""
    for stmt in stmts:
        if _type_checking(stmt):
            continue
        if isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef):
            if deep:
                yield from _walk(stmt.body, deep=deep)
            continue
        yield stmt
        for field in ("body", "orelse", "finalbody", "handlers"):
            inner = getattr(stmt, field, None)
            if isinstance(inner, list):
                yield from _walk([s for s in inner if isinstance(s, ast.stmt)], deep=deep)
            if field == "handlers" and isinstance(inner, list):
                for handler in inner:
                    yield from _walk(handler.body, deep=deep)


def import_graph(root: Path, *, deep: bool) -> dict[str, set[str]]:
    found = modules(root)
    known = set(found)
    graph: dict[str, set[str]] = {}
    for name, path in found.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        edges: set[str] = set()
        for node in _walk(tree.body, deep=deep):
            edges.update(_imports(node, name, path.name == "__init__.py", known))
        graph[name] = {m for m in edges if m in known and m != name}
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of two or more modules (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def _under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def upward(graph: dict[str, set[str]]) -> list[str]:
    """Every import from a lower layer to a higher one, as "a -> b"."""
    wrong = []
    for name, targets in sorted(graph.items()):
        for target in sorted(targets):
            for prefix, allowed in LAYERS:
                if _under(name, prefix) and not any(_under(target, a) for a in allowed):
                    wrong.append(f"{name} -> {target}")
            if _under(target, TOP) and not _under(name, TOP):
                wrong.append(f"{name} -> {target}")
    return wrong


def _write(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root / "proxy"


def test_the_checks_find_a_circle_and_an_upward_import(tmp_path: Path) -> None:
    root = _write(
        tmp_path,
        {
            "proxy/__init__.py": "",
            "proxy/a.py": "from proxy import b\n",
            "proxy/b.py": "import proxy.c\n",
            "proxy/c.py": "from typing import TYPE_CHECKING\nfrom . import a\n",
            "proxy/d.py": "import typing\nif typing.TYPE_CHECKING:\n    import proxy.a\n",
            "proxy/e.py": "def f():\n    from proxy import d\n",
            "proxy/core/__init__.py": "",
            "proxy/core/x.py": "def f():\n    from proxy.config.m import Y\n",
            "proxy/config/__init__.py": "",
            "proxy/config/m.py": "Y = 1\n",
            "proxy/cli/__init__.py": "",
            "proxy/cli/app.py": "",
        },
    )
    graph = import_graph(root, deep=False)
    assert circles(graph) == [["proxy.a", "proxy.b", "proxy.c"]]
    assert graph["proxy.d"] == set()  # TYPE_CHECKING only
    assert graph["proxy.e"] == set()  # in a function: not at import
    assert upward(import_graph(root, deep=True)) == ["proxy.core.x -> proxy.config.m"]
    (root / "e.py").write_text("import proxy.cli.app\n")
    assert upward(import_graph(root, deep=True)) == [
        "proxy.core.x -> proxy.config.m",
        "proxy.e -> proxy.cli.app",
    ]


def test_proxy_has_no_import_circle() -> None:
    graph = import_graph(REPO / "proxy", deep=False)
    assert len(graph) > 80  # the whole package was read
    assert circles(graph) == []


def test_no_import_runs_back_up_a_layer() -> None:
    graph = import_graph(REPO / "proxy", deep=True)
    assert graph["proxy.core.login"]  # the core's own imports are seen
    assert upward(graph) == []


# A file name as prose cites it, with or without folders: README.md, proxy/core/events.py.
CITED = re.compile(
    r"(?<![\w/.-])((?:\.\.?/)*(?:[\w.-]+/)*[\w-]+\.(?:md|py|pyi|yaml|yml|toml|txt|json|cfg|sh|rs))\b"
)


def _prose(path: Path) -> Iterator[tuple[int, str]]:
    """(line, text) of every docstring and comment in a Python file."""
    source = path.read_text(encoding="utf-8")
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            doc = ast.get_docstring(node, clean=False)
            if doc is not None:
                yield (node.body[0].lineno, doc)
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            yield (token.start[0], token.string)


def stray_citations(texts: Iterator[tuple[str, str]], tree: list[str]) -> list[str]:
    """ "where: file" for each cited file that is not in ``tree`` (repository paths), and
    for each pointer to the shared folder outside the repository, whatever it names.

    A source file of a third-party project (not a ``.md``) may be cited when the same
    docstring or comment names the project. In the README (``where`` is "README.md") only
    documents and this repository's folders are checked: its examples name the reader's
    own files.
    """
    outside = "../" + "shared"
    wrong = []
    for where, text in texts:
        if outside in text or "/work/" + "shared" in text:
            wrong.append(f"{where}: {outside}")
        for cited in CITED.findall(text):
            plain = re.sub(r"^(\.\.?/)+", "", cited)
            if any(f == plain or f.endswith("/" + plain) for f in tree):
                continue
            in_repo = plain.endswith(".md") or plain.startswith(REPO_FOLDERS)
            if not in_repo and (
                where == "README.md" or any(p in text.lower() for p in THIRD_PARTY)
            ):
                continue
            wrong.append(f"{where}: {cited}")
    return wrong


def _tracked() -> list[str]:
    listed = subprocess.run(
        ["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.split()
    return [f for f in listed if (REPO / f).exists()]


def test_the_citation_check_finds_a_stray_file() -> None:
    texts = iter(
        [
            ("a.py:1", "The contract (PRODUCT.md) and README.md; see proxy/core/events.py."),
            ("a.py:2", "As ../shared/notes say."),
            ("a.py:3", "# asyncssh's connection.py:2063 sets it."),
            ("a.py:4", "# connection.py sets it."),
            ("a.py:5", "# asyncssh documents it in NOTES.md."),
            ("README.md", "sftp -b cmds.txt; see ARCHITECTURE.md and proxy/cli.py"),
        ]
    )
    tree = ["README.md", "proxy/core/events.py"]
    assert stray_citations(texts, tree) == [
        "a.py:1: PRODUCT.md",
        "a.py:2: ../shared",
        "a.py:4: connection.py",
        "a.py:5: NOTES.md",
        "README.md: ARCHITECTURE.md",
        "README.md: proxy/cli.py",
    ]


def test_docstrings_and_comments_cite_only_files_in_the_tree() -> None:
    tree = _tracked()
    assert "README.md" in tree
    sources = [
        p
        for top in ("proxy", "tests", "benchmarks", "scripts")
        for p in sorted((REPO / top).rglob("*.py"))
        if ".venv" not in p.parts
    ]
    assert len(sources) > 100
    texts = ((f"{p.relative_to(REPO)}:{line}", text) for p in sources for line, text in _prose(p))
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    everything = iter([*texts, ("README.md", readme)])
    assert stray_citations(everything, tree) == []


def test_the_readme_layout_names_every_package_and_loose_module() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    layout = readme[readme.index("## Layout") :]
    layout = layout[: layout.index("### To change X, edit Y")]
    root = REPO / "proxy"
    packages = sorted(p.name for p in root.iterdir() if (p / "__init__.py").exists())
    loose = sorted(p.stem for p in root.glob("*.py") if p.stem != "__init__")
    assert len(packages) >= 7
    missing = [f"proxy/{name}/" for name in packages if f"proxy/{name}/" not in layout]
    missing += [name for name in loose if not re.search(rf"\b{name}\b", layout)]
    assert missing == []
