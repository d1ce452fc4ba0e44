// The memory and page-cache functions of native/process (memory.c), added to its exports by init.
#ifndef REPLFS_PROCESS_MEMORY_H
#define REPLFS_PROCESS_MEMORY_H
#include <node_api.h>

napi_status define_memory_functions (napi_env env, napi_value exports);

#endif
