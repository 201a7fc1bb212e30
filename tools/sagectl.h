/* What sagectl's files share. */
#pragma once

#include <stdbool.h>

#include "broker_client.h"

/* Say what failed (a SageProtoError with the broker's message, or an errno) and return 1. */
int sagectl_fail(const char *what, int r, const SageBroker *b);
/* sagectl_instances.c */
int sagectl_instances(SageBroker *b, bool json);
/* `cmd`: "suspend" or "resume". Returns 0, 1 (failed), 2 (usage). */
int sagectl_suspend_resume(SageBroker *b, const char *cmd, const char *pid_text);
