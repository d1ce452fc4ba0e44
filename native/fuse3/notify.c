// Notifications from JS to the kernel's caches. Each runs on the libuv thread pool, never on the
// JS thread: the kernel may hold a page or inode lock that only a reply from JS releases, and
// libfuse warns that notifying from the path of a related request can deadlock.
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include "fuse3.h"

enum kind { INVAL_INODE, INVAL_ENTRY, DELETE };

struct notify_work {
  struct f3_mount *m;
  enum kind kind;
  uint64_t ino, child;
  int64_t off, len;
  char *name;
  size_t name_len;
  int result;
  napi_deferred deferred;
  napi_async_work work;
};

struct f3_mount *f3_mount_of (napi_env env, napi_value handle) {
  struct f3_mount *m = NULL;
  if (napi_get_value_external(env, handle, (void **)&m) != napi_ok || m == NULL) {
    napi_throw_type_error(env, "ERR_FUSE3_HANDLE", "not a mount handle");
    return NULL;
  }
  return m;
}

static void execute (napi_env env, void *data) {
  (void)env;
  struct notify_work *w = data;
  struct f3_mount *m = w->m;
  if (w->kind == INVAL_INODE) w->result = fuse_lowlevel_notify_inval_inode(m->se, w->ino, w->off, w->len);
  else if (w->kind == INVAL_ENTRY) w->result = fuse_lowlevel_notify_inval_entry(m->se, w->ino, w->name, w->name_len);
  else w->result = fuse_lowlevel_notify_delete(m->se, w->ino, w->child, w->name, w->name_len);
  pthread_mutex_lock(&m->lock);
  m->notifies--;
  pthread_cond_broadcast(&m->drained);
  pthread_mutex_unlock(&m->lock);
}

// Resolves true when the kernel dropped what it had cached, false when it had nothing cached
// (ENOENT); rejects with an Error carrying a positive errno otherwise.
static void complete (napi_env env, napi_status status, void *data) {
  struct notify_work *w = data;
  napi_value v;
  int err = status == napi_ok ? -w->result : EIO;
  if (err == 0 || err == ENOENT) {
    napi_get_boolean(env, err == 0, &v);
    napi_resolve_deferred(env, w->deferred, v);
  } else {
    napi_value code, msg, errnum;
    napi_create_string_utf8(env, "ERR_FUSE3_NOTIFY", NAPI_AUTO_LENGTH, &code);
    napi_create_string_utf8(env, strerror(err), NAPI_AUTO_LENGTH, &msg);
    napi_create_error(env, code, msg, &v);
    napi_create_int32(env, err, &errnum);
    napi_set_named_property(env, v, "errno", errnum);
    napi_reject_deferred(env, w->deferred, v);
  }
  if (w->work != NULL) napi_delete_async_work(env, w->work);
  free(w->name);
  free(w);
}

static napi_value start (napi_env env, napi_callback_info info, enum kind kind) {
  size_t argc = 4;
  napi_value argv[4], promise, resource;
  double a = 0, b = 0, c = 0;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 3) {
    napi_throw_type_error(env, NULL, "too few arguments");
    return NULL;
  }
  struct f3_mount *m = f3_mount_of(env, argv[0]);
  if (m == NULL) return NULL;
  struct notify_work *w = calloc(1, sizeof *w);
  if (w == NULL) return f3_throw_errno(env, "calloc", ENOMEM);
  w->m = m;
  w->kind = kind;
  napi_get_value_double(env, argv[1], &a);
  if (kind == INVAL_INODE) {
    napi_get_value_double(env, argv[2], &b);
    if (argc > 3) napi_get_value_double(env, argv[3], &c);
    w->off = (int64_t)b;
    w->len = (int64_t)c;
  } else {
    void *bytes;
    napi_value name = argv[kind == DELETE ? 3 : 2];
    if (kind == DELETE) napi_get_value_double(env, argv[2], &b);
    w->child = (uint64_t)b;
    if (argc < (size_t)(kind == DELETE ? 4 : 3) || napi_get_buffer_info(env, name, &bytes, &w->name_len) != napi_ok) {
      free(w);
      napi_throw_type_error(env, NULL, "name must be a Buffer");
      return NULL;
    }
    w->name = malloc(w->name_len + 1);
    if (w->name == NULL) { free(w); return f3_throw_errno(env, "malloc", ENOMEM); }
    memcpy(w->name, bytes, w->name_len);
    w->name[w->name_len] = 0;
  }
  w->ino = (uint64_t)a;
  napi_create_promise(env, &w->deferred, &promise);
  pthread_mutex_lock(&m->lock);
  int closed = m->unmounted;
  if (!closed) m->notifies++;
  pthread_mutex_unlock(&m->lock);
  if (closed) {
    w->result = -ENOTCONN;
    complete(env, napi_ok, w);
    return promise;
  }
  napi_create_string_utf8(env, "fuse3 notify", NAPI_AUTO_LENGTH, &resource);
  napi_create_async_work(env, NULL, resource, execute, complete, w, &w->work);
  napi_queue_async_work(env, w->work);
  return promise;
}

static napi_value inval_inode (napi_env env, napi_callback_info info) { return start(env, info, INVAL_INODE); }
static napi_value inval_entry (napi_env env, napi_callback_info info) { return start(env, info, INVAL_ENTRY); }
static napi_value notify_delete (napi_env env, napi_callback_info info) { return start(env, info, DELETE); }

napi_status f3_define_notifies (napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
    { "notifyInvalInode", NULL, inval_inode, NULL, NULL, NULL, napi_default, NULL },
    { "notifyInvalEntry", NULL, inval_entry, NULL, NULL, NULL, napi_default, NULL },
    { "notifyDelete", NULL, notify_delete, NULL, NULL, NULL, napi_default, NULL },
  };
  return napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
}
