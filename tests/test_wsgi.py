"""syncws.wsgi: WSGI apps (a plain one, Flask, Django) beside WebSockets on one port (issue 7).

Tests that need Flask or Django skip when it is missing, except in CI
(CI=true), where a missing one is a failure.
"""

from __future__ import annotations

import http.client
import importlib
import json
import os
import sys
import threading
import types
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlencode

import pytest
from conftest import wait
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

import syncws
from syncws.wsgi import environ_for


def require(module: str) -> Any:
    """Import ``module``; skip without it, but fail in CI."""
    if os.environ.get("CI") == "true":
        return importlib.import_module(module)
    return pytest.importorskip(module)


Reply = tuple[int, http.client.HTTPMessage, bytes]


def http_request(port: int, method: str, path: str, body: bytes | None = None,
                 headers: dict[str, str] | None = None) -> Reply:
    """One HTTP request on a fresh connection: (status, headers, body)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=wait(10))
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.headers, response.read()
    finally:
        conn.close()


def request(target: str, headers: list[tuple[str, str]] | None = None, body: bytes = b"",
            method: str = "GET") -> syncws.Request:
    return syncws.Request(method, target,
                          syncws.Headers(headers if headers is not None
                                         else [("Host", "example.com:8080")]),
                          body, peer=("10.0.0.7", 51234))


# -- the environ, pure ------------------------------------------------------------


def test_environ_follows_pep_3333(make_server: Any) -> None:
    server = make_server()
    req = request("/caf%C3%A9/a%20b?x=1&y=%20z", [
        ("Host", "example.com:8080"), ("Content-Type", "application/json"),
        ("Content-Length", "2"), ("X-Thing", "one"), ("x-thing", "two"),
        ("Cookie", "a=1"), ("Cookie", "b=2"), ("X_Spoofed", "evil"),
    ], b"{}", "POST")
    env = environ_for(req, server)
    assert env["REQUEST_METHOD"] == "POST"
    assert env["SCRIPT_NAME"] == ""
    # Percent-decoded bytes, carried as latin-1 (PEP 3333's "bytes-as-str").
    assert env["PATH_INFO"] == "/café/a b".encode().decode("latin-1")
    assert env["QUERY_STRING"] == "x=1&y=%20z"
    assert env["CONTENT_TYPE"] == "application/json"
    assert env["CONTENT_LENGTH"] == "2"
    assert "HTTP_CONTENT_TYPE" not in env and "HTTP_CONTENT_LENGTH" not in env
    assert env["HTTP_HOST"] == "example.com:8080"
    assert env["HTTP_X_THING"] == "one, two"
    assert env["HTTP_COOKIE"] == "a=1; b=2"
    assert "HTTP_X_SPOOFED" not in env  # an underscore name could pose as X-Spoofed
    assert env["SERVER_NAME"] == "127.0.0.1"
    assert env["SERVER_PORT"] == str(server.port)
    assert env["SERVER_PROTOCOL"] == "HTTP/1.1"
    assert (env["REMOTE_ADDR"], env["REMOTE_PORT"]) == ("10.0.0.7", "51234")
    assert env["wsgi.input"].read() == b"{}"
    assert env["wsgi.url_scheme"] == "http"
    assert env["wsgi.version"] == (1, 0)
    assert env["wsgi.multithread"] is True
    assert env["wsgi.multiprocess"] is False
    assert env["wsgi.run_once"] is False
    assert env["syncws.server"] is server
    assert env["syncws.request"] is req
    for key, value in env.items():
        if key.isupper():
            assert isinstance(value, str), key


def test_environ_without_body_has_no_content_length() -> None:
    env = environ_for(request("/"))
    assert "CONTENT_LENGTH" not in env and "CONTENT_TYPE" not in env
    assert env["PATH_INFO"] == "/" and env["QUERY_STRING"] == ""


def test_wsgi_errors_go_to_the_logger(caplog: pytest.LogCaptureFixture) -> None:
    env = environ_for(request("/"))
    env["wsgi.errors"].write("first line\nsecond ")
    env["wsgi.errors"].writelines(["line\n"])
    env["wsgi.errors"].flush()
    assert [r.getMessage() for r in caplog.records if r.name == "syncws.wsgi"] == \
        ["first line", "second line"]


# -- start_response, the body, close(): a hand-written WSGI app ------------------------


class Body:
    """An iterable with close(), to see that the server calls it."""

    def __init__(self, chunks: list[Any], fail: bool = False) -> None:
        self.chunks = chunks
        self.fail = fail
        self.closed = threading.Event()

    def __iter__(self) -> Iterator[Any]:
        yield from self.chunks
        if self.fail:
            raise RuntimeError("body failed")

    def close(self) -> None:
        self.closed.set()


def run(app: Callable[..., Any], target: str = "/") -> syncws.Response:
    return syncws.wsgi(app)(request(target), None)  # type: ignore[arg-type]


def test_status_headers_and_joined_body_and_close() -> None:
    body = Body([b"a", b"", b"bc"])

    def app(environ: dict[str, Any], start_response: Any) -> Body:
        write = start_response("201 Created", [("X-One", "1"), ("Set-Cookie", " k=v")])
        write(b"w")
        return body

    response = run(app)
    assert response.status == 201
    assert response.body == b"wabc"
    assert ("X-One", "1") in response.headers
    assert ("Set-Cookie", "k=v") in response.headers  # surrounding whitespace dropped
    assert body.closed.is_set()


def test_exc_info_before_the_body_replaces_the_status() -> None:
    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [("X-Ok", "yes")])
        try:
            raise ValueError("oops")
        except ValueError:
            start_response("500 Internal Server Error", [("X-Error", "1")], sys.exc_info())
        return [b"error page"]

    response = run(app)
    assert response.status == 500
    assert response.headers == [("X-Error", "1")]
    assert response.body == b"error page"


def test_exc_info_after_the_body_started_reraises() -> None:
    def app(environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
        start_response("200 OK", [])
        yield b"partial"
        try:
            raise ValueError("late")
        except ValueError:
            start_response("500 Internal Server Error", [], sys.exc_info())
        yield b"never"

    with pytest.raises(ValueError, match="late"):
        run(app)


def test_start_response_twice_without_exc_info_is_an_error() -> None:
    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [])
        start_response("404 Not Found", [])
        return []

    with pytest.raises(RuntimeError, match="second time"):
        run(app)


@pytest.mark.parametrize("status, headers", [("OK", []), ("200 OK", [("X", 1)])])
def test_bad_status_or_headers_are_refused(status: str, headers: list[Any]) -> None:
    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response(status, headers)
        return []

    with pytest.raises((ValueError, TypeError)):
        run(app)


def test_close_is_called_when_the_body_fails_or_is_not_bytes() -> None:
    failing = Body([b"x"], fail=True)
    not_bytes = Body(["text"])
    for body, error in ((failing, RuntimeError), (not_bytes, TypeError)):
        def app(environ: dict[str, Any], start_response: Any, body: Body = body) -> Body:
            start_response("200 OK", [])
            return body

        with pytest.raises(error):
            run(app)
        assert body.closed.is_set()


def test_no_start_response_is_an_error() -> None:
    with pytest.raises(RuntimeError, match="start_response"):
        run(lambda environ, start_response: [])


def test_wsgi_refuses_a_non_callable() -> None:
    with pytest.raises(TypeError, match="app"):
        syncws.wsgi("not an app")  # type: ignore[arg-type]


def test_a_failing_app_gives_500_and_the_server_goes_on(make_server: Any) -> None:
    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        if environ["PATH_INFO"] == "/boom":
            raise RuntimeError("boom")
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"fine"]

    server = make_server(syncws.wsgi(app))
    assert http_request(server.port, "GET", "/boom")[0] == 500
    assert http_request(server.port, "GET", "/")[::2] == (200, b"fine")


# -- Flask ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def flask() -> Any:
    return require("flask")


class FlaskSite:
    """A Flask app, served with a WebSocket endpoint at /ws on one port."""

    def __init__(self, flask: Any, make_server: Any) -> None:
        app = flask.Flask("syncws_test")
        app.secret_key = "test secret"
        self.stream_closed = threading.Event()
        request = flask.request

        @app.get("/hello")
        def hello() -> str:
            return f"hello {request.args.get('name', 'world')}"

        @app.post("/form")
        def form() -> Any:
            return flask.jsonify(dict(request.form))

        @app.post("/json")
        def json_view() -> Any:
            return flask.jsonify({"got": request.get_json()})

        @app.get("/redirect")
        def redirect() -> Any:
            return flask.redirect("/hello?name=redirected")

        @app.post("/login")
        def login() -> str:
            flask.session["name"] = request.form["name"]
            return "ok"

        @app.get("/whoami")
        def whoami() -> str:
            return str(flask.session.get("name", "nobody"))

        @app.get("/stream")
        def stream() -> Any:
            def generate() -> Iterator[str]:
                try:
                    yield "one,"
                    yield "two,"
                    yield "three"
                finally:
                    self.stream_closed.set()
            return flask.Response(generate(), mimetype="text/plain")

        @app.get("/boom")
        def boom() -> str:
            raise RuntimeError("view failed")

        @app.get("/environ")
        def environ() -> Any:
            env = request.environ
            return flask.jsonify({key: env[key] for key in (
                "REMOTE_ADDR", "SERVER_PORT", "wsgi.url_scheme", "PATH_INFO", "QUERY_STRING")})

        @app.post("/announce")
        def announce() -> Any:
            server: syncws.Server[Any] = request.environ["syncws.server"]
            result = server.publish("room", request.form["text"])
            return flask.jsonify({"result": result, "subscribers": server.subscriber_count("room")})

        self.app = app
        flask_fetch = syncws.wsgi(app)

        def fetch(req: syncws.Request, server: syncws.Server[Any]) -> syncws.Response | None:
            if req.path == "/ws":
                origin = req.headers.get("origin")
                if origin is not None and origin != f"http://{req.headers['host']}":
                    return syncws.Response("Cross-origin WebSocket refused", status=403)
                if server.upgrade(req, data=req.query.get("name", "anon")):
                    return None
                return syncws.Response("Expected a WebSocket", status=400)
            return flask_fetch(req, server)

        def on_open(ws: syncws.ServerWebSocket[Any]) -> None:
            ws.subscribe("room")
            ws.send("ready")  # the client knows it is subscribed

        self.server = make_server(fetch, {
            "open": on_open, "message": lambda ws, msg: ws.send(f"{ws.data}: {msg}")})
        self.port: int = self.server.port
        self.ws_url = f"ws://127.0.0.1:{self.port}/ws"


@pytest.fixture
def site(flask: Any, make_server: Any) -> FlaskSite:
    return FlaskSite(flask, make_server)


def test_flask_get(site: FlaskSite) -> None:
    status, headers, body = http_request(site.port, "GET", "/hello?name=ada")
    assert (status, body) == (200, b"hello ada")
    assert headers["Content-Type"].startswith("text/html")


def test_flask_head_keeps_the_get_content_length(site: FlaskSite) -> None:
    # Werkzeug answers HEAD with the GET's headers and no body (RFC 9110 9.3.2).
    status, headers, body = http_request(site.port, "HEAD", "/hello?name=ada")
    assert (status, body) == (200, b"")
    assert headers["Content-Length"] == str(len(b"hello ada"))


def test_flask_post_form_and_json(site: FlaskSite) -> None:
    form = urlencode({"a": "1", "b": "é"}).encode()
    status, _, body = http_request(site.port, "POST", "/form", form,
                                   {"Content-Type": "application/x-www-form-urlencoded"})
    assert status == 200 and json.loads(body) == {"a": "1", "b": "é"}
    status, _, body = http_request(site.port, "POST", "/json", json.dumps({"n": [1, 2]}).encode(),
                                   {"Content-Type": "application/json"})
    assert status == 200 and json.loads(body) == {"got": {"n": [1, 2]}}


def test_flask_redirect(site: FlaskSite) -> None:
    status, headers, _ = http_request(site.port, "GET", "/redirect")
    assert status == 302
    assert headers["Location"] == "/hello?name=redirected"


def test_flask_session_cookie(site: FlaskSite) -> None:
    status, headers, _ = http_request(site.port, "POST", "/login", b"name=grace",
                                      {"Content-Type": "application/x-www-form-urlencoded"})
    assert status == 200
    cookie = headers["Set-Cookie"].split(";")[0]
    assert cookie.startswith("session=")
    assert http_request(site.port, "GET", "/whoami", headers={"Cookie": cookie})[2] == b"grace"
    assert http_request(site.port, "GET", "/whoami")[2] == b"nobody"


def test_flask_streamed_response_is_joined_and_closed(site: FlaskSite) -> None:
    status, headers, body = http_request(site.port, "GET", "/stream")
    assert (status, body) == (200, b"one,two,three")
    assert headers["Content-Length"] == str(len(body))
    assert site.stream_closed.wait(wait(5))


def test_flask_404(site: FlaskSite) -> None:
    assert http_request(site.port, "GET", "/nowhere")[0] == 404


def test_flask_view_exception_is_500_and_the_server_goes_on(site: FlaskSite) -> None:
    assert http_request(site.port, "GET", "/boom")[0] == 500
    # Let the exception leave Flask: syncws answers 500 itself.
    site.app.config["PROPAGATE_EXCEPTIONS"] = True
    assert http_request(site.port, "GET", "/boom")[0] == 500
    assert http_request(site.port, "GET", "/hello")[::2] == (200, b"hello world")


def test_flask_environ_seen_by_the_view(site: FlaskSite) -> None:
    env = json.loads(http_request(site.port, "GET", "/environ?q=%2F")[2])
    assert env["REMOTE_ADDR"] == "127.0.0.1"
    assert env["SERVER_PORT"] == str(site.port)
    assert env["wsgi.url_scheme"] == "http"
    assert (env["PATH_INFO"], env["QUERY_STRING"]) == ("/environ", "q=%2F")


def test_flask_and_a_websocket_on_one_port_at_once(site: FlaskSite) -> None:
    with connect(site.ws_url + "?name=ada") as ws:
        assert ws.recv(timeout=wait(5)) == "ready"
        assert http_request(site.port, "GET", "/hello")[::2] == (200, b"hello world")
        ws.send("still here")
        assert ws.recv(timeout=wait(5)) == "ada: still here"
        assert http_request(site.port, "POST", "/json", b"[]",
                            {"Content-Type": "application/json"})[0] == 200


def test_flask_view_publishes_to_three_subscribers(site: FlaskSite) -> None:
    with connect(site.ws_url) as a, connect(site.ws_url) as b, connect(site.ws_url) as c:
        for ws in (a, b, c):
            assert ws.recv(timeout=wait(5)) == "ready"
        status, _, body = http_request(site.port, "POST", "/announce", b"text=hello+all",
                                       {"Content-Type": "application/x-www-form-urlencoded"})
        assert status == 200
        assert json.loads(body) == {"result": len("hello all"), "subscribers": 3}
        for ws in (a, b, c):
            assert ws.recv(timeout=wait(5)) == "hello all"


def test_cross_origin_upgrade_is_refused(site: FlaskSite) -> None:
    with pytest.raises(InvalidStatus) as refused, \
            connect(site.ws_url, origin="http://evil.example"):
        pass
    assert refused.value.response.status_code == 403
    origin = f"http://127.0.0.1:{site.port}"
    with connect(site.ws_url, origin=origin) as ws:
        assert ws.recv(timeout=wait(5)) == "ready"


# -- Django --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def django_app() -> Any:
    django = require("django")
    from django.conf import settings

    urls = types.ModuleType("syncws_test_django_urls")
    sys.modules[urls.__name__] = urls
    if not settings.configured:
        settings.configure(
            DEBUG=False, SECRET_KEY="test", ALLOWED_HOSTS=["127.0.0.1"], USE_TZ=True,
            ROOT_URLCONF=urls.__name__, MIDDLEWARE=[], INSTALLED_APPS=[], DATABASES={})
        django.setup()
    from django.core.wsgi import get_wsgi_application
    from django.http import HttpResponse, JsonResponse
    from django.urls import path

    def hello(request: Any) -> Any:
        return HttpResponse(f"hello {request.GET.get('name', 'django')}")

    def echo(request: Any) -> Any:
        return JsonResponse({"method": request.method, "body": request.body.decode()})

    urls.urlpatterns = [path("hello", hello), path("echo", echo)]  # type: ignore[attr-defined]
    return get_wsgi_application()


def test_django_view_and_websocket_on_one_port(django_app: Any, make_server: Any) -> None:
    django_fetch = syncws.wsgi(django_app)

    def fetch(req: syncws.Request, server: syncws.Server[Any]) -> syncws.Response | None:
        if req.path == "/ws" and server.upgrade(req):
            return None
        return django_fetch(req, server)

    server = make_server(fetch, {"message": lambda ws, msg: ws.send(f"echo {msg}")})
    with connect(f"ws://127.0.0.1:{server.port}/ws") as ws:
        assert http_request(server.port, "GET", "/hello?name=ada")[::2] == (200, b"hello ada")
        ws.send("hi")
        assert ws.recv(timeout=wait(5)) == "echo hi"
        status, _, body = http_request(server.port, "POST", "/echo", b"payload",
                                       {"Content-Type": "text/plain"})
        assert status == 200 and json.loads(body) == {"method": "POST", "body": "payload"}
        assert http_request(server.port, "GET", "/missing")[0] == 404
