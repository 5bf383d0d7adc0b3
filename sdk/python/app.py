"""A Smart Sync feed plugin written in Python: a template to start from.

Build it into a WebAssembly component with componentize-py (`pip install componentize-py`):

    componentize-py -d ../wit-0.1.0 -w feed-plugin componentize app -o my_plugin.wasm

then name `my_plugin.wasm` in the server's plugins.toml like any other plugin. It is built
against the contract's first version (../wit-0.1.0/plugin.wit), which the server still loads:
return the events the device should receive, in input order, each at most once; payloads and
data are JSON objects as text. Such a plugin never tells a device that a record left its feed
(see "Records that leave a feed" in the server's README); the Rust SDK's `Feed` does.

This one sends orders and customers, keeps only the caller's own orders when the config says
`only_own_orders = true`, and tells the client which language it wrote the event in. Its filter
applies to deletions too (see "Deletions" in ../README.md): another salesperson's deleted order is
not sent, and a deletion that does not say whose order it was is sent without its payload.
"""

import json

import wit_world
from componentize_py_types import Err
from wit_world.imports import types

MODELS = ["sale.order", "res.partner"]
CONFIG_KEYS = {"only_own_orders"}


class WitWorld(wit_world.WitWorld):
    def describe(self) -> types.Manifest:
        return types.Manifest(
            name="python_example",
            version="0.1.0",
            models=MODELS,
            needs_payload=True,
        )

    def shape(self, ctx: types.Context, events: list) -> list:
        config = json.loads(ctx.config or "{}")
        unknown = sorted(set(config) - CONFIG_KEYS)
        if unknown:
            raise Err(types.PluginError_BadConfig(f"unknown config keys: {', '.join(unknown)}"))
        only_own = bool(config.get("only_own_orders", False))

        shaped = []
        for event in events:
            if event.model not in MODELS:
                continue
            payload = types.PayloadChange_Keep()
            if only_own and event.model == "sale.order":
                owner = salesperson(event.payload)
                if owner is None:
                    # The payload does not say whose order it is. A create or write is not sent
                    # to everyone; a deletion is (a device may hold the order), without values.
                    if event.kind != types.EventKind.UNLINK:
                        continue
                    payload = types.PayloadChange_Drop()
                elif owner != ctx.user_id:
                    continue
            shaped.append(
                types.ShapedEvent(
                    id=event.id,
                    payload=payload,
                    data=json.dumps({"written_in": "python"}),
                )
            )
        return shaped


def salesperson(payload):
    """The order's `user_id` in a payload, or None when it names none.

    Odoo sends many2one fields as bare ids (or `[id, name]` when read with names), and False
    when empty.
    """
    try:
        fields = json.loads(payload) if payload else None
    except ValueError:
        return None
    if not isinstance(fields, dict):
        return None
    user = fields.get("user_id")
    if isinstance(user, list) and user:
        user = user[0]
    if isinstance(user, bool) or not isinstance(user, int):
        return None
    return user
