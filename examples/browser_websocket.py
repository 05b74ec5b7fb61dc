"""A websocket a browser can open with its token: FastAPI, authmw, and the page's script.

Browsers cannot set headers on a websocket handshake, so the page offers its
token as a subprotocol, ``new WebSocket(url, ["bearer", token])``; authmw
reads it from there, hides it from the app and makes the accept select
``bearer`` (else the browser drops the socket). The socket is closed when
the token expires or is revoked. Run it and open http://127.0.0.1:8000/::

    uvicorn --app-dir examples browser_websocket:app

Tokens come from the in-memory demo validator (``demo-member-token``) unless
``AUTHMW_AUTH_URL`` (Keystone) or ``AUTHMW_DB`` (the local token store) say
otherwise.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, FastAPI, WebSocket, WebSocketDisconnect
from fastapi.responses import HTMLResponse

from authmw import Identity, InMemoryValidator
from authmw.contrib import validator_from_env
from authmw.contrib.fastapi import current_identity, setup

PAGE = """<!doctype html>
<meta charset="utf-8">
<title>authmw websocket</title>
<input id="token" placeholder="token" value="demo-member-token">
<button id="open">open</button>
<pre id="log"></pre>
<script>
const log = (line) => { document.getElementById("log").textContent += line + "\\n"; };
document.getElementById("open").onclick = () => {
  const token = document.getElementById("token").value;
  const url = location.origin.replace(/^http/, "ws") + "/events";
  // The token travels as the second offered subprotocol, never in the URL.
  const socket = new WebSocket(url, ["bearer", token]);
  socket.onopen = () => { log("open, subprotocol " + socket.protocol); socket.send("hello"); };
  socket.onmessage = (event) => log("got " + event.data);
  socket.onclose = (event) => log("closed " + event.code);
};
</script>
"""


def create_app() -> FastAPI:
    app = FastAPI()
    validator = validator_from_env(
        default=lambda: InMemoryValidator(
            {"demo-member-token": Identity("member", user_name="member", roles=["member"])}
        )
    )
    setup(
        app,
        validator,
        token_sources=["X-Auth-Token", "Authorization: Bearer", "Sec-WebSocket-Protocol: bearer"],
    )

    @app.get("/", response_class=HTMLResponse)
    async def page() -> str:
        return PAGE

    @app.websocket("/events")
    async def events(
        websocket: WebSocket, identity: Annotated[Identity, Depends(current_identity)]
    ) -> None:
        await websocket.accept()  # authmw selects "bearer" for the browser
        try:
            while True:
                text = await websocket.receive_text()
                await websocket.send_json({"user": identity.user_name, "echo": text})
        except WebSocketDisconnect:
            return

    return app


app = create_app()
