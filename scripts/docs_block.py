"""Replace a generated block of a Markdown file: the lines between
`<!-- NAME:begin -->` and `<!-- NAME:end -->` (both kept). Used by the scripts that
write measured tables into docs/ (bench_compare.py, peers/epoch_table.py)."""

import sys


def write_block(path, name, text):
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    with open(path) as f:
        doc = f.read()
    if begin not in doc or end not in doc:
        sys.exit(f"{path}: no '{begin}' … '{end}' block to replace (add the two lines where the table goes)")
    head, rest = doc.split(begin, 1)
    _, tail = rest.split(end, 1)
    with open(path, "w") as f:
        f.write(head + begin + "\n" + text.rstrip("\n") + "\n" + end + tail)
