// hello: a cannon task (world `task`) in JavaScript, built with componentize-js.
// Results: `greeting` = "<greeting>, <user>" (config key `greeting`, default "hello";
// message field `user`, default "world") and `len` = the length of the field `text`
// in characters (code points).
import { log } from 'cannon:platform/log@0.1.0';
import { get as configGet } from 'cannon:platform/config@0.1.0';

// WIT `fields` (list<tuple<string, string>>) arrive and leave as arrays of [key, value].
const toMap = (fields) => new Map(fields);
const toFields = (obj) => Object.entries(obj).map(([k, v]) => [k, String(v)]);

function hello(msg) {
  const fields = toMap(msg.fields);
  const user = fields.get('user') ?? 'world';
  const text = fields.get('text') ?? '';
  const greeting = configGet('greeting') ?? 'hello';
  log('info', `hello-js: greeting ${user} on ${msg.service}`);
  return toFields({ greeting: `${greeting}, ${user}`, len: [...text].length });
}

// export run: func(msg: message, results: fields) -> result<fields, string>
// Returning gives `ok`. For `err`, throw a *string*: componentize-js 0.23 traps when
// the thrown value is an Error object, so convert here.
export function run(msg, results) {
  try {
    return hello(msg);
  } catch (e) {
    throw String(e && e.message !== undefined ? e.message : e);
  }
}
