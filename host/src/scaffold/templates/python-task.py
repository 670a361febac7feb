"""{{name}}: a cannon task. It receives each message and the results of the tasks before it,
and returns its own results; here, a greeting for the message's `text` field (or the field
named by `conf: {kwargs: {field: ...}}` in the compose file).

componentize-py turns this module into a component: the class `WitWorld` implements the
world's exports, `wit_world.imports` holds the host's imports (`log`, `config`).
"""
from componentize_py_types import Err
from wit_world.imports import config


class WitWorld:
    def run(self, msg, results):
        field = config.get("field") or "text"
        fields = dict(msg.fields)
        if field not in fields:
            raise Err(f"no field {field!r} in the message")
        return [("greeting", f"hello, {fields[field]}!")]
