"""Serving the app to a lab: logins, the upload cap, and files served only from the workspace's exports."""
import httpx
import pytest

from app import launch_options, parse_args, read_logins
from app_server import serving, with_embedded_model


@pytest.fixture()
def hosted(workspace, embedded_model_dir, tmp_path):
    logins = tmp_path / "logins.txt"
    logins.write_text("# the lab\nbo:hunter2\n")
    args = parse_args(["--auth", "ana:secret", "--auth-file", str(logins), "--max-upload-mb", "1",
                       "--workspace", str(workspace.root)])
    with serving(with_embedded_model(workspace, embedded_model_dir), **launch_options(args, workspace, read_logins(args))) as studio:
        yield studio.url.rstrip("/"), workspace


def login(client: httpx.Client, url: str, user: str, password: str) -> httpx.Response:
    return client.post(f"{url}/login", data={"username": user, "password": password})


def test_nothing_is_reachable_without_a_login(hosted):
    url, _ = hosted
    with httpx.Client() as client:
        assert client.get(f"{url}/config").status_code == 401
        assert client.get(f"{url}/gradio_api/info").status_code == 401
        assert login(client, url, "ana", "wrong").status_code == 400  # a wrong password is refused
        assert client.get(f"{url}/config").status_code == 401
        assert login(client, url, "bo", "hunter2").status_code == 200  # a login from the auth file
        assert client.get(f"{url}/config").status_code == 200


def test_every_route_that_reaches_the_app_needs_a_login(hosted):
    """Gradio 6.31's routes that read files, take uploads or run the app's functions (gradio/routes.py, all under
    /gradio_api): without a login each answers 401 from gradio's login check, before it reads the request."""
    url, workspace = hosted
    export = workspace.exports / "model.txt"
    export.write_text("for download")
    with httpx.Client() as client:
        assert login(client, url, "ana", "secret").status_code == 200
        endpoints = client.get(f"{url}/gradio_api/info").json()["named_endpoints"]
        assert client.get(f"{url}/gradio_api/file={export}").text == "for download"  # served, to a login
    api = next(iter(endpoints)).lstrip("/")  # one of the app's own functions
    call = {"data": [], "fn_index": 0, "session_hash": "outsider", "event_data": None, "trigger_id": None}
    requests = [
        ("GET", f"/gradio_api/file={export}", {}),
        ("GET", f"/gradio_api/file/{export}", {}),
        ("POST", "/gradio_api/upload", {"files": {"files": ("small.jsonl", b'{"text": "hi"}\n')}}),
        ("GET", "/gradio_api/upload_progress?upload_id=outsider", {}),
        ("POST", "/gradio_api/queue/join", {"json": call}),
        ("GET", "/gradio_api/queue/data?session_hash=outsider", {}),
        ("GET", "/gradio_api/queue/status", {}),
        ("POST", f"/gradio_api/run/{api}", {"json": {"data": []}}),
        ("POST", "/gradio_api/run/predict", {"json": {"data": []}}),
        ("POST", f"/gradio_api/api/{api}", {"json": {"data": []}}),
        ("POST", f"/gradio_api/call/{api}", {"json": {"data": []}}),
        ("GET", f"/gradio_api/call/{api}/some-event", {}),
        ("POST", f"/gradio_api/call/v2/{api}", {"json": {"data": []}}),
        ("POST", "/gradio_api/component_server", {"json": {}}),
        ("GET", "/gradio_api/openapi.json", {}),
        ("GET", "/gradio_api/info", {}),
        ("GET", "/config", {}),
    ]
    refused = {"detail": {"error": "Not authenticated", "auth_message": None}}
    with httpx.Client() as client:
        answers = {f"{method} {path}": client.request(method, url + path, **options)
                   for method, path, options in requests}
    assert {route: answer.status_code for route, answer in answers.items()} == {route: 401 for route in answers}
    assert all(answer.json() == refused for answer in answers.values())


def test_only_exports_are_served_and_uploads_are_capped(hosted):
    url, workspace = hosted
    secret = workspace.root / "runs" / "secret.txt"
    secret.write_text("not for download")
    export = workspace.exports / "model.txt"
    export.write_text("for download")
    with httpx.Client() as client:
        login(client, url, "ana", "secret")
        assert client.get(f"{url}/gradio_api/file={export}").text == "for download"
        for outside in (secret, "/etc/passwd"):
            assert client.get(f"{url}/gradio_api/file={outside}").status_code in (403, 404)
        big = client.post(f"{url}/gradio_api/upload", files={"files": ("big.jsonl", b"x" * (2 * 2**20))})
        assert big.status_code == 413
        small = client.post(f"{url}/gradio_api/upload", files={"files": ("small.jsonl", b'{"text": "hi"}\n')})
        assert small.status_code == 200


def test_only_the_named_admins_administer_and_no_login_may_be_called_local(workspace):
    from types import SimpleNamespace

    from studio.ui.context import Studio

    with pytest.raises(SystemExit, match="may not be called 'local'"):  # it would own the runs made without logins
        read_logins(parse_args(["--auth", "ana:secret", "--auth", "local:secret"]))
    lab = Studio(workspace, queue=None, admins={"ana"}, logins=True)
    assert lab.is_admin(SimpleNamespace(username="ana"))
    assert not lab.is_admin(SimpleNamespace(username="bo")) and not lab.is_admin(SimpleNamespace(username="local"))
    alone = Studio(workspace, queue=None)  # no logins: the one person using it owns the whole studio
    assert alone.is_admin(None) and alone.user(None) == "local"
