{
  "targets": [
    {
      "target_name": "replfs_process",
      "sources": ["process.c", "memory.c"],
      "cflags": ["-Wall", "-Wextra", "-Werror", "-O2"],
      "defines": ["NAPI_VERSION=8", "_GNU_SOURCE"]
    }
  ]
}
