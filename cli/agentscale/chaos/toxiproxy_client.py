"""The Toxiproxy API through toxiproxy-python: the only module that imports toxiproxy.

toxiproxy-python keeps the server's address on a class and sets no timeouts, so every call
here goes through its ``APIConsumer`` with an explicit timeout. The server can answer 503
under load: a change is retried, then verified with a read, before it counts as applied.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import requests
from toxiproxy.api import APIConsumer
from toxiproxy.exceptions import NotFound, ProxyExists

CALL_TIMEOUT_S = 2.0
ATTEMPTS = 4
PREFIX = "agentscale-"  # every proxy agentscale makes is named so; reset removes only these


class ToxiproxyError(Exception):
    pass


class ToxiproxyAPI:
    def __init__(self, url: str) -> None:
        parts = urlsplit(url if "://" in url else f"http://{url}")
        self.url = f"http://{parts.hostname}:{parts.port or 8474}"
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 8474

    def _call(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        # toxiproxy-python reads the address from the class: set it on every call, so that
        # two servers in one process never mix.
        APIConsumer.host, APIConsumer.port = self.host, self.port
        caller = {"get": APIConsumer.get, "post": APIConsumer.post, "delete": APIConsumer.delete}
        last: Exception | None = None
        for attempt in range(ATTEMPTS):
            try:
                response: requests.Response = caller[method](path, timeout=CALL_TIMEOUT_S, **kwargs)
            except (requests.ConnectionError, requests.Timeout) as error:
                last = error
            else:
                if response.status_code < 500:
                    return response
                last = ToxiproxyError(f"{method.upper()} {path}: HTTP {response.status_code}")
            time.sleep(0.05 * 2**attempt)
        raise ToxiproxyError(f"{method.upper()} {path} failed after {ATTEMPTS} tries: {last}")

    def _verified(self, change: Callable[[], object], check: Callable[[], bool], what: str) -> None:
        """Make a change; if the call failed or its effect is not there, try again."""
        for _ in range(ATTEMPTS):
            with contextlib.suppress(ToxiproxyError, NotFound, ProxyExists):
                change()
            try:
                if check():
                    return
            except ToxiproxyError:
                pass
            time.sleep(0.05)
        raise ToxiproxyError(f"could not {what}: the server does not show the change")

    # --- reads --------------------------------------------------------------------------------
    def version(self) -> str:
        return self._call("get", "/version").text.strip()

    def proxies(self) -> dict[str, dict[str, Any]]:
        found: dict[str, dict[str, Any]] = self._call("get", "/proxies").json()
        return found

    def proxy(self, name: str) -> dict[str, Any] | None:
        try:
            found: dict[str, Any] = self._call("get", f"/proxies/{name}").json()
        except NotFound:
            return None
        return found

    def _toxic_names(self, proxy: str) -> set[str]:
        found = self.proxy(proxy)
        return {t["name"] for t in (found or {}).get("toxics", [])}

    # --- changes, each verified -------------------------------------------------------------
    def create_proxy(self, name: str, listen: str, upstream: str) -> None:
        body = {"name": name, "listen": listen, "upstream": upstream, "enabled": True}
        self._verified(
            lambda: self._call("post", "/proxies", json=body),
            lambda: (self.proxy(name) or {}).get("upstream") == upstream,
            f"create proxy {name}",
        )

    def delete_proxy(self, name: str) -> None:
        self._verified(
            lambda: self._call("delete", f"/proxies/{name}"),
            lambda: self.proxy(name) is None,
            f"delete proxy {name}",
        )

    def set_enabled(self, name: str, enabled: bool) -> None:
        self._verified(
            lambda: self._call("post", f"/proxies/{name}", json={"enabled": enabled}),
            lambda: (self.proxy(name) or {}).get("enabled") is enabled,
            f"{'enable' if enabled else 'disable'} proxy {name}",
        )

    def add_toxic(
        self,
        proxy: str,
        name: str,
        kind: str,
        stream: str,
        toxicity: float,
        attributes: dict[str, Any],
    ) -> None:
        body = {
            "name": name,
            "type": kind,
            "stream": stream,
            "toxicity": toxicity,
            "attributes": attributes,
        }
        self._verified(
            lambda: self._call("post", f"/proxies/{proxy}/toxics", json=body),
            lambda: name in self._toxic_names(proxy),
            f"add toxic {name} to {proxy}",
        )

    def update_toxic(self, proxy: str, name: str, attributes: dict[str, Any]) -> None:
        def applied() -> bool:
            toxics = (self.proxy(proxy) or {}).get("toxics", [])
            found = next((t for t in toxics if t["name"] == name), None)
            return found is not None and all(
                found["attributes"].get(k) == v for k, v in attributes.items()
            )

        self._verified(
            lambda: self._call(
                "post", f"/proxies/{proxy}/toxics/{name}", json={"attributes": attributes}
            ),
            applied,
            f"update toxic {name} on {proxy}",
        )

    def remove_toxic(self, proxy: str, name: str) -> None:
        self._verified(
            lambda: self._call("delete", f"/proxies/{proxy}/toxics/{name}"),
            lambda: name not in self._toxic_names(proxy),
            f"remove toxic {name} from {proxy}",
        )

    def remove_ours(self) -> list[str]:
        """Delete every proxy agentscale made (by its name prefix): toxics and all."""
        removed = []
        for name in self.proxies():
            if name.startswith(PREFIX):
                self.delete_proxy(name)
                removed.append(name)
        return removed
