#!/usr/bin/env python3
"""Reads a JUnit XML report with junitparser (the Python library CI tools use) and prints, as
JSON, what it found: each suite's name and counts, and each test case's class name, name,
`file` and `line` attributes, and results (failure or skipped, with message and type).
Usage: junit_cases.py REPORT.xml
"""
import json
import sys

from junitparser import Error, Failure, JUnitXml, Skipped

xml = JUnitXml.fromfile(sys.argv[1])
suites = []
for suite in xml:
    cases = []
    for case in suite:
        results = []
        for result in case.result:
            kind = {Failure: "failure", Skipped: "skipped", Error: "error"}.get(type(result), type(result).__name__)
            results.append({"kind": kind, "message": result.message, "type": result.type, "text": result.text})
        cases.append(
            {
                "classname": case.classname,
                "name": case.name,
                "file": case._elem.get("file"),
                "line": case._elem.get("line"),
                "results": results,
            }
        )
    suites.append(
        {
            "name": suite.name,
            "tests": suite.tests,
            "failures": suite.failures,
            "errors": suite.errors,
            "skipped": suite.skipped,
            "cases": cases,
        }
    )
print(json.dumps({"tests": xml.tests, "failures": xml.failures, "errors": xml.errors, "suites": suites}))
