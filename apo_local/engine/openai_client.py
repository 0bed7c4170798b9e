"""The HTTP side of the openai backend: one client bound to one base URL (httpx).

Nothing but that URL is contacted: proxies and certificates from the environment are ignored
(``trust_env=False``), redirects are not followed, and paths are joined to the base, never taken
from a reply. Transient failures (connection refused or reset, 429, 5xx) are retried with backoff.
"""

from __future__ import annotations

import time

import httpx

RETRIES = 3  # retries after the first try
BACKOFF_S = 0.5  # the wait before retry k (0-based) is BACKOFF_S * 2**k: 0.5, 1 and 2 s
RETRY_STATUS = {429, 500, 502, 503, 504}


class ServerError(Exception):
    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


class ServerClient:
    def __init__(self, base_url: str, api_key: str | None, timeout: float = 600.0):
        url = httpx.URL(base_url.rstrip("/"))
        if url.scheme not in ("http", "https") or not url.host:
            raise ServerError(f"base_url {base_url!r}: expected http(s)://host[:port][/v1]")
        path = url.path.rstrip("/")
        self.root = str(url.copy_with(path=path.removesuffix("/v1") or "/")).rstrip("/")  # /tokenize lives here
        self.base = self.root + "/v1"
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.http = httpx.Client(
            timeout=timeout,
            trust_env=False,
            follow_redirects=False,
            headers=headers,
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=64),
        )

    def close(self) -> None:
        self.http.close()

    def _url(self, path: str, root: bool) -> str:
        if root:
            return self.root + path
        return self.base + path.removeprefix("/v1")

    def request(self, method: str, path: str, body: dict | None = None, root: bool = False) -> dict:
        url = self._url(path, root)
        for attempt in range(RETRIES + 1):
            try:
                r = self.http.request(method, url, json=body)
            except httpx.TransportError as exc:
                if attempt == RETRIES:
                    raise ServerError(
                        f"server at {self.base} unreachable ({RETRIES + 1} tries): {type(exc).__name__}: {exc}"
                    ) from None
            else:
                if r.status_code in RETRY_STATUS and attempt < RETRIES:
                    pass
                elif r.status_code >= 400:
                    tries = f" ({RETRIES + 1} tries)" if r.status_code in RETRY_STATUS else ""
                    raise ServerError(
                        f"server at {self.base}: {path} -> {r.status_code}{tries}: {_message(r)}", r.status_code
                    )
                else:
                    return r.json()
            time.sleep(BACKOFF_S * 2**attempt)
        raise ServerError(f"server at {self.base}: {path} kept failing", None)  # not reached

    def post(self, path: str, body: dict, root: bool = False) -> dict:
        return self.request("POST", path, body, root)

    def model_card(self, name: str | None) -> dict:
        """The served model ``name`` (None: the first the server lists), as ``/v1/models`` describes it."""
        cards = self.request("GET", "/v1/models").get("data") or []
        if not cards:
            raise ServerError(f"server at {self.base} serves no model")
        if name is None:
            return cards[0]
        for card in cards:
            if card.get("id") == name:
                return card
        served = ", ".join(str(c.get("id")) for c in cards)
        raise ServerError(f"model {name!r} is not served at {self.base} (served: {served})")


def _message(r: httpx.Response) -> str:
    try:
        data = r.json()
    except ValueError:
        return r.text[:200].strip()
    err = data.get("error", data) if isinstance(data, dict) else data
    msg = err.get("message", err) if isinstance(err, dict) else err
    return " ".join(str(msg).split())[:240]
