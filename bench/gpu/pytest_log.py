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
        entry = {"test": report.nodeid, "outcome": outcome, "seconds": round(report.duration, 3)}
        if outcome in ("failed", "error"):     # what went wrong: the traceback's first error lines
            lines = [line for line in report.longreprtext.splitlines() if line.strip()]
            errors = [line[1:].strip() for line in lines if line.startswith("E ")]
            entry["message"] = " / ".join(errors[:3] or lines[-1:])[:300]
        with open(path, "a") as f:
            f.write(json.dumps(entry) + "\n")
