#!/usr/bin/env python3
"""Fails when the docs slip back into a lab notebook.

The README, docs/, the other Markdown pages and the comments of the source
(Rust, shell, Python, proto, TOML, YAML, the Dockerfile) describe what the
project is, not how it got there. This check flags, outside CHANGELOG.md and
bench/results/ (where history and dated measurements belong):

- a date (YYYY-MM-DD) in prose; a Markdown page may carry dates only on a
  caption line that starts with "Measured" (the one line under a table that
  gives its measuring date, machine and command), and code comments never;
- narrative of measuring runs: "this host", "today", "this morning",
  "the third session", "measured on ... run" and the like;
- relative dates ("yesterday", "last week", "until recently");
- issue and defect numbers in code comments ("issue 12", "defect 2").

"Session" stays an API word: an inference session, `Session::run` and
"this session" in code comments (the inference session a server runs) pass;
in Markdown, text in backticks is not checked (error messages quote it).

Usage: python3 scripts/check-docs.py [--self-test] [ROOT]
"""

import os
import re
import sys
import tempfile

DATE = re.compile(r"\b20\d\d-[01]\d-[0-3]\d\b")
# Narrative of how a figure was measured, and relative dates.
NARRATIVE = [
    re.compile(p, re.IGNORECASE)
    for p in [
        r"\btoday('s)?\b",
        r"\byesterday\b",
        r"\btomorrow\b",
        r"\btonight\b",
        r"\bthis (morning|afternoon|evening|week|month|year)\b",
        r"\blast (night|week|month|year)\b",
        r"\buntil recently\b",
        r"\b(this|that|the same|a slower|a faster|an earlier|earlier|slower|faster|quiet|previous) hosts?\b",
        r"\b(first|second|third|fourth|fifth|previous|earlier|later|that) session\b",
        r"\bsession's (host|machine|code|runs?|figures?)\b",
        r"\bmeasured on [^.;:]{0,60}\brun\b",
        r"\bthis session\b",
    ]
]
# "this session" is an inference session in code comments; only Markdown
# prose uses it for a measuring run.
MARKDOWN_ONLY = {r"\bthis session\b"}
ISSUE = re.compile(r"\b(issue|defect)s? #?\d+", re.IGNORECASE)
SUPERSEDED = re.compile(r"\bSuperseded\b")

SKIP_DIRS = {".git", "target", "corpus", "node_modules", "__pycache__", ".venv"}
SOURCE_EXT = {".rs", ".sh", ".py", ".proto", ".toml", ".yml", ".yaml"}


def allowed_file(rel):
    """History and dated measurements live in these files."""
    return (
        rel == "CHANGELOG.md"
        or rel.startswith("bench/results/")
        # this check's own samples of what it flags
        or rel == "scripts/check-docs.py"
    )


def markdown_lines(text):
    """(line number, prose) of a Markdown page: code blocks and inline code
    removed (commands and quoted messages are not prose)."""
    out = []
    fenced = False
    for i, line in enumerate(text.splitlines(), 1):
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        if fenced:
            continue
        out.append((i, re.sub(r"`[^`]*`", "", line)))
    return out


def comment_lines(path, text):
    """(line number, comment text) of a source file."""
    out = []
    ext = os.path.splitext(path)[1]
    if ext in {".rs", ".proto"}:
        # A comment starts at `//` not inside a URL (`://`). Strings holding
        # `//` are rare enough in this code base; a false hit there shows.
        marker = re.compile(r"(?<![:\"'])//")
    else:
        marker = re.compile(r"(?:^|\s)#(?!!)")
    for i, line in enumerate(text.splitlines(), 1):
        m = marker.search(line)
        if m:
            out.append((i, line[m.end():]))
    return out


def check_lines(rel, lines, markdown):
    problems = []
    for n, text in lines:
        for d in DATE.finditer(text):
            if markdown and re.match(r"\s*[*_]*Measured\b", text):
                continue
            problems.append(f"{rel}:{n}: a date in prose ({d.group(0)}): history goes to CHANGELOG.md")
        for pat in NARRATIVE:
            if not markdown and pat.pattern in MARKDOWN_ONLY:
                continue
            m = pat.search(text)
            if m:
                problems.append(f"{rel}:{n}: narrative of a measuring run or a relative date ({m.group(0)!r})")
        if not markdown and ISSUE.search(text):
            problems.append(f"{rel}:{n}: an issue number in a comment ({ISSUE.search(text).group(0)!r})")
        if SUPERSEDED.search(text):
            problems.append(f"{rel}:{n}: history ('Superseded') outside CHANGELOG.md")
    return problems


def check_tree(root):
    problems = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS)
        for name in sorted(filenames):
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, root).replace(os.sep, "/")
            if allowed_file(rel):
                continue
            ext = os.path.splitext(name)[1]
            if ext == ".md":
                kind = "md"
            elif ext in SOURCE_EXT or name == "Dockerfile":
                kind = "src"
            else:
                continue
            try:
                with open(path, encoding="utf-8") as f:
                    text = f.read()
            except (UnicodeDecodeError, OSError):
                continue
            if kind == "md":
                problems += check_lines(rel, markdown_lines(text), True)
            else:
                problems += check_lines(rel, comment_lines(path, text), False)
    return problems


def self_test():
    """The check must fail on notebook-style samples and pass on present-tense
    ones; otherwise it could pass silently."""
    bad = {
        "README.md": "Measured on 2026-12-04 in the third session, this host ran it 1.5x slower.\n",
        "docs/DESIGN.md": "## Decisions (2026-11-24)\n\nToday the GeLU takes 2 rounds.\n",
        "server/README.md": "The benchmark was measured on a quiet machine in the second run.\n",
        "a/src/lib.rs": "/// Rounds 3 (4 before 2026-12-04's third session).\nfn f() {}\n",
        "b/src/lib.rs": "// see issue 11's byte budget\nfn g() {}\n",
        "run.sh": "echo hi  # measured today on this host\n",
    }
    good = {
        "README.md": (
            "| a | b |\n|---|---|\n| 1 | 2 |\n\n"
            "Measured 2026-12-07, 2-core x86-64, 24 GB: `bash bench/run.sh`.\n\n"
            "Each inference session runs on its own stream (`Session::run`).\n"
            "Errors quote `party 1 left during this session`.\n"
        ),
        "CHANGELOG.md": "## 2026-12-04\n\n- Today the third session on this host.\n",
        "bench/results/README.md": "- measured: 2026-12-01; this host\n",
        "a/src/lib.rs": (
            "/// A failure of the peer's stream aborts this session.\n"
            "/// See <https://example.org//x>.\n"
            "fn f() { let s = \"2026-12-01\"; }\n"
        ),
        "run.sh": "#!/usr/bin/env bash\necho '#1'  # one inference session per image\n",
    }
    ok = True
    with tempfile.TemporaryDirectory() as d:
        for rel, text in bad.items():
            path = os.path.join(d, "bad", rel)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w", encoding="utf-8") as f:
                f.write(text)
        for rel, text in good.items():
            path = os.path.join(d, "good", rel)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w", encoding="utf-8") as f:
                f.write(text)
        found = check_tree(os.path.join(d, "bad"))
        flagged = {p.split(":")[0] for p in found}
        for rel in bad:
            if rel not in flagged:
                print(f"check-docs self-test: the bad sample {rel} was not flagged", file=sys.stderr)
                ok = False
        extra = check_tree(os.path.join(d, "good"))
        for p in extra:
            print(f"check-docs self-test: a good sample was flagged: {p}", file=sys.stderr)
            ok = False
    if ok:
        print(f"check-docs self-test: {len(found)} problems found in {len(bad)} bad samples, none in the good ones")
    return ok


def main(argv):
    args = [a for a in argv if a != "--self-test"]
    if "--self-test" in argv:
        return 0 if self_test() else 1
    root = args[0] if args else os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
    problems = check_tree(root)
    for p in problems:
        print(p, file=sys.stderr)
    if problems:
        print(f"check-docs: {len(problems)} problems: docs and comments describe the present", file=sys.stderr)
        return 1
    print("check-docs: README, docs and comments describe the present")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
