// {{name}}: a cannon task in C. It receives each message and the results of the tasks before
// it, and returns its own results; here, a greeting for the message's `text` field (or the
// field named by `conf: {kwargs: {field: ...}}` in the compose file).
//
// build.sh generates the bindings (task_base.h, task_base.c) from the vendored WIT with
// `wit-bindgen c`: `exports_task_base_run` is the export to implement, and the host's imports
// are `cannon_platform_log_log` and `cannon_platform_config_get`.
//
// Ownership: the arguments belong to this function (free them); `ret` and `err` must be
// heap memory, which the generated post-return hook frees after the host read them.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "task_base.h"

static int equals(const task_base_string_t *s, const char *text, size_t len) {
  return s->len == len && memcmp(s->ptr, text, len) == 0;
}

bool exports_task_base_run(task_base_message_t *msg, task_base_fields_t *results, task_base_fields_t *ret,
                           task_base_string_t *err) {
  // The field to greet: `field` from the component's configuration, else `text`.
  task_base_string_t key, field;
  task_base_string_set(&key, "field");  // borrowed: imports do not take ownership
  if (!cannon_platform_config_get(&key, &field)) task_base_string_dup(&field, "text");

  const task_base_string_t *value = NULL;  // the last field of that name wins
  for (size_t i = 0; i < msg->fields.len; i++) {
    if (equals(&msg->fields.ptr[i].f0, (const char *)field.ptr, field.len)) value = &msg->fields.ptr[i].f1;
  }
  bool ok = value != NULL;
  if (!ok) {
    char text[160];
    int n = snprintf(text, sizeof text, "no field \"%.*s\" in the message", (int)(field.len > 64 ? 64 : field.len),
                     (const char *)field.ptr);
    task_base_string_dup_n(err, text, n > 0 && (size_t)n < sizeof text ? (size_t)n : 0);
  } else {
    const char *prefix = "hello, ";
    size_t len = strlen(prefix) + value->len + 1;
    char *text = malloc(len);
    task_base_tuple2_string_string_t *pair = malloc(sizeof *pair);
    if (text == NULL || pair == NULL) abort();
    memcpy(text, prefix, strlen(prefix));
    memcpy(text + strlen(prefix), value->ptr, value->len);
    text[len - 1] = '!';
    task_base_string_dup(&pair->f0, "greeting");
    pair->f1.ptr = (uint8_t *)text;
    pair->f1.len = len;
    ret->ptr = pair;
    ret->len = 1;
  }
  task_base_string_free(&field);
  task_base_message_free(msg);
  task_base_fields_free(results);
  return ok;
}
