// The JS thread's side of a request: turns an f3_msg into (opName, handle, args) and calls the
// dispatcher the TS wrapper gave at mount. The handle owns the pending record; if JS drops it
// unanswered, its finalizer answers EIO so the caller in the kernel is never left waiting.
#include <errno.h>
#include <stdlib.h>
#include "fuse3.h"

static void set_num (napi_env env, napi_value obj, const char *key, double v) {
  napi_value n;
  napi_create_double(env, v, &n);
  napi_set_named_property(env, obj, key, n);
}

static void set_ns (napi_env env, napi_value obj, const char *key, struct timespec ts) {
  napi_value n;
  napi_create_bigint_int64(env, (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec, &n);
  napi_set_named_property(env, obj, key, n);
}

static void set_bytes (napi_env env, napi_value obj, const char *key, const char *s, size_t len) {
  napi_value b;
  void *copy;
  napi_create_buffer_copy(env, len, s != NULL ? s : "", &copy, &b);
  napi_set_named_property(env, obj, key, b);
}

static void free_data (napi_env env, void *data, void *hint) {
  (void)env; (void)hint;
  free(data);
}

static void finalize_pending (napi_env env, void *data, void *hint) {
  (void)env; (void)hint;
  struct f3_pending *p = data;
  fuse_req_t req = NULL;
  if (p->req != NULL) {
    pthread_mutex_lock(&p->m->lock);
    f3_pending_unlink(p->m, p);
    req = p->req;
    p->req = NULL;
    pthread_mutex_unlock(&p->m->lock);
  }
  if (req != NULL) fuse_reply_err(req, EIO);
  free(p);
}

static napi_value args_of (napi_env env, struct f3_msg *msg, int has_req) {
  napi_value a, ctx;
  napi_create_object(env, &a);
  if (has_req) {
    napi_create_object(env, &ctx);
    set_num(env, ctx, "uid", msg->ctx.uid);
    set_num(env, ctx, "gid", msg->ctx.gid);
    set_num(env, ctx, "pid", msg->ctx.pid);
    set_num(env, ctx, "umask", msg->ctx.umask);
    napi_set_named_property(env, a, "ctx", ctx);
  }
  set_num(env, a, "ino", (double)msg->ino);
  if (msg->has_fi) {
    set_num(env, a, "fh", (double)msg->fh);
    set_num(env, a, "flags", msg->fi_flags);
  }
  switch (msg->op) {
    case F3_INIT:
      set_num(env, a, "protoMajor", msg->conn.proto_major);
      set_num(env, a, "protoMinor", msg->conn.proto_minor);
      set_num(env, a, "capable", msg->conn.capable);
      set_num(env, a, "want", msg->conn.want);
      set_num(env, a, "maxWrite", msg->conn.max_write);
      set_num(env, a, "maxRead", msg->conn.max_read);
      set_num(env, a, "maxReadahead", msg->conn.max_readahead);
      break;
    case F3_EXITED: set_num(env, a, "error", msg->flags); break;
    case F3_FORGET: set_num(env, a, "nlookup", (double)msg->len); break;
    case F3_FORGET_MULTI: {
      napi_value list;
      napi_create_array_with_length(env, msg->len, &list);
      for (size_t i = 0; i < msg->len; i++) {
        napi_value f;
        napi_create_object(env, &f);
        set_num(env, f, "ino", (double)msg->forgets[i].ino);
        set_num(env, f, "nlookup", (double)msg->forgets[i].nlookup);
        napi_set_element(env, list, (uint32_t)i, f);
      }
      napi_set_named_property(env, a, "forgets", list);
      break;
    }
    case F3_SETATTR: {
      napi_value at;
      napi_create_object(env, &at);
      set_num(env, at, "mode", msg->attr.st_mode);
      set_num(env, at, "uid", msg->attr.st_uid);
      set_num(env, at, "gid", msg->attr.st_gid);
      set_num(env, at, "size", (double)msg->attr.st_size);
      set_ns(env, at, "atimeNs", msg->attr.st_atim);
      set_ns(env, at, "mtimeNs", msg->attr.st_mtim);
      set_ns(env, at, "ctimeNs", msg->attr.st_ctim);
      napi_set_named_property(env, a, "attr", at);
      set_num(env, a, "toSet", msg->to_set);
      break;
    }
    case F3_LOOKUP: case F3_UNLINK: case F3_RMDIR: case F3_REMOVEXATTR:
      set_bytes(env, a, "name", msg->name, msg->name_len);
      break;
    case F3_MKNOD: case F3_MKDIR: case F3_CREATE:
      set_bytes(env, a, "name", msg->name, msg->name_len);
      set_num(env, a, "mode", msg->mode);
      set_num(env, a, "rdev", msg->rdev);
      break;
    case F3_SYMLINK:
      set_bytes(env, a, "name", msg->name, msg->name_len);
      set_bytes(env, a, "target", msg->name2, msg->name2_len);
      break;
    case F3_RENAME:
      set_bytes(env, a, "name", msg->name, msg->name_len);
      set_num(env, a, "newParent", (double)msg->ino2);
      set_bytes(env, a, "newName", msg->name2, msg->name2_len);
      set_num(env, a, "renameFlags", msg->flags);
      break;
    case F3_LINK:
      set_num(env, a, "newParent", (double)msg->ino2);
      set_bytes(env, a, "newName", msg->name, msg->name_len);
      break;
    case F3_READ: case F3_READDIR: case F3_READDIRPLUS: case F3_LISTXATTR:
      set_num(env, a, "size", (double)msg->len);
      set_num(env, a, "off", (double)msg->off);
      break;
    case F3_WRITE: case F3_SETXATTR: {
      napi_value b;
      if (napi_create_external_buffer(env, msg->data_len, msg->data, free_data, NULL, &b) == napi_ok) msg->data = NULL;
      else set_bytes(env, a, "data", msg->data, msg->data_len), napi_get_named_property(env, a, "data", &b);
      napi_set_named_property(env, a, msg->op == F3_WRITE ? "data" : "value", b);
      if (msg->op == F3_WRITE) set_num(env, a, "off", (double)msg->off);
      else {
        set_bytes(env, a, "name", msg->name, msg->name_len);
        set_num(env, a, "xattrFlags", msg->flags);
      }
      break;
    }
    case F3_GETXATTR:
      set_bytes(env, a, "name", msg->name, msg->name_len);
      set_num(env, a, "size", (double)msg->len);
      break;
    case F3_FSYNC: case F3_FSYNCDIR: set_num(env, a, "datasync", msg->flags); break;
    case F3_ACCESS: set_num(env, a, "mask", msg->flags); break;
    case F3_FALLOCATE:
      set_num(env, a, "mode", msg->flags);
      set_num(env, a, "off", (double)msg->off);
      set_num(env, a, "length", (double)msg->len);
      break;
    case F3_COPY_FILE_RANGE:
      set_num(env, a, "offIn", (double)msg->off);
      set_num(env, a, "inoOut", (double)msg->ino2);
      set_num(env, a, "fhOut", (double)msg->fh2);
      set_num(env, a, "offOut", (double)msg->off2);
      set_num(env, a, "length", (double)msg->len);
      set_num(env, a, "copyFlags", msg->flags);
      break;
    case F3_LSEEK:
      set_num(env, a, "off", (double)msg->off);
      set_num(env, a, "whence", msg->flags);
      break;
    default: break;
  }
  return a;
}

void f3_call_js (napi_env env, napi_value fn, void *context, void *data) {
  (void)context;
  struct f3_msg *msg = data;
  struct f3_pending *p = msg->pending;
  // Torn down, or cancelled by unmount before it reached JS: nothing to deliver.
  if (env == NULL || fn == NULL || (p != NULL && p->req == NULL)) {
    free(p);
    msg->pending = NULL;
    f3_msg_free(msg);
    return;
  }
  napi_value argv[3], global, result;
  napi_create_string_utf8(env, f3_op_names[msg->op], NAPI_AUTO_LENGTH, &argv[0]);
  if (p != NULL) {
    if (napi_create_external(env, p, finalize_pending, NULL, &argv[1]) != napi_ok) {
      finalize_pending(env, p, NULL);
      msg->pending = NULL;
      f3_msg_free(msg);
      return;
    }
    msg->pending = NULL;
  } else {
    napi_get_null(env, &argv[1]);
  }
  argv[2] = args_of(env, msg, p != NULL);
  f3_msg_free(msg);
  napi_get_global(env, &global);
  napi_call_function(env, global, fn, 3, argv, &result);
}
