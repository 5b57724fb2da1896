"""Flask and WebSockets on one port: a Flask chat page, its WebSocket, a view that publishes.

    pip install flask                      # or: pip install 'syncws[examples]'
    python examples/flask_chat.py          # then open http://127.0.0.1:3000

``fetch`` upgrades ``/ws`` and hands every other request to the Flask app
through ``syncws.wsgi``. The chat name comes from the Flask session (set by
the form on the page) or ``?name=``. ``POST /announce`` (form field
``text``) is a plain Flask view that publishes to the room.

Why the Origin checks: browsers send cookies with WebSocket handshakes and
form posts, even from a page of another site (there is no CORS for
WebSockets, and Flask has no CSRF protection of its own). Without the
checks, any site you visit could open ``ws://127.0.0.1:3000/ws`` or post to
``/announce`` with your session and chat in your name. Browsers always send
``Origin`` on a WebSocket handshake and on a cross-site POST, so both are
refused when it is not this site's own. Clients that are not browsers may
send none; they carry no victim's cookies.
"""

from __future__ import annotations

import os
import secrets
import sys

import flask
from werkzeug.wrappers import Response as WerkzeugResponse

import syncws
from syncws.wsgi import environ_for

TOPIC = "chat"

app = flask.Flask(__name__)
app.secret_key = os.environ.get("SECRET_KEY") or secrets.token_hex(32)

PAGE = """<!doctype html>
<meta charset="utf-8"><title>Flask chat</title>
<h1>Flask chat</h1>
<form method="post" action="/login">
  <input name="name" value="{{ name or '' }}" placeholder="Your name"> <button>Set name</button>
</form>
<ul id="log"></ul>
<form id="chat"><input id="message" autocomplete="off"> <button>Send</button></form>
<script>
const log = document.getElementById("log");
const url = new URL("/ws", location.href);
url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
const socket = new WebSocket(url);  // the session cookie goes along
socket.onmessage = (event) => {
  const item = document.createElement("li");
  item.textContent = event.data;
  log.appendChild(item);
};
document.getElementById("chat").onsubmit = (event) => {
  event.preventDefault();
  const input = document.getElementById("message");
  if (input.value) socket.send(input.value);
  input.value = "";
};
</script>
"""


@app.before_request
def refuse_cross_site_posts() -> tuple[str, int] | None:
    # Flask has no CSRF protection of its own (a real app adds Flask-WTF): a
    # form on another site's page could post here with the user's session.
    request = flask.request
    if request.method == "POST" and not same_origin(request.headers.get("Origin"),
                                                    request.host, request.scheme):
        return "POST from this site only", 403
    return None


@app.get("/")
def index() -> str:
    return flask.render_template_string(PAGE, name=flask.session.get("name"))


@app.post("/login")
def login() -> WerkzeugResponse:
    flask.session["name"] = flask.request.form.get("name", "").strip()[:32]
    return flask.redirect("/")


@app.post("/announce")
def announce() -> dict[str, int]:
    # Every syncws environ carries the running server: a view can publish.
    server: syncws.Server[str] = flask.request.environ["syncws.server"]
    server.publish(TOPIC, f"announcement: {flask.request.form['text']}")
    return {"subscribers": server.subscriber_count(TOPIC)}


flask_fetch = syncws.wsgi(app)


def same_origin(origin: str | None, host: str, scheme: str) -> bool:
    """True unless ``origin`` names another site than ``host`` (None: not a browser)."""
    return origin is None or origin == f"{scheme}://{host}"


def session_name(req: syncws.Request, server: syncws.Server[str]) -> str | None:
    """The name in the Flask session cookie of ``req``, read by Flask itself."""
    with app.request_context(environ_for(req, server)):
        name = flask.session.get("name")
    return name if isinstance(name, str) and name else None


def fetch(req: syncws.Request, server: syncws.Server[str]) -> syncws.Response | None:
    if req.path == "/ws":
        scheme = "https" if req.url.startswith("https:") else "http"
        if not same_origin(req.headers.get("origin"), req.headers.get("host", ""), scheme):
            return syncws.Response("Cross-origin WebSocket refused", status=403)
        name = session_name(req, server) or req.query.get("name") or "Anonymous"
        if server.upgrade(req, data=name[:32]):
            return None
        return syncws.Response("Expected a WebSocket request", status=400)
    return flask_fetch(req, server)


def on_open(ws: syncws.ServerWebSocket[str]) -> None:
    ws.subscribe(TOPIC)
    ws.publish(TOPIC, f"{ws.data} joined")


def on_message(ws: syncws.ServerWebSocket[str], message: str | bytes) -> None:
    ws.publish(TOPIC, f"{ws.data}: {message!s}")


def on_close(ws: syncws.ServerWebSocket[str], code: int, reason: str) -> None:
    ws.publish(TOPIC, f"{ws.data} left")


if __name__ == "__main__":
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 3000
    server: syncws.Server[str] = syncws.serve(
        fetch=fetch,
        websocket={"open": on_open, "message": on_message, "close": on_close,
                   "publish_to_self": True},  # ws.publish reaches the sender too
        hostname="127.0.0.1",
        port=port,
    )
    print(f"Listening on http://127.0.0.1:{server.port}", flush=True)
    server.serve_forever()
