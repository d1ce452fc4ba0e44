// mount/unmount of one libfuse 3 session, read by a thread of its own, and the module's exports.
// The thread polls /dev/fuse together with a wake pipe, so unmount can stop it without signals
// even while a request is still waiting on JS.
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include "fuse3.h"

napi_value f3_throw_errno (napi_env env, const char *what, int err) {
  char msg[512];
  napi_value code, emsg, error, errnum;
  snprintf(msg, sizeof msg, "%s: %s", what, strerror(err));
  napi_create_string_utf8(env, "ERR_FUSE3", NAPI_AUTO_LENGTH, &code);
  napi_create_string_utf8(env, msg, NAPI_AUTO_LENGTH, &emsg);
  napi_create_error(env, code, emsg, &error);
  napi_create_int32(env, err, &errnum);
  napi_set_named_property(env, error, "errno", errnum);
  napi_throw(env, error);
  return NULL;
}

static void *loop_main (void *arg) {
  struct f3_mount *m = arg;
  struct fuse_buf buf;
  memset(&buf, 0, sizeof buf);
  struct pollfd pf[2] = { { fuse_session_fd(m->se), POLLIN, 0 }, { m->wake[0], POLLIN, 0 } };
  int err = 0;
  while (!fuse_session_exited(m->se)) {
    if (poll(pf, 2, -1) < 0) {
      if (errno == EINTR) continue;
      err = errno;
      break;
    }
    if (pf[1].revents != 0) break;
    int res = fuse_session_receive_buf(m->se, &buf);
    if (res == -EINTR || res == -EAGAIN) continue;
    if (res <= 0) {
      err = -res;
      break;
    }
    fuse_session_process_buf(m->se, &buf);
  }
  free(buf.mem);
  // Tells JS the loop ended: by unmount, or because the kernel side went away (umount -l).
  struct f3_msg *msg = calloc(1, sizeof *msg);
  if (msg != NULL) {
    msg->op = F3_EXITED;
    msg->flags = err;
    if (napi_call_threadsafe_function(m->tsfn, msg, napi_tsfn_nonblocking) != napi_ok) free(msg);
  }
  return NULL;
}

// Stops the thread, answers EIO to every request JS still holds, then unmounts. Idempotent.
static void do_unmount (struct f3_mount *m) {
  if (m->unmounted) return;
  pthread_mutex_lock(&m->lock);
  m->unmounted = 1;
  pthread_mutex_unlock(&m->lock);
  fuse_session_exit(m->se);
  if (m->thread_started) {
    ssize_t w = write(m->wake[1], "x", 1);
    (void)w;
    pthread_join(m->thread, NULL);
  }
  pthread_mutex_lock(&m->lock);
  while (m->head.next != &m->head) {
    struct f3_pending *p = m->head.next;
    f3_pending_unlink(m, p);
    fuse_req_t req = p->req;
    p->req = NULL;
    pthread_mutex_unlock(&m->lock);
    if (req != NULL) fuse_reply_err(req, EIO);
    pthread_mutex_lock(&m->lock);
  }
  struct timespec until;
  clock_gettime(CLOCK_REALTIME, &until);
  until.tv_sec += 2;
  while (m->notifies > 0 && pthread_cond_timedwait(&m->drained, &m->lock, &until) == 0) {}
  m->leaked = m->notifies > 0;
  pthread_mutex_unlock(&m->lock);
  fuse_session_unmount(m->se);
  if (!m->leaked) fuse_session_destroy(m->se);
  napi_release_threadsafe_function(m->tsfn, napi_tsfn_release);
  close(m->wake[0]);
  close(m->wake[1]);
}

static void finalize_mount (napi_env env, void *data, void *hint) {
  (void)env; (void)hint;
  struct f3_mount *m = data;
  do_unmount(m);
  if (!m->leaked) {
    pthread_mutex_destroy(&m->lock);
    pthread_cond_destroy(&m->drained);
    free(m);
  }
}

static int get_u64 (napi_env env, napi_value obj, const char *key, uint64_t *out) {
  napi_value v;
  napi_valuetype t;
  double d;
  *out = 0;
  if (napi_get_named_property(env, obj, key, &v) != napi_ok) return 0;
  napi_typeof(env, v, &t);
  if (t == napi_undefined) return 1;
  if (napi_get_value_double(env, v, &d) != napi_ok || d < 0) return 0;
  *out = (uint64_t)d;
  return 1;
}

// mount(mountpoint, args[], ops[], { wantSet, wantClear, maxWrite, maxReadahead }, dispatch)
static napi_value mount (napi_env env, napi_callback_info info) {
  size_t argc = 5;
  napi_value argv[5], handle, name;
  char mountpoint[4096];
  uint32_t nargs = 0, nops = 0;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 5 ||
      napi_get_value_string_utf8(env, argv[0], mountpoint, sizeof mountpoint, NULL) != napi_ok ||
      napi_get_array_length(env, argv[1], &nargs) != napi_ok || napi_get_array_length(env, argv[2], &nops) != napi_ok) {
    napi_throw_type_error(env, NULL, "mount(mountpoint, args[], ops[], caps, dispatch)");
    return NULL;
  }
  struct f3_mount *m = calloc(1, sizeof *m);
  if (m == NULL) return f3_throw_errno(env, "calloc", ENOMEM);
  if (!get_u64(env, argv[3], "wantSet", &m->want_set) || !get_u64(env, argv[3], "wantClear", &m->want_clear)) {
    free(m);
    napi_throw_type_error(env, NULL, "caps.wantSet/wantClear must be non-negative numbers");
    return NULL;
  }
  uint64_t mw = 0, mra = 0;
  get_u64(env, argv[3], "maxWrite", &mw);
  get_u64(env, argv[3], "maxReadahead", &mra);
  m->max_write = (unsigned)mw;
  m->max_readahead = (unsigned)mra;
  int enabled[F3_OP_COUNT] = { 0 };
  for (uint32_t i = 0; i < nops; i++) {
    napi_value v;
    char op[32];
    napi_get_element(env, argv[2], i, &v);
    if (napi_get_value_string_utf8(env, v, op, sizeof op, NULL) != napi_ok) continue;
    for (int k = 0; k < F3_OP_COUNT; k++) if (strcmp(op, f3_op_names[k]) == 0) enabled[k] = 1;
  }
  struct fuse_lowlevel_ops ops;
  f3_fill_ops(&ops, enabled);
  struct fuse_args fargs = FUSE_ARGS_INIT(0, NULL);
  fuse_opt_add_arg(&fargs, "replfs");
  for (uint32_t i = 0; i < nargs; i++) {
    napi_value v;
    char arg[1024];
    napi_get_element(env, argv[1], i, &v);
    if (napi_get_value_string_utf8(env, v, arg, sizeof arg, NULL) == napi_ok) fuse_opt_add_arg(&fargs, arg);
  }
  pthread_mutex_init(&m->lock, NULL);
  pthread_cond_init(&m->drained, NULL);
  m->head.next = m->head.prev = &m->head;
  m->unmounted = 1;  // until fully mounted, so failure paths never run do_unmount
  if (pipe2(m->wake, O_CLOEXEC | O_NONBLOCK) != 0) {
    int e = errno;
    fuse_opt_free_args(&fargs);
    free(m);
    return f3_throw_errno(env, "pipe2", e);
  }
  m->se = fuse_session_new(&fargs, &ops, sizeof ops, m);
  fuse_opt_free_args(&fargs);
  if (m->se == NULL) {
    close(m->wake[0]); close(m->wake[1]); free(m);
    return f3_throw_errno(env, "fuse_session_new (bad mount options?)", EINVAL);
  }
  if (fuse_session_mount(m->se, mountpoint) != 0) {
    fuse_session_destroy(m->se);
    close(m->wake[0]); close(m->wake[1]); free(m);
    return f3_throw_errno(env, "fuse_session_mount", EIO);
  }
  napi_create_string_utf8(env, "replfs fuse3 requests", NAPI_AUTO_LENGTH, &name);
  if (napi_create_threadsafe_function(env, argv[4], NULL, name, 0, 1, NULL, NULL, NULL, f3_call_js, &m->tsfn) != napi_ok) {
    fuse_session_unmount(m->se);
    fuse_session_destroy(m->se);
    close(m->wake[0]); close(m->wake[1]); free(m);
    napi_throw_type_error(env, NULL, "dispatch must be a function");
    return NULL;
  }
  m->unmounted = 0;
  int e = pthread_create(&m->thread, NULL, loop_main, m);
  m->thread_started = e == 0;
  if (e != 0 || napi_create_external(env, m, finalize_mount, NULL, &handle) != napi_ok) {
    finalize_mount(env, m, NULL);
    return f3_throw_errno(env, "pthread_create", e != 0 ? e : ENOMEM);
  }
  return handle;
}

static napi_value unmount (napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1], undef;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 1) return NULL;
  struct f3_mount *m = f3_mount_of(env, argv[0]);
  if (m == NULL) return NULL;
  do_unmount(m);
  napi_get_undefined(env, &undef);
  return undef;
}

static void set_const (napi_env env, napi_value obj, const char *key, double v) {
  napi_value n;
  napi_create_double(env, v, &n);
  napi_set_named_property(env, obj, key, n);
}

static napi_value init_module (napi_env env, napi_value exports) {
  napi_value consts, version;
  napi_property_descriptor props[] = {
    { "mount", NULL, mount, NULL, NULL, NULL, napi_default, NULL },
    { "unmount", NULL, unmount, NULL, NULL, NULL, napi_default, NULL },
  };
  napi_define_properties(env, exports, 2, props);
  f3_define_replies(env, exports);
  f3_define_notifies(env, exports);
  set_const(env, exports, "abi", F3_ABI);
  set_const(env, exports, "fuseUseVersion", FUSE_USE_VERSION);
  napi_create_string_utf8(env, fuse_pkgversion(), NAPI_AUTO_LENGTH, &version);
  napi_set_named_property(env, exports, "libfuseVersion", version);
  napi_create_object(env, &consts);
#define C(name) set_const(env, consts, #name, name)
  C(FUSE_CAP_ASYNC_READ); C(FUSE_CAP_POSIX_LOCKS); C(FUSE_CAP_ATOMIC_O_TRUNC); C(FUSE_CAP_EXPORT_SUPPORT);
  C(FUSE_CAP_DONT_MASK); C(FUSE_CAP_SPLICE_WRITE); C(FUSE_CAP_SPLICE_MOVE); C(FUSE_CAP_SPLICE_READ);
  C(FUSE_CAP_FLOCK_LOCKS); C(FUSE_CAP_IOCTL_DIR); C(FUSE_CAP_AUTO_INVAL_DATA); C(FUSE_CAP_READDIRPLUS);
  C(FUSE_CAP_READDIRPLUS_AUTO); C(FUSE_CAP_ASYNC_DIO); C(FUSE_CAP_WRITEBACK_CACHE); C(FUSE_CAP_NO_OPEN_SUPPORT);
  C(FUSE_CAP_PARALLEL_DIROPS); C(FUSE_CAP_POSIX_ACL); C(FUSE_CAP_HANDLE_KILLPRIV); C(FUSE_CAP_CACHE_SYMLINKS);
  C(FUSE_CAP_NO_OPENDIR_SUPPORT); C(FUSE_CAP_EXPLICIT_INVAL_DATA);
  C(FUSE_SET_ATTR_MODE); C(FUSE_SET_ATTR_UID); C(FUSE_SET_ATTR_GID); C(FUSE_SET_ATTR_SIZE);
  C(FUSE_SET_ATTR_ATIME); C(FUSE_SET_ATTR_MTIME); C(FUSE_SET_ATTR_ATIME_NOW); C(FUSE_SET_ATTR_MTIME_NOW);
  C(FUSE_SET_ATTR_CTIME);
#undef C
  napi_set_named_property(env, exports, "constants", consts);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init_module)
