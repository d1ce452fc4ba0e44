// The session thread's side: each fuse_lowlevel_ops callback copies its arguments (they are only
// valid during the callback) into an f3_msg and queues it to JS; the request stays open until a
// reply function answers it. Forgets are answered here at once, as they take no reply.
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include "fuse3.h"

const char *const f3_op_names[F3_OP_COUNT] = {
  "init", "exited", "lookup", "forget", "forget_multi", "getattr", "setattr", "readlink",
  "mknod", "mkdir", "unlink", "rmdir", "symlink", "rename", "link", "open", "read",
  "write", "flush", "release", "fsync", "opendir", "readdir", "readdirplus",
  "releasedir", "fsyncdir", "statfs", "setxattr", "getxattr", "listxattr", "removexattr",
  "access", "create", "fallocate", "copy_file_range", "lseek"
};

void f3_pending_unlink (struct f3_mount *m, struct f3_pending *p) {
  (void)m;
  if (p->next == NULL) return;
  p->prev->next = p->next;
  p->next->prev = p->prev;
  p->prev = p->next = NULL;
}

void f3_msg_free (struct f3_msg *msg) {
  free(msg->name);
  free(msg->name2);
  free(msg->data);
  free(msg->forgets);
  free(msg);
}

static struct f3_msg *msg_new (fuse_req_t req, enum f3_op op, fuse_ino_t ino, struct fuse_file_info *fi) {
  struct f3_msg *msg = calloc(1, sizeof *msg);
  if (msg == NULL) return NULL;
  msg->op = op;
  msg->ino = ino;
  if (req != NULL) msg->ctx = *fuse_req_ctx(req);
  if (fi != NULL) {
    msg->has_fi = 1;
    msg->fh = fi->fh;
    msg->fi_flags = fi->flags;
  }
  return msg;
}

static char *dup_name (const char *s, size_t *len) {
  size_t n = strlen(s);
  char *out = malloc(n + 1);
  if (out != NULL) memcpy(out, s, n + 1);
  *len = n;
  return out;
}

// Queues msg for JS. A request gets its pending record first, so unmount can always answer it.
static void post (fuse_req_t req, struct f3_msg *msg) {
  struct f3_mount *m = fuse_req_userdata(req);
  if (msg == NULL) {
    fuse_reply_err(req, ENOMEM);
    return;
  }
  struct f3_pending *p = calloc(1, sizeof *p);
  if (p == NULL) {
    f3_msg_free(msg);
    fuse_reply_err(req, ENOMEM);
    return;
  }
  p->req = req;
  p->m = m;
  msg->pending = p;
  pthread_mutex_lock(&m->lock);
  p->next = m->head.next;
  p->prev = &m->head;
  m->head.next->prev = p;
  m->head.next = p;
  pthread_mutex_unlock(&m->lock);
  // The queue is unbounded, so this never blocks the session thread on the JS thread.
  if (napi_call_threadsafe_function(m->tsfn, msg, napi_tsfn_nonblocking) != napi_ok) {
    pthread_mutex_lock(&m->lock);
    f3_pending_unlink(m, p);
    pthread_mutex_unlock(&m->lock);
    free(p);
    msg->pending = NULL;
    f3_msg_free(msg);
    fuse_reply_err(req, EIO);
  }
}

static void post_info (struct f3_mount *m, struct f3_msg *msg) {
  if (msg == NULL) return;
  if (napi_call_threadsafe_function(m->tsfn, msg, napi_tsfn_nonblocking) != napi_ok) f3_msg_free(msg);
}

static void op_init (void *userdata, struct fuse_conn_info *conn) {
  struct f3_mount *m = userdata;
  conn->want |= (unsigned)(m->want_set & conn->capable);
  conn->want &= ~(unsigned)m->want_clear;
  if (m->max_write != 0 && m->max_write < conn->max_write) conn->max_write = m->max_write;
  if (m->max_readahead != 0) conn->max_readahead = m->max_readahead;
  struct f3_msg *msg = msg_new(NULL, F3_INIT, 0, NULL);
  if (msg != NULL) msg->conn = *conn;
  post_info(m, msg);
}

static void op_lookup (fuse_req_t req, fuse_ino_t parent, const char *name) {
  struct f3_msg *msg = msg_new(req, F3_LOOKUP, parent, NULL);
  if (msg != NULL) msg->name = dup_name(name, &msg->name_len);
  post(req, msg);
}

static void op_forget (fuse_req_t req, fuse_ino_t ino, uint64_t nlookup) {
  struct f3_mount *m = fuse_req_userdata(req);
  fuse_reply_none(req);
  struct f3_msg *msg = msg_new(NULL, F3_FORGET, ino, NULL);
  if (msg != NULL) msg->len = nlookup;
  post_info(m, msg);
}

static void op_forget_multi (fuse_req_t req, size_t count, struct fuse_forget_data *forgets) {
  struct f3_mount *m = fuse_req_userdata(req);
  struct f3_msg *msg = msg_new(NULL, F3_FORGET_MULTI, 0, NULL);
  if (msg != NULL) {
    msg->forgets = malloc(count * sizeof *forgets + 1);
    if (msg->forgets != NULL) memcpy(msg->forgets, forgets, count * sizeof *forgets);
    msg->len = msg->forgets != NULL ? count : 0;
  }
  fuse_reply_none(req);
  post_info(m, msg);
}

static void op_getattr (fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi) {
  post(req, msg_new(req, F3_GETATTR, ino, fi));
}

static void op_setattr (fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set, struct fuse_file_info *fi) {
  struct f3_msg *msg = msg_new(req, F3_SETATTR, ino, fi);
  if (msg != NULL) {
    msg->attr = *attr;
    msg->to_set = to_set;
  }
  post(req, msg);
}

static void op_readlink (fuse_req_t req, fuse_ino_t ino) { post(req, msg_new(req, F3_READLINK, ino, NULL)); }

static void named (fuse_req_t req, enum f3_op op, fuse_ino_t parent, const char *name, mode_t mode, dev_t rdev, struct fuse_file_info *fi) {
  struct f3_msg *msg = msg_new(req, op, parent, fi);
  if (msg != NULL) {
    msg->name = dup_name(name, &msg->name_len);
    msg->mode = mode;
    msg->rdev = (uint32_t)rdev;
  }
  post(req, msg);
}

static void op_mknod (fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode, dev_t rdev) { named(req, F3_MKNOD, parent, name, mode, rdev, NULL); }
static void op_mkdir (fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode) { named(req, F3_MKDIR, parent, name, mode, 0, NULL); }
static void op_unlink (fuse_req_t req, fuse_ino_t parent, const char *name) { named(req, F3_UNLINK, parent, name, 0, 0, NULL); }
static void op_rmdir (fuse_req_t req, fuse_ino_t parent, const char *name) { named(req, F3_RMDIR, parent, name, 0, 0, NULL); }
static void op_create (fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode, struct fuse_file_info *fi) { named(req, F3_CREATE, parent, name, mode, 0, fi); }

static void op_symlink (fuse_req_t req, const char *link, fuse_ino_t parent, const char *name) {
  struct f3_msg *msg = msg_new(req, F3_SYMLINK, parent, NULL);
  if (msg != NULL) {
    msg->name = dup_name(name, &msg->name_len);
    msg->name2 = dup_name(link, &msg->name2_len);
  }
  post(req, msg);
}

static void op_rename (fuse_req_t req, fuse_ino_t parent, const char *name, fuse_ino_t newparent, const char *newname, unsigned int flags) {
  struct f3_msg *msg = msg_new(req, F3_RENAME, parent, NULL);
  if (msg != NULL) {
    msg->name = dup_name(name, &msg->name_len);
    msg->ino2 = newparent;
    msg->name2 = dup_name(newname, &msg->name2_len);
    msg->flags = (int)flags;
  }
  post(req, msg);
}

static void op_link (fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent, const char *newname) {
  struct f3_msg *msg = msg_new(req, F3_LINK, ino, NULL);
  if (msg != NULL) {
    msg->ino2 = newparent;
    msg->name = dup_name(newname, &msg->name_len);
  }
  post(req, msg);
}

static void op_open (fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi) { post(req, msg_new(req, F3_OPEN, ino, fi)); }
static void op_opendir (fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi) { post(req, msg_new(req, F3_OPENDIR, ino, fi)); }
static void op_flush (fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi) { post(req, msg_new(req, F3_FLUSH, ino, fi)); }
static void op_release (fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi) { post(req, msg_new(req, F3_RELEASE, ino, fi)); }
static void op_releasedir (fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi) { post(req, msg_new(req, F3_RELEASEDIR, ino, fi)); }
static void op_statfs (fuse_req_t req, fuse_ino_t ino) { post(req, msg_new(req, F3_STATFS, ino, NULL)); }

static void sized (fuse_req_t req, enum f3_op op, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi) {
  struct f3_msg *msg = msg_new(req, op, ino, fi);
  if (msg != NULL) {
    msg->len = size;
    msg->off = off;
  }
  post(req, msg);
}

static void op_read (fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi) { sized(req, F3_READ, ino, size, off, fi); }
static void op_readdir (fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi) { sized(req, F3_READDIR, ino, size, off, fi); }
static void op_readdirplus (fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi) { sized(req, F3_READDIRPLUS, ino, size, off, fi); }

static void op_write (fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size, off_t off, struct fuse_file_info *fi) {
  struct f3_msg *msg = msg_new(req, F3_WRITE, ino, fi);
  if (msg != NULL) {
    msg->off = off;
    msg->data = malloc(size + 1);
    if (msg->data == NULL) {
      f3_msg_free(msg);
      msg = NULL;
    } else {
      memcpy(msg->data, buf, size);
      msg->data_len = size;
    }
  }
  post(req, msg);
}

static void synced (fuse_req_t req, enum f3_op op, fuse_ino_t ino, int datasync, struct fuse_file_info *fi) {
  struct f3_msg *msg = msg_new(req, op, ino, fi);
  if (msg != NULL) msg->flags = datasync;
  post(req, msg);
}

static void op_fsync (fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi) { synced(req, F3_FSYNC, ino, datasync, fi); }
static void op_fsyncdir (fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi) { synced(req, F3_FSYNCDIR, ino, datasync, fi); }
static void op_access (fuse_req_t req, fuse_ino_t ino, int mask) { synced(req, F3_ACCESS, ino, mask, NULL); }

static void op_setxattr (fuse_req_t req, fuse_ino_t ino, const char *name, const char *value, size_t size, int flags) {
  struct f3_msg *msg = msg_new(req, F3_SETXATTR, ino, NULL);
  if (msg != NULL) {
    msg->name = dup_name(name, &msg->name_len);
    msg->flags = flags;
    msg->data = malloc(size + 1);
    if (msg->data != NULL) memcpy(msg->data, value, size);
    msg->data_len = msg->data != NULL ? size : 0;
  }
  post(req, msg);
}

static void op_getxattr (fuse_req_t req, fuse_ino_t ino, const char *name, size_t size) {
  // The kernel asks for security.capability before every write (to drop file capabilities).
  // The filesystems served here keep no security.* attributes: answer at once, not through JS.
  if (strncmp(name, "security.", 9) == 0) { fuse_reply_err(req, ENODATA); return; }
  struct f3_msg *msg = msg_new(req, F3_GETXATTR, ino, NULL);
  if (msg != NULL) {
    msg->name = dup_name(name, &msg->name_len);
    msg->len = size;
  }
  post(req, msg);
}

static void op_listxattr (fuse_req_t req, fuse_ino_t ino, size_t size) { sized(req, F3_LISTXATTR, ino, size, 0, NULL); }
static void op_removexattr (fuse_req_t req, fuse_ino_t ino, const char *name) { named(req, F3_REMOVEXATTR, ino, name, 0, 0, NULL); }

static void op_fallocate (fuse_req_t req, fuse_ino_t ino, int mode, off_t offset, off_t length, struct fuse_file_info *fi) {
  struct f3_msg *msg = msg_new(req, F3_FALLOCATE, ino, fi);
  if (msg != NULL) {
    msg->flags = mode;
    msg->off = offset;
    msg->len = (uint64_t)length;
  }
  post(req, msg);
}

static void op_copy_file_range (fuse_req_t req, fuse_ino_t ino_in, off_t off_in, struct fuse_file_info *fi_in,
                                fuse_ino_t ino_out, off_t off_out, struct fuse_file_info *fi_out, size_t len, int flags) {
  struct f3_msg *msg = msg_new(req, F3_COPY_FILE_RANGE, ino_in, fi_in);
  if (msg != NULL) {
    msg->off = off_in;
    msg->ino2 = ino_out;
    msg->off2 = off_out;
    msg->fh2 = fi_out->fh;
    msg->len = len;
    msg->flags = flags;
  }
  post(req, msg);
}

static void op_lseek (fuse_req_t req, fuse_ino_t ino, off_t off, int whence, struct fuse_file_info *fi) {
  struct f3_msg *msg = msg_new(req, F3_LSEEK, ino, fi);
  if (msg != NULL) {
    msg->off = off;
    msg->flags = whence;
  }
  post(req, msg);
}

// Only the operations JS implements are set: libfuse gives a missing one its documented default
// (ENOSYS, or success for opendir/release and the like), which the kernel then remembers.
void f3_fill_ops (struct fuse_lowlevel_ops *ops, const int *on) {
  memset(ops, 0, sizeof *ops);
  ops->init = op_init;
#define SET(op, field, fn) if (on[op]) ops->field = fn
  SET(F3_LOOKUP, lookup, op_lookup); SET(F3_FORGET, forget, op_forget);
  SET(F3_FORGET_MULTI, forget_multi, op_forget_multi); SET(F3_GETATTR, getattr, op_getattr);
  SET(F3_SETATTR, setattr, op_setattr); SET(F3_READLINK, readlink, op_readlink);
  SET(F3_MKNOD, mknod, op_mknod); SET(F3_MKDIR, mkdir, op_mkdir); SET(F3_UNLINK, unlink, op_unlink);
  SET(F3_RMDIR, rmdir, op_rmdir); SET(F3_SYMLINK, symlink, op_symlink); SET(F3_RENAME, rename, op_rename);
  SET(F3_LINK, link, op_link); SET(F3_OPEN, open, op_open); SET(F3_READ, read, op_read);
  SET(F3_WRITE, write, op_write); SET(F3_FLUSH, flush, op_flush); SET(F3_RELEASE, release, op_release);
  SET(F3_FSYNC, fsync, op_fsync); SET(F3_OPENDIR, opendir, op_opendir); SET(F3_READDIR, readdir, op_readdir);
  SET(F3_READDIRPLUS, readdirplus, op_readdirplus); SET(F3_RELEASEDIR, releasedir, op_releasedir);
  SET(F3_FSYNCDIR, fsyncdir, op_fsyncdir); SET(F3_STATFS, statfs, op_statfs);
  SET(F3_SETXATTR, setxattr, op_setxattr); SET(F3_GETXATTR, getxattr, op_getxattr);
  SET(F3_LISTXATTR, listxattr, op_listxattr); SET(F3_REMOVEXATTR, removexattr, op_removexattr);
  SET(F3_ACCESS, access, op_access); SET(F3_CREATE, create, op_create);
  SET(F3_FALLOCATE, fallocate, op_fallocate); SET(F3_COPY_FILE_RANGE, copy_file_range, op_copy_file_range);
  SET(F3_LSEEK, lseek, op_lseek);
#undef SET
}
