"""The shipped Caddy configuration (deploy/Caddyfile) in front of a real vend-cloud: HTTPS, HSTS and Secure
cookies as a phone gets them, plain HTTP sent to HTTPS. Caddy runs with its own local certificate authority
instead of Let's Encrypt (no internet here), on free ports; the site block is the shipped one."""

import os
import re
import ssl

import httpx
import pytest

from tests.e2e.harness import Cloud, Proc, free_port, running_broker, wait_until
from tests.tools import REPO, need


def render(https_port: int, http_port: int, cloud_port: int, folder) -> str:
    """The shipped Caddyfile with the test's addresses, and Caddy's own CA in place of an ACME one."""
    text = (REPO / "deploy" / "Caddyfile").read_text()
    text = text.replace("\temail admin@example.com\n", f"\temail admin@example.com\n\tadmin off\n\tlocal_certs\n"
                        f"\tskip_install_trust\n\thttp_port {http_port}\n\thttps_port {https_port}\n"
                        f"\tstorage file_system {folder}/caddy-data\n")
    text = text.replace("vend.example.com {", f"localhost:{https_port} {{")
    text = text.replace("reverse_proxy 127.0.0.1:8000", f"reverse_proxy 127.0.0.1:{cloud_port}")
    text = text.replace("/var/log/caddy/vend-cloud.log", f"{folder}/caddy-access.log")
    assert text.count(str(https_port)) == 2 and str(cloud_port) in text, "the shipped Caddyfile changed shape"
    path = os.path.join(folder, "Caddyfile")
    with open(path, "w") as f:
        f.write(text)
    return path


@pytest.fixture
def front(tmp_path):
    caddy = need("caddy")
    broker_run = running_broker(str(tmp_path / "broker"))
    broker = next(broker_run)
    https_port, http_port = free_port(), free_port()
    public = f"https://localhost:{https_port}"
    (tmp_path / "cloud").mkdir()
    cloud = Cloud(broker, str(tmp_path / "cloud"), extra=("--public-url", public, "--trusted-proxy", "127.0.0.1"))
    proxy = Proc([caddy, "run", "--adapter", "caddyfile", "--config", render(https_port, http_port, cloud.port,
                                                                              tmp_path)],
                 str(tmp_path / "caddy.log"), env={"HOME": str(tmp_path), "XDG_DATA_HOME": str(tmp_path / "xdg")})
    try:
        cloud.start()
        proxy.start()
        root_ca = tmp_path / "caddy-data" / "pki" / "authorities" / "local" / "root.crt"

        def serving():
            assert proxy.alive(), open(tmp_path / "caddy.log").read()[-3000:]
            try:
                return root_ca.exists() and httpx.get(public + "/api/v1/health",
                                                       verify=ssl.create_default_context(cafile=str(root_ca))).is_success
            except httpx.HTTPError:
                return False

        wait_until(serving, 30, "Caddy to serve HTTPS")
        yield public, f"http://localhost:{http_port}", ssl.create_default_context(cafile=str(root_ca))
    finally:
        proxy.stop()
        cloud.stop()
        next(broker_run, None)


def test_behind_caddy_the_cloud_is_https_with_hsts_and_secure_cookies(front):
    public, plain, root_ca = front
    with httpx.Client(verify=root_ca) as client:
        health = client.get(public + "/api/v1/health")
        assert health.status_code == 200 and health.json()["broker_connected"] is True
        assert health.headers["strict-transport-security"].startswith("max-age=31536000")
        lang = client.get(public + "/lang/zh-CN", follow_redirects=False)
        cookie = lang.headers["set-cookie"]
        assert cookie.startswith("vend_lang=zh-CN") and re.search(r";\s*secure", cookie, re.I), cookie
    redirect = httpx.get(plain + "/api/v1/health", follow_redirects=False)
    # To https://localhost/... : Caddy names the standard port, which is 443 on a real server.
    assert redirect.status_code == 308 and redirect.headers["location"].startswith("https://localhost")
    assert redirect.headers["location"].endswith("/api/v1/health")
