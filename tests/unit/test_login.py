"""Finding credentials like kubectl: kubeconfig rules, exec plugins, token files, key hygiene.

No cluster is needed to pin how a kubeconfig is read; the e2e suite proves the results log in.
"""

from __future__ import annotations

import datetime
import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from nsbaseline.kube import LoginError, load
from nsbaseline.kube.tokens import TokenSource


def _cert(tmp: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "alice")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp / "alice.crt", tmp / "alice.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def _kubeconfig(
    path: Path, user: dict[str, Any], cluster: dict[str, Any] | None = None, **extra: Any
) -> Path:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": "dev",
        "clusters": [
            {"name": "c", "cluster": {"server": "https://127.0.0.1:6443", **(cluster or {})}}
        ],
        "contexts": [
            {"name": "dev", "context": {"cluster": "c", "user": "u", "namespace": "team-a"}},
            {"name": "other", "context": {"cluster": "c", "user": "u"}},
        ],
        "users": [{"name": "u", "user": user}],
        **extra,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(config))
    return path


def test_a_static_token_becomes_a_bearer_header_and_the_context_namespace_is_kept(
    tmp_path: Path,
) -> None:
    config = _kubeconfig(tmp_path / "kubeconfig", {"token": "t0k3n"})
    creds = load(str(config), None, environ={})
    assert creds.server == "https://127.0.0.1:6443"
    assert creds.token.header() == "Bearer t0k3n"
    assert (creds.user, creds.context, creds.default_namespace) == ("u", "dev", "team-a")


def test_kubeconfig_flag_wins_over_the_environment_and_context_picks_another(
    tmp_path: Path,
) -> None:
    flag = _kubeconfig(tmp_path / "flag", {"token": "from-flag"})
    env = _kubeconfig(tmp_path / "env", {"token": "from-env"})
    assert load(str(flag), None, environ={"KUBECONFIG": str(env)}).token.header() == (
        "Bearer from-flag"
    )
    assert load(None, "other", environ={"KUBECONFIG": str(env)}).context == "other"


def test_a_kubeconfig_list_merges_and_the_first_file_wins(tmp_path: Path) -> None:
    first = _kubeconfig(tmp_path / "a", {"token": "first"})
    second = _kubeconfig(tmp_path / "b", {"token": "second"})
    creds = load(None, None, environ={"KUBECONFIG": f"{first}{os.pathsep}{second}"})
    assert creds.token.header() == "Bearer first"


@pytest.mark.parametrize(
    ("kubeconfig", "context", "fragments"),
    [
        ("/nonexistent/kubeconfig", None, ["/nonexistent/kubeconfig", "--kubeconfig"]),
        (None, "nope", ['context "nope"', "dev, other"]),
    ],
)
def test_missing_kubeconfigs_and_contexts_are_one_line_errors(
    tmp_path: Path, kubeconfig: str | None, context: str | None, fragments: list[str]
) -> None:
    config = _kubeconfig(tmp_path / "kubeconfig", {"token": "x"})
    with pytest.raises(LoginError) as caught:
        load(kubeconfig or str(config), context, environ={})
    message = str(caught.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message


def test_no_kubeconfig_and_no_pod_says_how_to_point_at_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(LoginError, match="pass --kubeconfig PATH or set KUBECONFIG"):
        load(None, None, environ={})


def test_client_certificates_by_relative_path_resolve_against_the_kubeconfig(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    certs = tmp_path / "conf" / "certs"
    certs.mkdir(parents=True)
    _cert(certs)
    config = _kubeconfig(
        tmp_path / "conf" / "kubeconfig",
        {"client-certificate": "certs/alice.crt", "client-key": "certs/alice.key"},
        {"insecure-skip-tls-verify": True},
    )
    monkeypatch.chdir(tmp_path)  # somewhere else: paths must not resolve against the cwd
    creds = load(str(config), None, environ={})  # loading the chain fails if a path is wrong
    assert creds.token.header() is None
    (certs / "alice.key").unlink()
    with pytest.raises(LoginError, match=r"alice\.key"):
        load(str(config), None, environ={})


def test_inline_key_material_leaves_no_file_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import base64

    cert, key = _cert(tmp_path)
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setenv("TMPDIR", str(scratch))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)  # re-read TMPDIR
    config = _kubeconfig(
        tmp_path / "kubeconfig",
        {
            "client-certificate-data": base64.b64encode(cert.read_bytes()).decode(),
            "client-key-data": base64.b64encode(key.read_bytes()).decode(),
        },
        {"insecure-skip-tls-verify": True},
    )
    for _ in range(3):  # every re-login too
        load(str(config), None, environ={})
    assert list(scratch.iterdir()) == []


def test_a_failing_exec_plugin_is_an_error_naming_the_plugin_and_its_message(
    tmp_path: Path,
) -> None:
    plugin = tmp_path / "sso.sh"
    plugin.write_text("#!/bin/sh\necho 'session expired: run sso login' >&2\nexit 3\n")
    plugin.chmod(plugin.stat().st_mode | stat.S_IEXEC)
    exec_user = {"exec": {"apiVersion": "client.authentication.k8s.io/v1", "command": str(plugin)}}
    config = _kubeconfig(tmp_path / "kubeconfig", exec_user)
    with pytest.raises(LoginError) as caught:
        load(str(config), None, environ={})
    assert "sso.sh" in str(caught.value)
    assert "session expired: run sso login" in str(caught.value)


def test_an_exec_token_is_renewed_by_running_the_plugin_again_once_it_expires(
    tmp_path: Path,
) -> None:
    counter = tmp_path / "count"
    plugin = tmp_path / "plugin.py"
    plugin.write_text(
        "import datetime, json, pathlib\n"
        f"c = pathlib.Path({str(counter)!r})\n"
        "n = int(c.read_text()) + 1 if c.exists() else 1\n"
        "c.write_text(str(n))\n"
        "exp = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=1)\n"
        "print(json.dumps({'apiVersion': 'client.authentication.k8s.io/v1beta1',"
        " 'kind': 'ExecCredential', 'status': {'token': f'tok-{n}',"
        " 'expirationTimestamp': exp.strftime('%Y-%m-%dT%H:%M:%SZ')}}))\n"
    )
    exec_user = {
        "exec": {
            "apiVersion": "client.authentication.k8s.io/v1beta1",
            "command": "python3",
            "args": [str(plugin)],
        }
    }
    creds = load(str(_kubeconfig(tmp_path / "kubeconfig", exec_user)), None, environ={})
    assert creds.token.header() == "Bearer tok-1"
    assert creds.token.stale()  # expires within the renewal margin
    creds.token.renew_now()
    assert creds.token.header() == "Bearer tok-2"


def test_a_token_file_is_re_read_when_it_is_rewritten(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("first\n")
    source = TokenSource(None, path=token_file)
    assert source.header() == "Bearer first"
    token_file.write_text("second-and-longer\n")
    assert source.header() == "Bearer second-and-longer"


def test_a_kubeconfig_token_file_is_followed_relative_to_the_kubeconfig(tmp_path: Path) -> None:
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "token").write_text("abc")
    creds = load(
        str(_kubeconfig(tmp_path / "conf" / "kubeconfig", {"tokenFile": "token"})), None, environ={}
    )
    assert creds.token.header() == "Bearer abc"
    (tmp_path / "conf" / "token").write_text("rotated")
    assert creds.token.header() == "Bearer rotated"


def test_proxy_url_and_tls_server_name_are_taken_from_the_cluster(tmp_path: Path) -> None:
    config = _kubeconfig(
        tmp_path / "kubeconfig",
        {"token": "x"},
        {
            "proxy-url": "http://127.0.0.1:3128",
            "tls-server-name": "kubernetes.default.svc",
            "insecure-skip-tls-verify": False,
        },
    )
    creds = load(str(config), None, environ={})
    assert creds.proxy == "http://127.0.0.1:3128"
    assert getattr(creds.ssl, "server_name", None) == "kubernetes.default.svc"


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, None),
        ({"HTTPS_PROXY": "http://proxy:3128"}, "http://proxy:3128"),
        ({"https_proxy": "http://p:1", "NO_PROXY": "127.0.0.1,.internal"}, None),
        ({"HTTPS_PROXY": "http://p:1", "NO_PROXY": "example.com"}, "http://p:1"),
        ({"HTTPS_PROXY": "http://p:1", "NO_PROXY": "10.0.0.0/8,127.0.0.0/8"}, None),
        ({"HTTPS_PROXY": "http://p:1", "NO_PROXY": "*"}, None),
    ],
)
def test_the_environment_proxy_is_decided_once_by_https_proxy_and_no_proxy(
    environ: dict[str, str], expected: str | None
) -> None:
    from nsbaseline.kube.proxy import environment_proxy

    assert environment_proxy("https://127.0.0.1:6443", environ) == expected
