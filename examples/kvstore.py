"""A small supervised application: a key-value store with a cache and a writer.

Run it with::

    otpvm run examples.kvstore:KVStore

``cache`` holds the data and answers reads; ``writer`` appends every write to
a log file.  Both run under one supervisor (rest_for_one: if the cache dies,
the writer restarts after it, so that it never writes for a cache that lost
its data).  A client process writes and reads a few keys, then makes the cache
crash on a poisoned key: the supervisor restarts it, the crash report is
logged once, and the client carries on.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

import otpvm
from otpvm import application, gen_server, supervisor
from otpvm.gen_server import GenServer, NoReply, Ok, Reply
from otpvm.supervisor import ChildSpec, Supervisor, SupFlags


class Cache(GenServer):
    """The data, in memory."""

    def init(self, _: Any) -> Any:
        return Ok({})

    def handle_call(self, request: Any, from_: Any, data: dict[str, Any]) -> Any:
        op, key, *value = request
        if op == "get":
            return Reply(data.get(key), data)
        if key == "poison":
            raise ValueError("the cache cannot store poison")
        data = {**data, key: value[0]}
        gen_server.cast("writer", ("append", key, value[0]))
        return Reply("ok", data)


class Writer(GenServer):
    """Appends each write to a log file."""

    def init(self, _: Any) -> Any:
        path = os.environ.get("KVSTORE_LOG") or os.path.join(tempfile.gettempdir(),
                                                            "kvstore.log")
        return Ok(path)

    def handle_cast(self, msg: Any, path: str) -> Any:
        _, key, value = msg
        with open(path, "a", encoding="utf-8") as log:
            log.write(f"{key}={value!r}\n")
        return NoReply(path)


class StoreSup(Supervisor):
    """The tree: cache first, then the writer."""

    def init(self, _: Any) -> Any:
        return SupFlags("rest_for_one", intensity=5, period=10), [
            ChildSpec("cache", (start_named, (Cache, "cache"))),
            ChildSpec("writer", (start_named, (Writer, "writer"))),
        ]


async def start_named(cls: type[GenServer], name: str) -> otpvm.Pid:
    """Starts a gen_server registered under name, linked to the supervisor."""
    return await gen_server.start_link(cls, None, name=name)


async def client() -> None:
    """Uses the store, including one bad request."""
    await gen_server.call("cache", ("put", "greeting", "hello"))
    print("client: greeting =", await gen_server.call("cache", ("get", "greeting")), flush=True)
    try:
        await gen_server.call("cache", ("put", "poison", 1))
    except otpvm.CallError as exc:
        print(f"client: the cache crashed ({exc.reason!r}); the supervisor restarts it",
              flush=True)
    await otpvm.sleep(0.05)
    await gen_server.call("cache", ("put", "greeting", "hello again"))
    print("client: after the restart, greeting =",
          await gen_server.call("cache", ("get", "greeting")), flush=True)


class KVStore(application.Application):
    """The application: starts the tree and a demo client."""

    name = "kvstore"
    vsn = "1.0"
    description = "a key-value store with a cache and a writer"
    env = {"demo_client": True}

    async def start(self, start_type: str, args: Any) -> otpvm.Pid:
        sup = await supervisor.start_link(StoreSup, None, name="kvstore_sup")
        if await application.get_env("kvstore", "demo_client", True):
            otpvm.spawn(client)
        return sup

    def stop(self, state: Any) -> None:
        print("kvstore: stopped", flush=True)
