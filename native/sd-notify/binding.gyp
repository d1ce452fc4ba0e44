{
  "targets": [
    {
      "target_name": "replfs_sd_notify",
      "sources": ["sd_notify.c"],
      "cflags": ["-Wall", "-Wextra", "-Werror", "-O2"],
      "defines": ["NAPI_VERSION=8", "_GNU_SOURCE"]
    }
  ]
}
