"""/metrics is an operator surface: it listens on 127.0.0.1 by default, and
with metrics.auth_file it asks for HTTP basic auth. Real kvtierd, real HTTP
(urllib): no or wrong credentials get 401 with WWW-Authenticate, the right
ones 200; /healthz never asks; a file others may read stops the daemon; a
reload (SIGHUP) takes a new password; the password is never logged."""
import base64
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request

SECRET = "s3cret-Pa55"


def get(url, user=None, password=None):
    req = urllib.request.Request(url)
    if user is not None:
        token = base64.b64encode(("%s:%s" % (user, password)).encode()).decode()
        req.add_header("Authorization", "Basic " + token)
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, dict(r.headers), r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read().decode()


def write_auth(path, text, mode):
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, mode)


def main():
    kvtierd = os.environ["KVTIERD"]
    tmp = tempfile.mkdtemp(prefix="kvtier-mauth-")
    auth = os.path.join(tmp, "metrics.auth")
    base_args = [kvtierd, "--set", "daemon.run_dir=" + tmp + "/run",
                 "--set", "host.size=8M", "--set", "host.segment_size=1M",
                 "--set", "metrics.listen=127.0.0.1:0"]
    daemon = None
    try:
        # The default listens on localhost only.
        out = subprocess.run([kvtierd, "--set", "daemon.run_dir=" + tmp,
                              "--print-config"], capture_output=True, text=True,
                             check=True).stdout
        assert "\nlisten = 127.0.0.1:9400\n" in out, out

        # A file group or others may read: the daemon will not start.
        write_auth(auth, "prom:%s\n" % SECRET, 0o644)
        bad = subprocess.run(base_args + ["--set", "metrics.auth_file=" + auth],
                             capture_output=True, text=True, timeout=20)
        assert bad.returncode != 0, bad
        assert "chmod 0600" in bad.stderr and SECRET not in bad.stderr, bad.stderr

        os.chmod(auth, 0o600)
        daemon = subprocess.Popen(base_args + ["--set", "metrics.auth_file=" + auth],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True)
        line = daemon.stdout.readline()
        assert " metrics http://127.0.0.1:" in line, line
        base = line.split(" metrics ")[1].strip().rsplit("/", 1)[0]

        code, headers, _ = get(base + "/metrics")
        assert code == 401, code
        assert headers.get("WWW-Authenticate", "").startswith("Basic realm="), headers
        assert get(base + "/metrics", "prom", "wrong")[0] == 401
        assert get(base + "/metrics", "other", SECRET)[0] == 401
        code, _, text = get(base + "/metrics", "prom", SECRET)
        assert code == 200, code
        assert "kvtier_connections_active " in text and "kvtier_connections_refused_total " in text
        assert get(base + "/healthz")[0] == 200

        # A reload reads the file again.
        write_auth(auth, "prom:new-%s\n" % SECRET, 0o600)
        daemon.send_signal(signal.SIGHUP)
        deadline = time.time() + 10
        while time.time() < deadline and get(base + "/metrics", "prom", SECRET)[0] != 401:
            time.sleep(0.1)
        assert get(base + "/metrics", "prom", SECRET)[0] == 401
        assert get(base + "/metrics", "prom", "new-" + SECRET)[0] == 200
        # A reload to a readable file fails and changes nothing.
        os.chmod(auth, 0o640)
        daemon.send_signal(signal.SIGHUP)
        time.sleep(1)
        assert get(base + "/metrics", "prom", "new-" + SECRET)[0] == 200
        print("metrics auth: 401 without, 200 with; reload takes a new password")
    finally:
        if daemon:
            daemon.terminate()
            _, err = daemon.communicate(timeout=20)
            assert daemon.returncode == 0
            assert SECRET not in err, "the password was logged"
            assert "auth_file" in err  # the failed reload was logged
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
