"""Two processes on one ``evaluate.state_dir``: the second stops at once with one line
naming the directory and the first's pid (exit status 1), and the first carries on
unfenced; a holder that dies, however it dies, leaves the directory free."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from streamsync.state.directory_lock import StateDirInUse, StateDirLock
from tests.runtime.evaluate_support import Instance, Stream, synthetic, wait_until_committed

_HOLD = (
    "import sys; from pathlib import Path; "
    "from streamsync.state.directory_lock import StateDirLock; "
    "StateDirLock(Path(sys.argv[1])).acquire(); print('held', flush=True); sys.stdin.read()"
)


def _holder(state: Path) -> subprocess.Popen[str]:
    """A process holding ``state``'s lock until its stdin closes or it is killed."""
    process = subprocess.Popen(
        [sys.executable, "-c", _HOLD, str(state)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None and process.stdout.readline() == "held\n"
    return process


def test_a_held_directory_is_refused_naming_the_holder(tmp_path: Path) -> None:
    holder = _holder(tmp_path / "state")
    try:
        with pytest.raises(StateDirInUse) as refused:
            StateDirLock(tmp_path / "state").acquire()
        assert f"(pid {holder.pid})" in str(refused.value)
        assert refused.value.exit_status == 1
    finally:
        holder.kill()
        holder.wait(30)


def test_a_killed_holder_leaves_the_directory_free(tmp_path: Path) -> None:
    holder = _holder(tmp_path / "state")
    holder.send_signal(signal.SIGKILL)
    holder.wait(30)
    with StateDirLock(tmp_path / "state") as lock:
        assert lock.path.read_text() == f"{os.getpid()}\n"
    StateDirLock(tmp_path / "state").acquire().release()  # released on exit


@pytest.mark.kafka
def test_a_second_evaluate_on_the_same_state_dir_stops_with_one_line(
    kafka_bootstrap_servers: str, tmp_path: Path
) -> None:
    stream = Stream(kafka_bootstrap_servers, partitions=1)
    stream.produce(synthetic(20, 200, seed=5))
    config = stream.config(tmp_path)
    first = Instance(config, tmp_path / "first.log", kafka_bootstrap_servers)
    first.start()
    assert first.process is not None
    try:
        first.wait_assigned(1)
        env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap_servers}
        second = subprocess.run(
            [sys.executable, "-m", "streamsync", "evaluate", "--config", str(config)],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
        assert second.returncode == 1, second.stderr
        assert "Traceback" not in second.stderr
        # After the start-up banner, the one line saying why it stopped.
        assert second.stderr.splitlines()[-1:] == [
            f"streamsync evaluate: evaluate.state_dir {tmp_path / 'state'} is in use by "
            f"another process (pid {first.process.pid}); stop it, or give each process a "
            "state_dir of its own"
        ]
        # The first was not fenced: it still commits what arrives, and stops cleanly.
        stream.produce(synthetic(20, 100, seed=6))
        wait_until_committed(stream, 60)
        assert first.process.poll() is None, first.log.read_text()
    finally:
        code = first.stop()
    assert code == 0, first.log.read_text()
    assert "Traceback" not in first.log.read_text()
