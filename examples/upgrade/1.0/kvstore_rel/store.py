"""kvstore, release 1.0: a cache of key-value pairs under a supervisor.

The hot-upgrade tutorial (README, "Hot code upgrade") runs this release,
then upgrades it live to 1.1 (which counts reads: a state change) and tries
1.2 (whose code_change fails: the install rolls back).
"""

from __future__ import annotations

from typing import Any

import otpvm
from otpvm import application, gen_server, supervisor
from otpvm.gen_server import GenServer, Ok, Reply
from otpvm.supervisor import ChildSpec, Supervisor, SupFlags

__vsn__ = "1.0"


class Cache(GenServer):
    """The data: a dict."""

    def init(self, _: Any) -> Any:
        return Ok({})

    def handle_call(self, request: Any, from_: Any, data: dict[str, Any]) -> Any:
        op, key, *value = request
        if op == "get":
            return Reply(data.get(key), data)
        return Reply("ok", {**data, key: value[0]})


class StoreSup(Supervisor):
    """One child: the cache, registered as 'cache'."""

    def init(self, _: Any) -> Any:
        return SupFlags("one_for_one", intensity=5, period=10), [
            ChildSpec("cache", ("kvstore_rel.store:start_cache", ())),
        ]


async def start_cache() -> otpvm.Pid:
    """Starts the cache (a late-bound child start: restarts run current code)."""
    return await gen_server.start_link(Cache, None, name="cache")


class KVStore(application.Application):
    """The application."""

    name = "kvstore"
    vsn = "1.0"

    async def start(self, start_type: str, args: Any) -> otpvm.Pid:
        return await supervisor.start_link(StoreSup, None, name="kvstore_sup")
