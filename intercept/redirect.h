/* Context redirect: explicit contexts served by the warm primary context. */
#pragma once

#include <stdint.h>

#include "hooks.h"

/*
 * The redirect's observer (hooks.h): while a redirected context is alive,
 * resources that calls declare they create (hooks.def SAGE_CREATES) are
 * attributed to it, and forgotten when destroyed.
 */
extern const SageObserver sage_redirect_observer;
