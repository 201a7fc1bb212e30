/* What sagectl's files share. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "broker_client.h"

/* Say what failed (a SageProtoError with the broker's message, or an errno) and return 1. */
int sagectl_fail(const char *what, int r, const SageBroker *b);
/* Page through LIST: fn for every extent the caller may see. 0, or what failed (negative errno, SageProtoError). */
int sagectl_each_extent(SageBroker *b, void (*fn)(const SageListEntry *e, void *userdata), void *userdata);
/* A listing's end: say what failed (1), or close the JSON array of `rows` rows (0). */
int sagectl_list_end(const char *what, int r, const SageBroker *b, bool json, uint64_t rows);
/* sagectl_devices.c: the broker's GPUs by UUID, and the name of its ordinal `device` ("GPU-xxxxxxxx" or the whole UUID). */
int sagectl_devices(SageBroker *b, bool json);
const char *sagectl_device_name(SageBroker *b, uint32_t device, bool full, char *buf, size_t size);
/* sagectl_instances.c */
int sagectl_instances(SageBroker *b, bool json);
/* `cmd`: "suspend" or "resume". Returns 0, 1 (failed), 2 (usage). */
int sagectl_suspend_resume(SageBroker *b, const char *cmd, const char *pid_text);
