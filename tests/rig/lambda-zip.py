#!/usr/bin/env python3
"""Packages a Lambda function for the provided.al2023 runtime: a zip holding one executable
file named `bootstrap` at its root (mode 0755), with a fixed timestamp so that the same binary
always gives the same zip, byte for byte.
    tests/rig/lambda-zip.py BINARY OUT.zip
"""
import sys
import zipfile


def main() -> int:
    if len(sys.argv) != 3:
        print("usage: lambda-zip.py BINARY OUT.zip", file=sys.stderr)
        return 2
    binary, out = sys.argv[1], sys.argv[2]
    with open(binary, "rb") as f:
        data = f.read()
    entry = zipfile.ZipInfo("bootstrap", date_time=(1980, 1, 1, 0, 0, 0))
    entry.create_system = 3  # Unix: the external attributes hold the file mode.
    entry.external_attr = (0o100755 & 0xFFFF) << 16  # a regular file, rwxr-xr-x
    entry.compress_type = zipfile.ZIP_DEFLATED
    with zipfile.ZipFile(out, "w") as z:
        z.writestr(entry, data, compresslevel=9)
    return 0


if __name__ == "__main__":
    sys.exit(main())
