#!/usr/bin/env python3
"""Validates memtrace JSON reports against the committed schema (docs/report.schema.json) with
the jsonschema package, an independent validator (Draft 2020-12). Stricter than the schema
itself: an object may hold no property the schema does not name, so that a field the Report
types write but the schema misses (serde and schemars reading an attribute differently) fails.
Prints one line per error and exits 1 if there is any.
Usage: validate_report.py SCHEMA REPORT.json...
"""
import json
import sys

import jsonschema


def closed(schema):
    """The schema with every object that lists its properties closed to others."""
    if isinstance(schema, dict):
        schema = {key: closed(value) for key, value in schema.items()}
        if "properties" in schema and "additionalProperties" not in schema:
            schema["additionalProperties"] = False
    elif isinstance(schema, list):
        schema = [closed(item) for item in schema]
    return schema


with open(sys.argv[1]) as file:
    schema = json.load(file)
jsonschema.Draft202012Validator.check_schema(schema)
validator = jsonschema.Draft202012Validator(closed(schema))
failed = False
for path in sys.argv[2:]:
    with open(path) as file:
        report = json.load(file)
    for error in sorted(validator.iter_errors(report), key=lambda error: list(map(str, error.absolute_path))):
        where = "/".join(map(str, error.absolute_path)) or "(the report)"
        print(f"{path}: {where}: {error.message}")
        failed = True
sys.exit(1 if failed else 0)
