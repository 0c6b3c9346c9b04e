"""A pytest plugin (``-p bench.gpu.pytest_log``) that appends each test's outcome to the
JSON-lines file named by ``DAGNET_PYTEST_LOG`` as soon as it is known, so a run killed
at its time limit still tells what passed, failed and skipped up to then."""
import json
import os


def pytest_runtest_logreport(report):
    path = os.environ.get("DAGNET_PYTEST_LOG")
    if not path:
        return
    if report.when == "call" or (report.when == "setup" and report.outcome != "passed") or \
            (report.when == "teardown" and report.outcome == "failed"):
        outcome = report.outcome if report.when == "call" or report.outcome == "skipped" else "error"
        with open(path, "a") as f:
            f.write(json.dumps({"test": report.nodeid, "outcome": outcome,
                                "seconds": round(report.duration, 3)}) + "\n")
