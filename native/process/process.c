// What Node does not expose about processes and users: the credentials of the process at the
// other end of a unix socket (SO_PEERCRED, SO_PEERGROUPS), and a group's id by name
// (getgrnam_r). The control socket admits a client by these, so they come from the kernel, not
// from anything the client says. memory.c adds the process's memory and page-cache settings.
#include <errno.h>
#include <stdio.h>
#include <grp.h>
#include <node_api.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <unistd.h>
#include "memory.h"

static napi_value throw_errno (napi_env env, const char *what, int err) {
  char code[32];
  char msg[256];
  const char *name = strerrorname_np(err);
  if (name != NULL) snprintf(code, sizeof code, "%s", name);
  else snprintf(code, sizeof code, "E%d", err);
  snprintf(msg, sizeof msg, "%s: %s", what, strerror(err));
  napi_value ecode, emsg, error, errnum;
  napi_create_string_utf8(env, code, NAPI_AUTO_LENGTH, &ecode);
  napi_create_string_utf8(env, msg, NAPI_AUTO_LENGTH, &emsg);
  napi_create_error(env, ecode, emsg, &error);
  napi_create_int32(env, err, &errnum);
  napi_set_named_property(env, error, "errno", errnum);
  napi_throw(env, error);
  return NULL;
}

static int fd_arg (napi_env env, napi_callback_info info, int32_t *fd) {
  size_t argc = 1;
  napi_value argv[1];
  napi_valuetype t;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 1 ||
      napi_typeof(env, argv[0], &t) != napi_ok || t != napi_number ||
      napi_get_value_int32(env, argv[0], fd) != napi_ok || *fd < 0) {
    napi_throw_type_error(env, NULL, "expected a file descriptor (a non-negative integer)");
    return 0;
  }
  return 1;
}

static void set_u32 (napi_env env, napi_value obj, const char *name, uint32_t v) {
  napi_value n;
  napi_create_uint32(env, v, &n);
  napi_set_named_property(env, obj, name, n);
}

// peerCredentials(fd) -> { pid, uid, gid }: who was at the other end when it connected.
static napi_value peer_credentials (napi_env env, napi_callback_info info) {
  int32_t fd;
  if (!fd_arg(env, info, &fd)) return NULL;
  struct ucred cred;
  socklen_t len = sizeof cred;
  if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) return throw_errno(env, "getsockopt(SO_PEERCRED)", errno);
  napi_value obj;
  napi_create_object(env, &obj);
  set_u32(env, obj, "pid", (uint32_t)cred.pid);
  set_u32(env, obj, "uid", (uint32_t)cred.uid);
  set_u32(env, obj, "gid", (uint32_t)cred.gid);
  return obj;
}

// peerGroups(fd) -> number[]: the peer's supplementary groups when it connected.
static napi_value peer_groups (napi_env env, napi_callback_info info) {
  int32_t fd;
  if (!fd_arg(env, info, &fd)) return NULL;
  socklen_t len = 64 * sizeof(gid_t);
  gid_t *groups = NULL;
  for (int tries = 0; tries < 4; tries++) {
    gid_t *grown = realloc(groups, len);
    if (grown == NULL) { free(groups); return throw_errno(env, "peerGroups", ENOMEM); }
    groups = grown;
    socklen_t got = len;
    if (getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, groups, &got) == 0) { len = got; goto done; }
    if (errno != ERANGE) { int err = errno; free(groups); return throw_errno(env, "getsockopt(SO_PEERGROUPS)", err); }
    len = got > len ? got : len * 2;
  }
  free(groups);
  return throw_errno(env, "getsockopt(SO_PEERGROUPS)", ERANGE);
done:;
  size_t n = len / sizeof(gid_t);
  napi_value arr;
  napi_create_array_with_length(env, n, &arr);
  for (size_t i = 0; i < n; i++) {
    napi_value v;
    napi_create_uint32(env, groups[i], &v);
    napi_set_element(env, arr, (uint32_t)i, v);
  }
  free(groups);
  return arr;
}

// groupId(name) -> number | null: the id of a group in the system's group database.
static napi_value group_id (napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  char name[256];
  size_t nlen = 0;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 1 ||
      napi_get_value_string_utf8(env, argv[0], name, sizeof name, &nlen) != napi_ok || nlen == 0 || nlen >= sizeof name - 1) {
    napi_throw_type_error(env, NULL, "expected a group name (1 to 254 bytes)");
    return NULL;
  }
  size_t bufLen = 16384;
  char *buf = NULL;
  struct group gr, *found = NULL;
  int rc;
  for (;;) {
    char *grown = realloc(buf, bufLen);
    if (grown == NULL) { free(buf); return throw_errno(env, "getgrnam_r", ENOMEM); }
    buf = grown;
    rc = getgrnam_r(name, &gr, buf, bufLen, &found);
    if (rc != ERANGE || bufLen >= (1 << 22)) break;
    bufLen *= 2;
  }
  napi_value out;
  if (rc != 0 && rc != ENOENT && rc != ESRCH) { free(buf); return throw_errno(env, "getgrnam_r", rc); }
  if (found == NULL) napi_get_null(env, &out);
  else napi_create_uint32(env, (uint32_t)gr.gr_gid, &out);
  free(buf);
  return out;
}

static napi_value init (napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
    { "peerCredentials", NULL, peer_credentials, NULL, NULL, NULL, napi_enumerable, NULL },
    { "peerGroups", NULL, peer_groups, NULL, NULL, NULL, napi_enumerable, NULL },
    { "groupId", NULL, group_id, NULL, NULL, NULL, napi_enumerable, NULL }
  };
  napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
  define_memory_functions(env, exports);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
