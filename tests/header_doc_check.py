"""The public headers are the specification: keep every declaration documented.

usage: python3 header_doc_check.py HEADER...

For every public function (an hm_ prototype, not hm__) the comment right above it (or above
the group of declarations it belongs to, with no blank line between) must have, at the start
of a comment line:
  Threads:    always;
  Errors:     when it returns int;
  NULL:       when it takes a pointer;
  Ownership:  when it returns a pointer or a function, or takes a pointer to a pointer.
Every public type (typedef of hm_...), macro (#define HM_..., not HM__) and enumerator must
have a comment: above it (or above its group), on its line, or, for an enumerator, in its
enum's comment. Prints one line per finding and exits 1 if there is any.
"""
import re
import sys

FUNC = re.compile(r"^(?:HM_EXTERN\s+|static\s+inline\s+)(?P<ret>[\w\s\*]*?)\b(?P<name>hm_[a-z0-9_]+)\s*\(")
TYPE = re.compile(r"^typedef\s+(?:struct|enum)\s+(?P<name>hm_\w+)|^typedef\s+[^;]*?\(\*\s*(?P<fname>hm_\w+)\)")
MACRO = re.compile(r"^#define\s+(?P<name>HM_[A-Z0-9_]*)")
ENUMERATOR = re.compile(r"^\s+(?P<name>HM_[A-Z0-9_]+)\s*(?:=[^,]*)?,?\s*(?:/\*.*)?$")


def blocks(lines):
    """Which lines are inside (or end) a block comment, and where each comment starts."""
    inside, starts, start = [False] * len(lines), {}, None
    for i, line in enumerate(lines):
        if start is None and line.lstrip().startswith("/*"):
            start = i
        if start is not None:
            inside[i] = True
            if "*/" in line:
                starts[i] = start
                start = None
    return inside, starts


def decl_end(lines, i):
    j = i
    while j < len(lines) and not re.search(r"[;{]", lines[j]):
        j += 1
    return j


def comment_above(lines, inside, starts, i, group):
    """The comment right above line i, skipping lines of the same group (group(k) true)."""
    k = i - 1
    while k >= 0 and not inside[k] and group(k):
        k -= 1
    if k < 0 or not inside[k] or k not in starts:
        return None
    return "\n".join(lines[starts[k]:k + 1])


def has_line(comment, key):
    return re.search(r"^\s*(?:/\*|\*)?\s*" + key + r":", comment, re.M) is not None


def check(path):
    text = open(path, encoding="utf-8").read()
    lines = text.split("\n")
    inside, starts = blocks(lines)
    problems = []
    declared = set()
    spans = {}  # line -> start of the declaration it belongs to
    for i, line in enumerate(lines):
        m = FUNC.match(line)
        if m and not inside[i]:
            for k in range(i, decl_end(lines, i) + 1):
                spans[k] = i

    for i, line in enumerate(lines):
        if inside[i]:
            continue
        m = FUNC.match(line)
        if m and not m.group("name").startswith("hm__"):
            name, ret = m.group("name"), " ".join(m.group("ret").split())
            end = decl_end(lines, i)
            decl = " ".join(lines[i:end + 1])
            if name in declared:
                continue  # the definition of an inline function declared above
            declared.add(name)
            params = decl[decl.index("(", decl.index(name)) + 1:]
            params = params[:params.index(")")] if ")" in params else params
            where = "%s:%d: %s" % (path, i + 1, name)
            comment = comment_above(lines, inside, starts, i, lambda k: k in spans)
            if comment is None:
                problems.append(where + ": no comment above the declaration")
                continue
            want = ["Threads"]
            if ret == "int":
                want.append("Errors")
            if "*" in params:
                want.append("NULL")
            if "*" in ret or ret.endswith("hm_fn") or "**" in params:
                want.append("Ownership")
            for key in want:
                if not has_line(comment, key):
                    problems.append("%s: its comment has no \"%s:\" line" % (where, key))
            continue
        m = TYPE.match(line) or MACRO.match(line)
        if m:
            name = m.groupdict().get("name") or m.groupdict().get("fname")
            if name is None or name.startswith("hm__") or name.startswith("HM__"):
                continue
            if "/*" in line:
                continue
            # A group of #defines (with their continuation lines) or typedefs shares the
            # comment above.
            def in_group(k):
                return lines[k].startswith(("#define HM_", "typedef ", "#if", "#else", "#endif")) \
                    or lines[k - 1].rstrip().endswith("\\")
            if comment_above(lines, inside, starts, i, in_group) is None:
                problems.append("%s:%d: %s: no comment above it or on its line" % (path, i + 1, name))

    # Enumerators: a comment on the line, or named in the enum's comment.
    for m in re.finditer(r"typedef enum (hm_\w+) \{(.*?)\}", text, re.S):
        start = text[:m.start()].count("\n")
        comment = comment_above(lines, inside, starts, start, lambda k: False) or ""
        for off, line in enumerate(m.group(2).split("\n")):
            e = ENUMERATOR.match(line)
            if e and "/*" not in line and e.group(1) not in comment:
                problems.append("%s:%d: %s: enumerator without a comment" % (path, start + off + 1, e.group(1)))
    return problems


def main(argv):
    if len(argv) < 2:
        print(__doc__)
        return 2
    problems = []
    for path in argv[1:]:
        problems += check(path)
    for p in problems:
        print(p)
    if problems:
        print("%d undocumented declaration(s): see the layout at the top of include/hotmod.h" % len(problems))
        return 1
    print("every public declaration is documented")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
