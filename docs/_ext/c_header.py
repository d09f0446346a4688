"""Sphinx directive ``c-header``: the public C header, section by section.

``csrc/etakit.h`` is the C API's documentation (each declaration carries its
comment).  Rather than copy it into a page that would drift, this directive
reads the header at build time and renders it: a table of every function with
the first sentence of its comment, then each ``/* ---- title ---- */``
section of the header verbatim, under that title.  The sections tile the file
(checked here), so nothing in the header is left off the page.
"""
import os
import re

from docutils import nodes
from docutils.statemachine import StringList
from sphinx.util.docutils import SphinxDirective
from sphinx.util.nodes import nested_parse_with_titles

SECTION = re.compile(r"^/\* ---- (.*?) -+ \*/$")
FUNCTION = re.compile(r"^(?:const\s+)?\w[\w\s\*]*?\b(etk_\w+)\(")


def split_sections(text):
    """[(title, lines)] of the header: a preamble, then one entry per section marker."""
    sections = [("Preamble", [])]
    for line in text.splitlines():
        m = SECTION.match(line)
        if m:
            sections.append((m.group(1)[0].upper() + m.group(1)[1:], []))
        sections[-1][1].append(line)
    return sections


def functions(lines):
    """[(name, first sentence of the comment just above)] of the functions declared in lines."""
    out, comment = [], []
    in_comment = False
    for line in lines:
        s = line.strip()
        if s.startswith("/*"):
            comment, in_comment = [], True
        if in_comment:
            comment.append(s.lstrip("/*").rstrip("*/").strip())
            if s.endswith("*/"):
                in_comment = False
            continue
        m = FUNCTION.match(line)
        if m:
            words = " ".join(w for w in comment if w)
            first = re.split(r"(?<=[.:;])\s", words, maxsplit=1)[0] if words else ""
            out.append((m.group(1), re.sub(r"([*`|_\\])", r"\\\1", first)))
        elif s and not s.startswith("#"):
            comment = [] if not s.endswith(",") else comment
    return out


class CHeader(SphinxDirective):
    required_arguments = 1

    def run(self):
        path = os.path.normpath(os.path.join(os.path.dirname(self.env.doc2path(self.env.docname)),
                                             self.arguments[0]))
        self.env.note_dependency(path)
        text = open(path, encoding="utf-8").read()
        sections = split_sections(text)
        if "\n".join("\n".join(lines) for _, lines in sections) != text.rstrip("\n"):
            raise self.error(f"{path}: the sections do not tile the header")
        rst = ["Functions", "---------", "",
               ".. list-table::", "   :header-rows: 1", "   :widths: 30 70", "",
               "   * - function", "     - what it does (from its comment in the header)"]
        for title, lines in sections:
            for name, first in functions(lines):
                rst += [f"   * - ``{name}``", f"     - {first or '(see the header)'}"]
        rst.append("")
        for title, lines in sections:
            rst += [title, "-" * len(title), "", ".. code-block:: c", ""]
            rst += ["   " + line if line.strip() else "" for line in lines]
            rst.append("")
        node = nodes.section()
        node.document = self.state.document
        nested_parse_with_titles(self.state, StringList(rst, source=path), node)
        return node.children


def setup(app):
    app.add_directive("c-header", CHeader)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
