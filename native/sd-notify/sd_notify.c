// sd_notify(3) without libsystemd: one datagram to the AF_UNIX socket systemd names in
// NOTIFY_SOCKET (a path, or an abstract name written with a leading '@'). Node has no unix
// datagram sockets, and this is all a Type=notify service needs.
#include <errno.h>
#include <node_api.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

static napi_value throw_errno (napi_env env, const char *what, int err) {
  char code[32];
  char msg[256];
  const char *name = strerrorname_np(err);
  snprintf(code, sizeof code, "%s", name != NULL ? name : "EIO");
  snprintf(msg, sizeof msg, "%s: %s", what, strerror(err));
  napi_value ecode, emsg, error;
  napi_create_string_utf8(env, code, NAPI_AUTO_LENGTH, &ecode);
  napi_create_string_utf8(env, msg, NAPI_AUTO_LENGTH, &emsg);
  napi_create_error(env, ecode, emsg, &error);
  napi_throw(env, error);
  return NULL;
}

// notify(socketPath, message): sends `message` as one datagram; throws on any failure.
static napi_value notify (napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  char path[sizeof(((struct sockaddr_un *)0)->sun_path) + 1];
  size_t path_len = 0;
  char msg[4096];
  size_t msg_len = 0;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 2 ||
      napi_get_value_string_utf8(env, argv[0], path, sizeof path, &path_len) != napi_ok ||
      napi_get_value_string_utf8(env, argv[1], msg, sizeof msg, &msg_len) != napi_ok) {
    napi_throw_type_error(env, NULL, "expected (socketPath: string, message: string)");
    return NULL;
  }
  struct sockaddr_un addr;
  memset(&addr, 0, sizeof addr);
  addr.sun_family = AF_UNIX;
  // A name that filled the buffer was cut: refuse it rather than send to another socket.
  if (path_len < 2 || path_len >= sizeof addr.sun_path || (path[0] != '/' && path[0] != '@')) {
    return throw_errno(env, "NOTIFY_SOCKET", EINVAL);
  }
  if (msg_len == 0 || msg_len >= sizeof msg - 1) return throw_errno(env, "sd_notify message", EMSGSIZE);
  memcpy(addr.sun_path, path, path_len);
  if (path[0] == '@') addr.sun_path[0] = '\0';
  socklen_t addr_len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + path_len + (path[0] == '@' ? 0 : 1));
  int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return throw_errno(env, "socket(AF_UNIX, SOCK_DGRAM)", errno);
  ssize_t sent = sendto(fd, msg, msg_len, MSG_NOSIGNAL, (struct sockaddr *)&addr, addr_len);
  int err = errno;
  close(fd);
  if (sent < 0) return throw_errno(env, "sendto(NOTIFY_SOCKET)", err);
  if ((size_t)sent != msg_len) return throw_errno(env, "sendto(NOTIFY_SOCKET): short send", EMSGSIZE);
  return NULL;
}

NAPI_MODULE_INIT () {
  napi_value fn;
  napi_create_function(env, "notify", NAPI_AUTO_LENGTH, notify, NULL, &fn);
  napi_set_named_property(env, exports, "notify", fn);
  return exports;
}
