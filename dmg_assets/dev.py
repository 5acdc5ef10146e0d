"""``make dev``: ``dagster dev`` that stops on the first Ctrl-C.

After an interrupt ``dagster dev`` waits up to 60 s for its webserver and then 60 s for its
daemon (a sensor tick or a run worker finishing) and ignores further Ctrl-C and SIGTERM
meanwhile: about 100 s of a terminal that does not answer. This starts the command in a process
group of its own, hands the first SIGINT or SIGTERM to the whole group, and kills the group
``--grace`` seconds later (or at a second signal) if it is still there. Runs a kill cuts short
are marked failed, and their pool slots freed, by the next driver or from the UI.

Imports nothing heavy: ``python -m dmg_assets.dev -- dagster dev -w workspace.yaml``.
"""

import argparse
import os
import signal
import subprocess
import sys
import time
from contextlib import suppress

#: Seconds the services get to stop by themselves after the first signal.
GRACE_S = 10.0
_POLL_S = 0.1


def _signal_group(pid: int, signum: int) -> None:
    with suppress(ProcessLookupError):
        os.killpg(pid, signum)


def supervise(command: list[str], grace_s: float = GRACE_S) -> int:
    """Run ``command`` until it ends; the exit code is its own, or 128 + the signal that
    stopped it."""
    child = subprocess.Popen(command, start_new_session=True)
    received: list[tuple[int, float]] = []

    def on_signal(signum: int, _frame: object) -> None:
        received.append((signum, time.monotonic()))
        _signal_group(child.pid, signal.SIGINT if len(received) == 1 else signal.SIGKILL)

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, on_signal)
    while True:
        with suppress(subprocess.TimeoutExpired):
            code = child.wait(timeout=_POLL_S)
            _signal_group(child.pid, signal.SIGKILL)  # what it left behind in its group
            return 128 + received[0][0] if received else code
        if received and time.monotonic() - received[0][1] > grace_s:
            print(f"dev: still running {grace_s:g} s after the signal; killing it",
                  file=sys.stderr)
            _signal_group(child.pid, signal.SIGKILL)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dmg_assets.dev",
                                     description=__doc__.splitlines()[0].replace("``", ""))
    parser.add_argument("--grace", type=float, default=GRACE_S,
                        help="seconds the command gets to stop after the first signal "
                        "(default %(default)s)")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- then the command")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command given (-- dagster dev -w workspace.yaml)")
    return supervise(command, args.grace)


if __name__ == "__main__":
    raise SystemExit(main())
