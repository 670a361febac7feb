// {{name}}: a cannon shell, a table of commands that the built-in `torch` task calls with a
// chat line split into words (`hello Ada` calls `hello` with ["hello", "Ada"]).

export function commands() {
  return [{ name: "hello", summary: "say hello", usage: "hello [NAME]" }];
}

export function call(argv, msg) {
  const user = msg.fields.findLast(([key]) => key === "user")?.[1];
  if (argv[0] === "hello") {
    return `hello, ${argv[1] ?? user ?? "world"}!`;
  }
  throw argv.length ? `unknown command ${JSON.stringify(argv[0])}` : "no command";
}
