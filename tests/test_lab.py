"""`qtutor lab`: it says what it starts, starts JupyterLab as root too, and never exits 0 without a server.

Everything listens on 127.0.0.1 only.
"""
from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time

import pytest

from qtutor import cli, course

pytest.importorskip("jupyterlab", reason="qtutor lab needs JupyterLab (pip install 'qtutor[lab]')")


def test_dry_run_prints_the_command_and_the_folder(capsys, monkeypatch):
    monkeypatch.setattr(course.os, "geteuid", lambda: 1000, raising=False)
    assert cli.main(["lab", "--dry-run", "--no-browser", "--port", "8899"]) == 0
    out = capsys.readouterr().out
    assert "would run:" in out and "-m jupyterlab" in out and "--ServerApp.port=8899" in out
    assert f"in folder: {course.working_copy()}" in out
    assert "--allow-root" not in out  # not root: Jupyter needs no permission


def test_as_root_the_plan_has_allow_root_and_says_so(capsys, monkeypatch):
    monkeypatch.setattr(course.os, "geteuid", lambda: 0, raising=False)
    assert cli.main(["lab", "--dry-run", "--no-browser", "--port", "8899"]) == 0
    captured = capsys.readouterr()
    assert "--allow-root" in captured.out
    assert "running as root" in captured.err and "--allow-root" in captured.err


def test_a_server_that_exits_before_answering_is_an_error_that_says_why(capsys, monkeypatch):
    monkeypatch.setattr(course, "lab_command_line",
                        lambda folder, open_browser, port: [sys.executable, "-c", "import sys; sys.exit('boom')"])
    started = time.monotonic()
    code = cli.main(["lab", "--no-browser", "--port", str(course.free_port(20000))])
    assert code == 2 and time.monotonic() - started < 30
    error = capsys.readouterr().err
    assert "stopped (exit code 1) before it answered" in error and "boom" in error
    with pytest.raises(RuntimeError, match="boom"):
        course.launch_lab(open_browser=False, port=course.free_port(20000))


def test_a_server_that_never_answers_is_stopped_and_reported(monkeypatch):
    processes = []

    def silent(folder, open_browser, port):
        return [sys.executable, "-c", "import time; print('starting', flush=True); time.sleep(60)"]

    original = course.LabServer.__init__

    def remember(self, *args, **kwargs):
        original(self, *args, **kwargs)
        processes.append(self.process)

    monkeypatch.setattr(course, "lab_command_line", silent)
    monkeypatch.setattr(course.LabServer, "__init__", remember)
    with pytest.raises(RuntimeError, match=r"did not answer .* within 1 s(.|\n)*starting"):
        course.launch_lab(open_browser=False, port=course.free_port(20000), startup_timeout=1)
    assert processes and processes[0].poll() is not None  # no server left behind


def test_an_unusable_port_is_refused_before_anything_starts(capsys):
    assert cli.main(["lab", "--port", "70000"]) == 2
    assert "--port 70000: give a port number in 1..65535" in capsys.readouterr().err


@pytest.mark.slow
def test_lab_really_serves_until_ctrl_c_then_stops(capsys, monkeypatch, tmp_path):
    """A real JupyterLab (as root here, so with --allow-root), asked over HTTP, stopped by a real SIGINT."""
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("SIGINT reaches the main thread only")
    for variable in ("JUPYTER_CONFIG_DIR", "JUPYTER_DATA_DIR", "JUPYTER_RUNTIME_DIR", "JUPYTERLAB_SETTINGS_DIR",
                     "JUPYTERLAB_WORKSPACES_DIR"):  # the learner's own Jupyter settings stay untouched
        monkeypatch.setenv(variable, str(tmp_path / variable.lower()))
    monkeypatch.setattr(course, "STARTUP_SECONDS", 60)  # give up after a minute
    port = course.free_port(20000)
    url = f"http://127.0.0.1:{port}/api"
    in_the_foreground, seen = threading.Event(), {}
    serve = course.LabServer.serve_until_interrupted

    def serve_and_tell(server):
        seen["answered"] = course.answers(url)  # qtutor saw it answer; so must anyone else
        in_the_foreground.set()
        return serve(server)

    def press_ctrl_c():
        if in_the_foreground.wait(timeout=70):
            time.sleep(0.5)
            os.kill(os.getpid(), signal.SIGINT)  # what the terminal sends on Ctrl-C

    monkeypatch.setattr(course.LabServer, "serve_until_interrupted", serve_and_tell)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    presser = threading.Thread(target=press_ctrl_c, daemon=True)
    try:
        presser.start()
        code = cli.main(["lab", "--no-browser", "--port", str(port), "--json"])
    finally:
        presser.join(timeout=75)
        signal.signal(signal.SIGINT, previous)
    captured = capsys.readouterr()
    assert code == 0, captured.err[-3000:]
    assert seen["answered"]
    result = json.loads(captured.out)
    assert result["interrupted"] is True and result["url"] == f"http://127.0.0.1:{port}/lab"
    assert ("--allow-root" in result["command"]) == course.running_as_root()
    assert not course.answers(url)  # stopped, not left running
