#!/usr/bin/env python3
"""Write the first N Fashion-MNIST test images/labels as standard gzip IDX files.

Usage:

    python3 tools/make_fashion_slice.py [--data /usr/share/datasets/fashion-mnist]
        [--out assets/fashion-mnist-test-slice] [--count 1000]

Writes <out>/t10k-images-idx3-ubyte.gz (magic 0x00000803, dims [N, 28, 28]) and
<out>/t10k-labels-idx1-ubyte.gz (magic 0x00000801, dims [N]): same layout as the originals with the
count set to N. gzip mtime is 0 so reruns give identical bytes.
"""

import argparse
import gzip
import os
import struct


def read_idx_raw(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    zero, dtype, ndim = struct.unpack(">HBB", data[:4])
    assert zero == 0 and dtype == 0x08, path
    dims = list(struct.unpack(">" + "I" * ndim, data[4:4 + 4 * ndim]))
    return data[:4], dims, data[4 + 4 * ndim:]


def write_idx(path, magic, dims, payload):
    header = magic + struct.pack(">" + "I" * len(dims), *dims)
    with open(path, "wb") as raw:
        with gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=9, mtime=0) as f:
            f.write(header + payload)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    ap.add_argument("--out", default="assets/fashion-mnist-test-slice")
    ap.add_argument("--count", type=int, default=1000)
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    n = args.count
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        magic, dims, payload = read_idx_raw(os.path.join(args.data, name))
        per_item = 1
        for d in dims[1:]:
            per_item *= d
        assert len(payload) == dims[0] * per_item and n <= dims[0]
        write_idx(os.path.join(args.out, name), magic, [n] + dims[1:], payload[:n * per_item])
        print(f"{name}: {dims} -> {[n] + dims[1:]}")


if __name__ == "__main__":
    main()
