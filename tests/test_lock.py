"""The workdir lock: one run at a time, and never stuck after a kill -9."""

import os
import signal
import socket

import pytest

from command_helpers import hold_elsewhere
from ffc_ddpm import lock


def test_a_second_run_is_refused_naming_the_holder(tmp_path):
  holder = hold_elsewhere(tmp_path)
  try:
    with pytest.raises(lock.WorkdirBusyError) as error:
      with lock.hold_workdir(str(tmp_path)):
        pass
  finally:
    holder.kill()
    holder.wait()
  assert str(error.value) == (
      f"--workdir={tmp_path} is in use by another run (pid {holder.pid} on "
      f"host {socket.gethostname()}); wait for it to finish or use another "
      "workdir")


def test_a_holder_killed_with_sigkill_leaves_nothing_stuck(tmp_path):
  holder = hold_elsewhere(tmp_path)
  holder.send_signal(signal.SIGKILL)
  holder.wait()
  assert (tmp_path / lock.LOCK_NAME).read_text().split()[0] == str(holder.pid)
  with lock.hold_workdir(str(tmp_path)):
    assert (tmp_path / lock.LOCK_NAME).read_text().split() == [
        str(os.getpid()), socket.gethostname()]
  assert not (tmp_path / lock.LOCK_NAME).exists()


def test_one_process_may_hold_it_twice(tmp_path):
  """Training followed by evaluation, in one program."""
  with lock.hold_workdir(str(tmp_path)):
    with lock.hold_workdir(str(tmp_path)):
      pass
    assert (tmp_path / lock.LOCK_NAME).exists()  # still held by the outer
    with lock.hold_if_free(str(tmp_path)) as free:
      assert free
  assert not (tmp_path / lock.LOCK_NAME).exists()


def test_nothing_is_created_for_a_workdir_that_must_exist(tmp_path):
  with lock.hold_workdir(str(tmp_path / "absent"), create=False):
    pass
  assert not (tmp_path / "absent").exists()
  with lock.hold_workdir(str(tmp_path / "new")):
    assert (tmp_path / "new" / lock.LOCK_NAME).exists()
