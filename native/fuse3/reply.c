// Reply functions: JS answers a request by passing its handle and the answer. Each converts the
// JS value first (a bad value throws TypeError and leaves the request open, so the TS wrapper can
// still answer EIO), then takes the request and calls the libfuse reply. Each returns true when
// it answered, false when the request had already been answered or was cancelled by unmount.
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>
#include "fuse3.h"

static int fail (napi_env env, const char *msg) {
  napi_throw_type_error(env, "ERR_FUSE3_REPLY", msg);
  return 0;
}

static int get_prop (napi_env env, napi_value obj, const char *key, napi_value *out, napi_valuetype *t) {
  if (napi_get_named_property(env, obj, key, out) != napi_ok) return 0;
  napi_typeof(env, *out, t);
  return 1;
}

// A number property; missing or undefined gives dflt.
static int get_num (napi_env env, napi_value obj, const char *key, double dflt, double *out) {
  napi_value v;
  napi_valuetype t;
  if (!get_prop(env, obj, key, &v, &t)) return 0;
  if (t == napi_undefined) { *out = dflt; return 1; }
  if (t == napi_bigint) {
    int64_t i; bool lossless;
    napi_get_value_bigint_int64(env, v, &i, &lossless);
    *out = (double)i;
    return 1;
  }
  if (t != napi_number) { char m[96]; snprintf(m, sizeof m, "%s must be a number", key); return fail(env, m); }
  napi_get_value_double(env, v, out);
  return 1;
}

static int get_ns (napi_env env, napi_value obj, const char *key, struct timespec *ts) {
  napi_value v;
  napi_valuetype t;
  int64_t ns = 0;
  if (!get_prop(env, obj, key, &v, &t)) return 0;
  if (t == napi_bigint) {
    bool lossless;
    napi_get_value_bigint_int64(env, v, &ns, &lossless);
  } else if (t != napi_undefined) {
    char m[96]; snprintf(m, sizeof m, "%s must be a bigint of nanoseconds", key); return fail(env, m);
  }
  ts->tv_sec = (time_t)(ns >= 0 ? ns / 1000000000LL : -((-ns + 999999999LL) / 1000000000LL));
  ts->tv_nsec = (long)(ns - (int64_t)ts->tv_sec * 1000000000LL);
  return 1;
}

static int is_object (napi_env env, napi_value v) {
  napi_valuetype t;
  napi_typeof(env, v, &t);
  return t == napi_object;
}

napi_status f3_read_attr (napi_env env, napi_value obj, struct stat *st) {
  double d;
  memset(st, 0, sizeof *st);
  if (!is_object(env, obj)) return fail(env, "attr must be an object"), napi_invalid_arg;
#define NUM(key, field, dflt) if (!get_num(env, obj, key, dflt, &d)) return napi_invalid_arg; st->field = d
  NUM("ino", st_ino, 0); NUM("mode", st_mode, 0); NUM("nlink", st_nlink, 1); NUM("uid", st_uid, 0);
  NUM("gid", st_gid, 0); NUM("rdev", st_rdev, 0); NUM("size", st_size, 0); NUM("blocks", st_blocks, -1);
  NUM("blksize", st_blksize, 4096);
#undef NUM
  if (st->st_blocks < 0) st->st_blocks = (st->st_size + 511) / 512;
  if (!get_ns(env, obj, "atimeNs", &st->st_atim) || !get_ns(env, obj, "mtimeNs", &st->st_mtim) ||
      !get_ns(env, obj, "ctimeNs", &st->st_ctim)) return napi_invalid_arg;
  return napi_ok;
}

static int read_entry (napi_env env, napi_value obj, struct fuse_entry_param *e) {
  napi_value attr;
  napi_valuetype t;
  double d;
  memset(e, 0, sizeof *e);
  if (!is_object(env, obj)) return fail(env, "entry must be an object");
  if (!get_num(env, obj, "ino", 0, &d)) return 0;
  e->ino = (fuse_ino_t)d;
  if (!get_num(env, obj, "generation", 0, &d)) return 0;
  e->generation = (uint64_t)d;
  if (!get_num(env, obj, "attrTimeout", 1, &e->attr_timeout) || !get_num(env, obj, "entryTimeout", 1, &e->entry_timeout)) return 0;
  if (!get_prop(env, obj, "attr", &attr, &t)) return 0;
  if (t == napi_undefined && e->ino == 0) return 1;  // a negative entry, cached for entryTimeout
  if (f3_read_attr(env, attr, &e->attr) != napi_ok) return 0;
  // A readdirplus entry without a lookup ('.', '..') keeps the inode number its attributes name.
  if (e->ino != 0) e->attr.st_ino = e->ino;
  return 1;
}

static int read_open (napi_env env, napi_value obj, struct fuse_file_info *fi) {
  double d;
  memset(fi, 0, sizeof *fi);
  if (!is_object(env, obj)) return fail(env, "open reply must be an object");
  if (!get_num(env, obj, "fh", 0, &d)) return 0;
  fi->fh = (uint64_t)d;
#define BIT(key, field) if (!get_num(env, obj, key, 0, &d)) return 0; fi->field = d != 0
  BIT("directIo", direct_io); BIT("keepCache", keep_cache); BIT("nonseekable", nonseekable);
  BIT("cacheReaddir", cache_readdir);
#undef BIT
  return 1;
}

fuse_req_t f3_take (napi_env env, napi_value handle) {
  struct f3_pending *p;
  if (napi_get_value_external(env, handle, (void **)&p) != napi_ok || p == NULL) return fail(env, "not a request handle"), NULL;
  if (p->req == NULL) return NULL;
  pthread_mutex_lock(&p->m->lock);
  f3_pending_unlink(p->m, p);
  fuse_req_t req = p->req;
  p->req = NULL;
  pthread_mutex_unlock(&p->m->lock);
  return req;
}

static int is_open (napi_env env, napi_value handle) {
  struct f3_pending *p;
  if (napi_get_value_external(env, handle, (void **)&p) != napi_ok || p == NULL) return fail(env, "not a request handle");
  return p->req != NULL;
}

static napi_value boolean (napi_env env, int v) {
  napi_value b;
  napi_get_boolean(env, v, &b);
  return b;
}

#define ARGS(n) size_t argc = n; napi_value argv[n]; \
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < n) return fail(env, "too few arguments"), NULL; \
  if (!is_open(env, argv[0])) return boolean(env, 0)
#define TAKE_OR_THROW() fuse_req_t req = f3_take(env, argv[0]); if (req == NULL) return boolean(env, 0)

static napi_value reply_err (napi_env env, napi_callback_info info) {
  ARGS(2);
  double e = EIO;
  if (napi_get_value_double(env, argv[1], &e) != napi_ok) e = EIO;
  if (!(e >= 0 && e <= 4095)) e = EIO;  // 0 answers success for ops that return no data
  TAKE_OR_THROW();
  fuse_reply_err(req, (int)e);
  return boolean(env, 1);
}

static napi_value reply_none (napi_env env, napi_callback_info info) {
  ARGS(1);
  TAKE_OR_THROW();
  fuse_reply_none(req);
  return boolean(env, 1);
}

static napi_value reply_entry (napi_env env, napi_callback_info info) {
  ARGS(2);
  struct fuse_entry_param e;
  if (!read_entry(env, argv[1], &e)) return NULL;
  TAKE_OR_THROW();
  fuse_reply_entry(req, &e);
  return boolean(env, 1);
}

static napi_value reply_create (napi_env env, napi_callback_info info) {
  ARGS(3);
  struct fuse_entry_param e;
  struct fuse_file_info fi;
  if (!read_entry(env, argv[1], &e) || !read_open(env, argv[2], &fi)) return NULL;
  TAKE_OR_THROW();
  fuse_reply_create(req, &e, &fi);
  return boolean(env, 1);
}

static napi_value reply_attr (napi_env env, napi_callback_info info) {
  ARGS(3);
  struct stat st;
  double timeout = 0;
  if (f3_read_attr(env, argv[1], &st) != napi_ok) return NULL;
  if (napi_get_value_double(env, argv[2], &timeout) != napi_ok) return fail(env, "timeout must be a number"), NULL;
  TAKE_OR_THROW();
  fuse_reply_attr(req, &st, timeout);
  return boolean(env, 1);
}

static napi_value reply_open (napi_env env, napi_callback_info info) {
  ARGS(2);
  struct fuse_file_info fi;
  if (!read_open(env, argv[1], &fi)) return NULL;
  TAKE_OR_THROW();
  fuse_reply_open(req, &fi);
  return boolean(env, 1);
}

static napi_value reply_count (napi_env env, napi_callback_info info, int kind) {
  ARGS(2);
  double n;
  if (napi_get_value_double(env, argv[1], &n) != napi_ok || n < 0) return fail(env, "count must be a non-negative number"), NULL;
  TAKE_OR_THROW();
  if (kind == 0) fuse_reply_write(req, (size_t)n);
  else if (kind == 1) fuse_reply_xattr(req, (size_t)n);
  else fuse_reply_lseek(req, (off_t)n);
  return boolean(env, 1);
}
static napi_value reply_write (napi_env env, napi_callback_info info) { return reply_count(env, info, 0); }
static napi_value reply_xattr_size (napi_env env, napi_callback_info info) { return reply_count(env, info, 1); }
static napi_value reply_lseek (napi_env env, napi_callback_info info) { return reply_count(env, info, 2); }

static napi_value reply_buf (napi_env env, napi_callback_info info) {
  ARGS(2);
  void *data;
  size_t len;
  if (napi_get_buffer_info(env, argv[1], &data, &len) != napi_ok) return fail(env, "data must be a Buffer"), NULL;
  TAKE_OR_THROW();
  fuse_reply_buf(req, data, len);
  return boolean(env, 1);
}

static napi_value reply_readlink (napi_env env, napi_callback_info info) {
  ARGS(2);
  void *data;
  size_t len;
  if (napi_get_buffer_info(env, argv[1], &data, &len) != napi_ok || memchr(data, 0, len) != NULL) return fail(env, "target must be a Buffer without NUL"), NULL;
  char *link = malloc(len + 1);
  if (link == NULL) return f3_throw_errno(env, "malloc", ENOMEM);
  memcpy(link, data, len);
  link[len] = 0;
  fuse_req_t req = f3_take(env, argv[0]);
  if (req != NULL) fuse_reply_readlink(req, link);
  free(link);
  return boolean(env, req != NULL);
}

static napi_value reply_statfs (napi_env env, napi_callback_info info) {
  ARGS(2);
  struct statvfs sv;
  double d;
  memset(&sv, 0, sizeof sv);
  if (!is_object(env, argv[1])) return fail(env, "statfs must be an object"), NULL;
#define NUM(key, field, dflt) if (!get_num(env, argv[1], key, dflt, &d)) return NULL; sv.field = d
  NUM("bsize", f_bsize, 4096); NUM("frsize", f_frsize, 0); NUM("blocks", f_blocks, 0); NUM("bfree", f_bfree, 0);
  NUM("bavail", f_bavail, 0); NUM("files", f_files, 0); NUM("ffree", f_ffree, 0); NUM("favail", f_favail, 0);
  NUM("namemax", f_namemax, 255);
#undef NUM
  if (sv.f_frsize == 0) sv.f_frsize = sv.f_bsize;
  TAKE_OR_THROW();
  fuse_reply_statfs(req, &sv);
  return boolean(env, 1);
}

// Packs as many entries as fit in the size the kernel asked for; returns how many fit, so the
// caller knows which readdirplus entries the kernel now holds a lookup on.
static napi_value reply_dir (napi_env env, napi_callback_info info, int plus) {
  ARGS(3);
  double size_d = 0;
  uint32_t n;
  bool is_array;
  if (napi_get_value_double(env, argv[1], &size_d) != napi_ok) return fail(env, "size must be a number"), NULL;
  if (napi_is_array(env, argv[2], &is_array) != napi_ok || !is_array) return fail(env, "entries must be an array"), NULL;
  napi_get_array_length(env, argv[2], &n);
  size_t size = size_d > 0 ? (size_t)size_d : 0;
  char *buf = malloc(size + 1);
  char name[1024];
  if (buf == NULL) return f3_throw_errno(env, "malloc", ENOMEM);
  struct f3_pending *p;
  napi_get_value_external(env, argv[0], (void **)&p);
  size_t pos = 0;
  uint32_t fitted = 0;
  for (; fitted < n; fitted++) {
    napi_value ent, v;
    napi_valuetype t;
    void *bytes;
    size_t len;
    double off;
    napi_get_element(env, argv[2], fitted, &ent);
    if (!is_object(env, ent) || !get_prop(env, ent, "name", &v, &t)) { free(buf); return fail(env, "a directory entry must be an object"), NULL; }
    if (t == napi_string) napi_get_value_string_utf8(env, v, name, sizeof name, &len);
    else if (napi_get_buffer_info(env, v, &bytes, &len) == napi_ok && len < sizeof name) { memcpy(name, bytes, len); name[len] = 0; }
    else { free(buf); return fail(env, "a directory entry name must be a string or a Buffer under 1024 bytes"), NULL; }
    if (!get_num(env, ent, "off", 0, &off)) { free(buf); return NULL; }
    size_t used;
    if (plus) {
      struct fuse_entry_param e;
      napi_value ev;
      if (!get_prop(env, ent, "entry", &ev, &t) || !read_entry(env, ev, &e)) { free(buf); return NULL; }
      used = fuse_add_direntry_plus(p->req, buf + pos, size - pos, name, &e, (off_t)off);
    } else {
      struct stat st;
      double ino, mode;
      memset(&st, 0, sizeof st);
      if (!get_num(env, ent, "ino", 0, &ino) || !get_num(env, ent, "mode", 0, &mode)) { free(buf); return NULL; }
      st.st_ino = (ino_t)ino;
      st.st_mode = (mode_t)mode;
      used = fuse_add_direntry(p->req, buf + pos, size - pos, name, &st, (off_t)off);
    }
    if (used > size - pos) break;
    pos += used;
  }
  fuse_req_t req = f3_take(env, argv[0]);
  if (req != NULL) fuse_reply_buf(req, buf, pos);
  free(buf);
  napi_value count;
  napi_create_uint32(env, req != NULL ? fitted : 0, &count);
  return count;
}
static napi_value reply_readdir (napi_env env, napi_callback_info info) { return reply_dir(env, info, 0); }
static napi_value reply_readdirplus (napi_env env, napi_callback_info info) { return reply_dir(env, info, 1); }

napi_status f3_define_replies (napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
    { "replyErr", NULL, reply_err, NULL, NULL, NULL, napi_default, NULL },
    { "replyNone", NULL, reply_none, NULL, NULL, NULL, napi_default, NULL },
    { "replyEntry", NULL, reply_entry, NULL, NULL, NULL, napi_default, NULL },
    { "replyCreate", NULL, reply_create, NULL, NULL, NULL, napi_default, NULL },
    { "replyAttr", NULL, reply_attr, NULL, NULL, NULL, napi_default, NULL },
    { "replyOpen", NULL, reply_open, NULL, NULL, NULL, napi_default, NULL },
    { "replyWrite", NULL, reply_write, NULL, NULL, NULL, napi_default, NULL },
    { "replyXattrSize", NULL, reply_xattr_size, NULL, NULL, NULL, napi_default, NULL },
    { "replyLseek", NULL, reply_lseek, NULL, NULL, NULL, napi_default, NULL },
    { "replyBuf", NULL, reply_buf, NULL, NULL, NULL, napi_default, NULL },
    { "replyReadlink", NULL, reply_readlink, NULL, NULL, NULL, napi_default, NULL },
    { "replyStatfs", NULL, reply_statfs, NULL, NULL, NULL, napi_default, NULL },
    { "replyReaddir", NULL, reply_readdir, NULL, NULL, NULL, napi_default, NULL },
    { "replyReaddirplus", NULL, reply_readdirplus, NULL, NULL, NULL, napi_default, NULL },
  };
  return napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
}
