#!/usr/bin/env python3
"""Regenerate crates/data/embedded/optdigits.u8.gz from the scikit-learn wheel.

The UCI optdigits test set (1,797 samples of 8x8 pixels valued 0..16, 10 classes;
CC BY 4.0, Alpaydin & Kaynak) ships inside scikit-learn as
`sklearn/datasets/data/digits.csv.gz` (64 integer features then the label per row).

We store it as raw bytes, gzip -9: each sample is 65 bytes, 64 pixels (0..16) then the
label (0..9), samples back to back (no header: the count follows from the length).
This script downloads the wheel through pip (`pip download --no-deps`), extracts that
one member, writes the file and prints its SHA-256 (pinned in crates/data/src/optdigits.rs).

Usage: python3 scripts/fetch-optdigits.py [--version 1.9.1] [--out PATH]
"""
import argparse
import csv
import glob
import gzip
import hashlib
import io
import os
import subprocess
import sys
import tempfile
import zipfile

MEMBER = "sklearn/datasets/data/digits.csv.gz"


def main() -> int:
    here = os.path.dirname(os.path.abspath(__file__))
    default_out = os.path.join(here, "..", "crates", "data", "embedded", "optdigits.u8.gz")
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--version", default="1.9.1", help="scikit-learn version to download")
    ap.add_argument("--out", default=default_out, help="output file")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        cmd = [
            # Any wheel of this version holds the same data member; let pip pick the
            # one for this interpreter.
            sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
            f"scikit-learn=={args.version}", "-d", tmp,
        ]
        print("+", " ".join(cmd), file=sys.stderr)
        subprocess.run(cmd, check=True)
        wheels = glob.glob(os.path.join(tmp, "scikit_learn-*.whl"))
        if len(wheels) != 1:
            print(f"expected one wheel, found {wheels}", file=sys.stderr)
            return 1
        with zipfile.ZipFile(wheels[0]) as z:
            raw = gzip.decompress(z.read(MEMBER)).decode("ascii")

    out = bytearray()
    rows = 0
    for line_no, row in enumerate(csv.reader(io.StringIO(raw)), start=1):
        if not row:
            continue
        values = [int(float(v)) for v in row]
        if len(values) != 65:
            print(f"{MEMBER}:{line_no}: {len(values)} columns, expected 65", file=sys.stderr)
            return 1
        if not all(0 <= v <= 16 for v in values[:64]) or not 0 <= values[64] <= 9:
            print(f"{MEMBER}:{line_no}: value out of range", file=sys.stderr)
            return 1
        out.extend(values)
        rows += 1
    if rows != 1797:
        print(f"{rows} rows, expected 1797", file=sys.stderr)
        return 1

    # mtime=0 so that the output is byte-reproducible.
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", compresslevel=9, fileobj=buf, mtime=0) as g:
        g.write(bytes(out))
    data = buf.getvalue()
    with open(args.out, "wb") as f:
        f.write(data)
    print(f"wrote {args.out}: {rows} samples, {len(data)} bytes")
    print(f"sha256 {hashlib.sha256(data).hexdigest()}  optdigits.u8.gz")
    print(f"sha256 {hashlib.sha256(bytes(out)).hexdigest()}  (decompressed)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
