// `fetch-js` (test guest): fetch() through wasi:http, for tests/e2e/egress.rs.
// cannon-allow: http
// Message field `url`; results `status` and `body`. The compose file must grant the host.
export async function run(msg, results) {
  try {
    const f = new Map(msg.fields);
    const response = await fetch(f.get('url'));
    const body = await response.text();
    return [['status', String(response.status)], ['body', body]];
  } catch (e) {
    throw `fetch: ${String(e?.message ?? e)}`;
  }
}
