// {{name}}: a cannon task. It receives each message and the results of the tasks before it,
// and returns its own results; here, a greeting for the message's `text` field (or the field
// named by `conf: {kwargs: {field: ...}}` in the compose file).
import { get } from "cannon:platform/config@0.1.0";

export function run(msg, _results) {
  const field = get("field") ?? "text";
  const found = msg.fields.findLast(([key]) => key === field);
  if (!found) {
    throw `no field ${JSON.stringify(field)} in the message`;
  }
  return [["greeting", `hello, ${found[1]}!`]];
}
