"""Django and WebSockets on one port: a single-file Django site with a chat.

    pip install django                     # or: pip install 'syncws[examples]'
    python examples/django_chat.py         # then open http://127.0.0.1:3000

The same idea as ``flask_chat.py``: ``fetch`` upgrades ``/ws`` and hands
every other request to Django's WSGI handler through ``syncws.wsgi``. The
chat name comes from the Django session (signed cookies: no database) or
``?name=``; ``/ws`` refuses a handshake whose ``Origin`` is another site (see
``flask_chat.py`` for why). ``POST /announce`` is a Django view that
publishes to the room with ``server.publish``.
"""

from __future__ import annotations

import os
import secrets
import sys
from typing import Any

import django
from django.conf import settings
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse
from django.urls import path

import syncws

TOPIC = "chat"

settings.configure(
    DEBUG=False,
    SECRET_KEY=os.environ.get("SECRET_KEY") or secrets.token_hex(32),
    ALLOWED_HOSTS=["127.0.0.1", "localhost", "[::1]"],
    ROOT_URLCONF=__name__,
    MIDDLEWARE=["django.contrib.sessions.middleware.SessionMiddleware"],
    SESSION_ENGINE="django.contrib.sessions.backends.signed_cookies",
    INSTALLED_APPS=[],
    DATABASES={},
)
django.setup()

from django.contrib.sessions.backends.signed_cookies import SessionStore  # noqa: E402
from django.core.wsgi import get_wsgi_application  # noqa: E402

PAGE = """<!doctype html>
<meta charset="utf-8"><title>Django chat</title>
<h1>Django chat</h1>
<form method="post" action="/login">
  <input name="name" placeholder="Your name"> <button>Set name</button>
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


def index(request: HttpRequest) -> HttpResponse:
    return HttpResponse(PAGE)


def login(request: HttpRequest) -> HttpResponse:
    # A real site keeps CsrfViewMiddleware; this single-file one checks Origin instead.
    if request.method != "POST" or not same_origin_header(request.headers.get("Origin"),
                                                          request.get_host()):
        return HttpResponse("POST from this site only", status=403)
    request.session["name"] = request.POST.get("name", "").strip()[:32]
    return HttpResponseRedirect("/")


def announce(request: HttpRequest) -> HttpResponse:
    if request.method != "POST" or not same_origin_header(request.headers.get("Origin"),
                                                          request.get_host()):
        return HttpResponse("POST from this site only", status=403)
    # Every syncws environ carries the running server: a view can publish.
    server: syncws.Server[str] = request.META["syncws.server"]
    server.publish(TOPIC, f"announcement: {request.POST.get('text', '')}")
    return JsonResponse({"subscribers": server.subscriber_count(TOPIC)})


urlpatterns = [path("", index), path("login", login), path("announce", announce)]

django_fetch = syncws.wsgi(get_wsgi_application())


def same_origin_header(origin: str | None, host: str) -> bool:
    """True unless ``origin`` names another site than ``host`` (None: not a browser)."""
    return origin is None or origin in (f"http://{host}", f"https://{host}")


def session_name(req: syncws.Request) -> str | None:
    """The name in the Django session cookie of ``req``."""
    cookie = req.headers.get("cookie", "")
    for part in cookie.split(";"):
        key, _, value = part.strip().partition("=")
        if key == settings.SESSION_COOKIE_NAME:
            name: Any = SessionStore(session_key=value).get("name")
            return name if isinstance(name, str) and name else None
    return None


def fetch(req: syncws.Request, server: syncws.Server[str]) -> syncws.Response | None:
    if req.path == "/ws":
        if not same_origin_header(req.headers.get("origin"), req.headers.get("host", "")):
            return syncws.Response("Cross-origin WebSocket refused", status=403)
        name = session_name(req) or req.query.get("name") or "Anonymous"
        if server.upgrade(req, data=name[:32]):
            return None
        return syncws.Response("Expected a WebSocket request", status=400)
    return django_fetch(req, server)


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
                   "publish_to_self": True},
        hostname="127.0.0.1",
        port=port,
    )
    print(f"Listening on http://127.0.0.1:{server.port}", flush=True)
    server.serve_forever()
