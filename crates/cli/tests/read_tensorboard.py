"""Reads a fedpace `tensorboard/` directory with TensorBoard's own code and prints JSON.

Used by tests/outputs.rs (`tensorboard_reads_back_the_event_files`). It checks, with
TensorBoard's implementations, that every TFRecord's two masked CRC32C values are right
and that each Event re-encodes (protobuf's SerializeToString) to exactly the bytes
fedpace wrote; then it reads scalars and histograms through EventAccumulator, the
reader behind TensorBoard's dashboards.

Usage: python read_tensorboard.py RUN/tensorboard
"""
import glob
import json
import os
import struct
import sys

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.compat.proto import event_pb2
from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c

logdir = sys.argv[1]
files = glob.glob(os.path.join(logdir, "events.out.tfevents.*"))
assert len(files) == 1, files
data = open(files[0], "rb").read()
pos, records, reencoded = 0, 0, 0
while pos < len(data):
    header = data[pos : pos + 8]
    (length,) = struct.unpack("<Q", header)
    (length_crc,) = struct.unpack("<I", data[pos + 8 : pos + 12])
    assert length_crc == masked_crc32c(header), f"record {records}: length CRC"
    body = data[pos + 12 : pos + 12 + length]
    (body_crc,) = struct.unpack("<I", data[pos + 12 + length : pos + 16 + length])
    assert body_crc == masked_crc32c(body), f"record {records}: data CRC"
    event = event_pb2.Event.FromString(body)
    if records == 0:
        assert event.file_version == "brain.Event:2", event
    reencoded += event.SerializeToString() == body
    records += 1
    pos += 16 + length
assert pos == len(data), "trailing bytes"
assert reencoded == records, f"{records - reencoded} events re-encode differently"

acc = EventAccumulator(logdir, size_guidance={"scalars": 0, "histograms": 0})
acc.Reload()
tags = acc.Tags()
out = {
    "records": records,
    "scalars": {t: [[e.step, e.value] for e in acc.Scalars(t)] for t in tags["scalars"]},
    "histograms": {
        t: [
            {
                "step": e.step,
                "min": e.histogram_value.min,
                "max": e.histogram_value.max,
                "num": e.histogram_value.num,
                "bucket_total": sum(e.histogram_value.bucket),
            }
            for e in acc.Histograms(t)
        ]
        for t in tags["histograms"]
    },
}
print(json.dumps(out))
