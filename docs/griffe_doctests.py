"""Doctest sessions in docstrings as code blocks of the API reference.

The docstrings of keras-meta show examples as doctest sessions (`>>>` lines,
their `...` continuations and the expected output) at the left margin, where
Markdown would read them as nested block quotes. This griffe extension, named
in mkdocs.yml, puts each such session in a `pycon` code block and drops the
`# doctest:` directives, as mkdocstrings does in `Examples:` sections. A
paragraph that ends in `::` before an indented block (a literal block) ends in
`:` instead, the indented block being a code block in Markdown already.
"""

import re

import griffe

_DIRECTIVE = re.compile(r"\s*# doctest:.*$")
_FENCE = re.compile(r"^\s*(```|~~~)")


def fence_doctests(text):
    """`text` with each doctest session that starts at the left margin in a fenced code block."""
    lines = text.split("\n")
    fenced = []
    in_code = False
    i = 0
    while i < len(lines):
        line = lines[i]
        if _FENCE.match(line):
            in_code = not in_code
        if in_code or not (line == ">>>" or line.startswith(">>> ")):
            following = lines[i + 1:i + 3]
            literal = (not in_code and line.endswith("::") and len(following) == 2 and not following[0].strip()
                       and following[1].startswith(" "))
            fenced.append(line[:-1] if literal else line)
            i += 1
            continue
        if fenced and fenced[-1].strip():
            fenced.append("")
        fenced.append("```pycon")
        while i < len(lines) and lines[i].strip():
            fenced.append(_DIRECTIVE.sub("", lines[i]) if lines[i].startswith((">>>", "...")) else lines[i])
            i += 1
        fenced.append("```")
    return "\n".join(fenced)


class DoctestBlocks(griffe.Extension):
    """Fences the doctest sessions of every docstring griffe reads."""

    def on_instance(self, *, obj, **kwargs):
        if obj.docstring is not None:
            obj.docstring.value = fence_doctests(obj.docstring.value)
