#!/usr/bin/env python3
"""Validates JUnit XML against an XSD (the Jenkins xUnit plugin's junit-10.xsd, committed as
memtrace/tests/data/junit-10.xsd) with the xmlschema package, an independent validator. Prints
the first error and exits 1 if the document is not valid.
Usage: validate_junit.py SCHEMA.xsd REPORT.xml...
"""
import sys

import xmlschema

schema = xmlschema.XMLSchema(sys.argv[1])
failed = False
for path in sys.argv[2:]:
    try:
        schema.validate(path)
    except xmlschema.XMLSchemaValidationError as error:
        print(f"{path}: {error.reason} at {error.path}")
        failed = True
sys.exit(1 if failed else 0)
