"""Staff and tokens against the real `vend-cloud` process, driven by the real `vendctl`: the bootstrap token
acts as the built-in administrator, a manager's token reads the fleet but not the staff, and disabling the
manager stops their token at once."""

import json
import os
import subprocess
import sys

import httpx

PASSWORD = "violet-tractor-harbour-91"


def vendctl(cloud, *argv, token=None, stdin=""):
    env = {**os.environ, "VEND_CLOUD_URL": cloud.url, "VEND_TOKEN": token or cloud.token}
    p = subprocess.run([sys.executable, "-m", "cloud.cli", *argv], input=stdin, capture_output=True, text=True,
                       env=env, timeout=60)
    return p.returncode, p.stdout, p.stderr


def test_people_and_tokens_through_vendctl(cloud):
    code, out, err = vendctl(cloud, "people", "add", "ann", "--role", "manager", "--password-stdin",
                             "--json", stdin=PASSWORD + "\n")
    assert code == 0, err
    ann = json.loads(out)
    code, out, _ = vendctl(cloud, "people")
    assert code == 0 and "built-in" in out and "ann" in out

    r = httpx.post(cloud.url + "/api/v1/login", json={"username": "ann", "password": PASSWORD}, timeout=10)
    assert r.status_code == 200 and "httponly" in r.headers["set-cookie"].lower()
    r = httpx.post(cloud.url + "/api/v1/tokens", json={"name": "ann's laptop"}, cookies=r.cookies, timeout=10)
    assert r.status_code == 201
    token = r.json()["token"]

    code, out, err = vendctl(cloud, "machines", token=token)
    assert code == 0, err
    code, _, err = vendctl(cloud, "people", token=token)
    assert code == 1 and "403" in err and "administrator" in err

    code, out, _ = vendctl(cloud, "people", "disable", str(ann["id"]))
    assert code == 0 and "disabled" in out
    code, _, err = vendctl(cloud, "machines", token=token)
    assert code == 1 and "401" in err

    code, out, _ = vendctl(cloud, "audit", "--json", "--kind", "staff", "--object", str(ann["id"]))
    actions = [a["action"] for a in json.loads(out)]
    assert actions == ["people.change", "session.login", "people.add"]
