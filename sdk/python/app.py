"""A Smart Sync feed plugin written in Python: a template to start from.

Build it into a WebAssembly component with componentize-py (`pip install componentize-py`):

    componentize-py -d ../wit -w feed-plugin componentize app -o my_plugin.wasm

then name `my_plugin.wasm` in the server's plugins.toml like any other plugin. The contract is
the same as for Rust plugins (see ../README.md): return the events the device should receive,
in input order, each at most once; payloads and data are JSON objects as text.

This one sends orders and customers, keeps only the caller's own orders when the config says
`only_own_orders = true`, and tells the client which language it wrote the event in.
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
            if only_own and event.model == "sale.order" and event.kind != types.EventKind.UNLINK:
                payload = json.loads(event.payload) if event.payload else {}
                # Odoo sends many2one fields as bare ids, and False when empty.
                if payload.get("user_id") != ctx.user_id:
                    continue
            shaped.append(
                types.ShapedEvent(
                    id=event.id,
                    payload=types.PayloadChange_Keep(),
                    data=json.dumps({"written_in": "python"}),
                )
            )
        return shaped
