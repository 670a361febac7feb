"""{{name}}: a cannon shell, a table of commands that the built-in `torch` task calls with a
chat line split into words (`hello Ada` calls `hello` with ["hello", "Ada"]).

componentize-py turns this module into a component: the class `WitWorld` implements the
world's exports.
"""
from componentize_py_types import Err
from wit_world.imports.types import Command


class WitWorld:
    def commands(self):
        return [Command(name="hello", summary="say hello", usage="hello [NAME]")]

    def call(self, argv, msg):
        user = dict(msg.fields).get("user")
        if argv and argv[0] == "hello":
            name = argv[1] if len(argv) > 1 else (user or "world")
            return f"hello, {name}!"
        raise Err(f"unknown command {argv[0]!r}" if argv else "no command")
