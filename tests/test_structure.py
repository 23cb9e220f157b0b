"""The package's shape stays what a newcomer can read: no import circle, no reach into another module's private
names, no module past about 600 lines, and ruff's checks clean. Read from the source, so it holds for imports
inside functions too."""

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "wsimito"
MAX_LINES = 600


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _imports(path: Path, name: str, modules: dict) -> list[tuple[str, str | None]]:
    """(module imported, name taken from it or None) for every import of a wsimito module anywhere in the file."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(alias.name, None) for alias in node.names if alias.name.split(".")[0] == "wsimito"]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            if base.split(".")[0] != "wsimito":
                continue
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                found.append((submodule, None) if submodule in modules else (base, alias.name))
    return found


def _graph():
    modules = _modules()
    return modules, {name: _imports(path, name, modules) for name, path in modules.items()}


def test_no_import_circle():
    modules, graph = _graph()
    edges = {name: {target for target, _ in imports if target in modules and target != name}
             for name, imports in graph.items()}
    state, circles = {}, []

    def visit(node, stack):
        state[node] = "open"
        for target in sorted(edges[node]):
            if state.get(target) == "open":
                circles.append(" -> ".join(stack[stack.index(target):] + [target]))
            elif target not in state:
                visit(target, stack + [target])
        state[node] = "done"

    for name in sorted(edges):
        if name not in state:
            visit(name, [name])
    assert not circles, "import circles:\n" + "\n".join(circles)


def test_no_module_imports_another_modules_private_name():
    _, graph = _graph()
    reaches = [f"{name} takes {target}.{taken}" for name, imports in graph.items() for target, taken in imports
               if taken and taken.startswith("_") and not taken.startswith("__")]
    assert not reaches, "private names taken across modules:\n" + "\n".join(reaches)


def test_no_module_is_too_long_to_read():
    long = [f"{path.relative_to(PACKAGE.parent)}: {count} lines" for path in PACKAGE.rglob("*.py")
            if (count := len(path.read_text().splitlines())) > MAX_LINES]
    assert not long, f"modules over {MAX_LINES} lines:\n" + "\n".join(long)


def test_ruff_is_clean_on_the_package():
    result = subprocess.run([sys.executable, "-m", "ruff", "check", str(PACKAGE)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
