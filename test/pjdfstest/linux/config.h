/*
 * What pjdfstest's configure.ac finds on Linux with glibc 2.36 (Debian 12) and no libacl-dev:
 * written by hand so that pjdfstest builds with a plain `cc`, without autoconf or automake.
 * scripts/pjdfstest.sh compiles pjdfstest.c with -I of this directory.
 */
#ifndef PJDFSTEST_LINUX_CONFIG_H
#define PJDFSTEST_LINUX_CONFIG_H

/* AC_USE_SYSTEM_EXTENSIONS */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE 1
#endif
#ifndef _ALL_SOURCE
#define _ALL_SOURCE 1
#endif

/* AC_CHECK_HEADERS: sys/sysmacros.h is there, sys/mkdev.h is not (Solaris) */
#define HAVE_SYS_SYSMACROS_H 1

/* AC_CHECK_FUNC: the *at calls glibc has; bindat, connectat, chflags* and lpathconf are BSD only */
#define HAVE_FACCESSAT 1
#define HAVE_FCHMODAT 1
#define HAVE_FCHOWNAT 1
#define HAVE_FSTATAT 1
#define HAVE_LCHMOD 1
#define HAVE_LINKAT 1
#define HAVE_MKDIRAT 1
#define HAVE_MKFIFOAT 1
#define HAVE_MKNODAT 1
#define HAVE_OPENAT 1
#define HAVE_POSIX_FALLOCATE 1
#define HAVE_READLINKAT 1
#define HAVE_RENAMEAT 1
#define HAVE_SYMLINKAT 1
#define HAVE_UTIMENSAT 1

/* AC_CHECK_MEMBERS: struct stat has st_atim, st_ctim, st_mtim, no birth time */
#define HAVE_STRUCT_STAT_ST_ATIM 1
#define HAVE_STRUCT_STAT_ST_CTIM 1
#define HAVE_STRUCT_STAT_ST_MTIM 1

#endif
