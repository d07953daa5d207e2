"""The fuzz tests' tally: with LRPC_FUZZ_STATS=path, what happened to every generated and mutated case
(judge.TALLY) is written there as JSON when the session ends; nothing is written otherwise."""

import json
import os

from judge import TALLY


def pytest_sessionfinish(session, exitstatus):
    path = os.environ.get("LRPC_FUZZ_STATS")
    if path:
        with open(path, "w") as f:
            json.dump(dict(sorted(TALLY.items())), f, indent=1)
