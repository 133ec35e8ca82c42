"""Two versions of syncd, alternated against one Dovecot: which one syncs faster.

The test machine's speed drifts by 30-40% between runs, more than most changes we
measure, so two ``bench.imap`` runs minutes apart say little. This benchmark fills one
Dovecot mailbox, then runs the end-to-end sync of ``bench.imap`` (``phase_pipeline``,
a fresh store each time) for each checkout in turn, round after round, and prints each
run and the median per checkout. A checkout is a directory holding the ``syncd`` and
``bench`` packages, e.g. a ``git worktree add /tmp/base HEAD~3``; each run is a process
of its own that imports from there. The Dovecot fixture and the mailbox come from this
checkout. Run as root:

    python -m bench.compare --n 10000 --rounds 3 /tmp/base .
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.imap import fill_maildir
from tests.integration.conftest import Dovecot, dovecot_missing

# Runs in the checkout under test; prints one JSON line of figures.
_RUN = """
import json, resource, sys, time
from bench.imap import phase_pipeline
if __name__ == "__main__":
    cpu = time.process_time()
    figures = phase_pipeline(int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4])
    print(json.dumps({
        "rate": figures["messages"] / figures["seconds"],
        "cpu_us": (time.process_time() - cpu) * 1e6 / figures["messages"],
        "parsers_us": figures["cpu_parsers"] * 1e6 / figures["messages"],
        "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "logged": figures["outcomes"]["logged"],
    }))
"""


def run_once(checkout: Path, port: int, user: str, password: str) -> dict[str, float]:
    """One end-to-end sync by the code in ``checkout`` into a fresh store."""
    store = tempfile.mkdtemp(prefix="syncd-compare-store-")
    try:
        done = subprocess.run(
            [sys.executable, "-c", _RUN, str(port), user, password, store],
            cwd=checkout,
            env=dict(os.environ, PYTHONPATH=str(checkout)),
            capture_output=True,
            text=True,
            check=False,
        )
    finally:
        shutil.rmtree(store, ignore_errors=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"{checkout}: run failed:\n{done.stderr[-2000:]}")
    return json.loads(lines[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkouts", nargs="+", type=Path)
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    reason = dovecot_missing()
    if reason:
        print(f"bench.compare: {reason}", file=sys.stderr)
        return 69
    checkouts = [c.resolve() for c in args.checkouts]
    root = Path(tempfile.mkdtemp(prefix="syncd-compare-"))
    os.chmod(root, 0o755)
    server = Dovecot(root)
    rates: dict[Path, list[float]] = {c: [] for c in checkouts}
    try:
        server.start()
        user = server.add_user()
        started = time.perf_counter()
        size = fill_maildir(user, args.n)
        print(f"mailbox: {args.n} messages, {size / 1e6:.0f} MB, ready in "
              f"{time.perf_counter() - started:.1f} s", flush=True)  # fmt: skip
        for round_ in range(1, args.rounds + 1):
            for checkout in checkouts:
                got = run_once(checkout, server.port, user.name, user.password)
                rates[checkout].append(got["rate"])
                print(
                    f"round {round_} {checkout}: {got['rate']:,.0f} msg/s, CPU "
                    f"{got['cpu_us']:,.0f} + parsers {got['parsers_us']:,.0f} µs/msg, "
                    f"peak RSS {got['rss_mb']:.0f} MB, logged {got['logged']}",
                    flush=True,
                )
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)
    first = statistics.median(rates[checkouts[0]])
    for checkout in checkouts:
        median = statistics.median(rates[checkout])
        print(f"{checkout}: median {median:,.0f} msg/s, {median / first:.2f}x of the first")
    return 0


if __name__ == "__main__":
    sys.exit(main())
