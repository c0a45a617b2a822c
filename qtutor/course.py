"""Finding the course notebooks and opening them in JupyterLab (``qtutor lab``).

``qtutor lab`` starts JupyterLab as a child process on 127.0.0.1, waits until it answers HTTP, and keeps it in
the foreground until Ctrl-C. A server that stops before it answers is an error that quotes the server's last
log lines: a learner must never be left with a command that returned and a lab that is not there (as root,
for one, Jupyter refuses to start unless it is given ``--allow-root``).
"""
from __future__ import annotations

import collections
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

START_NOTEBOOK = "00_start_here.ipynb"
LOOPBACK = "127.0.0.1"  # the lab is for the learner at this machine; nothing listens on other interfaces
DEFAULT_PORT = 8888  # Jupyter's own default, the port a learner has seen in tutorials
STARTUP_SECONDS = 120  # JupyterLab answers in a few seconds; a slow laptop's first start can take a minute
LOG_LINES = 20  # how much of the server's log an error quotes


def notebooks_dir() -> Path:
    """``notebooks/`` of a source checkout, or the copy shipped inside the wheel (``qtutor/_notebooks``)."""
    here = Path(__file__).resolve().parent
    for candidate in (here.parent / "notebooks", here / "_notebooks"):
        if candidate.is_dir() and any(candidate.glob("*.ipynb")):
            return candidate
    raise FileNotFoundError(f"no course notebooks in {here.parent / 'notebooks'} or {here / '_notebooks'}")


def working_copy(destination: Path | None = None) -> Path:
    """Where the learner works: the checkout's notebooks/ in place, or a copy of the packaged ones.

    A wheel's notebooks live in site-packages, which a learner should not edit; they are copied once to
    ``./qtutor-course`` (kept as they are on later runs, so a learner's edits survive).
    """
    source = notebooks_dir()
    if source.name == "notebooks":
        return source
    destination = destination or Path.cwd() / "qtutor-course"
    if not destination.exists():
        shutil.copytree(source, destination)
    return destination


def running_as_root() -> bool:
    """Jupyter refuses to run as root without ``--allow-root``; containers (Docker, CI) often run as root."""
    return hasattr(os, "geteuid") and os.geteuid() == 0


def free_port(preferred: int = DEFAULT_PORT, tries: int = 50) -> int:
    """The first port from ``preferred`` on that nothing listens on at 127.0.0.1 (else one the OS picks).

    qtutor picks the port itself, rather than letting Jupyter move on from a busy one, so that it knows where
    to ask whether the server answers."""
    for port in [*range(preferred, preferred + tries), 0]:
        with socket.socket() as probe:
            try:
                probe.bind((LOOPBACK, port))
            except OSError:
                continue
            return probe.getsockname()[1]
    raise RuntimeError(f"no free port on {LOOPBACK}; pass one with --port")


def lab_command_line(folder: Path, open_browser: bool, port: int) -> list[str]:
    """The JupyterLab command: the course folder as its root, notebook 00 open, on 127.0.0.1:``port`` only."""
    command = [sys.executable, "-m", "jupyterlab", f"--ServerApp.root_dir={folder}",
               f"--LabApp.default_url=/lab/tree/{START_NOTEBOOK}", f"--ServerApp.ip={LOOPBACK}",
               f"--ServerApp.port={port}", "--ServerApp.port_retries=0"]
    if not open_browser:
        command.append("--no-browser")
    if running_as_root():
        command.append("--allow-root")
    return command


def answers(url: str) -> bool:
    """Whether an HTTP server answers at ``url`` (any status counts: a 403 is an answer)."""
    direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never ask 127.0.0.1 through a proxy
    try:
        direct.open(url, timeout=2).close()
    except urllib.error.HTTPError:
        return True
    except (urllib.error.URLError, OSError):
        return False
    return True


class LabServer:
    """A JupyterLab process: its log copied to stderr (where the learner finds the URL with its token) and the
    last ``LOG_LINES`` lines kept, to say why it stopped if it does."""

    def __init__(self, command: list[str], folder: Path, port: int):
        self.command, self.port = command, port
        self.url = f"http://{LOOPBACK}:{port}"
        self.log_tail: collections.deque[str] = collections.deque(maxlen=LOG_LINES)
        # a session of its own: the terminal's Ctrl-C reaches qtutor only, which then stops the server cleanly
        # (otherwise Jupyter would get it too, and ask "Shutdown this Jupyter server (y/[n])?")
        self.process = subprocess.Popen(command, cwd=folder, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT, text=True, errors="replace", bufsize=1,
                                        start_new_session=True)
        self._copier = threading.Thread(target=self._copy_log, name="jupyterlab-log", daemon=True)
        self._copier.start()

    def _copy_log(self) -> None:
        for line in self.process.stdout:
            self.log_tail.append(line.rstrip("\n"))
            print(line, end="", file=sys.stderr, flush=True)

    def last_lines(self) -> str:
        self._copier.join(timeout=5)  # the last lines of a process that has exited are still in the pipe
        return "\n".join(f"    {line}" for line in self.log_tail) or "    (it printed nothing)"

    def wait_until_answering(self, timeout: float = STARTUP_SECONDS) -> None:
        """Return once the server answers HTTP; RuntimeError, with its last log lines, if it exits first or
        does not answer within ``timeout`` seconds (then it is stopped)."""
        deadline = time.monotonic() + timeout
        while not answers(f"{self.url}/api"):
            code = self.process.poll()
            if code is not None:
                raise RuntimeError(f"JupyterLab stopped (exit code {code}) before it answered on {self.url}; "
                                   f"its last lines:\n{self.last_lines()}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"JupyterLab did not answer on {self.url} within {timeout:g} s, so it was "
                                   f"stopped; its last lines:\n{self.last_lines()}")
            time.sleep(0.25)

    def serve_until_interrupted(self) -> bool:
        """Keep the server in the foreground; True if Ctrl-C ended it, False if it stopped by itself (File >
        Shut Down in JupyterLab). It is stopped in both cases."""
        try:
            while self.process.poll() is None:
                try:
                    self.process.wait(timeout=1)
                except subprocess.TimeoutExpired:
                    pass
        except KeyboardInterrupt:
            print("\nqtutor lab: Ctrl-C, stopping JupyterLab", file=sys.stderr)
            return True
        finally:
            self.stop()
        return False

    def stop(self, grace: float = 15) -> int:
        """SIGTERM (Jupyter then shuts its kernels down), and after ``grace`` seconds SIGKILL to its whole
        process group, kernels included."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                if hasattr(os, "killpg"):
                    os.killpg(self.process.pid, signal.SIGKILL)
                else:
                    self.process.kill()
                self.process.wait()
        self._copier.join(timeout=5)
        return self.process.returncode


def launch_lab(open_browser: bool = True, port: int | None = None, dry_run: bool = False,
               startup_timeout: float | None = None) -> dict:
    """Start JupyterLab with the course folder as its root and notebook 00 open, and serve until Ctrl-C.

    Returns the plan (``command``, ``folder``, ``url``; with ``dry_run`` nothing is started) and, after the
    server has run, its ``returncode`` and whether Ctrl-C ``interrupted`` it. RuntimeError when it does not
    start (it exited, or did not answer within ``startup_timeout`` seconds, default ``STARTUP_SECONDS``): the
    message quotes its last log lines."""
    if port is not None and not 0 < port < 65536:
        raise ValueError(f"--port {port}: give a port number in 1..65535, or leave it out for the first free one "
                         f"from {DEFAULT_PORT}")
    try:
        import jupyterlab  # noqa: F401
    except ImportError as error:
        raise RuntimeError("JupyterLab is not installed: pip install 'qtutor[lab]'") from error
    folder = working_copy()
    port = port or free_port()
    command = lab_command_line(folder, open_browser, port)
    plan = {"command": command, "folder": str(folder), "url": f"http://{LOOPBACK}:{port}/lab",
            "allow_root": running_as_root()}
    if running_as_root():
        print("qtutor lab: running as root, so JupyterLab is started with --allow-root (it refuses root otherwise)",
              file=sys.stderr)
    if dry_run:
        return plan
    server = LabServer(command, folder, port)
    try:
        server.wait_until_answering(STARTUP_SECONDS if startup_timeout is None else startup_timeout)
    except BaseException:  # Ctrl-C during the start too: never leave a server behind
        server.stop()
        raise
    print(f"qtutor lab: JupyterLab answers at {plan['url']} (the log above has the link with its token); "
          "Ctrl-C stops it", file=sys.stderr)
    interrupted = server.serve_until_interrupted()
    if not interrupted and server.process.returncode != 0:
        raise RuntimeError(f"JupyterLab stopped with exit code {server.process.returncode}; its last lines:\n"
                           f"{server.last_lines()}")
    return {**plan, "returncode": server.process.returncode, "interrupted": interrupted}
