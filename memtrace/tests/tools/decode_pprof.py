#!/usr/bin/env python3
"""Decodes a gzipped pprof profile with the Python protobuf package (an independent decoder of
memtrace's output) and prints what the tests compare, as JSON:
  {"sample_types": [[type, unit], ...], "default_sample_type": name,
   "samples": [{"values": [...], "labels": {key: str-or-num},
                "locations": [{"address": n, "mapping": filename-or-null,
                               "lines": [{"function": name, "file": name, "line": n}]}]}]}
Usage: decode_pprof.py PROFILE_PB2_DIR PROFILE.pb.gz
"""
import gzip
import json
import sys

sys.path.insert(0, sys.argv[1])
import profile_pb2  # noqa: E402  (compiled by protoc into the directory given)

profile = profile_pb2.Profile()
with gzip.open(sys.argv[2], "rb") as compressed:
    profile.ParseFromString(compressed.read())

strings = profile.string_table
assert strings[0] == "", "string_table[0] must be empty"
functions = {function.id: function for function in profile.function}
mappings = {mapping.id: mapping for mapping in profile.mapping}
locations = {location.id: location for location in profile.location}


def location(location_id):
    found = locations[location_id]
    mapping = mappings.get(found.mapping_id)
    return {
        "address": found.address,
        "mapping": strings[mapping.filename] if mapping else None,
        "lines": [
            {
                "function": strings[functions[line.function_id].name],
                "file": strings[functions[line.function_id].filename],
                "line": line.line,
            }
            for line in found.line
        ],
    }


print(
    json.dumps(
        {
            "sample_types": [[strings[t.type], strings[t.unit]] for t in profile.sample_type],
            "default_sample_type": strings[profile.default_sample_type],
            "samples": [
                {
                    "values": list(sample.value),
                    "labels": {
                        strings[label.key]: (strings[label.str] if label.str else label.num)
                        for label in sample.label
                    },
                    "locations": [location(location_id) for location_id in sample.location_id],
                }
                for sample in profile.sample
            ],
        }
    )
)
