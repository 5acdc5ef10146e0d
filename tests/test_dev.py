"""make dev's supervisor: dagster dev stops on the first Ctrl-C (issue 23, case 2)."""

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

#: Ignores SIGINT and SIGTERM, as dagster dev does while it waits for its services, and leaves a
#: grandchild in its group, as dagster dev's webserver and daemon are.
STUBBORN = """
import signal, subprocess, sys, time
from pathlib import Path
signal.signal(signal.SIGINT, signal.SIG_IGN)
signal.signal(signal.SIGTERM, signal.SIG_IGN)
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
Path(sys.argv[1]).write_text(str(child.pid))
time.sleep(600)
"""


def _alive(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists() and "zombie" not in Path(
        f"/proc/{pid}/status").read_text().lower()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_the_first_signal_stops_a_command_that_ignores_it(tmp_path, signum):
    started = tmp_path / "grandchild"
    supervisor = subprocess.Popen(
        [sys.executable, "-m", "dmg_assets.dev", "--grace", "1", "--", sys.executable, "-c",
         STUBBORN, str(started)], stderr=subprocess.PIPE, text=True,
    )
    deadline = time.monotonic() + 30
    while not started.exists() or not started.read_text():
        assert supervisor.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    grandchild = int(started.read_text())
    sent = time.monotonic()
    supervisor.send_signal(signum)
    assert supervisor.wait(timeout=15) == 128 + signum
    assert time.monotonic() - sent < 10
    assert "killing it" in supervisor.stderr.read()
    time.sleep(0.2)
    assert not _alive(grandchild)


def test_a_command_that_ends_gives_its_own_exit_code():
    result = subprocess.run([sys.executable, "-m", "dmg_assets.dev", "--", sys.executable, "-c",
                             "raise SystemExit(3)"], check=False)
    assert result.returncode == 3
