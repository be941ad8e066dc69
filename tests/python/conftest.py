"""Fixtures of the kvtier package's tests: a real kvtierd per test module,
a client of it and a namespace per test; helpers.py has the constants."""
import os
import shutil
import subprocess
import tempfile

import pytest


class Daemon:
    def __init__(self, *sets):
        self.tmp = tempfile.mkdtemp(prefix="kvtier-pytest-")
        self.run_dir = os.path.join(self.tmp, "run")
        args = [os.environ["KVTIERD"], "--set", "daemon.run_dir=" + self.run_dir,
                "--set", "metrics.listen=127.0.0.1:0"]
        defaults = {"host.size": "16M", "host.segment_size": "1M"}
        for s in sets:
            defaults.pop(s.split("=", 1)[0], None)
        for s in [f"{k}={v}" for k, v in defaults.items()] + list(sets):
            args += ["--set", s]
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        assert "listening on" in line, line
        self.addr = "unix:" + self.run_dir + "/kvtierd.sock"
        self.socket = self.run_dir + "/kvtierd.sock"

    def stop(self):
        self.proc.terminate()
        rc = self.proc.wait(timeout=30)
        shutil.rmtree(self.tmp, ignore_errors=True)
        return rc


@pytest.fixture(scope="module")
def daemon():
    d = Daemon()
    yield d
    assert d.stop() == 0


@pytest.fixture
def make_daemon():
    made = []

    def make(*sets):
        made.append(Daemon(*sets))
        return made[-1]
    yield make
    for d in made:
        d.stop()


@pytest.fixture
def client(daemon, request):
    import kvtier
    with kvtier.connect(daemon.addr, name=request.module.__name__) as c:
        yield c


@pytest.fixture
def ns(client, request):
    from helpers import PAGE
    return client.namespace("py:" + request.node.name[:60], PAGE, 16)
