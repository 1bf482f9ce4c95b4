"""kvstore, release 1.2: a broken upgrade (its code_change raises).

Its state changes from ``data`` to ``(data, reads)``: ``code_change``
converts it, and converts it back on a downgrade to 1.0.
"""

from __future__ import annotations

from typing import Any

import otpvm
from otpvm import application, gen_server, supervisor
from otpvm.gen_server import GenServer, Ok, Reply
from otpvm.supervisor import ChildSpec, Supervisor, SupFlags

__vsn__ = "1.2"


class Cache(GenServer):
    """The data and how many reads it served."""

    state_vsn = 2

    def init(self, _: Any) -> Any:
        return Ok(({}, 0))

    def handle_call(self, request: Any, from_: Any, state: tuple[dict[str, Any], int]) -> Any:
        data, reads = state
        op, key, *value = request
        if op == "get":
            return Reply((data.get(key), reads + 1), (data, reads + 1))
        return Reply("ok", ({**data, key: value[0]}, reads))

    def code_change(self, old_vsn: Any, state: Any, extra: Any) -> Any:
        if old_vsn == ("down", "1.0"):
            return state[0]                 # back to 1.0's plain dict
        raise ValueError(f"cannot convert {state!r}: 1.2 is broken on purpose")


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
    vsn = "1.2"

    async def start(self, start_type: str, args: Any) -> otpvm.Pid:
        return await supervisor.start_link(StoreSup, None, name="kvstore_sup")
