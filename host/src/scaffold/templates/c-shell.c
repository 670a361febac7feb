// {{name}}: a cannon shell in C, a table of commands that the built-in `torch` task calls
// with a chat line split into words (`hello Ada` calls `hello` with ["hello", "Ada"]).
//
// build.sh generates the bindings (shell_base.h, shell_base.c) from the vendored WIT with
// `wit-bindgen c`: `exports_shell_base_commands` and `exports_shell_base_call` are the exports
// to implement.
//
// Ownership: the arguments belong to the function (free them); `ret` and `err` must be heap
// memory, which the generated post-return hooks free after the host read them.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "shell_base.h"

void exports_shell_base_commands(shell_base_list_command_t *ret) {
  shell_base_command_t *command = malloc(sizeof *command);
  if (command == NULL) abort();
  shell_base_string_dup(&command->name, "hello");
  shell_base_string_dup(&command->summary, "say hello");
  shell_base_string_dup(&command->usage, "hello [NAME]");
  ret->ptr = command;
  ret->len = 1;
}

static int equals(const shell_base_string_t *s, const char *text) {
  return s->len == strlen(text) && memcmp(s->ptr, text, s->len) == 0;
}

// Writes `hello, NAME!` into `ret` (heap memory).
static void greet(shell_base_string_t *ret, const uint8_t *name, size_t name_len) {
  const char *prefix = "hello, ";
  size_t len = strlen(prefix) + name_len + 1;
  char *text = malloc(len);
  if (text == NULL) abort();
  memcpy(text, prefix, strlen(prefix));
  memcpy(text + strlen(prefix), name, name_len);
  text[len - 1] = '!';
  ret->ptr = (uint8_t *)text;
  ret->len = len;
}

bool exports_shell_base_call(shell_base_list_string_t *argv, shell_base_message_t *msg, shell_base_string_t *ret,
                             shell_base_string_t *err) {
  bool ok = false;
  if (argv->len == 0) {
    shell_base_string_dup(err, "no command");
  } else if (equals(&argv->ptr[0], "hello")) {
    const shell_base_string_t *user = NULL;  // the message's `user` field, the last one wins
    for (size_t i = 0; i < msg->fields.len; i++) {
      if (equals(&msg->fields.ptr[i].f0, "user")) user = &msg->fields.ptr[i].f1;
    }
    if (argv->len > 1) {
      greet(ret, argv->ptr[1].ptr, argv->ptr[1].len);
    } else if (user != NULL) {
      greet(ret, user->ptr, user->len);
    } else {
      greet(ret, (const uint8_t *)"world", 5);
    }
    ok = true;
  } else {
    char text[160];
    size_t shown = argv->ptr[0].len > 64 ? 64 : argv->ptr[0].len;
    int n = snprintf(text, sizeof text, "unknown command \"%.*s\"", (int)shown, (const char *)argv->ptr[0].ptr);
    shell_base_string_dup_n(err, text, n > 0 && (size_t)n < sizeof text ? (size_t)n : 0);
  }
  shell_base_list_string_free(argv);
  shell_base_message_free(msg);
  return ok;
}
