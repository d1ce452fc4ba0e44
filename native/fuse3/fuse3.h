// Shared declarations of the replfs libfuse 3 low-level binding: one mount is a fuse_session read
// by its own thread; each request crosses to the JS thread through a threadsafe function and is
// answered there by the reply functions (libfuse's replies are safe from any thread).
#ifndef REPLFS_FUSE3_H
#define REPLFS_FUSE3_H
#include <fuse_lowlevel.h>
#include <node_api.h>
#include <pthread.h>
#include <stdint.h>
#include <sys/stat.h>

// Bumped whenever the JS-facing shape of this addon changes; src/fuse3/binding.ts checks it.
#define F3_ABI 1

enum f3_op {
  F3_INIT, F3_EXITED, F3_LOOKUP, F3_FORGET, F3_FORGET_MULTI, F3_GETATTR, F3_SETATTR, F3_READLINK,
  F3_MKNOD, F3_MKDIR, F3_UNLINK, F3_RMDIR, F3_SYMLINK, F3_RENAME, F3_LINK, F3_OPEN, F3_READ,
  F3_WRITE, F3_FLUSH, F3_RELEASE, F3_FSYNC, F3_OPENDIR, F3_READDIR, F3_READDIRPLUS,
  F3_RELEASEDIR, F3_FSYNCDIR, F3_STATFS, F3_SETXATTR, F3_GETXATTR, F3_LISTXATTR, F3_REMOVEXATTR,
  F3_ACCESS, F3_CREATE, F3_FALLOCATE, F3_COPY_FILE_RANGE, F3_LSEEK, F3_OP_COUNT
};
extern const char *const f3_op_names[F3_OP_COUNT];

struct f3_mount;

// A request the kernel waits on. Owned by its message until JS wraps it, then by that external.
// req becomes NULL once answered (by JS, by the finalizer, or cancelled at unmount).
struct f3_pending {
  fuse_req_t req;
  struct f3_mount *m;
  struct f3_pending *prev, *next;
};

struct f3_mount {
  struct fuse_session *se;
  pthread_t thread;
  int thread_started;
  int wake[2];
  napi_threadsafe_function tsfn;
  pthread_mutex_t lock;    // guards the pending list and the in-flight notify count
  pthread_cond_t drained;  // signalled when a notify finishes
  struct f3_pending head;  // sentinel of the list of unanswered requests
  int notifies;
  int unmounted;
  int leaked;              // a notify never returned: the session is left alive rather than freed
  uint64_t want_set, want_clear;
  unsigned max_write, max_readahead;
};

// One decoded request, built on the session thread and turned into JS on the main thread.
struct f3_msg {
  enum f3_op op;
  struct f3_pending *pending;  // NULL for messages that need no answer
  struct fuse_ctx ctx;
  uint64_t ino, ino2, fh, fh2, len;
  int64_t off, off2;
  int has_fi, fi_flags, flags, to_set;
  uint32_t mode, rdev;
  char *name, *name2;
  size_t name_len, name2_len;
  void *data;
  size_t data_len;
  struct stat attr;
  struct fuse_conn_info conn;
  struct fuse_forget_data *forgets;
};

// request.c
void f3_fill_ops (struct fuse_lowlevel_ops *ops, const int *enabled);
void f3_call_js (napi_env env, napi_value fn, void *context, void *data);
void f3_msg_free (struct f3_msg *msg);
void f3_pending_unlink (struct f3_mount *m, struct f3_pending *p);

// reply.c
napi_status f3_define_replies (napi_env env, napi_value exports);
fuse_req_t f3_take (napi_env env, napi_value handle);
napi_status f3_read_attr (napi_env env, napi_value obj, struct stat *st);

// notify.c
napi_status f3_define_notifies (napi_env env, napi_value exports);
struct f3_mount *f3_mount_of (napi_env env, napi_value handle);

// session.c
napi_value f3_throw_errno (napi_env env, const char *what, int err);
#endif
