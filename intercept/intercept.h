/*
 * An umbrella of the headers share*.c take their counters, hook state and
 * driver from. It declares nothing itself: libsage's own modules include
 * what they use (stats.h, hooks.h, driver.h), and so may the share files
 * once they are restructured.
 */
#pragma once

#include "driver.h"
#include "hooks.h"
#include "stats.h"
