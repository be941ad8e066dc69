"""kvtierd's log lines as operators read them (issue 20): under systemd
(stderr the stream $JOURNAL_STREAM names) each line carries sd-daemon's
<N> priority and no timestamp, so `journalctl -p warning` finds warnings;
elsewhere (a file, Docker, nohup) each line starts with the date and time
to the millisecond; daemon.log_format=json gives one JSON object per line.
A session's end names its client; a client name cannot forge a log line;
a whole namespace's drop is logged."""
import json
import os
import re
import signal
import subprocess
import tempfile
import time

import kvtier

TEXT = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d{4} kvtierd "
                  r"(error|warn|info|debug): ")
JOURNAL = re.compile(r"^<([3467])>kvtierd (error|warn|info|debug): ")
PRIORITY = {"error": "3", "warn": "4", "info": "6", "debug": "7"}


class LoggedDaemon:
    """A kvtierd whose stderr goes to a file, optionally named to it as
    the journal's stream, started with a config file it can reload."""

    def __init__(self, journal=False, fake_journal=False, *sets):
        self.tmp = tempfile.mkdtemp(prefix="kvtier-logs-")
        self.conf = os.path.join(self.tmp, "kvtierd.conf")
        with open(self.conf, "w") as f:
            f.write("[host]\nsize = 16M\nsegment_size = 1M\n")
        self.log_path = os.path.join(self.tmp, "stderr")
        self.err = open(self.log_path, "w")
        env = dict(os.environ)
        env.pop("JOURNAL_STREAM", None)
        st = os.fstat(self.err.fileno())
        if journal:
            env["JOURNAL_STREAM"] = f"{st.st_dev}:{st.st_ino}"
        elif fake_journal:  # inherited, but not this stream
            env["JOURNAL_STREAM"] = f"{st.st_dev}:{st.st_ino + 1}"
        args = [os.environ["KVTIERD"], "-c", self.conf, "--set",
                "daemon.run_dir=" + os.path.join(self.tmp, "run"), "--set", "metrics.listen="]
        for s in sets:
            args += ["--set", s]
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=self.err,
                                     text=True, env=env)
        assert "listening on" in self.proc.stdout.readline()
        self.addr = "unix:" + os.path.join(self.tmp, "run", "kvtierd.sock")

    def lines(self):
        with open(self.log_path) as f:
            return f.read().splitlines()

    def stop(self):
        self.proc.terminate()
        assert self.proc.wait(timeout=30) == 0
        self.err.close()
        return self.lines()


def some_traffic(d, client_name="logs"):
    with kvtier.connect(d.addr, name=client_name) as c:
        ns = c.namespace("logs", 4096, 16)
        keys = ns.prompt_keys(range(16 * 3), b"logs-secret-0123456789")
        ns.put(keys, [bytes(4096)] * 3)
        assert ns.drop() == 3
    return c


def test_text_lines_carry_date_and_milliseconds():
    for fake in (False, True):
        d = LoggedDaemon(fake_journal=fake)
        some_traffic(d)
        lines = d.stop()
        assert len(lines) >= 4
        assert all(TEXT.match(line) for line in lines), lines


def test_journal_lines_carry_their_priority():
    d = LoggedDaemon(journal=True)
    some_traffic(d)
    with open(d.conf, "a") as f:
        f.write("[no such section\n")  # a broken file: the reload fails, logged as an error
    d.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 5
    while not any("reload failed" in line for line in d.lines()):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    lines = d.stop()
    for line in lines:
        m = JOURNAL.match(line)
        assert m and m.group(1) == PRIORITY[m.group(2)], line
    assert any(line.startswith("<3>") and "reload failed" in line for line in lines)
    assert any(line.startswith("<6>") and "session opened" in line for line in lines)


def test_json_lines():
    d = LoggedDaemon(False, False, "daemon.log_format=json")
    some_traffic(d, client_name='bad"name\nkvtierd error: forged')
    lines = d.stop()
    records = [json.loads(line) for line in lines]  # every line one object
    assert all(set(r) == {"ts", "level", "msg"} for r in records)
    assert all(TEXT.match(r["ts"] + " kvtierd info: ") for r in records)
    assert not any(r["msg"].startswith("forged") for r in records)


def test_session_end_names_its_client_and_drops_are_logged():
    d = LoggedDaemon()
    c = some_traffic(d, client_name='worker-7"\nkvtierd error: forged')
    lines = d.stop()
    pid = os.getpid()
    closed = [line for line in lines if "session closed" in line]
    assert len(closed) == 1
    assert f'(client "worker-7??kvtierd error: forged", tenant {c.tenant}, pid {pid})' in closed[0]
    assert not any(line.endswith("forged") and "session" not in line for line in lines)
    assert sum(1 for line in lines if "forged" in line) == 2  # opened, closed: one line each
    assert any(re.search(r"uid \d+ \(admin\) dropped 3 blocks of namespace_id \d+", line)
               for line in lines), lines
