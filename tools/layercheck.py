#!/usr/bin/env python3
"""Keep src/ to the layer map in docs/architecture.md.

usage: python3 tools/layercheck.py [--root DIR] [--assume FILE:NAME ...] [--list]

The map's table gives every source file of src/ a layer (0 is the bottom). This reads the
sources themselves: which file defines each function, which file names a function another
file defines (a call, or its address taken), and fails on
  - a file that names a function of a higher layer (an upward call),
  - a circle of files naming each other's functions, in one layer or across layers,
  - a file of src/ missing from the map, or a file in the map missing from src/,
  - a function used as a value (a callback: its address handed to another part or to libuv)
    that the map's "Interfaces" section does not name,
  - a file over MAX_FILE lines or a function over MAX_FUNC lines, unless the map's
    "Exceptions" section names it with the reason.
--assume FILE:NAME adds a call of NAME from FILE as if the source had it (the check's own
test: a deliberate upward call must fail). --list prints the calls between files.
Prints one line per finding and exits 1 if there is any.
"""
import os
import re
import sys

MAX_FILE = 700
MAX_FUNC = 100

IDENT = re.compile(r"[A-Za-z_]\w*")
KEYWORDS = {"if", "for", "while", "switch", "return", "sizeof", "do", "else", "case",
            "__attribute__", "__typeof__", "typeof", "_Alignof", "defined"}


def strip(text):
    """The C text with comments, string and character literals and preprocessor lines blanked
    (newlines kept, so line numbers hold)."""
    out, i, n = [], 0, len(text)
    at_line_start = True
    while i < n:
        c = text[i]
        if at_line_start and c == "#":
            # A directive, with its continuation lines.
            while i < n and text[i] != "\n":
                if text[i] == "\\" and i + 1 < n and text[i + 1] == "\n":
                    out.append("\n")
                    i += 2
                    continue
                i += 1
            continue
        if c == "/" and text.startswith("/*", i):
            end = text.find("*/", i + 2)
            end = n if end < 0 else end + 2
            out.append("".join("\n" if ch == "\n" else " " for ch in text[i:end]))
            i = end
            continue
        if c == "/" and text.startswith("//", i):
            while i < n and text[i] != "\n":
                i += 1
            continue
        if c in "\"'":
            q, j = c, i + 1
            while j < n and text[j] != q:
                j += 2 if text[j] == "\\" else 1
            out.append(q + " " * 0 + q)
            i = j + 1
            at_line_start = False
            continue
        out.append(c)
        if c == "\n":
            at_line_start = True
        elif not c.isspace():
            at_line_start = False
        i += 1
    return "".join(out)


def functions(code):
    """Function definitions at file scope: (name, first line, last line, body start, body end)
    with 1-based lines, body offsets into code."""
    found, depth, i, n = [], 0, 0, len(code)
    while i < n:
        c = code[i]
        if c == "{":
            if depth == 0:
                # Look back for `name ( ... )` right before the brace (attributes aside).
                j = i - 1
                while j >= 0 and code[j].isspace():
                    j -= 1
                name = None
                while j >= 0 and code[j] == ")":
                    k, d = j, 0
                    while k >= 0:
                        if code[k] == ")":
                            d += 1
                        elif code[k] == "(":
                            d -= 1
                            if d == 0:
                                break
                        k -= 1
                    m = k - 1
                    while m >= 0 and code[m].isspace():
                        m -= 1
                    e = m + 1
                    while m >= 0 and (code[m].isalnum() or code[m] == "_"):
                        m -= 1
                    ident = code[m + 1:e]
                    if ident in ("__attribute__", ""):
                        j = m
                        while j >= 0 and code[j].isspace():
                            j -= 1
                        continue
                    # `=` before means an initializer, not a function.
                    p = m
                    while p >= 0 and code[p].isspace():
                        p -= 1
                    if ident not in KEYWORDS and (p < 0 or code[p] != "="):
                        name = ident
                    break
                if name is not None:
                    d, k = 0, i
                    while k < n:
                        if code[k] == "{":
                            d += 1
                        elif code[k] == "}":
                            d -= 1
                            if d == 0:
                                break
                        k += 1
                    first = code.count("\n", 0, i) + 1
                    last = code.count("\n", 0, k) + 1
                    # The declaration runs back to the end of the previous one.
                    b = max(code.rfind(";", 0, m), code.rfind("}", 0, m))
                    static = re.search(r"\bstatic\b", code[b + 1:m + 1]) is not None
                    found.append((name, first, last, i, k, static))
                    i = k + 1
                    continue
            depth += 1
        elif c == "}":
            depth -= 1
        i += 1
    return found


def member(code, m):
    """Is the identifier at match m not a function's name here: a struct member (after . or
    ->), a label or a goto's, or a name being declared (after a type: `int x`, `T *x`)?"""
    before = code[max(0, m.start() - 80):m.start()].rstrip()
    after = code[m.end():m.end() + 3].lstrip()
    if before.endswith(".") or before.endswith("->") or (after.startswith(":") and
                                                         not after.startswith("::")):
        return True
    decl = before.rstrip("*").rstrip()
    word = re.search(r"(\w+)$", decl)
    return word is not None and word.group(1) not in ("return", "case", "sizeof", "else", "do")


def globals_of(code):
    """Variables this file defines at file scope with external linkage (not static, not
    extern declarations, not typedefs): a file that names one depends on this file."""
    found, depth, start, init = [], 0, 0, False
    for i, c in enumerate(code):
        if c == "{":
            if depth == 0:
                init = "=" in code[start:i]  # an initializer, not a body
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0 and not init:
                start = i + 1
        elif c == ";" and depth == 0:
            init = False
            stmt = code[start:i]
            start = i + 1
            head = stmt.split("=", 1)[0]
            if re.search(r"\b(static|extern|typedef)\b", head) or "(" in head:
                continue
            m = re.search(r"(\w+)\s*(?:\[[^]]*\])?\s*$", head)
            if m and m.group(1) not in KEYWORDS:
                found.append(m.group(1))
    return found


def read_map(path):
    """Layers by file, the callbacks the Interfaces section names, and the Exceptions."""
    layers, interfaces, exceptions, section = {}, set(), {}, ""
    row = re.compile(r"^\|\s*(\d+)\s*\|\s*`([\w.]+\.c)`")
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.startswith("## "):
                section = line[3:].strip().lower()
                continue
            m = row.match(line)
            if m:
                layers[m.group(2)] = int(m.group(1))
                continue
            if section.startswith("interfaces"):
                for name in re.findall(r"`(\w+)\(?\)?`", line):
                    interfaces.add(name)
            if section.startswith("exceptions"):
                m = re.match(r"^- `([\w.]+(?:\(\))?)`(?: in `([\w.]+\.c)`)?\s*:\s*(.+)", line)
                if m:
                    exceptions[m.group(1).rstrip("()")] = m.group(3).strip()
    return layers, interfaces, exceptions


def scc(nodes, edges):
    """Strongly connected components of more than one node (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(nodes):
        if v not in index:
            visit(v)
    return out


def main(argv):
    root = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    assume, listing, args = [], False, list(argv)
    while args:
        a = args.pop(0)
        if a == "--root":
            root = args.pop(0)
        elif a == "--assume":
            assume.append(args.pop(0).split(":", 1))
        elif a == "--list":
            listing = True
        else:
            print(__doc__)
            return 2
    src = os.path.join(root, "src")
    mapfile = os.path.join(root, "docs", "architecture.md")
    problems = []
    if not os.path.exists(mapfile):
        print(f"{mapfile}: no layer map")
        return 1
    layers, interfaces, exceptions = read_map(mapfile)
    files = sorted(f for f in os.listdir(src) if f.endswith(".c"))
    for f in files:
        if f not in layers:
            problems.append(f"src/{f}: not in the layer map (docs/architecture.md)")
    for f in sorted(layers):
        if f not in files:
            problems.append(f"docs/architecture.md: maps {f}, which src/ does not have")

    code, defs, defined_in, static_in, variables = {}, {}, {}, {}, set()
    for f in files:
        with open(os.path.join(src, f), encoding="utf-8") as fh:
            text = fh.read()
        code[f] = strip(text)
        defs[f] = functions(code[f])
        for name, *_, static in defs[f]:
            if static:
                static_in.setdefault(f, set()).add(name)
            else:
                defined_in.setdefault(name, set()).add(f)
        for name in globals_of(code[f]):
            defined_in.setdefault(name, set()).add(f)
            variables.add(name)
        nlines = text.count("\n")
        if nlines > MAX_FILE and f not in exceptions:
            problems.append(f"src/{f}: {nlines} lines, over {MAX_FILE} (split it by concept, or "
                            f"name it under Exceptions with the reason)")
        for name, first, last, *_ in defs[f]:
            if last - first + 1 > MAX_FUNC and name not in exceptions:
                problems.append(f"src/{f}:{first}: {name}() is {last - first + 1} lines, over "
                                f"{MAX_FUNC}")

    # Which file names which other file's functions (those with external linkage).
    edges, why = {}, {}
    for f in files:
        own = {d[0] for d in defs[f]} | set(globals_of(code[f]))
        for m in IDENT.finditer(code[f]):
            name = m.group(0)
            where = defined_in.get(name)
            if not where or name in own or len(where) != 1 or member(code[f], m):
                continue
            (g,) = where
            edges.setdefault(f, set()).add(g)
            why.setdefault((f, g), set()).add(name)
    for f, name in assume:
        where = defined_in.get(name, set())
        if len(where) != 1:
            print(f"--assume {f}:{name}: no single file defines {name}")
            return 2
        (g,) = where
        edges.setdefault(f, set()).add(g)
        why.setdefault((f, g), set()).add(name)

    for f in sorted(edges):
        for g in sorted(edges[f]):
            if f in layers and g in layers and layers[g] > layers[f]:
                names = ", ".join(sorted(why[(f, g)]))
                problems.append(f"src/{f} (layer {layers[f]}) calls up into src/{g} (layer "
                                f"{layers[g]}): {names}")
    for comp in scc(files, edges):
        links = []
        for f in comp:
            for g in sorted(edges.get(f, ())):
                if g in comp:
                    links.append(f"{f} -> {g} ({', '.join(sorted(why[(f, g)]))})")
        problems.append("circle of calls between " + ", ".join(comp) + ": " + "; ".join(links))

    # Functions used as values (callbacks, tables of functions): a function this file can
    # see, named anywhere but right before "(" (a call, its definition or a prototype).
    for f in files:
        visible, told = static_in.get(f, set()), set()
        for m in IDENT.finditer(code[f]):
            name = m.group(0)
            if name in interfaces or name in told or name in variables or (
                    name not in visible and name not in defined_in):
                continue
            if code[f][m.end():m.end() + 80].lstrip().startswith("(") or member(code[f], m):
                continue
            told.add(name)
            line = code[f].count("\n", 0, m.start()) + 1
            problems.append(f"src/{f}:{line}: {name} is used as a value (a callback) but the "
                            f"map's Interfaces section does not name it")

    if listing:
        for f in sorted(edges):
            for g in sorted(edges[f]):
                print(f"{f} [{layers.get(f, '?')}] -> {g} [{layers.get(g, '?')}]: "
                      f"{', '.join(sorted(why[(f, g)]))}")
    for p in problems:
        print(p)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
