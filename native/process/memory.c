// Process-wide memory settings and page-cache control that Node does not expose: glibc's malloc
// thresholds (mallopt), pre-faulting the heap, and handing a written file range back to the
// kernel (sync_file_range, posix_fadvise). None of it is about FUSE; the mount and the
// replication journal both use it.
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <malloc.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>
#include "memory.h"

// A number argument that is a whole number in [0, max]; throws a TypeError naming `what` otherwise.
static bool whole_arg (napi_env env, napi_value v, double max, const char *what, double *out) {
  napi_valuetype t;
  if (napi_typeof(env, v, &t) != napi_ok || t != napi_number || napi_get_value_double(env, v, out) != napi_ok ||
      !(*out >= 0 && *out <= max) || (double)(int64_t)*out != *out) {
    napi_throw_type_error(env, NULL, what);
    return false;
  }
  return true;
}

static bool args (napi_env env, napi_callback_info info, size_t want, napi_value *argv, const char *usage) {
  size_t argc = want;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < want) {
    napi_throw_type_error(env, NULL, usage);
    return false;
  }
  return true;
}

// tuneMalloc(mmapThreshold, trimThreshold) -> boolean: glibc's mallopt for the two settings that
// decide whether freed memory is kept for reuse. A filesystem process allocates and frees a
// buffer per request (up to 1 MiB with maxPages); with glibc's defaults those come from fresh
// mmaps or a just-trimmed heap, and the first touch of every page faults. Returns whether both
// settings took (false where there is no glibc).
static napi_value tune_malloc (napi_env env, napi_callback_info info) {
  napi_value argv[2];
  double mmap_threshold, trim_threshold;
  if (!args(env, info, 2, argv, "tuneMalloc(mmapThreshold, trimThreshold) takes two byte counts") ||
      !whole_arg(env, argv[0], INT_MAX, "mmapThreshold must be a whole number of bytes up to 2^31-1", &mmap_threshold) ||
      !whole_arg(env, argv[1], INT_MAX, "trimThreshold must be a whole number of bytes up to 2^31-1", &trim_threshold)) return NULL;
  bool ok = false;
#ifdef __GLIBC__
  ok = mallopt(M_MMAP_THRESHOLD, (int)mmap_threshold) == 1 && mallopt(M_TRIM_THRESHOLD, (int)trim_threshold) == 1;
#endif
  napi_value result;
  napi_get_boolean(env, ok, &result);
  return result;
}

// prefaultHeap(bytes) -> number: after tuneMalloc, grows glibc's main heap by `bytes`, writes
// every page of it, and frees it again, so the heap's free top keeps those pages (less than the
// trim threshold is never returned). A fresh process otherwise faults each page of its first
// request buffers on first touch, so it is slowest just after it starts. Chunks of 1 MiB stay
// below the mmap threshold and are freed in reverse, each merging into the top. Returns the free
// top's size afterwards (mallinfo2 keepcost), 0 where there is no glibc.
static napi_value prefault_heap (napi_env env, napi_callback_info info) {
  napi_value argv[1];
  double bytes;
  if (!args(env, info, 1, argv, "prefaultHeap(bytes) takes a byte count") ||
      !whole_arg(env, argv[0], UINT32_MAX, "bytes must be a whole number up to 2^32-1", &bytes)) return NULL;
  double kept = 0;
#ifdef __GLIBC__
  const size_t chunk = 1 << 20;
  size_t n = (size_t)bytes / chunk;
  char **blocks = calloc(n > 0 ? n : 1, sizeof(char *));
  size_t got = 0;
  if (blocks != NULL) {
    long page = sysconf(_SC_PAGESIZE);
    for (; got < n; got++) {
      blocks[got] = malloc(chunk);
      if (blocks[got] == NULL) break;
      for (size_t off = 0; off < chunk; off += (size_t)page) ((volatile char *)blocks[got])[off] = 0;
    }
    while (got > 0) free(blocks[--got]);
    free(blocks);
  }
#if __GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 33)
  kept = (double)mallinfo2().keepcost;
#else
  kept = (double)(unsigned int)mallinfo().keepcost;
#endif
#endif
  napi_value result;
  napi_create_double(env, kept, &result);
  return result;
}

// releasePages(fd, offset, length, wait) -> 0 or a negative errno: lets the kernel forget a
// written range of a file that nothing will read soon (a journal). wait = false starts the
// range's writeback and returns; wait = true waits for that writeback and then drops the range's
// clean pages from the page cache (posix_fadvise DONTNEED), so they are free for the next writes
// instead of piling up as cache. length 0 means to the end of the file, as for both calls. A bad
// descriptor is the kernel's answer (-EBADF), not a throw: only arguments of the wrong type throw.
static napi_value release_pages (napi_env env, napi_callback_info info) {
  napi_value argv[4];
  int32_t fd;
  double offset, length;
  bool wait;
  napi_valuetype t;
  if (!args(env, info, 4, argv, "releasePages(fd, offset, length, wait) takes four arguments")) return NULL;
  if (napi_typeof(env, argv[0], &t) != napi_ok || t != napi_number || napi_get_value_int32(env, argv[0], &fd) != napi_ok) {
    napi_throw_type_error(env, NULL, "fd must be a file descriptor (an integer)");
    return NULL;
  }
  if (!whole_arg(env, argv[1], 9007199254740991.0, "offset must be a whole number of bytes", &offset) ||
      !whole_arg(env, argv[2], 9007199254740991.0, "length must be a whole number of bytes", &length)) return NULL;
  if (napi_typeof(env, argv[3], &t) != napi_ok || t != napi_boolean || napi_get_value_bool(env, argv[3], &wait) != napi_ok) {
    napi_throw_type_error(env, NULL, "wait must be a boolean");
    return NULL;
  }
  int res = 0;
#ifdef __linux__
  unsigned int flags = wait ? (SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WRITE | SYNC_FILE_RANGE_WAIT_AFTER) : SYNC_FILE_RANGE_WRITE;
  if (sync_file_range(fd, (off_t)offset, (off_t)length, flags) != 0) res = -errno;
  if (res == 0 && wait) res = -posix_fadvise(fd, (off_t)offset, (off_t)length, POSIX_FADV_DONTNEED);
#else
  (void)fd; (void)offset; (void)length; (void)wait;
  res = -ENOSYS;
#endif
  napi_value result;
  napi_create_int32(env, res, &result);
  return result;
}

napi_status define_memory_functions (napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
    { "tuneMalloc", NULL, tune_malloc, NULL, NULL, NULL, napi_enumerable, NULL },
    { "prefaultHeap", NULL, prefault_heap, NULL, NULL, NULL, napi_enumerable, NULL },
    { "releasePages", NULL, release_pages, NULL, NULL, NULL, napi_enumerable, NULL }
  };
  return napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
}
