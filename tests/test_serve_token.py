"""``braintumor serve`` behind a network: an optional bearer token on every route but /health, and no start on a
non-loopback host without one unless ``--insecure`` says so."""

from __future__ import annotations

import hmac
import os
import subprocess
import sys

import pytest
from fastapi.testclient import TestClient

from braintumor.cli import main
from braintumor.commands.serve import MIN_TOKEN_CHARS, TOKEN_ENV, read_token
from braintumor.errors import OptionError
from braintumor.inference import Analyzer
from braintumor.serve import api, create_app
from conftest import png_bytes
from test_serve import RealServer, blob, serve_args

TOKEN = "s3cret-Token_0123456789abcdef"
WRONG = "s3cret-Token_0123456789abcdeX"


@pytest.fixture(scope="module")
def guarded():
    with TestClient(create_app(Analyzer.default(), token=TOKEN)) as c:
        yield c


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def upload() -> dict:
    return {"file": ("a.png", png_bytes(blob(64)), "image/png")}


@pytest.mark.parametrize("path", ["/model", "/docs", "/openapi.json", "/no-such-route"])
def test_every_route_but_health_needs_the_token(guarded, path):
    response = guarded.get(path)
    assert response.status_code == 401 and response.headers["www-authenticate"] == "Bearer"
    assert response.json() == {"detail": "a bearer token is required"}
    assert guarded.get(path, headers=bearer(TOKEN)).status_code == (404 if path == "/no-such-route" else 200)


def test_analyze_missing_or_wrong_token_is_401_and_the_right_one_200(guarded, monkeypatch):
    compared = []
    real = hmac.compare_digest

    def spy(a, b):
        compared.append((len(a), len(b)))
        return real(a, b)

    monkeypatch.setattr(api.hmac, "compare_digest", spy)
    missing = guarded.post("/analyze", files=upload())
    wrong = guarded.post("/analyze", files=upload(), headers=bearer(WRONG))
    short = guarded.post("/analyze", files=upload(), headers=bearer("x"))
    basic = guarded.post("/analyze", files=upload(), headers={"Authorization": f"Basic {TOKEN}"})
    right = guarded.post("/analyze", files=upload(), headers=bearer(TOKEN))
    lower = guarded.post("/analyze", files=upload(), headers={"authorization": f"bearer {TOKEN}"})
    assert missing.status_code == basic.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
    for refused in (wrong, short):
        assert refused.status_code == 401 and refused.json() == {"detail": "wrong bearer token"}
        assert refused.headers["www-authenticate"] == 'Bearer error="invalid_token"'
    assert right.status_code == lower.status_code == 200 and right.json()["file"] == "a.png"
    assert compared == [(32, 32)] * 4  # SHA-256 digests, compared in constant time whatever the given length
    for response in (missing, wrong, short, basic, right):
        assert TOKEN not in response.text and all(TOKEN not in v for v in response.headers.values())


def test_health_is_open(guarded):
    response = guarded.get("/health")
    assert response.status_code == 200 and response.json()["status"] == "ok"


def test_the_token_is_checked_before_the_body_is_read(guarded):
    """A stranger's upload is refused from its headers: no 413 or 503 work, and no body read."""
    response = guarded.post("/analyze", content=b"", headers={"content-length": str(2**40)})
    assert response.status_code == 401


def test_read_token_from_file_or_environment(tmp_path):
    path = tmp_path / "token"
    path.write_text(f"  {TOKEN}\n")
    assert read_token(path, {}) == TOKEN
    assert read_token(path, {TOKEN_ENV: WRONG}) == TOKEN  # the option wins over the environment
    assert read_token(None, {TOKEN_ENV: f"{TOKEN}\n"}) == TOKEN
    assert read_token(None, {}) is None


@pytest.mark.parametrize(
    "content, reason",
    [
        ("", "the token is empty"),
        ("\n  \n", "the token is empty"),
        ("short-token", f"the token is shorter than {MIN_TOKEN_CHARS} characters"),
        ("two words in a long token", "the token must be printable ASCII without spaces"),
        ("tøken-with-a-non-ascii-letter", "the token must be printable ASCII without spaces"),
    ],
)
def test_an_unusable_token_is_refused_without_echoing_it(tmp_path, content, reason):
    path = tmp_path / "token"
    path.write_text(content)
    for source, name in ((path, "--token-file"), (None, TOKEN_ENV)):
        with pytest.raises(OptionError) as refused:
            read_token(source, {TOKEN_ENV: content})
        message = str(refused.value)
        assert message.startswith(f"{name}: {reason}") and "\n" not in message
        assert not content.strip() or content.strip() not in message


def test_an_unreadable_token_file_is_one_line(tmp_path):
    with pytest.raises(OptionError, match=r"^--token-file: cannot read .*missing: No such file or directory$"):
        read_token(tmp_path / "missing", {})
    (tmp_path / "binary").write_bytes(b"\xff\xfe" * 20)
    with pytest.raises(OptionError, match=r"^--token-file: .*binary is not UTF-8 text$"):
        read_token(tmp_path / "binary", {})


def test_a_public_host_without_a_token_refuses_to_start(monkeypatch, capsys):
    import uvicorn

    monkeypatch.delenv(TOKEN_ENV, raising=False)
    monkeypatch.setattr(uvicorn, "run", lambda *a, **k: pytest.fail("started without a token on a public host"))
    monkeypatch.setattr(Analyzer, "load", classmethod(lambda *a, **k: pytest.fail("loaded the model")))
    assert main(["serve", "--host", "0.0.0.0"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(
        "braintumor serve: error: --host: 0.0.0.0 is not a loopback address and the API has no token, so anyone who "
        "can reach it could use it: give --token-file FILE (or set BRAINTUMOR_TOKEN), or --insecure"
    )


def test_the_real_command_refuses_a_public_host_without_a_token():
    env = {k: v for k, v in os.environ.items() if k != TOKEN_ENV}
    done = subprocess.run(
        [sys.executable, "-m", "braintumor.cli", "serve", "--host", "0.0.0.0", "--port", "1"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert done.returncode == 2 and done.stdout == "" and done.stderr.count("\n") == 1
    assert done.stderr.startswith("braintumor serve: error: --host: 0.0.0.0 is not a loopback address")


def test_a_public_host_with_a_token_starts_with_a_tls_warning(monkeypatch, capsys):
    import uvicorn

    served = []
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    monkeypatch.setattr(Analyzer, "load", classmethod(lambda cls, model_dir=None, members=None: Analyzer.default()))
    monkeypatch.setattr(uvicorn, "run", lambda app, host, port: served.append((app, host)))
    assert main(["serve", "--host", "0.0.0.0"]) == 0
    captured = capsys.readouterr()
    assert captured.err == (
        "braintumor serve: warning: --host 0.0.0.0 is not a loopback address and the API has no TLS: the token "
        "and the scans cross the network in clear text. Put it behind a reverse proxy with TLS.\n"
    )
    assert "needs the bearer token" in captured.out and TOKEN not in captured.out + captured.err
    with TestClient(served[0][0]) as c:
        assert c.get("/model").status_code == 401 and c.get("/model", headers=bearer(TOKEN)).status_code == 200


def test_loopback_with_a_token_says_nothing_of_it(monkeypatch, capsys, tmp_path):
    import uvicorn

    from braintumor.commands.serve import run

    (tmp_path / "token").write_text(TOKEN)
    monkeypatch.setattr(Analyzer, "load", classmethod(lambda cls, model_dir=None, members=None: Analyzer.default()))
    monkeypatch.setattr(uvicorn, "run", lambda app, host, port: None)
    assert run(serve_args(token_file=tmp_path / "token")) == 0
    captured = capsys.readouterr()
    assert captured.err == "" and TOKEN not in captured.out


@pytest.mark.slow
def test_real_server_with_a_token_file_keeps_the_token_out_of_its_log(tmp_path):
    import httpx

    (tmp_path / "token").write_text(TOKEN + "\n")
    env = {k: v for k, v in os.environ.items() if k != TOKEN_ENV}
    files = {"file": ("a.png", png_bytes(blob(64)), "image/png")}
    with (
        RealServer(tmp_path, "--token-file", str(tmp_path / "token"), env=env) as server,
        httpx.Client(base_url=server.url, timeout=60) as http,
    ):
        missing = http.post("/analyze", files=files)
        wrong = http.post("/analyze", files=files, headers=bearer(WRONG))
        right = http.post("/analyze", files=files, headers=bearer(TOKEN))
        health = http.get("/health")
        model = http.get("/model", headers=bearer(TOKEN))
    log = server.text()
    assert missing.status_code == wrong.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
    assert right.status_code == health.status_code == model.status_code == 200, right.text
    assert '"POST /analyze HTTP/1.1" 401' in log and '"POST /analyze HTTP/1.1" 200' in log  # the log was captured
    assert TOKEN not in log and WRONG not in log and TOKEN[:8] not in log
    assert "needs the bearer token" in log and "warning" not in log
