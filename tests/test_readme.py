"""The README's examples run, and print what the README says they print.

A small runner, so that the README stays plain Markdown a reader copies from:

- ```python blocks run in order, in one namespace, in a fresh folder. A statement followed by
  lines of comments (``# ...`` on lines of their own) must print, or return as its repr, what
  those comments say; a comment ``# some.module.SomeError: message`` says the statement raises
  that, named as Python prints it. Comments at the end of a code line are explanation.
- Blocks of ``$ command`` lines (shell transcripts) run each command with bash in that folder
  (continuation lines end in a backslash); the lines under a command are its output
  (stdout and stderr), where a line ``...`` stands for any lines.

Text is compared with runs of spaces and line breaks alike (the README wraps long lines);
a number must equal the output's to the digits it shows (``0.10789...`` to those it shows
before the dots), and in transcripts, which train networks through the BLAS of whatever
machine runs them, within 0.2% as well. ``...`` elsewhere stands for any text.
"""

from __future__ import annotations

import ast
import contextlib
import io
import os
import re
import subprocess
import sys
import traceback
from decimal import Decimal
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
NUMBER = r"[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?"
EXCEPTION = re.compile(r"^[A-Za-z_][\w.]*(?:Error|Exception|Interrupt): ")


# ---------------------------------------------------------------- reading the README
def blocks():
    """The README's runnable fenced blocks, in order: ("python" or "shell", first line number, text).

    A fence may be indented (a block inside a list item): its lines lose that indent."""
    found, lines = [], README.read_text(encoding="utf-8").split("\n")
    i = 0
    while i < len(lines):
        fence = re.match(r"( *)```(.*)", lines[i])
        if fence:
            indent, info, start = len(fence[1]), fence[2].strip(), i + 1
            end = next(j for j in range(start, len(lines)) if lines[j].strip().startswith("```"))
            body = "\n".join(line[indent:] for line in lines[start:end])
            kind = "python" if info == "python" else "shell" if body.startswith("$ ") else None
            if kind is not None:
                found.append((kind, start + 1, body))
            i = end
        i += 1
    return found


# ---------------------------------------------------------------- comparing text
def _pattern(expected):
    """A regex of expected text, and the numbers it shows: [(text, truncated)] in order."""
    parts, numbers, at = [], [], 0
    for match in re.finditer(rf"({NUMBER})(\.\.\.)?|\.\.\.|\s+", expected):
        parts.append(re.escape(expected[at:match.start()]))
        if match[1] is not None:
            parts.append(f"({NUMBER})" + (r"\d*" if match[2] else ""))
            numbers.append((match[1], bool(match[2])))
        elif match[0] == "...":
            parts.append(".*?")
        else:
            parts.append(r"\s*")
        at = match.end()
    parts.append(re.escape(expected[at:]))
    return re.compile("".join(parts), re.S), numbers


def _same_number(shown, truncated, actual, rel):
    a, e = Decimal(actual), Decimal(shown)
    unit = Decimal(1).scaleb(e.as_tuple().exponent)  # the last digit shown
    close = abs(a - e) < unit if truncated else abs(a - e) <= unit / 2
    return close or (rel > 0 and abs(a - e) <= Decimal(str(rel)) * abs(e))


def matches(expected, actual, rel=0.0):
    """Whether ``actual`` reads as ``expected`` (see the module's docstring)."""
    pattern, numbers = _pattern(" ".join(expected.split()))
    found = pattern.fullmatch(" ".join(actual.split()))
    return found is not None and all(_same_number(shown, truncated, value, rel)
                                     for (shown, truncated), value in zip(numbers, found.groups()))


def test_the_comparison_itself():
    assert matches("0.10789...", "0.1078905") and not matches("0.10789...", "0.1079905")
    assert matches("[[2.00001444]], 0.99997000...", "[[2.000014441532736]], 0.9999700084331334")
    assert matches("loss 1.74e-10 ... done", "loss 1.7434e-10 and more text done")
    assert not matches("loss 1.74e-10", "loss 1.76e-10") and not matches("accuracy 0.97", "accuracy 0.95")
    assert matches("epoch  1/60  loss 1.4446", "epoch 1/60 loss 1.44461") and not matches("epoch 32", "epoch 33")
    assert matches("accuracy 0.9777", "accuracy 0.9780", rel=2e-3) and not matches("epoch 32", "epoch 33", rel=2e-3)


# ---------------------------------------------------------------- the Python blocks
def _statements(source):
    """(code, expected output or None) for each top-level statement of a block."""
    lines = source.split("\n")
    tree = ast.parse(source)
    out = []
    for node in tree.body:
        code = "\n".join(lines[node.lineno - 1:node.end_lineno])
        expected, j = [], node.end_lineno
        while j < len(lines) and lines[j].startswith("#"):
            expected.append(lines[j][1:].strip())
            j += 1
        out.append((node, code, " ".join(expected) or None))
    return out


def _run_statement(node, code, namespace):
    """Run one statement: (printed text, value of an expression or None)."""
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        if isinstance(node, ast.Expr):
            value = eval(compile(ast.Expression(node.value), "README.md", "eval"), namespace)
        else:
            exec(compile(ast.Module([node], []), "README.md", "exec"), namespace)
            value = None
    return printed.getvalue(), value


def _python_block(line, source, namespace):
    """Run one ```python block; returns how many statements ran."""
    ran = 0
    for node, code, expected in _statements(source):
        where = f"README.md line {line + node.lineno - 1}: {code.splitlines()[0]}"
        if expected is not None and EXCEPTION.match(expected):
            with pytest.raises(Exception) as raised:
                _run_statement(node, code, namespace)
            said = "".join(traceback.format_exception_only(raised.type, raised.value)).strip()
            assert matches(expected, said), f"{where}\n  README: {expected}\n  Python: {said}"
        else:
            printed, value = _run_statement(node, code, namespace)
            if expected is not None:
                shown = printed if printed else repr(value)
                assert matches(expected, shown), f"{where}\n  README: {expected}\n  actual: {shown}"
        ran += 1
    return ran


# ---------------------------------------------------------------- the shell transcripts
def _commands(body):
    """(command, expected output) for each ``$`` line of a transcript."""
    out, lines, i = [], body.split("\n"), 0
    while i < len(lines):
        command = lines[i][2:]
        while command.endswith("\\"):
            i += 1
            command = command[:-1] + " " + lines[i].strip()
        i += 1
        expected = []
        while i < len(lines) and not lines[i].startswith("$ "):
            expected.append(lines[i])
            i += 1
        out.append((command, "\n".join(expected)))
    return out


def _shell_block(line, body, folder):
    """Run one transcript's commands; returns how many ran."""
    # The clone's root on PYTHONPATH: the README runs its scripts (python -m bench....) from there.
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
               PYTHONUNBUFFERED="1", PYTHONPATH=str(ROOT))
    commands = _commands(body)
    for command, expected in commands:
        done = subprocess.run(["bash", "-c", command], cwd=folder, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, timeout=300)
        assert matches(expected, done.stdout, rel=2e-3), \
            f"README.md line {line}: $ {command}\n  README:\n{expected}\n  actual:\n{done.stdout}"
    return len(commands)


def test_readme_examples(tmp_path, monkeypatch):
    """Every example, in the README's order (later ones use the files and names of earlier ones)."""
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": "__readme__"}
    statements = commands = 0
    for kind, line, text in blocks():
        if kind == "python":
            statements += _python_block(line, text, namespace)
        else:
            commands += _shell_block(line, text, tmp_path)
    assert statements > 40 and commands >= 10
