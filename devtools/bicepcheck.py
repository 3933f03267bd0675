"""A structural check of the Bicep templates, for machines where `az bicep build` is unavailable.

The Bicep compiler cannot be installed offline (az downloads it on first use), so this reads the
text the way the compiler's first passes would and reports what it can see without Azure:
unbalanced brackets, identifiers used but never declared, params declared but never used,
module params passed that the module does not declare (or required ones not passed), and module
outputs read that the module does not produce. It is no substitute for `az bicep build`, which CI
with network access should run too (`python -m devtools.bicepcheck infra/main.bicep` prints findings).
"""
from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

BUILTINS = frozenset(
    """targetScope param var resource module output type func existing if for in true false null
    string int bool object array any resourceGroup subscription tenant environment deployment
    managementGroup uniqueString toLower toUpper take skip empty union intersection guid resourceId
    subscriptionResourceId tenantResourceId extensionResourceId loadJsonContent loadTextContent concat
    format contains length replace split join first last substring startsWith endsWith trim base64
    dataUri json items reference list listKeys coalesce min max range""".split()
)
_DECL = re.compile(r"^\s*(param|var|resource|module|output|type|func)\s+([A-Za-z_]\w*)", re.M)
_LOOP = re.compile(r"\bfor\s+(?:\(\s*([A-Za-z_]\w*)\s*,\s*([A-Za-z_]\w*)\s*\)|([A-Za-z_]\w*))\s+in\b")
# A word that is not a property (after `.`), a decorator (after `@`) or an object key (before `:`).
_REF = re.compile(r"(?<![.\w@?])([A-Za-z_]\w*)\b(?!\s*:(?!:))")
_PARAM = re.compile(r"^\s*param\s+([A-Za-z_]\w*)\s+\w+(\s*=)?", re.M)
_OUTPUT = re.compile(r"^\s*output\s+([A-Za-z_]\w*)\s", re.M)
_MODULE = re.compile(r"^\s*module\s+([A-Za-z_]\w*)\s+'([^']+)'\s*=\s*(?:if\s*\([^)]*\)\s*)?\{", re.M)


@dataclass
class Scan:
    """A template with every string's content blanked out, and the `${...}` expressions found in strings."""

    masked: str
    expressions: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def scan(text: str) -> Scan:
    out: list[str] = []
    expressions: list[str] = []
    problems: list[str] = []
    i, n = 0, len(text)
    stack: list[str] = []  # open brackets
    pairs = {")": "(", "]": "[", "}": "{"}

    def line() -> int:
        return text.count("\n", 0, i) + 1

    while i < n:
        c = text[i]
        # Comments and string contents become blanks of the same length, so offsets stay valid.
        if text.startswith("//", i):
            end = text.find("\n", i)
            end = n if end < 0 else end
            out.append(" " * (end - i))
            i = end
            continue
        if text.startswith("/*", i):
            end = text.find("*/", i + 2)
            end = n if end < 0 else end + 2
            out.append(re.sub(r"[^\n]", " ", text[i:end]))
            i = end
            continue
        if text.startswith("'''", i):  # multi-line string, no interpolation
            end = text.find("'''", i + 3)
            end = n if end < 0 else end + 3
            out.append("'''" + re.sub(r"[^\n]", " ", text[i + 3:end - 3]) + "'''")
            i = end
            continue
        if c == "'":
            j = i + 1
            out.append("'")
            while j < n and text[j] != "'":
                if text[j] == "\\":
                    out.append("  ")
                    j += 2
                    continue
                if text.startswith("${", j):
                    depth, k = 1, j + 2
                    while k < n and depth:  # nested strings inside ${} are rare; braces are counted
                        depth += {"{": 1, "}": -1}.get(text[k], 0)
                        k += 1
                    inner = scan(text[j + 2:k - 1])
                    expressions.append(inner.masked)
                    expressions.extend(inner.expressions)
                    problems.extend(inner.problems)
                    out.append(re.sub(r"[^\n]", " ", text[j:k]))
                    j = k
                    continue
                if text[j] == "\n":
                    problems.append(f"line {line()}: string not closed on its line")
                out.append(" " if text[j] != "\n" else "\n")
                j += 1
            out.append("'")
            i = j + 1
            continue
        if c in "([{":
            stack.append(c)
        elif c in ")]}":
            if not stack or stack[-1] != pairs[c]:
                problems.append(f"line {line()}: unexpected {c!r}")
            else:
                stack.pop()
        out.append(c)
        i += 1
    if stack:
        problems.append(f"unclosed {''.join(stack)!r} at the end")
    return Scan("".join(out), expressions, problems)


def _block(masked: str, start: int) -> str:
    """The text of the {...} block whose `{` is at or after `start`."""
    open_at = masked.index("{", start)
    depth = 0
    for k in range(open_at, len(masked)):
        depth += {"{": 1, "}": -1}.get(masked[k], 0)
        if depth == 0:
            return masked[open_at + 1:k]
    return masked[open_at + 1:]


def _top_keys(block: str) -> set[str]:
    keys, depth = set(), 0
    for row in block.splitlines():
        if depth == 0:
            found = re.match(r"\s*([A-Za-z_]\w*)\s*:", row)
            if found:
                keys.add(found.group(1))
        depth += row.count("{") + row.count("[") - row.count("}") - row.count("]")
    return keys


def params(path: Path) -> dict[str, bool]:
    """param name -> has a default."""
    masked = scan(path.read_text()).masked
    return {m.group(1): bool(m.group(2)) for m in _PARAM.finditer(masked)}


def outputs(path: Path) -> set[str]:
    return {m.group(1) for m in _OUTPUT.finditer(scan(path.read_text()).masked)}


def module_params(path: Path) -> dict[str, tuple[Path, set[str]]]:
    """module symbol -> (target file, params passed to it)."""
    masked = scan(path.read_text()).masked
    text = path.read_text()
    found = {}
    for m in _MODULE.finditer(masked):
        target = re.match(r"\s*module\s+\w+\s+'([^']+)'", text[m.start():]).group(1)  # type: ignore[union-attr]
        body = _block(masked, m.end() - 1)
        passed: set[str] = set()
        at = re.search(r"(?m)^\s*params\s*:\s*\{", body)
        if at:
            passed = _top_keys(_block(body, at.end() - 1))
        found[m.group(1)] = (path.parent / target, passed)
    return found


def app_settings(path: Path) -> dict[str, str]:
    """The app settings a template sets (the `properties` of its `.../config` named 'appsettings'):
    name -> the value's source text (a literal keeps its quotes)."""
    text = path.read_text()
    masked = scan(text).masked
    for m in re.finditer(r"(?m)^resource\s+\w+\s+'Microsoft\.Web/sites/config@[^']+'\s*=\s*\{", text):
        body_start = masked.index("{", m.end() - 1)
        body = _block(masked, body_start)
        if not re.search(r"(?m)^\s*name:\s*'appsettings'", text[body_start:body_start + len(body)]):
            continue
        props = re.search(r"(?m)^\s*properties\s*:\s*\{", body)
        if props is None:
            continue
        offset = body_start + 1 + props.end() - 1
        block = _block(masked, offset)
        source = text[offset + 1:offset + 1 + len(block)]
        settings = {}
        for row_masked, row in zip(block.splitlines(), source.splitlines()):
            found = re.match(r"\s*([A-Za-z_]\w*)\s*:\s*(.*)$", row_masked)
            if found:
                settings[found.group(1)] = row[found.start(2):].strip()
        return settings
    return {}


def check(path: Path, seen: set[Path] | None = None) -> list[str]:
    """Findings for a template and the modules it uses (empty = nothing found)."""
    seen = set() if seen is None else seen
    path = path.resolve()
    if path in seen:
        return []
    seen.add(path)
    name = path.name
    result = scan(path.read_text())
    findings = [f"{name}: {p}" for p in result.problems]
    masked = result.masked
    declared = {m.group(2) for m in _DECL.finditer(masked)}
    for m in _LOOP.finditer(masked):
        declared.update(g for g in m.groups() if g)
    code = [masked, *result.expressions]
    refs: dict[str, int] = {}
    for chunk in code:
        # declarations themselves are not uses
        chunk = _DECL.sub(lambda d: d.group(0).replace(d.group(2), ""), chunk)
        for ref in _REF.finditer(chunk):
            refs[ref.group(1)] = refs.get(ref.group(1), 0) + 1
    for ref in sorted(refs):
        if ref not in declared and ref not in BUILTINS:
            findings.append(f"{name}: '{ref}' is used but not declared")
    for param in params(path):
        if param not in refs:
            findings.append(f"{name}: param '{param}' is declared but never used")
    modules = module_params(path)
    for symbol, (target, passed) in modules.items():
        if not target.is_file():
            findings.append(f"{name}: module '{symbol}' points at a missing file {target.name}")
            continue
        wanted = params(target)
        for extra in sorted(passed - set(wanted)):
            findings.append(f"{name}: module '{symbol}' passes '{extra}', which {target.name} does not declare")
        for missing in sorted(p for p, has_default in wanted.items() if not has_default and p not in passed):
            findings.append(f"{name}: module '{symbol}' does not pass required param '{missing}' of {target.name}")
        produced = outputs(target)
        for chunk in code:
            for use in re.finditer(rf"\b{symbol}\.outputs\.(\w+)", chunk):
                if use.group(1) not in produced:
                    findings.append(f"{name}: '{symbol}.outputs.{use.group(1)}' is not an output of {target.name}")
        findings.extend(check(target, seen))
    return findings


def main(argv: list[str] | None = None) -> int:
    findings = [f for arg in (argv or sys.argv[1:]) for f in check(Path(arg))]
    for finding in findings:
        print(finding)
    print(f"{len(findings)} finding(s)")
    return 1 if findings else 0


if __name__ == "__main__":
    raise SystemExit(main())
