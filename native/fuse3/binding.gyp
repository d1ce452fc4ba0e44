{
  "targets": [
    {
      "target_name": "replfs_fuse3",
      "sources": ["session.c", "request.c", "deliver.c", "reply.c", "notify.c"],
      "cflags": ["-Wall", "-Wextra", "-Werror", "-O2", "<!@(pkg-config --cflags fuse3)"],
      "libraries": ["<!@(pkg-config --libs fuse3)"],
      "defines": ["NAPI_VERSION=8", "_GNU_SOURCE", "FUSE_USE_VERSION=35"]
    }
  ]
}
