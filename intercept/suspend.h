/*
 * Instance suspend, libsage's side (docs/suspend.md): with SAGE_SUSPEND=1
 * the process registers with saged as an instance once it has a CUDA
 * context. The observer slot SAGE_OBSERVER_SUSPEND is where the gate of
 * resume on demand will sit: the highest slot, so it runs before anything
 * else looks at a call.
 */
#pragma once

#include "hooks.h"

extern const SageObserver sage_suspend_observer;

/* Turn the observer on if SAGE_SUSPEND=1 (init.c, once). */
void sage_suspend_start(void);
/* In the child of a fork(): no instance, the gate open for good (an atfork handler, init.c). */
void sage_suspend_forked(void);
