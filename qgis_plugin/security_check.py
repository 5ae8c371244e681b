"""A local mirror of the QGIS plugin repository's security scan, run before every build.

plugins.qgis.org scans each uploaded plugin with bandit and a secrets detector and rejects
packages that carry compiled or binary payloads. This script does the same on the plugin folder:

- bandit (``-r``): any HIGH-severity finding fails;
- an AST scan: no ``exec``/``eval``/``compile``/``__import__`` calls, no ``pickle``/``marshal``
  loads, no ``os.system`` and no ``shell=True`` (a plugin that runs arbitrary code is refused);
- a secrets scan: private keys, cloud/API tokens, hard-coded ``password = "..."`` assignments;
- files: no compiled Python, archives, model weights or other binaries beyond icons.

Usage: ``python qgis_plugin/security_check.py [PLUGIN_DIR]``; exit status 1 with one line per
problem when anything is found.
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

PLUGIN_DIR = Path(__file__).resolve().parent / "momo_geo_plugin"
FORBIDDEN_CALLS = {"exec", "eval", "compile", "__import__", "execfile"}
FORBIDDEN_ATTRIBUTE_CALLS = {("os", "system"), ("os", "popen"), ("pickle", "load"),
                             ("pickle", "loads"), ("marshal", "loads"), ("marshal", "load")}
ALLOWED_SUFFIXES = {".py", ".txt", ".md", ".png", ".svg", ".qml", ".ui", ".qrc", ""}
SECRET_PATTERNS = {
    "private key": re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    "AWS access key": re.compile(r"\bAKIA[0-9A-Z]{16}\b"),
    "GitHub token": re.compile(r"\bgh[pousr]_[A-Za-z0-9]{30,}\b"),
    "Slack token": re.compile(r"\bxox[abpr]-[A-Za-z0-9-]{10,}\b"),
    "API key assignment": re.compile(
        r"(?i)\b(api[_-]?key|secret|token|passw(or)?d)\b\s*[:=]\s*['\"][^'\"\s]{8,}['\"]"),
}


def scan(plugin_dir: Path = PLUGIN_DIR, run_bandit: bool = True) -> list[str]:
    """All problems found in ``plugin_dir``, one line each; empty means the scan passes."""
    plugin_dir = Path(plugin_dir)
    problems: list[str] = []
    for path in sorted(plugin_dir.rglob("*")):
        if not path.is_file() or "__pycache__" in path.parts:
            continue
        relative = path.relative_to(plugin_dir)
        if path.suffix.lower() not in ALLOWED_SUFFIXES:
            problems.append(f"{relative}: file type {path.suffix!r} not allowed in a plugin")
            continue
        if path.suffix == ".py":
            problems += [f"{relative}:{line}: {what}" for line, what in _code_problems(path)]
        if path.suffix.lower() != ".png":
            text = path.read_text(encoding="utf-8", errors="replace")
            for name, pattern in SECRET_PATTERNS.items():
                for match in pattern.finditer(text):
                    line = text.count("\n", 0, match.start()) + 1
                    problems.append(f"{relative}:{line}: possible {name}")
    if run_bandit:
        problems += _bandit(plugin_dir)
    return problems


def _code_problems(path: Path) -> list[tuple[int, str]]:
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    except SyntaxError as exc:
        return [(exc.lineno or 0, f"syntax error: {exc.msg}")]
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        if isinstance(func, ast.Name) and func.id in FORBIDDEN_CALLS:
            found.append((node.lineno, f"call to {func.id}()"))
        elif isinstance(func, ast.Attribute):
            owner = func.value.id if isinstance(func.value, ast.Name) else ""
            if (owner, func.attr) in FORBIDDEN_ATTRIBUTE_CALLS:
                found.append((node.lineno, f"call to {owner}.{func.attr}()"))
            if func.attr in FORBIDDEN_CALLS and owner in ("builtins", "__builtins__"):
                found.append((node.lineno, f"call to {owner}.{func.attr}()"))
        for keyword in node.keywords:
            if (keyword.arg == "shell" and isinstance(keyword.value, ast.Constant)
                    and keyword.value.value is True):
                found.append((node.lineno, "subprocess call with shell=True"))
    return found


def _bandit(plugin_dir: Path) -> list[str]:
    command = [sys.executable, "-m", "bandit", "-r", str(plugin_dir), "-f", "json", "-q"]
    try:
        completed = subprocess.run(command, capture_output=True, text=True, check=False)
    except OSError as exc:
        return [f"bandit could not run: {exc}"]
    try:
        report = json.loads(completed.stdout)
    except json.JSONDecodeError:
        tail = (completed.stderr or completed.stdout).strip().splitlines()[-1:]
        return [f"bandit did not produce a report (is it installed?): {' '.join(tail)}"]
    problems = []
    for issue in report.get("results", []):
        if issue.get("issue_severity") == "HIGH":
            where = Path(issue["filename"]).relative_to(plugin_dir)
            problems.append(f"{where}:{issue['line_number']}: bandit {issue['test_id']} "
                            f"(HIGH): {issue['issue_text']}")
    for error in report.get("errors", []):
        problems.append(f"bandit error: {error}")
    return problems


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    plugin_dir = Path(args[0]) if args else PLUGIN_DIR
    problems = scan(plugin_dir)
    for problem in problems:
        print(problem)
    if problems:
        print(f"security check FAILED: {len(problems)} problem(s) in {plugin_dir}")
        return 1
    print(f"security check passed: {plugin_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
